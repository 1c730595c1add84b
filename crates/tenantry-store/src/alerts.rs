//! Usage alerts: each tenant's thresholds, and the record that a threshold fired in a period, which makes it
//! fire once however many requests (on however many nodes) cross it together.

use sqlx::Row;
use tenantry_domain::{TenantId, Timestamp};

use crate::webhooks::{emit_in, NewEvent};
use crate::{Result, Store};

impl Store {
    /// The tenant's thresholds as stored (JSON), `None` when it keeps the defaults.
    pub async fn alert_thresholds(&self, tenant: &TenantId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT thresholds FROM alert_thresholds WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("thresholds")).transpose()?)
    }

    pub async fn set_alert_thresholds(&self, tenant: &TenantId, thresholds: &str, now: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO alert_thresholds (tenant_id, thresholds, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET thresholds = excluded.thresholds, updated_at = excluded.updated_at",
        )
        .bind(tenant.as_str())
        .bind(thresholds)
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Records that `meter` crossed `percent` in the period starting at `period_start`, with its webhook
    /// event, in one transaction; `false` (and nothing written) if it had already fired.
    pub async fn fire_alert(
        &self,
        meter: &str,
        percent: i64,
        period_start: Timestamp,
        event: &NewEvent<'_>,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let fired = sqlx::query(
            "INSERT INTO alert_firings (tenant_id, meter, percent, period_start, fired_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(event.tenant_id.as_str())
        .bind(meter)
        .bind(percent)
        .bind(period_start.0)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        if fired.rows_affected() == 0 {
            return Ok(false);
        }
        emit_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Which of the tenant's thresholds fired in the period starting at `period_start`: `(meter, percent)`.
    pub async fn fired_alerts(&self, tenant: &TenantId, period_start: Timestamp) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT meter, percent FROM alert_firings WHERE tenant_id = $1 AND period_start = $2")
            .bind(tenant.as_str())
            .bind(period_start.0)
            .fetch_all(&self.write)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("meter")?, r.try_get("percent")?))).collect()
    }
}
