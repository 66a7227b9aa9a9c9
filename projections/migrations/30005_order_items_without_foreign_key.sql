-- The read models are derived from the log, and the projector writes an order's lines in
-- the same transaction as the order (both when applying batches and event by event), so
-- `order_items.order_id` needs no foreign key to stay right. The key cost a lookup and a
-- row lock on `orders` for every line inserted: a third of the projector's Postgres time
-- while orders were placed flat out (docs/performance.md, Fix 19). Nothing deletes orders;
-- a rebuild replaces every table at once. Dropping the key locks `order_items` and `orders`
-- for a moment (it waits for the reads in flight, and the reads after it wait for it).
ALTER TABLE order_items DROP CONSTRAINT IF EXISTS order_items_order_id_fkey;
