-- Events a projection could not apply after its retries: kept with the error so the
-- projector can move on, listed and re-driven by `tillstream projections dead-letters`.
CREATE TABLE IF NOT EXISTS dead_letters
(
    id              bigserial   PRIMARY KEY,
    projection      text        NOT NULL,
    subject         text        NOT NULL,
    stream_sequence bigint      NOT NULL,
    aggregate_type  text,
    aggregate_id    text,
    sequence        bigint,
    event_type      text,
    error           text        NOT NULL,
    deliveries      bigint      NOT NULL,
    message         bytea       NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    redriven_at     timestamptz,
    UNIQUE (projection, stream_sequence)
);
CREATE INDEX IF NOT EXISTS dead_letters_waiting ON dead_letters (aggregate_type, aggregate_id, sequence)
    WHERE redriven_at IS NULL;
