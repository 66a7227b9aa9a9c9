-- Everyone's orders of one status, newest first: the admin's list filtered by status only.
-- Without it that list walked the primary key backwards and filtered, reading every newer
-- order of any other status first: the whole table for a status few orders have
-- (docs/performance.md, Fix 26). The cost is on the projector: one more index entry for
-- each order placed and for each change of status.
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, id DESC);
