-- The notification outbox: a message is stored (in the transaction that made it necessary, with a job that
-- delivers it) before anything is sent, so a crash loses none; `dedupe_key` makes asking twice a no-op.
CREATE TABLE notifications (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    template      TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    subject       TEXT NOT NULL,
    body          TEXT NOT NULL,
    dedupe_key    TEXT UNIQUE,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT
);
CREATE INDEX notifications_tenant ON notifications (tenant_id, created_at);

-- Win-back offers to cancelled tenants, per cancellation: sent, and accepted.
CREATE TABLE win_back_offers (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    cancelled_at      BIGINT NOT NULL,
    sequence          BIGINT NOT NULL,
    discount_percent  BIGINT NOT NULL,
    sent_at           BIGINT NOT NULL,
    accepted_at       BIGINT
);
CREATE UNIQUE INDEX win_back_offers_sequence ON win_back_offers (tenant_id, cancelled_at, sequence);
