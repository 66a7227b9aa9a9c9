-- The event store of one command service: postgres-es's `events` table, plus the columns
-- the relay needs to read it in commit order. postgres-es's inserts do not name the extra
-- columns; their defaults fill them.
CREATE TABLE IF NOT EXISTS events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    -- Allocation order; not commit order (a transaction that took 41 may commit after 42).
    global_position bigserial                    NOT NULL,
    -- The writing transaction. Every transaction older than the oldest one still running
    -- has ended, so rows with txid < pg_snapshot_xmin(pg_current_snapshot()) are final.
    txid            xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- The relay reads by (txid, global_position).
CREATE INDEX IF NOT EXISTS events_relay_order ON events (txid, global_position);

-- Snapshots are not used yet; postgres-es expects the table to exist only when they are.

-- How far each relay has published: the last (txid, global_position) acknowledged by JetStream.
CREATE TABLE IF NOT EXISTS relay_checkpoints
(
    relay           text        PRIMARY KEY,
    txid            xid8        NOT NULL,
    global_position bigint      NOT NULL,
    published       bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Wakes the relay when events are committed (NOTIFY is delivered at commit).
CREATE OR REPLACE FUNCTION tillstream_notify_events() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('tillstream_events', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tillstream_notify_events();
