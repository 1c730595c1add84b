-- Quota enforcement: per tenant, period and meter, what is settled (`used`) and what in-flight requests
-- hold (`reserved`). A reservation is admitted only by a conditional update
-- `used + reserved + n <= limit`, so concurrent requests, on one node or many, can never overshoot.
-- Level meters (documents, storage_bytes) use period_start = 0.

CREATE TABLE quota_counters (
    tenant_id     TEXT NOT NULL,
    period_start  BIGINT NOT NULL,
    meter         TEXT NOT NULL,
    used          BIGINT NOT NULL DEFAULT 0,
    reserved      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, period_start, meter)
);

-- One row per in-flight request holding quota. Settled or released in the same transaction that adjusts
-- the counters; rows of crashed requests are reclaimed after `expires_at`.
CREATE TABLE reservations (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    period_start  BIGINT NOT NULL,
    queries       BIGINT NOT NULL,
    tokens        BIGINT NOT NULL,
    documents     BIGINT NOT NULL,
    storage_bytes BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (expires_at);
