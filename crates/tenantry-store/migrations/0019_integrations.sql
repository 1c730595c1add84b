-- Integrations (API.md "Integrations"). Outbound webhooks: a tenant's endpoints, the events it was sent (the exact body
-- signed and posted), one delivery per endpoint and event, and every attempt of a delivery. An event and its
-- deliveries are written in the transaction of the change they report, so a committed change is never left
-- unreported. An endpoint stores no secret: its secret is derived from the key pepper and `secret_salt`.
CREATE TABLE webhook_endpoints (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,
    secret_salt  TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id);

CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    dedupe_key  TEXT UNIQUE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhook_events_tenant ON webhook_events (tenant_id, created_at);

-- `state`: `pending` (due at `next_attempt_at`), `delivered` or `failed` (retries ran out). A delivery is
-- leased to one node while it is attempted (`locked_until`).
CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    endpoint_id       TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    state             TEXT NOT NULL,
    attempts          BIGINT NOT NULL DEFAULT 0,
    last_status_code  BIGINT,
    last_error        TEXT,
    next_attempt_at   BIGINT,
    locked_until      BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (endpoint_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id);

CREATE TABLE webhook_attempts (
    delivery_id  TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    tenant_id    TEXT NOT NULL,
    at           BIGINT NOT NULL,
    status_code  BIGINT,
    error        TEXT,
    duration_ms  BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX webhook_attempts_tenant ON webhook_attempts (tenant_id);

-- Usage alerts: a tenant's thresholds (absent: the defaults), and each threshold fired, once per period.
CREATE TABLE alert_thresholds (
    tenant_id   TEXT PRIMARY KEY,
    thresholds  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE alert_firings (
    tenant_id     TEXT NOT NULL,
    meter         TEXT NOT NULL,
    percent       BIGINT NOT NULL,
    period_start  BIGINT NOT NULL,
    fired_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, meter, percent, period_start)
);

-- The tenant's spend cap: the most its period's overage may cost, in cents (NULL: no cap).
ALTER TABLE tenants ADD COLUMN overage_limit_cents BIGINT;

-- Prepaid credit granted by the operator, and each use of it on an invoice. `remaining_cents` never goes
-- below zero (checked here, and decremented only inside the invoice's transaction); an invoice uses a grant
-- at most once.
CREATE TABLE credit_grants (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    amount_cents     BIGINT NOT NULL,
    remaining_cents  BIGINT NOT NULL,
    reason           TEXT NOT NULL,
    expires_at       BIGINT,
    created_at       BIGINT NOT NULL,
    CHECK (amount_cents > 0 AND remaining_cents >= 0 AND remaining_cents <= amount_cents)
);
CREATE INDEX credit_grants_tenant ON credit_grants (tenant_id);

CREATE TABLE credit_applications (
    grant_id      TEXT NOT NULL,
    invoice_id    TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    amount_cents  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (grant_id, invoice_id)
);
