-- Commits of new events are announced by the command services after they commit (one
-- `pg_notify` from a task per service, coalescing the commits made meanwhile), not by a
-- trigger inside each command's transaction. A transaction that notifies holds
-- PostgreSQL's cluster-wide notification-queue lock from before its commit record until
-- after the record is flushed, so notifying commits cannot share a WAL flush: the trigger
-- capped durable commands at one flush each (≈1 600/s here, against ≈8 000/s for the same
-- insert without it; docs/performance.md, Fix 7).
DROP TRIGGER IF EXISTS events_notify ON events;
DROP FUNCTION IF EXISTS tillstream_notify_events();
