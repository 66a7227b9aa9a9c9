-- Read models built from the EVENTS stream. They can be dropped and rebuilt from the log
-- at any time; nothing here is the source of truth.

CREATE TABLE IF NOT EXISTS users
(
    id         uuid        PRIMARY KEY,
    email      text        NOT NULL,
    username   text        NOT NULL,
    full_name  text        NOT NULL,
    role       text        NOT NULL,
    status     text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version    bigint      NOT NULL
);

CREATE TABLE IF NOT EXISTS orders
(
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL,
    status      text        NOT NULL,
    total_cents bigint      NOT NULL,
    currency    text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL
);
-- A user's orders, newest first (ids are UUIDv7, so id order is creation order).
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, id DESC);

CREATE TABLE IF NOT EXISTS order_items
(
    order_id         uuid    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          integer NOT NULL,
    sku              text    NOT NULL,
    name             text    NOT NULL,
    quantity         integer NOT NULL,
    unit_price_cents bigint  NOT NULL,
    line_total_cents bigint  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- The last sequence of each aggregate a projection has applied. Updated in the same
-- transaction as the read-model rows, so an event is applied exactly once.
CREATE TABLE IF NOT EXISTS projection_checkpoints
(
    projection     text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
);
