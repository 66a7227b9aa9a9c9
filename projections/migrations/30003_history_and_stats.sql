-- What customers have bought, on the user row the gateway reads.
ALTER TABLE users
    ADD COLUMN IF NOT EXISTS order_count       bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS total_spent_cents bigint NOT NULL DEFAULT 0;

-- One row per order event: who did what, when (the audit view of an order).
CREATE TABLE IF NOT EXISTS order_history
(
    order_id       uuid        NOT NULL,
    sequence       bigint      NOT NULL,
    event_type     text        NOT NULL,
    actor_id       text,
    actor_role     text,
    correlation_id text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    payload        jsonb       NOT NULL,
    PRIMARY KEY (order_id, sequence)
);

-- Per-customer order statistics. Money is summed in minor units across the user's orders.
CREATE TABLE IF NOT EXISTS user_order_stats
(
    user_id           uuid PRIMARY KEY,
    orders_placed     bigint      NOT NULL DEFAULT 0,
    orders_paid       bigint      NOT NULL DEFAULT 0,
    orders_delivered  bigint      NOT NULL DEFAULT 0,
    orders_cancelled  bigint      NOT NULL DEFAULT 0,
    total_spent_cents bigint      NOT NULL DEFAULT 0,
    refunds_due_cents bigint      NOT NULL DEFAULT 0,
    last_order_at     timestamptz
);
