-- Tenantry's control plane, ledger and documents. Times are Unix milliseconds. One file serves SQLite and
-- PostgreSQL: it uses only what both dialects share (BIGINT, TEXT, ON DELETE CASCADE).

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,
    organization    TEXT NOT NULL,
    plan            TEXT NOT NULL,
    state           TEXT NOT NULL,
    state_version   BIGINT NOT NULL DEFAULT 0,
    model           TEXT NOT NULL,
    retrieval_mode  TEXT NOT NULL,
    system_prompt   TEXT NOT NULL,
    config_version  BIGINT NOT NULL DEFAULT 1,
    billing_anchor  BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE documents (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    title           TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    bytes           BIGINT NOT NULL,
    chunks          BIGINT NOT NULL,
    content_sha256  TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX documents_tenant ON documents (tenant_id, created_at);

CREATE TABLE chunks (
    id           TEXT PRIMARY KEY,
    document_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    tenant_id    TEXT NOT NULL,
    ordinal      BIGINT NOT NULL,
    heading      TEXT NOT NULL,
    page         BIGINT,
    text         TEXT NOT NULL
);
CREATE INDEX chunks_document ON chunks (document_id, ordinal);

-- The usage ledger: one row per billable event, the single source of truth for quotas, usage and
-- invoices. `event_id` is the request's internal id plus the meter, so a settlement applied twice
-- inserts nothing the second time.
CREATE TABLE usage_events (
    event_id     TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    meter        TEXT NOT NULL,
    model        TEXT NOT NULL,
    quantity     BIGINT NOT NULL,
    cost_micros  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX usage_events_tenant_time ON usage_events (tenant_id, created_at);
