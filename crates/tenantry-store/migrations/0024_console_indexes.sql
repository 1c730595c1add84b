-- What the console reads at scale: revenue by month (invoices by when they were made; payment reports in the
-- audit trail by action and time).
CREATE INDEX invoices_created ON invoices (created_at);
CREATE INDEX audit_log_action ON audit_log (action, at);
