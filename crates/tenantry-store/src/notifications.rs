//! The notification outbox and the win-back offers.

use sqlx::Row;
use tenantry_domain::{TenantId, Timestamp};

use crate::jobs::{enqueue_in, NewJob};
use crate::{Result, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub id: String,
    pub tenant_id: TenantId,
    pub template: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub dedupe_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: String,
    pub tenant_id: TenantId,
    pub template: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WinBackStats {
    pub offers_sent: i64,
    pub offers_accepted: i64,
}

const COLUMNS: &str = "id, tenant_id, template, recipient, subject, body, created_at, delivered_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<NotificationRow> {
    Ok(NotificationRow {
        id: r.try_get("id")?,
        tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
        template: r.try_get("template")?,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        created_at: Timestamp(r.try_get("created_at")?),
        delivered_at: r.try_get::<Option<i64>, _>("delivered_at")?.map(Timestamp),
    })
}

impl Store {
    /// Stores the notification and its delivery job in one transaction; `false` (and nothing stored) if one
    /// with the same dedupe key exists.
    pub async fn queue_notification(&self, n: &NewNotification, deliver: &NewJob, now: Timestamp) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO notifications (id, tenant_id, template, recipient, subject, body, dedupe_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&n.id)
        .bind(n.tenant_id.as_str())
        .bind(&n.template)
        .bind(&n.recipient)
        .bind(&n.subject)
        .bind(&n.body)
        .bind(&n.dedupe_key)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        enqueue_in(&mut tx, deliver, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn notification(&self, id: &str) -> Result<Option<NotificationRow>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.write)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn mark_delivered(&self, id: &str, now: Timestamp) -> Result<()> {
        sqlx::query("UPDATE notifications SET delivered_at = $1 WHERE id = $2 AND delivered_at IS NULL")
            .bind(now.0)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The tenant's notifications, oldest first.
    pub async fn notifications(&self, tenant: &TenantId) -> Result<Vec<NotificationRow>> {
        let rows =
            sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE tenant_id = $1 ORDER BY created_at, id"))
                .bind(tenant.as_str())
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(from_row).collect()
    }

    /// Records offer `sequence` of the cancellation at `cancelled_at`; `false` if it was already sent.
    pub async fn record_win_back_offer(
        &self,
        tenant: &TenantId,
        cancelled_at: Timestamp,
        sequence: i64,
        discount_percent: i64,
        now: Timestamp,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO win_back_offers (id, tenant_id, cancelled_at, sequence, discount_percent, sent_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(tenantry_domain::EventId::generate().as_str())
        .bind(tenant.as_str())
        .bind(cancelled_at.0)
        .bind(sequence)
        .bind(discount_percent)
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn win_back_stats(&self) -> Result<WinBackStats> {
        let row = sqlx::query("SELECT COUNT(*) AS sent, COUNT(accepted_at) AS accepted FROM win_back_offers")
            .fetch_one(&self.read)
            .await?;
        Ok(WinBackStats { offers_sent: row.try_get("sent")?, offers_accepted: row.try_get("accepted")? })
    }
}
