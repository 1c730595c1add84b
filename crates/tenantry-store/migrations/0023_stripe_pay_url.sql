-- Where the customer pays a Stripe invoice (its `hosted_invoice_url`, set when Tenantry finalizes it), so the
-- portal can link an open invoice to it. NULL for other objects and for invoices finalized before.
ALTER TABLE stripe_objects ADD COLUMN url TEXT;
