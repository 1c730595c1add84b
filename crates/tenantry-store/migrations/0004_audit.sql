-- The audit trail: append-only and hash-chained. Entry n carries the hash of entry n-1, and its own hash
-- covers every field and that link, so an edited, removed or reordered entry breaks the chain. The head row
-- holds the last sequence number and hash: appends serialise on it (its UPDATE takes the row lock on
-- PostgreSQL and the write lock on SQLite), and it exposes truncation of the newest entries.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    tenant_id   TEXT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, seq);

CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
