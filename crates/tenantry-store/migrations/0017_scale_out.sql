-- Scale-out: the database holds everything a node needs to serve any tenant; a node's search indexes are
-- caches derived from these rows.
--
-- Every change to a tenant's documents gets the next number of the tenant's `document_seq`, taken in the
-- change's own transaction with the tenant's row locked, so the changes of one tenant commit in the order
-- of their numbers. A node's index records the last number it applied and catches up from here.
ALTER TABLE tenants ADD COLUMN document_seq BIGINT NOT NULL DEFAULT 0;
CREATE TABLE document_changes (
    tenant_id    TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    document_id  TEXT NOT NULL,
    change       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
INSERT INTO document_changes (tenant_id, seq, document_id, change)
SELECT tenant_id, ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY created_at, id), id, 'put' FROM documents;
UPDATE tenants SET document_seq = (SELECT COUNT(*) FROM documents d WHERE d.tenant_id = tenants.id);

-- Chunk embeddings, stored so that no other node embeds again: little-endian f32s, written by the embedder
-- the document names ('' when the document has none).
ALTER TABLE documents ADD COLUMN embedder TEXT NOT NULL DEFAULT '';
ALTER TABLE chunks ADD COLUMN embedding BYTEA;

-- Files (uploaded originals, export archives) in parts of at most 1 MiB, so neither backend holds one
-- value of a whole large file and a download can stream.
CREATE TABLE file_parts (
    file_id    TEXT NOT NULL,
    part       BIGINT NOT NULL,
    tenant_id  TEXT NOT NULL,
    bytes      BYTEA NOT NULL,
    PRIMARY KEY (file_id, part)
);
CREATE INDEX file_parts_tenant ON file_parts (tenant_id);

-- What every node must agree on (a fingerprint of the key pepper), recorded by the first node to start.
CREATE TABLE cluster_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- The shared rate limiter (`gateway.rate_limiter = "shared"`): each tenant's GCRA theoretical arrival time,
-- in nanoseconds of the service clock.
CREATE TABLE rate_limits (
    tenant_id  TEXT PRIMARY KEY,
    tat_ns     BIGINT NOT NULL
);
