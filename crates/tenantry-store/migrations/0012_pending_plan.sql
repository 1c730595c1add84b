-- A plan change that waits for background work (building the vector index a plan with vector retrieval
-- needs). While it is set the tenant keeps its current plan and another plan change is refused.
ALTER TABLE tenants ADD COLUMN pending_plan TEXT;
