//! Sign-in (`migrations/0021_sign_in.sql`): tenant passwords (hashes only), sessions of the portal and the
//! console, and one-time sign-in links. Sessions and links are found by a hash of their secret, which
//! the caller computes; the store never sees a secret.

use sqlx::Row;
use tenantry_domain::{ApiKeyId, SessionId, TenantId, Timestamp};

use crate::audit::{append_audit_in, NewAuditEntry};
use crate::{parsed, Result, Store};

/// Who a session signs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// A tenant's admin, in the portal.
    Tenant,
    /// The operator, in the console.
    Operator,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Operator => "operator",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "tenant" => Some(Self::Tenant),
            "operator" => Some(Self::Operator),
            _ => None,
        }
    }
}

/// A session to open.
#[derive(Clone, Debug)]
pub struct NewSession<'a> {
    pub id: &'a SessionId,
    /// The hash of the cookie's value (the key hasher's, as for API key secrets).
    pub token_hash: &'a str,
    pub kind: SessionKind,
    /// How it was opened: `password`, `link`, `api_key` or `operator_token`.
    pub method: &'a str,
    pub tenant_id: Option<&'a TenantId>,
    /// The API key it was opened with: the session ends when the key is revoked.
    pub key_id: Option<&'a ApiKeyId>,
    /// The operator account's email, or `token`.
    pub operator: Option<&'a str>,
    pub csrf_token: &'a str,
    pub now: Timestamp,
    pub expires_at: Timestamp,
    pub audit: Option<&'a NewAuditEntry>,
}

#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: SessionId,
    pub kind: SessionKind,
    pub method: String,
    pub tenant_id: Option<TenantId>,
    pub key_id: Option<ApiKeyId>,
    /// The scopes of `key_id`, and whether it is revoked (`None` without a key).
    pub key_scopes: Option<String>,
    pub key_revoked: bool,
    pub operator: Option<String>,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl SessionRow {
    /// Whether the session still signs its holder in at `now`.
    pub fn live_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && !self.key_revoked && now.0 < self.expires_at.0
    }
}

impl Store {
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, id, kind, method, tenant_id, key_id, operator, csrf_token, \
             created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)",
        )
        .bind(new.token_hash)
        .bind(new.id.as_str())
        .bind(new.kind.as_str())
        .bind(new.method)
        .bind(new.tenant_id.map(TenantId::as_str))
        .bind(new.key_id.map(ApiKeyId::as_str))
        .bind(new.operator)
        .bind(new.csrf_token)
        .bind(new.now.0)
        .bind(new.expires_at.0)
        .execute(&mut *tx)
        .await?;
        if let Some(entry) = new.audit {
            append_audit_in(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The session whose cookie hashes to `token_hash`, live or not.
    pub async fn session(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT s.id, s.kind, s.method, s.tenant_id, s.key_id, s.operator, s.csrf_token, s.created_at, s.expires_at, \
             s.revoked_at, k.scopes AS key_scopes, k.revoked_at AS key_revoked_at \
             FROM sessions s LEFT JOIN api_keys k ON k.id = s.key_id WHERE s.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let key_id: Option<String> = r.try_get("key_id")?;
        let key_scopes: Option<String> = r.try_get("key_scopes")?;
        // A key that is gone (erased with its tenant) ends the session as a revoked one does.
        let key_revoked =
            key_id.is_some() && (key_scopes.is_none() || r.try_get::<Option<i64>, _>("key_revoked_at")?.is_some());
        Ok(Some(SessionRow {
            id: SessionId::from_trusted(r.try_get("id")?),
            kind: parsed(&r, "kind", SessionKind::parse)?,
            method: r.try_get("method")?,
            tenant_id: r.try_get::<Option<String>, _>("tenant_id")?.map(TenantId::from_trusted),
            key_id: key_id.map(ApiKeyId::from_trusted),
            key_scopes,
            key_revoked,
            operator: r.try_get("operator")?,
            csrf_token: r.try_get("csrf_token")?,
            created_at: Timestamp(r.try_get("created_at")?),
            expires_at: Timestamp(r.try_get("expires_at")?),
            revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
        }))
    }

    /// Ends the session (signing out); whether it was live.
    pub async fn revoke_session(&self, token_hash: &str, now: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL")
            .bind(now.0)
            .bind(token_hash)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends every live session of the tenant; how many.
    pub async fn revoke_tenant_sessions(&self, tenant: &TenantId, now: Timestamp) -> Result<u64> {
        let done = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL")
            .bind(now.0)
            .bind(tenant.as_str())
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    /// The tenant's password hash, if it has set a password.
    pub async fn password_hash(&self, tenant: &TenantId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM tenant_passwords WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("password_hash")).transpose()?)
    }

    /// Sets the tenant's password hash and ends its other sessions (every one but `keep`), in one
    /// transaction with the audit entry.
    pub async fn set_password(
        &self,
        tenant: &TenantId,
        password_hash: &str,
        keep: Option<&SessionId>,
        now: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO tenant_passwords (tenant_id, password_hash, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET password_hash = excluded.password_hash, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant.as_str())
        .bind(password_hash)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL AND id <> $3")
            .bind(now.0)
            .bind(tenant.as_str())
            .bind(keep.map_or("", SessionId::as_str))
            .execute(&mut *tx)
            .await?;
        if let Some(entry) = audit {
            append_audit_in(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps a one-time sign-in link for the tenant, found later by the hash of its token.
    pub async fn create_sign_in_link(
        &self,
        tenant: &TenantId,
        token_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sign_in_links (token_hash, tenant_id, created_at, expires_at, used_at) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(token_hash)
        .bind(tenant.as_str())
        .bind(now.0)
        .bind(expires_at.0)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Uses the link: its tenant if the link is unused and unexpired at `now`; it cannot be used again. Of
    /// any number of concurrent uses, one succeeds.
    pub async fn use_sign_in_link(&self, token_hash: &str, now: Timestamp) -> Result<Option<TenantId>> {
        let row = sqlx::query(
            "UPDATE sign_in_links SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING tenant_id",
        )
        .bind(now.0)
        .bind(token_hash)
        .fetch_optional(&self.write)
        .await?;
        Ok(row.map(|r| r.try_get::<String, _>("tenant_id")).transpose()?.map(TenantId::from_trusted))
    }

    /// Removes sessions and sign-in links that ended before `before`; how many.
    pub async fn prune_sign_ins(&self, before: Timestamp) -> Result<u64> {
        let mut removed = 0;
        for sql in [
            "DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1",
            "DELETE FROM sign_in_links WHERE expires_at < $1",
        ] {
            removed += sqlx::query(sql).bind(before.0).execute(&self.write).await?.rows_affected();
        }
        Ok(removed)
    }
}
