-- Invoice items waiting for the tenant's next invoice: today a plan change's proration (a negative credit
-- for the old plan's unused time, a charge for the new plan's remaining time). They are written in the plan
-- change's own transaction; the invoice that bills them sets `invoice_id` in its transaction, so each item
-- is billed exactly once. Amounts are signed cents.
CREATE TABLE pending_invoice_items (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    description   TEXT NOT NULL,
    amount_cents  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    invoice_id    TEXT
);
CREATE INDEX pending_invoice_items_tenant ON pending_invoice_items (tenant_id, invoice_id);
