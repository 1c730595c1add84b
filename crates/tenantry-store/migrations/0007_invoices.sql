-- Invoices rated from the usage ledger. Numbers come from one sequence row, taken in the invoice's own
-- transaction, so they are gapless and unique. A period is closed at most once per tenant (the unique index
-- makes a repeated close a no-op).
CREATE TABLE invoices (
    id              TEXT PRIMARY KEY,
    number          BIGINT NOT NULL UNIQUE,
    tenant_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    period_start    BIGINT NOT NULL,
    period_end      BIGINT NOT NULL,
    status          TEXT NOT NULL,
    currency        TEXT NOT NULL,
    subtotal_cents  BIGINT NOT NULL,
    total_cents     BIGINT NOT NULL,
    lines           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX invoices_period ON invoices (tenant_id, kind, period_start);

CREATE TABLE invoice_sequence (
    id    BIGINT PRIMARY KEY,
    last  BIGINT NOT NULL
);
INSERT INTO invoice_sequence (id, last) VALUES (1, 0);
