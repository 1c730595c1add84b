-- Data exports (GDPR Art. 15/20): the archive lives under the tenant's own directory, so erasure removes it.
CREATE TABLE exports (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    sha256      TEXT NOT NULL
);
CREATE INDEX exports_tenant ON exports (tenant_id);
