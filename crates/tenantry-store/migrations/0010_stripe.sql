-- Stripe: every webhook event id, stored before it is handled (a redelivery of a processed event is a
-- no-op; one that was stored but not processed, because the process died, is handled again), and the
-- Stripe objects Tenantry created or was told about, linked to their tenant and invoice, with the creation
-- time of the newest event applied to each (an older event never overwrites newer state).
CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    created      BIGINT NOT NULL,
    tenant_id    TEXT,
    outcome      TEXT,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT
);

CREATE TABLE stripe_objects (
    object_id           TEXT PRIMARY KEY,
    kind                TEXT NOT NULL,
    tenant_id           TEXT NOT NULL,
    invoice_id          TEXT,
    last_event_created  BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL
);
CREATE INDEX stripe_objects_tenant ON stripe_objects (tenant_id, kind);
CREATE INDEX stripe_objects_invoice ON stripe_objects (invoice_id);
