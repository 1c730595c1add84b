-- Idempotency-Key (API.md "Integrations"): per caller (`tenant:<id>` or `operator`) and key, the request's
-- fingerprint and, once it finished, the response to replay. A row is `running` from the first request's
-- claim until its response is recorded; `locked_until` lets another node take over a claim whose node died.
-- `tenant_id` is the tenant whose content the response may hold, so that erasure removes it.
CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    tenant_id     TEXT,
    fingerprint   TEXT NOT NULL,
    state         TEXT NOT NULL,
    locked_until  BIGINT NOT NULL,
    status        BIGINT,
    headers       TEXT,
    body          BYTEA,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_tenant ON idempotency_keys (tenant_id);
