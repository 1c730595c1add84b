//! API keys: only a keyed hash of the secret is stored.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tenantry_domain::{ApiKeyId, TenantId, Timestamp};

use crate::audit::{append_audit_in, NewAuditEntry};
use crate::tenants::lock_tenant_in;
use crate::{Result, Store, StoreError};

#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    /// Hex HMAC-SHA256 of the secret under the server's pepper.
    pub secret_hash: String,
    /// Space-separated scope names.
    pub scopes: String,
    pub now: Timestamp,
}

#[derive(Clone, Debug)]
pub struct ApiKeyRow {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub secret_hash: String,
    pub scopes: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

fn key_from_row(row: &AnyRow) -> Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: ApiKeyId::from_trusted(row.try_get("id")?),
        tenant_id: TenantId::from_trusted(row.try_get("tenant_id")?),
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        scopes: row.try_get("scopes")?,
        created_at: Timestamp(row.try_get("created_at")?),
        last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(Timestamp),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
    })
}

pub(crate) async fn insert_key(tx: &mut Transaction<'_, Any>, key: &NewApiKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, secret_hash, scopes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key.id.as_str())
    .bind(key.tenant_id.as_str())
    .bind(&key.name)
    .bind(&key.secret_hash)
    .bind(&key.scopes)
    .bind(key.now.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The scope that manages the account (keys, export, erasure); its name in `scopes`.
const ADMIN_SCOPE: &str = "admin";

const KEY_COLUMNS: &str = "id, tenant_id, name, secret_hash, scopes, created_at, last_used_at, revoked_at";

impl Store {
    pub async fn key(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.as_str()).fetch_optional(&self.read).await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql).bind(tenant.as_str()).fetch_all(&self.read).await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Creates a key and appends the audit entry recording it, in one transaction.
    pub async fn create_key(&self, key: &NewApiKey, audit: Option<&NewAuditEntry>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_key(&mut tx, key).await?;
        if let Some(entry) = audit {
            append_audit_in(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a key of `tenant` and appends the audit entry recording it, in one transaction. `true` if this
    /// call revoked it, `false` if it was already revoked (nothing is written); a key of another tenant is
    /// `NotFound`. The tenant's last unrevoked key with the `admin` scope is not revoked (`LastAdminKey`):
    /// without one, the tenant could no longer manage keys, export or erase its account. Revocations of one tenant are serialised (its row locked on PostgreSQL), so two racing ones
    /// cannot revoke its last two admin keys.
    pub async fn revoke_key(
        &self,
        tenant: &TenantId,
        id: &ApiKeyId,
        now: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        lock_tenant_in(&mut tx, self.backend, tenant).await?;
        let key = sqlx::query("SELECT scopes, revoked_at FROM api_keys WHERE id = $1 AND tenant_id = $2")
            .bind(id.as_str())
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        if key.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            return Ok(false);
        }
        let scopes: String = key.try_get("scopes")?;
        if scopes.split(' ').any(|s| s == ADMIN_SCOPE) {
            let others = sqlx::query(
                "SELECT COUNT(*) AS n FROM api_keys WHERE tenant_id = $1 AND id <> $2 AND revoked_at IS NULL \
                 AND (' ' || scopes || ' ') LIKE $3",
            )
            .bind(tenant.as_str())
            .bind(id.as_str())
            .bind(format!("% {ADMIN_SCOPE} %"))
            .fetch_one(&mut *tx)
            .await?
            .try_get::<i64, _>("n")?;
            if others == 0 {
                return Err(StoreError::LastAdminKey);
            }
        }
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
            .bind(now.0)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if let Some(entry) = audit {
            append_audit_in(&mut tx, entry).await?;
        }
        tx.commit().await?;
        self.tenants_changed();
        Ok(true)
    }

    /// Records that a key was used. Callers throttle this; it is bookkeeping, not a security control.
    pub async fn touch_key(&self, id: &ApiKeyId, now: Timestamp) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now.0)
            .bind(id.as_str())
            .execute(&self.write)
            .await?;
        self.ownership.key_touched(id, now);
        Ok(())
    }
}
