//! Idempotency keys (API.md "Integrations"): the first request with a key claims it, its response is kept
//! for replay, and every later request with the key is told what to do by [`Store::claim_idempotency_key`].
//! The claim and its outcome are rows of the database, so a replay works after a restart and through any
//! node.

use sqlx::Row;
use tenantry_domain::{TenantId, Timestamp};

use crate::{Result, Store, StoreError};

/// A request asking to run under an idempotency key.
#[derive(Clone, Copy, Debug)]
pub struct IdempotencyRequest<'a> {
    /// Whose key it is: `tenant:<id>` or `operator`. Keys of different callers never meet.
    pub scope: &'a str,
    pub key: &'a str,
    /// The tenant whose content the response may hold (erasure removes the row with the tenant's content).
    pub tenant: Option<&'a TenantId>,
    /// A digest of the method, path and body: a key reused for another request is refused.
    pub fingerprint: &'a str,
    pub now: Timestamp,
    /// How long the claim holds while the request runs; past it, a retry may run the request (its node died).
    pub lease_secs: i64,
    /// How long the key is remembered.
    pub ttl_secs: i64,
}

/// A response as kept for replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a request under an idempotency key should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: run it, then [`Store::finish_idempotency_key`] or
    /// [`Store::release_idempotency_key`].
    Run,
    /// The key's first request finished: answer with its response.
    Replay(StoredResponse),
    /// The key's first request is still running.
    Running,
    /// The key was used for another method, path or body.
    Reused,
}

impl Store {
    /// Claims `request.key` for this request, or says why not. Exactly one of any number of concurrent
    /// claims of a new key (on any node) gets [`Claim::Run`]. A key past its time, or claimed by a request
    /// whose lease ran out (its node died before it answered) and sent again unchanged, is taken over.
    pub async fn claim_idempotency_key(&self, request: &IdempotencyRequest<'_>) -> Result<Claim> {
        let IdempotencyRequest { scope, key, tenant, fingerprint, now, lease_secs, ttl_secs } = *request;
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, tenant_id, fingerprint, state, locked_until, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, 'running', $5, $6, $7) \
             ON CONFLICT (scope, key) DO UPDATE SET tenant_id = excluded.tenant_id, \
             fingerprint = excluded.fingerprint, state = 'running', locked_until = excluded.locked_until, \
             status = NULL, headers = NULL, body = NULL, created_at = excluded.created_at, \
             expires_at = excluded.expires_at \
             WHERE idempotency_keys.expires_at <= $6 \
             OR (idempotency_keys.state = 'running' AND idempotency_keys.locked_until <= $6 \
             AND idempotency_keys.fingerprint = excluded.fingerprint)",
        )
        .bind(scope)
        .bind(key)
        .bind(tenant.map(TenantId::as_str))
        .bind(fingerprint)
        .bind(now.plus_seconds(lease_secs).0)
        .bind(now.0)
        .bind(now.plus_seconds(ttl_secs).0)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(Claim::Run);
        }
        let row = sqlx::query(
            "SELECT fingerprint, state, status, headers, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        // Gone since the claim was refused: its request was released (PostgreSQL reads what committed since);
        // the retry after `Running`'s wait claims it.
        let Some(row) = row else { return Ok(Claim::Running) };
        if row.try_get::<String, _>("fingerprint")? != fingerprint {
            return Ok(Claim::Reused);
        }
        if row.try_get::<String, _>("state")? == "running" {
            return Ok(Claim::Running);
        }
        let status = row.try_get::<Option<i64>, _>("status")?.unwrap_or_default();
        let headers = row.try_get::<Option<String>, _>("headers")?.unwrap_or_default();
        Ok(Claim::Replay(StoredResponse {
            status: u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("response status {status}")))?,
            headers: serde_json::from_str(&headers).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            body: row.try_get::<Option<Vec<u8>>, _>("body")?.unwrap_or_default(),
        }))
    }

    /// Records the response of the request that claimed the key, for replay.
    pub async fn finish_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
    ) -> Result<()> {
        let headers = serde_json::to_string(&response.headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = $1, headers = $2, body = $3 \
             WHERE scope = $4 AND key = $5 AND fingerprint = $6 AND state = 'running'",
        )
        .bind(i64::from(response.status))
        .bind(headers)
        .bind(response.body.clone())
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Gives the key up: the request did nothing worth replaying (it was refused before running, or failed),
    /// so a retry runs it afresh.
    pub async fn release_idempotency_key(&self, scope: &str, key: &str, fingerprint: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND fingerprint = $3 AND state = 'running'",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Forgets keys past their time; how many.
    pub async fn expire_idempotency_keys(&self, now: Timestamp) -> Result<u64> {
        let deleted =
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1").bind(now.0).execute(&self.write).await?;
        Ok(deleted.rows_affected())
    }
}
