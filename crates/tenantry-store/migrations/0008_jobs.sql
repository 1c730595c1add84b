-- The durable job queue: typed jobs (kind + JSON payload), scheduled by `run_at` on the service clock,
-- claimed under a lease, retried with backoff and parked after `max_attempts`. An idempotency key makes
-- enqueueing the same job twice a no-op (NULL keys never collide).
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    tenant_id        TEXT,
    payload          TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    locked_until     BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (state, run_at);
CREATE INDEX jobs_tenant ON jobs (tenant_id);

-- Every lifecycle transition and activation milestone, written in the transaction that made it.
CREATE TABLE tenant_events (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    event       TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX tenant_events_tenant ON tenant_events (tenant_id, created_at);
-- An activation milestone (`first_document`, …) happens once per tenant.
CREATE UNIQUE INDEX tenant_events_milestone ON tenant_events (tenant_id, event) WHERE from_state IS NULL;
