-- What a cancelled, paid order owes its customer.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS refund_due_cents bigint NOT NULL DEFAULT 0;
