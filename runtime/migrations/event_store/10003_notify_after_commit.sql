-- Commits of new events are announced by the command services after they commit (one
-- `pg_notify` from a task per service, coalescing the commits made meanwhile), not by a
-- trigger inside each command's transaction. A transaction that notifies holds
-- PostgreSQL's cluster-wide notification-queue lock from before its commit record until
-- after the record is flushed, so notifying commits cannot share a WAL flush: with the
-- trigger, durable commands waited for one flush each (pgbench on the development machine:
-- ~3 800 inserts/s with a NOTIFY in the transaction against ~15 000/s without;
-- docs/performance.md, Fix 7).
DROP TRIGGER IF EXISTS events_notify ON events;
DROP FUNCTION IF EXISTS tillstream_notify_events();
