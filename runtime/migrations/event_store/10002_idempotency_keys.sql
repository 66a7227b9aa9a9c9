-- The first result of every command that carried an idempotency key, written in the same
-- transaction as the command's events: a retried command finds it and returns the same
-- answer without producing a second event, also after a restart.
CREATE TABLE IF NOT EXISTS idempotency_keys
(
    caller       text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    aggregate_id text        NOT NULL,
    version      bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
