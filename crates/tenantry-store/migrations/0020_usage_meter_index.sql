-- A gauge's level (documents, storage bytes) sums one meter's events of one tenant since the start; with only
-- (tenant_id, created_at) that read every event of the tenant (a year of hourly questions: 26,000 rows per
-- quota or usage page). This index reaches the meter's few rows directly.
CREATE INDEX usage_events_tenant_meter_time ON usage_events (tenant_id, meter, created_at);
