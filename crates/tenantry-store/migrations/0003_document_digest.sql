-- Duplicate uploads are found by content digest without reading the tenant's whole document list.
CREATE INDEX documents_tenant_digest ON documents (tenant_id, content_sha256);
