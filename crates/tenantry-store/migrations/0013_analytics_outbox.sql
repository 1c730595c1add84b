-- Ledger events waiting to be shipped to the analytics store (ClickHouse). A row is written in the same
-- transaction as its ledger row, so no event reaches the ledger without being queued for analytics, and is
-- deleted once ClickHouse has accepted it. ClickHouse deduplicates by event id, so a batch shipped twice
-- (a crash between the insert there and the delete here) counts once.
CREATE TABLE analytics_outbox (
    event_id    TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX analytics_outbox_created ON analytics_outbox (created_at);
