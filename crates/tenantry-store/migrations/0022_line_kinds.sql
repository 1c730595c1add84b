-- What a pending invoice item bills (`base`, `proration`, `credit`, `discount`; see tenantry-billing's
-- `LineKind`), so the invoice line made from it keeps it for revenue reporting. NULL on older items.
ALTER TABLE pending_invoice_items ADD COLUMN kind TEXT;
