-- GDPR erasures: one row per erasure, `running` from the moment the tenant's rows are gone (in the same
-- transaction) until its files are removed too, then `completed` with the deletion certificate.
CREATE TABLE erasures (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    status        TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    completed_at  BIGINT,
    certificate   TEXT NOT NULL,
    digest        TEXT NOT NULL
);
CREATE INDEX erasures_status ON erasures (status);
