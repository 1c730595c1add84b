//! Prepaid credit: grants the operator makes, and their use by invoices. Credit is drawn only inside an
//! invoice's transaction (`apply_credit_in`), after the invoice sequence row is taken — which serialises
//! every invoice being made — and with the grants' rows locked on PostgreSQL, so two invoices closing at once
//! never spend the same cent; the table's check keeps every balance at or above zero whatever happens.

use sqlx::{Any, Row, Transaction};
use tenantry_domain::{TenantId, Timestamp};

use crate::{Backend, Result, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditGrantRow {
    pub id: String,
    pub tenant_id: TenantId,
    pub amount_cents: i64,
    pub remaining_cents: i64,
    pub reason: String,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Each invoice that drew on it: `(invoice id, cents, when)`.
    pub applied: Vec<(String, i64, Timestamp)>,
}

/// Draws up to `total_cents` from the tenant's unexpired grants, soonest expiry first (grants without an
/// expiry last, then oldest first), for `invoice_id`, inside `tx`. Returns the cents drawn.
pub(crate) async fn apply_credit_in(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    tenant: &TenantId,
    invoice_id: &str,
    total_cents: i64,
    now: Timestamp,
) -> Result<i64> {
    if total_cents <= 0 {
        return Ok(0);
    }
    let lock = match backend {
        Backend::Postgres => "FOR UPDATE",
        Backend::Sqlite => "",
    };
    let grants = sqlx::query(&format!(
        "SELECT id, remaining_cents FROM credit_grants \
         WHERE tenant_id = $1 AND remaining_cents > 0 AND (expires_at IS NULL OR expires_at > $2) \
         ORDER BY CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END, expires_at, created_at, id {lock}"
    ))
    .bind(tenant.as_str())
    .bind(now.0)
    .fetch_all(&mut **tx)
    .await?;
    let mut drawn = 0;
    for grant in grants {
        let left = total_cents - drawn;
        if left <= 0 {
            break;
        }
        let id: String = grant.try_get("id")?;
        let take = left.min(grant.try_get::<i64, _>("remaining_cents")?);
        let taken = sqlx::query(
            "UPDATE credit_grants SET remaining_cents = remaining_cents - $1 WHERE id = $2 AND remaining_cents >= $1",
        )
        .bind(take)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
        if taken.rows_affected() != 1 {
            return Err(crate::StoreError::Concurrent);
        }
        sqlx::query(
            "INSERT INTO credit_applications (grant_id, invoice_id, tenant_id, amount_cents, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(invoice_id)
        .bind(tenant.as_str())
        .bind(take)
        .bind(now.0)
        .execute(&mut **tx)
        .await?;
        drawn += take;
    }
    Ok(drawn)
}

impl Store {
    pub async fn grant_credit(&self, grant: &CreditGrantRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO credit_grants (id, tenant_id, amount_cents, remaining_cents, reason, expires_at, created_at) \
             VALUES ($1, $2, $3, $3, $4, $5, $6)",
        )
        .bind(&grant.id)
        .bind(grant.tenant_id.as_str())
        .bind(grant.amount_cents)
        .bind(&grant.reason)
        .bind(grant.expires_at.map(|t| t.0))
        .bind(grant.created_at.0)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The tenant's grants, newest first, each with the invoices that drew on it.
    pub async fn credit_grants(&self, tenant: &TenantId) -> Result<Vec<CreditGrantRow>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, amount_cents, remaining_cents, reason, expires_at, created_at FROM credit_grants \
             WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.write)
        .await?;
        let mut grants = rows
            .iter()
            .map(|r| {
                Ok(CreditGrantRow {
                    id: r.try_get("id")?,
                    tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
                    amount_cents: r.try_get("amount_cents")?,
                    remaining_cents: r.try_get("remaining_cents")?,
                    reason: r.try_get("reason")?,
                    expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(Timestamp),
                    created_at: Timestamp(r.try_get("created_at")?),
                    applied: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let uses = sqlx::query(
            "SELECT grant_id, invoice_id, amount_cents, created_at FROM credit_applications WHERE tenant_id = $1 \
             ORDER BY created_at, invoice_id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.write)
        .await?;
        for u in uses {
            let grant: String = u.try_get("grant_id")?;
            if let Some(g) = grants.iter_mut().find(|g| g.id == grant) {
                g.applied.push((
                    u.try_get("invoice_id")?,
                    u.try_get("amount_cents")?,
                    Timestamp(u.try_get("created_at")?),
                ));
            }
        }
        Ok(grants)
    }
}
