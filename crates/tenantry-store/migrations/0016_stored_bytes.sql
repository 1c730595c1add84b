-- What a document holds in storage and counts against the storage quota: the original upload and the text
-- extracted from it (a small compressed file can hold far more text than its size). Documents from before
-- this column counted their upload's size alone, and keep counting it, so their removal releases what their
-- upload took.
ALTER TABLE documents ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE documents SET stored_bytes = bytes;
