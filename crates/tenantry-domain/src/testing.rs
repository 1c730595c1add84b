//! Fixtures for other crates' tests: a context built from the built-in catalogue.
#![doc(hidden)]

use std::sync::Arc;

use crate::config::Config;
use crate::context::{Caller, Scopes, TenantContext};
use crate::ids::{ApiKeyId, RequestId, TenantId};
use crate::lifecycle::TenantState;
use crate::quota::{BillingPeriod, PeriodKind};
use crate::Timestamp;

/// A trial tenant's context with the built-in plan and model.
pub fn context(tenant: TenantId) -> TenantContext {
    #[allow(clippy::expect_used)]
    let catalog = Config::builtin().catalog().expect("built-in catalogue is valid");
    #[allow(clippy::expect_used)]
    let plan = catalog.plan("trial").expect("trial plan").clone();
    #[allow(clippy::expect_used)]
    let model = catalog.model(&plan.default_model).expect("default model").clone();
    TenantContext {
        tenant_id: tenant,
        organization: "Test Org".into(),
        state: TenantState::Active,
        retrieval_mode: plan.default_retrieval_mode,
        plan,
        model,
        system_prompt: Arc::from(""),
        config_version: 1,
        index_vectors: true,
        period: BillingPeriod::containing(Timestamp(0), Timestamp(0), PeriodKind::Month),
        overage_limit_cents: None,
        caller: Caller::Key(ApiKeyId::generate()),
        scopes: Scopes::ALL,
        request_id: RequestId::generate(),
        operation_id: RequestId::generate(),
    }
}
