//! Idempotency keys (API.md "Integrations"): who a key belongs to, and the claim, record and release of a
//! key around the request it names. The HTTP layer reads the key and the request; the store keeps both.

use tenantry_domain::TenantId;
pub use tenantry_store::{Claim, StoredResponse};

use crate::{ServiceResult, Services};

/// How long a key's response is kept.
pub const KEY_TTL_SECS: i64 = 24 * 60 * 60;
/// How long a claimed key waits for its request before a retry may run it again (its node died).
pub const CLAIM_LEASE_SECS: i64 = 10 * 60;

/// The caller a key belongs to: keys are scoped per caller, so no caller can replay another's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOwner {
    Tenant(TenantId),
    Operator,
}

impl KeyOwner {
    fn scope(&self) -> String {
        match self {
            Self::Tenant(id) => format!("tenant:{}", id.as_str()),
            Self::Operator => "operator".to_owned(),
        }
    }
}

/// One request under an idempotency key.
#[derive(Clone, Debug)]
pub struct KeyedRequest {
    pub owner: KeyOwner,
    pub key: String,
    /// A digest of the method, target and body.
    pub fingerprint: String,
    /// The tenant whose content the response may hold: the caller, or the tenant an operator request names.
    pub about: Option<TenantId>,
}

impl Services {
    pub async fn claim_idempotency_key(&self, request: &KeyedRequest) -> ServiceResult<Claim> {
        let scope = request.owner.scope();
        let claim = tenantry_store::IdempotencyRequest {
            scope: &scope,
            key: &request.key,
            tenant: request.about.as_ref(),
            fingerprint: &request.fingerprint,
            now: self.clock().now(),
            lease_secs: CLAIM_LEASE_SECS,
            ttl_secs: KEY_TTL_SECS,
        };
        Ok(self.store().claim_idempotency_key(&claim).await?)
    }

    pub async fn record_idempotent_response(
        &self,
        request: &KeyedRequest,
        response: &StoredResponse,
    ) -> ServiceResult<()> {
        let scope = request.owner.scope();
        Ok(self.store().finish_idempotency_key(&scope, &request.key, &request.fingerprint, response).await?)
    }

    pub async fn release_idempotency_key(&self, request: &KeyedRequest) -> ServiceResult<()> {
        let scope = request.owner.scope();
        Ok(self.store().release_idempotency_key(&scope, &request.key, &request.fingerprint).await?)
    }
}
