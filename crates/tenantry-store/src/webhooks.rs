//! Outbound webhooks: endpoints, the transactional outbox of events, and deliveries claimed under a lease so
//! that each is attempted by one node at a time. An event is stored (with one delivery per subscribed
//! endpoint) inside the transaction of the change it reports, by `emit_in`.

use sqlx::{Any, Row, Transaction};
use tenantry_domain::{DeliveryId, EventId, TenantId, Timestamp};

use crate::usage::parameter_list;
use crate::{Backend, Result, Store, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub tenant_id: TenantId,
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// With the key pepper, makes the endpoint's signing secret.
    pub secret_salt: String,
    pub created_at: Timestamp,
}

/// An event to record for a tenant's endpoints.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    pub tenant_id: &'a TenantId,
    /// `invoice.paid`, …
    pub kind: &'a str,
    pub data: serde_json::Value,
    /// Recording an event with a key already used does nothing.
    pub dedupe_key: Option<String>,
}

/// A delivery claimed for an attempt, with what the attempt needs.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    pub id: String,
    pub tenant_id: TenantId,
    pub endpoint_id: String,
    pub url: String,
    pub secret_salt: String,
    pub event_id: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: Timestamp,
}

/// How an attempt ended, and what happens next.
#[derive(Clone, Debug)]
pub struct AttemptRecord<'a> {
    pub delivery: &'a DueDelivery,
    pub at: Timestamp,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    /// `delivered`, `pending` (then `next_attempt_at`) or `failed`.
    pub state: &'a str,
    pub next_attempt_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRow {
    pub attempt: i64,
    pub at: Timestamp,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub attempt_log: Vec<AttemptRow>,
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, events, secret_salt, created_at";

fn endpoint_from_row(r: &sqlx::any::AnyRow) -> Result<WebhookRow> {
    let events: String = r.try_get("events")?;
    Ok(WebhookRow {
        id: r.try_get("id")?,
        tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
        url: r.try_get("url")?,
        events: events.split_whitespace().map(str::to_owned).collect(),
        secret_salt: r.try_get("secret_salt")?,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

/// Records `event` and a delivery, due now, to every endpoint of its tenant subscribed to its type, inside
/// `tx`. Nothing is written when no endpoint wants it or its dedupe key was used; `true` when deliveries were
/// queued.
pub(crate) async fn emit_in(tx: &mut Transaction<'static, Any>, event: &NewEvent<'_>, now: Timestamp) -> Result<bool> {
    let endpoints = sqlx::query("SELECT id, events FROM webhook_endpoints WHERE tenant_id = $1")
        .bind(event.tenant_id.as_str())
        .fetch_all(&mut **tx)
        .await?;
    let mut subscribed = Vec::new();
    for row in &endpoints {
        let events: String = row.try_get("events")?;
        if events.split_whitespace().any(|e| e == event.kind) {
            subscribed.push(row.try_get::<String, _>("id")?);
        }
    }
    if subscribed.is_empty() {
        return Ok(false);
    }
    let id = EventId::generate();
    let body = serde_json::json!({
        "id": id.as_str(),
        "type": event.kind,
        "created_at": now.to_rfc3339(),
        "tenant_id": event.tenant_id.as_str(),
        "data": event.data,
    })
    .to_string();
    let inserted = sqlx::query(
        "INSERT INTO webhook_events (id, tenant_id, type, body, dedupe_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(event.tenant_id.as_str())
    .bind(event.kind)
    .bind(&body)
    .bind(event.dedupe_key.clone())
    .bind(now.0)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    for endpoint in subscribed {
        sqlx::query(
            "INSERT INTO webhook_deliveries \
             (id, tenant_id, endpoint_id, event_id, state, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
        )
        .bind(DeliveryId::generate().as_str())
        .bind(event.tenant_id.as_str())
        .bind(&endpoint)
        .bind(id.as_str())
        .bind(now.0)
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

impl Store {
    /// Stores a new endpoint unless the tenant has `max` already (`Conflict`).
    pub async fn create_webhook(&self, endpoint: &WebhookRow, max: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE tenant_id = $1")
            .bind(endpoint.tenant_id.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n >= max {
            return Err(StoreError::Conflict("webhook endpoints"));
        }
        sqlx::query(&format!("INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"))
            .bind(&endpoint.id)
            .bind(endpoint.tenant_id.as_str())
            .bind(&endpoint.url)
            .bind(endpoint.events.join(" "))
            .bind(&endpoint.secret_salt)
            .bind(endpoint.created_at.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tenant's endpoints, oldest first.
    pub async fn webhooks(&self, tenant: &TenantId) -> Result<Vec<WebhookRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    pub async fn webhook(&self, tenant: &TenantId, id: &str) -> Result<Option<WebhookRow>> {
        let row =
            sqlx::query(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant.as_str())
                .bind(id)
                .fetch_optional(&self.write)
                .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    /// Removes the endpoint with its deliveries and their attempts; `false` if the tenant has no such one.
    pub async fn delete_webhook(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let gone = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records `event` for the tenant's endpoints in a transaction of its own (`emit_in`).
    pub async fn emit_event(&self, event: &NewEvent<'_>, now: Timestamp) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let queued = emit_in(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(queued)
    }

    /// Claims up to `limit` deliveries due at `now` and not leased by another node, each leased until
    /// `now + lease_secs`, oldest first — but never more than `per_endpoint` in flight to one endpoint, over
    /// every node, so a slow receiver's backlog cannot take the slots other tenants' deliveries need.
    pub async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_secs: i64,
        limit: i64,
        per_endpoint: i64,
    ) -> Result<Vec<DueDelivery>> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // Each endpoint's in-flight deliveries rank first, then its due ones by age; a due one is claimable
        // while its rank is within the endpoint's share.
        let claimed = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET locked_until = $1 WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE id IN (SELECT id FROM (SELECT id, locked_until, ROW_NUMBER() OVER (PARTITION BY endpoint_id \
             ORDER BY CASE WHEN locked_until >= $2 THEN 0 ELSE 1 END, next_attempt_at, id) AS place \
             FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $2) ranked \
             WHERE place <= $4 AND (locked_until IS NULL OR locked_until < $2)) \
             ORDER BY next_attempt_at, id LIMIT $3 {lock}) RETURNING id"
        ))
        .bind(now.plus_seconds(lease_secs).0)
        .bind(now.0)
        .bind(limit)
        .bind(per_endpoint)
        .fetch_all(&self.write)
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids = claimed.iter().map(|r| r.try_get::<String, _>("id")).collect::<std::result::Result<Vec<_>, _>>()?;
        let sql = format!(
            "SELECT d.id, d.tenant_id, d.endpoint_id, d.event_id, d.attempts, d.created_at, e.url, e.secret_salt, \
             v.body FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             JOIN webhook_events v ON v.id = d.event_id WHERE d.id IN ({}) ORDER BY d.next_attempt_at, d.id",
            parameter_list(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in &ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.write).await?;
        rows.iter()
            .map(|r| {
                Ok(DueDelivery {
                    id: r.try_get("id")?,
                    tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
                    endpoint_id: r.try_get("endpoint_id")?,
                    url: r.try_get("url")?,
                    secret_salt: r.try_get("secret_salt")?,
                    event_id: r.try_get("event_id")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    /// Records an attempt and the delivery's next state in one transaction. A delivery whose lease was lost
    /// meanwhile (another node attempted it) or that was removed keeps what that other change wrote.
    pub async fn record_attempt(&self, a: &AttemptRecord<'_>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let attempt = a.delivery.attempts + 1;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = $2, last_status_code = $3, last_error = $4, \
             next_attempt_at = $5, locked_until = NULL, updated_at = $6 WHERE id = $7 AND attempts = $8",
        )
        .bind(a.state)
        .bind(attempt)
        .bind(a.status_code)
        .bind(a.error.clone())
        .bind(a.next_attempt_at.map(|t| t.0))
        .bind(a.at.0)
        .bind(&a.delivery.id)
        .bind(a.delivery.attempts)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, tenant_id, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.delivery.id)
        .bind(attempt)
        .bind(a.delivery.tenant_id.as_str())
        .bind(a.at.0)
        .bind(a.status_code)
        .bind(a.error.clone())
        .bind(a.duration_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The endpoint's latest `limit` deliveries, newest first, each with its attempts.
    pub async fn deliveries(&self, endpoint_id: &str, limit: i64) -> Result<Vec<DeliveryRow>> {
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, v.type, d.state, d.attempts, d.last_status_code, d.last_error, \
             d.next_attempt_at, d.created_at FROM webhook_deliveries d JOIN webhook_events v ON v.id = d.event_id \
             WHERE d.endpoint_id = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT $2",
        )
        .bind(endpoint_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let mut deliveries = rows
            .iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: r.try_get("id")?,
                    event_id: r.try_get("event_id")?,
                    kind: r.try_get("type")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    last_status_code: r.try_get("last_status_code")?,
                    last_error: r.try_get("last_error")?,
                    next_attempt_at: r.try_get::<Option<i64>, _>("next_attempt_at")?.map(Timestamp),
                    created_at: Timestamp(r.try_get("created_at")?),
                    attempt_log: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let sql = format!(
            "SELECT delivery_id, attempt, at, status_code, error, duration_ms FROM webhook_attempts \
             WHERE delivery_id IN ({}) ORDER BY delivery_id, attempt",
            parameter_list(1, deliveries.len())
        );
        let mut query = sqlx::query(&sql);
        for d in &deliveries {
            query = query.bind(&d.id);
        }
        for r in query.fetch_all(&self.read).await? {
            let delivery: String = r.try_get("delivery_id")?;
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == delivery) {
                d.attempt_log.push(AttemptRow {
                    attempt: r.try_get("attempt")?,
                    at: Timestamp(r.try_get("at")?),
                    status_code: r.try_get("status_code")?,
                    error: r.try_get("error")?,
                    duration_ms: r.try_get("duration_ms")?,
                });
            }
        }
        Ok(deliveries)
    }

    /// Makes the endpoint's delivery due again now (whatever its state); `false` if there is no such one.
    pub async fn resend_delivery(&self, endpoint_id: &str, delivery_id: &str, now: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, locked_until = NULL, \
             updated_at = $1 WHERE id = $2 AND endpoint_id = $3",
        )
        .bind(now.0)
        .bind(delivery_id)
        .bind(endpoint_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
