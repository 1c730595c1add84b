-- Where the audit chain starts once retention has removed its oldest entries: the sequence number and hash
-- of the last removed entry. Verification starts from here instead of the genesis hash; the `audit.pruned`
-- entry written by each pruning repeats the anchor inside the chain, so moving the anchor is detected too.
CREATE TABLE audit_anchor (
    id    BIGINT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_anchor (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
