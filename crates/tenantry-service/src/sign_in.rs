//! Sign-in for the portal and the console (docs/SECURITY.md "Sign-in"). A tenant's admin signs in with the
//! account's email and a password, a one-time link sent through the notification outbox, or an API key with
//! the `admin` scope; the operator with the operator token. Each opens a server-side session that expires
//! after [`SESSION_HOURS`] and ends at sign-out, at a password change (the others), with the API key it was
//! opened with, and with the tenant's erasure. The browser holds only the session's random token (in an
//! HttpOnly cookie) and a CSRF token for the session; the store holds only their hashes.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults, RFC 9106's second recommendation), off
//! the async runtime. Failed attempts are limited per email (and for the operator token) on each node: past
//! [`ATTEMPTS`] failures in [`ATTEMPT_WINDOW`], 429 until the window has passed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_lot::Mutex;
use rand::RngCore;
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tenantry_domain::context::Scopes;
use tenantry_domain::{Caller, ErrorCode, RequestId, SessionId, TenantContext, TenantState};
use tenantry_store::{NewSession, TenantRow};
pub use tenantry_store::{SessionKind, SessionRow};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::notify::Template;
use crate::{ServiceError, ServiceResult, Services};

/// How long a session signs in, from when it was opened.
pub const SESSION_HOURS: i64 = 12;
/// How long a sign-in link works.
pub const LINK_MINUTES: u32 = 15;
/// Failed sign-ins (or links asked for) per email within [`ATTEMPT_WINDOW`] before 429.
pub const ATTEMPTS: u32 = 5;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Password length, in characters.
pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 256;

/// How a tenant's admin proves who they are.
pub enum TenantCredentials {
    Password {
        email: String,
        password: String,
    },
    /// The token of a sign-in link.
    Link(String),
    /// An API key with the `admin` scope.
    ApiKey(String),
}

/// A session as its holder sees it (`GET /v1/session`, `GET /admin/session`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub session_id: String,
    /// `tenant` or `operator`.
    pub kind: String,
    /// The tenant signed in (tenant sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// How it was opened: `password`, `link`, `api_key` or `operator_token`.
    pub method: String,
    /// What the session may do (`query`, `ingest`, `admin`): all three unless opened with a narrower key.
    pub scopes: Vec<String>,
    /// Sent back as `X-CSRF-Token` on every request that changes something.
    pub csrf_token: String,
    pub expires_at: String,
}

/// A session just opened: its view and the token for the cookie (shown once, never stored).
pub struct OpenedSession {
    pub view: SessionView,
    pub token: String,
}

/// Failed attempts per email (or per operator), each node on its own. Bounded: entries past their window are
/// dropped whenever the map grows past [`FailedAttempts::CAP`].
#[derive(Default)]
pub(crate) struct FailedAttempts(Mutex<HashMap<String, (u32, Instant)>>);

impl FailedAttempts {
    const CAP: usize = 100_000;

    /// `Err(seconds to wait)` when `who` has used up its attempts.
    fn check(&self, who: &str) -> Result<(), u64> {
        let map = self.0.lock();
        match map.get(who) {
            Some(&(n, since)) if n >= ATTEMPTS && since.elapsed() < ATTEMPT_WINDOW => {
                Err(ATTEMPT_WINDOW.saturating_sub(since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    fn fail(&self, who: &str) {
        let mut map = self.0.lock();
        if map.len() >= Self::CAP {
            map.retain(|_, (_, since)| since.elapsed() < ATTEMPT_WINDOW);
        }
        let entry = map.entry(who.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= ATTEMPT_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    fn succeed(&self, who: &str) {
        self.0.lock().remove(who);
    }
}

fn too_many(retry_after: u64) -> ServiceError {
    ServiceError::new(ErrorCode::RateLimited, "too many sign-in attempts; wait and try again").retry_after(retry_after)
}

fn wrong_password() -> ServiceError {
    ServiceError::new(ErrorCode::Unauthenticated, "the email or the password is wrong")
}

fn session_ended() -> ServiceError {
    ServiceError::new(ErrorCode::Unauthenticated, "not signed in, or the session has ended; sign in again")
}

/// A fresh random token: 256 bits, URL-safe.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The Argon2id PHC string of `password`.
fn hash_password(password: &str) -> ServiceResult<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC string `stored`; with no stored hash, the same work is done against a
/// hash of nothing, so that an unknown email takes as long as a wrong password.
fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let decoy = DECOY.get_or_init(|| hash_password("").unwrap_or_default());
    let Ok(parsed) = PasswordHash::new(stored.unwrap_or(decoy)) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && stored.is_some()
}

fn scope_names(scopes: Scopes) -> Vec<String> {
    let granted = [scopes.query, scopes.ingest, scopes.admin];
    Scopes::NAMES.iter().zip(granted).filter(|(_, on)| *on).map(|(n, _)| (*n).to_owned()).collect()
}

impl Services {
    /// Signs a tenant's admin in: a new session of the tenant, in any state but erased.
    pub async fn sign_in_tenant(
        &self,
        credentials: TenantCredentials,
        request_id: RequestId,
    ) -> ServiceResult<OpenedSession> {
        let (tenant, key, scopes, method) = match credentials {
            TenantCredentials::Password { email, password } => {
                let email = email.trim().to_lowercase();
                self.inner.sign_in_failures.check(&email).map_err(too_many)?;
                let tenant = self.store().tenant_by_email(&email).await?.filter(|t| t.state != TenantState::Erased);
                let stored = match &tenant {
                    Some(t) => self.store().password_hash(&t.id).await?,
                    None => None,
                };
                let ok = tokio::task::spawn_blocking(move || verify_password(&password, stored.as_deref()))
                    .await
                    .map_err(|e| ServiceError::internal(format!("password check: {e}")))?;
                let Some(tenant) = tenant.filter(|_| ok) else {
                    self.inner.sign_in_failures.fail(&email);
                    return Err(wrong_password());
                };
                self.inner.sign_in_failures.succeed(&email);
                (tenant, None, Scopes::ALL, "password")
            }
            TenantCredentials::Link(token) => {
                let tenant_id =
                    self.store().use_sign_in_link(&self.keys().hash(&token), self.clock().now()).await?.ok_or_else(
                        || {
                            ServiceError::new(
                                ErrorCode::Unauthenticated,
                                "this sign-in link is not valid: it was used already, has expired, or was never sent",
                            )
                        },
                    )?;
                let tenant = self.live_tenant(&tenant_id).await?;
                (tenant, None, Scopes::ALL, "link")
            }
            TenantCredentials::ApiKey(key) => {
                let ctx = self.identify(Some(&key), request_id.clone()).await?;
                if !ctx.scopes.admin {
                    return Err(ServiceError::new(
                        ErrorCode::Forbidden,
                        "this API key does not have the `admin` scope, which the portal needs: sign in with the \
                         account's email, or with a key created with the `admin` scope",
                    ));
                }
                let Caller::Key(key_id) = ctx.caller else {
                    return Err(ServiceError::internal("an API key identified as a session"));
                };
                let tenant = self.live_tenant(&ctx.tenant_id).await?;
                (tenant, Some(key_id), ctx.scopes, "api_key")
            }
        };
        let id = SessionId::generate();
        let audit = self.audit_entry(
            Actor::System,
            Some(&tenant.id),
            "session.opened",
            id.as_str(),
            json!({"method": method, "key_id": key.as_ref().map(|k| k.as_str())}),
            request_id.as_str(),
        );
        let opened = self.open_session(SessionKind::Tenant, method, Some(&tenant), key.as_ref(), None, &id, &audit);
        let opened = opened.await?;
        Ok(OpenedSession {
            view: SessionView {
                tenant_id: Some(tenant.id.as_str().to_owned()),
                organization: Some(tenant.organization.clone()),
                scopes: scope_names(scopes),
                ..opened.view
            },
            token: opened.token,
        })
    }

    /// Signs the operator in with the operator token.
    pub async fn sign_in_operator(&self, token: &str, request_id: RequestId) -> ServiceResult<OpenedSession> {
        const WHO: &str = "operator";
        self.inner.sign_in_failures.check(WHO).map_err(too_many)?;
        if let Err(e) = self.authenticate_operator(Some(token)) {
            self.inner.sign_in_failures.fail(WHO);
            return Err(e);
        }
        self.inner.sign_in_failures.succeed(WHO);
        let id = SessionId::generate();
        let audit = self.audit_entry(
            Actor::Operator,
            None,
            "session.opened",
            id.as_str(),
            json!({"method": "operator_token"}),
            request_id.as_str(),
        );
        self.open_session(SessionKind::Operator, "operator_token", None, None, Some("token"), &id, &audit).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_session(
        &self,
        kind: SessionKind,
        method: &str,
        tenant: Option<&TenantRow>,
        key: Option<&tenantry_domain::ApiKeyId>,
        operator: Option<&str>,
        id: &SessionId,
        audit: &tenantry_store::NewAuditEntry,
    ) -> ServiceResult<OpenedSession> {
        let token = random_token();
        let csrf_token = random_token();
        let now = self.clock().now();
        let expires_at = now.plus_seconds(SESSION_HOURS * 3600);
        self.store()
            .create_session(&NewSession {
                id,
                token_hash: &self.keys().hash(&token),
                kind,
                method,
                tenant_id: tenant.map(|t| &t.id),
                key_id: key,
                operator,
                csrf_token: &csrf_token,
                now,
                expires_at,
                audit: Some(audit),
            })
            .await?;
        tracing::info!(session_id = %id, kind = kind.as_str(), tenant_id = ?tenant.map(|t| t.id.as_str()), "signed in");
        let view = SessionView {
            session_id: id.as_str().to_owned(),
            kind: kind.as_str().to_owned(),
            tenant_id: None,
            organization: None,
            method: method.to_owned(),
            scopes: Vec::new(),
            csrf_token,
            expires_at: expires_at.to_rfc3339(),
        };
        Ok(OpenedSession { view, token })
    }

    async fn live_tenant(&self, id: &tenantry_domain::TenantId) -> ServiceResult<TenantRow> {
        self.store()
            .tenant(id)
            .await?
            .filter(|t| t.state != TenantState::Erased)
            .ok_or_else(|| ServiceError::new(ErrorCode::Unauthenticated, "this account no longer exists"))
    }

    /// The live session of `kind` whose cookie holds `token`, else 401.
    pub async fn session(&self, token: &str, kind: SessionKind) -> ServiceResult<SessionRow> {
        let row = self.store().session(&self.keys().hash(token)).await?;
        row.filter(|s| s.kind == kind && s.live_at(self.clock().now())).ok_or_else(session_ended)
    }

    /// The tenant context of a portal session (its scopes: the key's it was opened with, else all).
    pub async fn identify_session(&self, session: &SessionRow, request_id: RequestId) -> ServiceResult<TenantContext> {
        let tenant_id = session.tenant_id.as_ref().ok_or_else(session_ended)?;
        let tenant = self.live_tenant(tenant_id).await.map_err(|_| session_ended())?;
        tracing::Span::current().record("tenant_id", tenant.id.as_str());
        let scopes = match &session.key_scopes {
            Some(names) => Scopes::parse_list(names.split_whitespace()).unwrap_or_default(),
            None => Scopes::ALL,
        };
        self.context_for(&tenant, Caller::Session(session.id.clone()), scopes, request_id)
    }

    /// What a signed-in holder sees of its session.
    pub async fn session_view(&self, session: &SessionRow) -> ServiceResult<SessionView> {
        let tenant = match &session.tenant_id {
            Some(id) => Some(self.live_tenant(id).await.map_err(|_| session_ended())?),
            None => None,
        };
        let scopes = match (&session.key_scopes, session.kind) {
            (Some(names), _) => Scopes::parse_list(names.split_whitespace()).unwrap_or_default(),
            (None, SessionKind::Operator) => Scopes::default(),
            (None, SessionKind::Tenant) => Scopes::ALL,
        };
        Ok(SessionView {
            session_id: session.id.as_str().to_owned(),
            kind: session.kind.as_str().to_owned(),
            tenant_id: tenant.as_ref().map(|t| t.id.as_str().to_owned()),
            organization: tenant.map(|t| t.organization),
            method: session.method.clone(),
            scopes: scope_names(scopes),
            csrf_token: session.csrf_token.clone(),
            expires_at: session.expires_at.to_rfc3339(),
        })
    }

    /// Whether `presented` is the session's CSRF token (compared in constant time).
    pub fn csrf_matches(session: &SessionRow, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(session.csrf_token.as_bytes())))
    }

    /// Ends the session whose cookie holds `token` (signing out); harmless if it had ended.
    pub async fn sign_out(&self, token: &str) -> ServiceResult<()> {
        self.store().revoke_session(&self.keys().hash(token), self.clock().now()).await?;
        Ok(())
    }

    /// Sends a one-time sign-in link to the account with this email, through the notification outbox. Says
    /// nothing about whether the account exists (the caller always answers the same); asking is limited like
    /// failed sign-ins.
    pub async fn send_sign_in_link(&self, email: &str) -> ServiceResult<()> {
        let email = email.trim().to_lowercase();
        self.inner.sign_in_failures.check(&email).map_err(too_many)?;
        self.inner.sign_in_failures.fail(&email);
        let Some(tenant) = self.store().tenant_by_email(&email).await?.filter(|t| t.state != TenantState::Erased)
        else {
            return Ok(());
        };
        let token = random_token();
        let now = self.clock().now();
        let expires_at = now.plus_seconds(i64::from(LINK_MINUTES) * 60);
        let token_hash = self.keys().hash(&token);
        self.store().create_sign_in_link(&tenant.id, &token_hash, now, expires_at).await?;
        let url = format!("{}/portal?sign_in={token}", self.public_url());
        // Each link is its own message: the dedupe key is the link's (hashed) token.
        self.notify(&tenant, Template::SignInLink { url, minutes: LINK_MINUTES }, &token_hash).await
    }

    /// Sets the admin's password; every other session of the tenant ends.
    pub async fn set_password(&self, ctx: &TenantContext, password: &str) -> ServiceResult<()> {
        let length = password.chars().count();
        if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&length) {
            return Err(ServiceError::validation(format!(
                "a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters; this one has {length}"
            )));
        }
        if password.chars().any(char::is_control) {
            return Err(ServiceError::validation("a password may not contain control characters"));
        }
        let owned = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&owned))
            .await
            .map_err(|e| ServiceError::internal(format!("hashing a password: {e}")))??;
        let keep = match &ctx.caller {
            Caller::Session(id) => Some(id),
            Caller::Key(_) => None,
        };
        let audit = self.audit_entry(
            Actor::Tenant(ctx),
            Some(&ctx.tenant_id),
            "password.set",
            ctx.tenant_id.as_str(),
            json!({}),
            ctx.request_id.as_str(),
        );
        self.store().set_password(&ctx.tenant_id, &hash, keep, self.clock().now(), Some(&audit)).await?;
        Ok(())
    }

    /// Whether the tenant's admin has set a password.
    pub async fn has_password(&self, ctx: &TenantContext) -> ServiceResult<bool> {
        Ok(self.store().password_hash(&ctx.tenant_id).await?.is_some())
    }

    /// Removes sessions and sign-in links that ended more than a day ago (the retention job).
    pub(crate) async fn prune_sign_ins(&self) -> ServiceResult<u64> {
        let before = self.clock().now().plus_seconds(-86_400);
        Ok(self.store().prune_sign_ins(before).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", Some(&hash)));
        assert!(!verify_password("correct horse batterY", Some(&hash)));
        assert!(!verify_password("", None), "no stored hash never verifies, even for the decoy's password");
        assert!(!verify_password("anything", Some("not a phc string")));
    }

    #[test]
    fn failures_past_the_limit_wait_and_success_forgets_them() {
        let attempts = FailedAttempts::default();
        for _ in 0..ATTEMPTS {
            assert_eq!(attempts.check("a@example.com"), Ok(()));
            attempts.fail("a@example.com");
        }
        let wait = attempts.check("a@example.com").expect_err("limited");
        assert!(wait > 0 && wait <= ATTEMPT_WINDOW.as_secs(), "{wait}");
        assert_eq!(attempts.check("b@example.com"), Ok(()), "others are not limited");
        attempts.succeed("a@example.com");
        assert_eq!(attempts.check("a@example.com"), Ok(()));
    }
}
