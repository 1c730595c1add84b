-- When the tenant's trial ends, fixed at signup from the plan it signed up on, so a plan change during the
-- trial neither ends nor lengthens it. NULL for tenants without a trial, and for tenants from before this
-- column (their trial's end is computed from their plan, as it was then).
ALTER TABLE tenants ADD COLUMN trial_ends_at BIGINT;
