//! Who is calling, worked out once per request: the bearer credential (the operator token on `/admin/…`, an
//! API key elsewhere), else the session cookie of the pages the route belongs to (the console's on
//! `/admin/…`, the portal's elsewhere). The body guard, the idempotency layer and the extractors all ask
//! `caller`; the first to ask resolves it and leaves the answer in the request's extensions, so a key is
//! verified, touched and (when wrong) audited once per request.

use axum::http::request::Parts;
use tenantry_domain::{ErrorCode, RequestId, TenantContext};
use tenantry_service::sign_in::SessionKind;
use tenantry_service::{ServiceError, Services};

use crate::extract::bearer;
use crate::session;

#[derive(Clone, Debug)]
pub enum Caller {
    /// No bearer credential and no session cookie for the route.
    Anonymous,
    /// The operator token, or a console session (its CSRF token checked).
    Operator,
    /// A tenant, by API key or portal session (its CSRF token checked).
    Tenant(TenantContext),
    /// Credentials that do not hold (a wrong or revoked key, an ended session, a missing CSRF token): the
    /// refusal to answer with.
    Refused(ServiceError),
}

impl Caller {
    /// The tenant, or the refusal a tenant endpoint answers with.
    pub fn tenant(self) -> Result<TenantContext, ServiceError> {
        match self {
            Caller::Tenant(ctx) => Ok(ctx),
            Caller::Refused(e) => Err(e),
            Caller::Anonymous | Caller::Operator => {
                Err(ServiceError::new(ErrorCode::Unauthenticated, "missing or invalid API key"))
            }
        }
    }

    /// Nothing, or the refusal an operator endpoint answers with.
    pub fn operator(self) -> Result<(), ServiceError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Refused(e) => Err(e),
            Caller::Anonymous | Caller::Tenant(_) => Err(ServiceError::new(
                ErrorCode::Unauthenticated,
                "missing or invalid operator token (or console session)",
            )),
        }
    }
}

/// The request's caller, resolved on the first call and kept in its extensions.
pub async fn caller(s: &Services, parts: &mut Parts) -> Caller {
    if let Some(known) = parts.extensions.get::<Caller>() {
        return known.clone();
    }
    let request_id = parts.extensions.get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let console = parts.uri.path().starts_with("/admin/");
    let resolved = match (bearer(&parts.headers), console) {
        (Some(token), true) => s.authenticate_operator(Some(token)).map_or_else(Caller::Refused, |()| Caller::Operator),
        (Some(key), false) => s.identify(Some(key), request_id).await.map_or_else(Caller::Refused, Caller::Tenant),
        (None, true) => match session::from_cookie(s, &parts.headers, &parts.method, SessionKind::Operator).await {
            None => Caller::Anonymous,
            Some(Ok(_)) => Caller::Operator,
            Some(Err(e)) => Caller::Refused(e.0),
        },
        (None, false) => match session::from_cookie(s, &parts.headers, &parts.method, SessionKind::Tenant).await {
            None => Caller::Anonymous,
            Some(Ok(portal)) => {
                s.identify_session(&portal, request_id).await.map_or_else(Caller::Refused, Caller::Tenant)
            }
            Some(Err(e)) => Caller::Refused(e.0),
        },
    };
    parts.extensions.insert(resolved.clone());
    resolved
}
