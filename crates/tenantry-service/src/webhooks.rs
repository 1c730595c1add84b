//! Outbound webhooks (API.md "Integrations"): a tenant's endpoints, and the dispatcher that delivers each
//! recorded event to each subscribed endpoint at least once. Events are recorded by the store in the
//! transaction of the change they report; the dispatcher claims due deliveries under a lease (one node
//! attempts a delivery at a time), posts the signed envelope, and retries failures with exponential backoff
//! for up to three days. It runs in a task of its own, so a slow receiver never holds up a request or a job.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tenantry_domain::{ErrorCode, TenantContext, TenantId, WebhookId};
use tenantry_store::{AttemptRecord, DeliveryRow, DueDelivery, NewEvent, StoreError, WebhookRow};
use utoipa::ToSchema;

use crate::outbound;
use crate::{ServiceError, ServiceResult, Services};

/// Every event type a tenant can subscribe to.
pub const EVENT_TYPES: [&str; 7] = [
    "usage.threshold_reached",
    "invoice.created",
    "invoice.paid",
    "invoice.payment_failed",
    "tenant.state_changed",
    "document.indexed",
    "export.ready",
];
/// Endpoints one tenant may have.
const MAX_ENDPOINTS: i64 = 16;
const MAX_URL_BYTES: usize = 2_048;
/// Deliveries are retried for this long after their event, then marked failed.
const RETRY_FOR_SECS: i64 = 3 * 86_400;
/// A claimed delivery is leased for this long (longer than one attempt's timeout).
const LEASE_SECS: i64 = 60;
const CLAIM_BATCH: i64 = 64;
/// Deliveries attempted at once by one node.
const CONCURRENCY: usize = 128;
/// Deliveries in flight to one endpoint at once, over every node.
const PER_ENDPOINT: i64 = 8;
/// Deliveries listed per endpoint.
const LISTED: i64 = 100;

/// Seconds before the attempt after `attempts` failed ones: 30 s doubling, at most 6 hours.
pub fn retry_delay_secs(attempts: i64) -> i64 {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    30i64.saturating_mul(1i64 << exponent).min(6 * 3_600)
}

/// The `Tenantry-Signature` header of `body` sent at unix second `t`: Stripe's scheme, with the endpoint's
/// secret as the HMAC-SHA256 key over `"<t>.<body>"`.
pub fn signature(secret: &str, t: u64, body: &str) -> String {
    #[allow(clippy::expect_used)] // HMAC takes a key of any length
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac accepts any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook endpoint as the tenant sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
}

/// A new endpoint: the only time its signing secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_…`: verifies `Tenantry-Signature`.
    pub secret: String,
    pub created_at: String,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub at: String,
    /// The receiver's HTTP status; absent when no response came (`error` says why).
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub delivery_id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending` (another attempt is due at `next_attempt_at`), `delivered` or `failed` (retries ran out).
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub attempt_log: Vec<AttemptView>,
}

fn view(row: WebhookRow) -> WebhookView {
    WebhookView { webhook_id: row.id, url: row.url, events: row.events, created_at: row.created_at.to_rfc3339() }
}

fn delivery_view(row: DeliveryRow) -> DeliveryView {
    DeliveryView {
        delivery_id: row.id,
        event_id: row.event_id,
        kind: row.kind,
        status: row.state,
        attempts: row.attempts,
        last_status_code: row.last_status_code,
        last_error: row.last_error,
        next_attempt_at: row.next_attempt_at.map(|t| t.to_rfc3339()),
        created_at: row.created_at.to_rfc3339(),
        attempt_log: row
            .attempt_log
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                at: a.at.to_rfc3339(),
                status_code: a.status_code,
                error: a.error,
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

/// The event types asked for, checked and without repeats.
fn event_types(asked: &[String]) -> ServiceResult<Vec<String>> {
    if asked.is_empty() {
        return Err(ServiceError::validation(format!("events: name at least one of {}", EVENT_TYPES.join(", "))));
    }
    let mut events: Vec<String> = Vec::new();
    for e in asked {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(ServiceError::validation(format!(
                "events: {e:?} is not an event type (one of {})",
                EVENT_TYPES.join(", ")
            )));
        }
        if !events.contains(e) {
            events.push(e.clone());
        }
    }
    Ok(events)
}

/// How an attempt went.
struct Outcome {
    status_code: Option<i64>,
    error: Option<String>,
}

impl Services {
    fn webhook_secret(&self, id: &str, salt: &str) -> String {
        format!("whsec_{}", self.inner.keys.hash(&format!("tenantry webhook secret v1/{id}/{salt}")))
    }

    /// `POST /v1/webhooks`: a new endpoint for the tenant, with its signing secret (shown once).
    pub async fn create_webhook(
        &self,
        ctx: &TenantContext,
        url: &str,
        events: &[String],
    ) -> ServiceResult<CreatedWebhook> {
        let events = event_types(events)?;
        let url = self.webhook_url(url).await?;
        let id = WebhookId::generate().as_str().to_owned();
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        let row = WebhookRow {
            id: id.clone(),
            tenant_id: ctx.tenant_id.clone(),
            url: url.to_string(),
            events,
            secret_salt: hex::encode(salt),
            created_at: self.clock().now(),
        };
        self.store().create_webhook(&row, MAX_ENDPOINTS).await.map_err(|e| match e {
            StoreError::Conflict(_) => ServiceError::new(
                ErrorCode::Conflict,
                format!("a tenant has at most {MAX_ENDPOINTS} webhook endpoints; delete one first"),
            ),
            other => other.into(),
        })?;
        let detail = serde_json::json!({"url": row.url, "events": row.events});
        self.audit(crate::audit::Actor::Tenant(ctx), Some(&ctx.tenant_id), "webhook.created", &id, detail, "").await;
        let secret = self.webhook_secret(&row.id, &row.secret_salt);
        let created_at = row.created_at.to_rfc3339();
        Ok(CreatedWebhook { webhook_id: row.id, url: row.url, events: row.events, secret, created_at })
    }

    /// A URL webhooks may be sent to: `http` or `https`, with a host that is not refused (`outbound`). A name
    /// that resolves now only to refused addresses is refused here too; every delivery checks again.
    async fn webhook_url(&self, raw: &str) -> ServiceResult<reqwest::Url> {
        let raw = raw.trim();
        if raw.len() > MAX_URL_BYTES {
            return Err(ServiceError::validation(format!("url: at most {MAX_URL_BYTES} bytes")));
        }
        let url = reqwest::Url::parse(raw).map_err(|e| ServiceError::validation(format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ServiceError::validation("url: the scheme must be https (or http)"));
        }
        let allow_private = self.config().webhooks.allow_private_addresses;
        if let Some(why) = outbound::refusal_of_url(&url, allow_private) {
            return Err(ServiceError::validation(format!("url: {why}, which webhooks may not reach")));
        }
        if let Some(url::Host::Domain(name)) = url.host() {
            let lookup = tokio::net::lookup_host((name, url.port_or_known_default().unwrap_or(443)));
            if let Ok(Ok(addrs)) = tokio::time::timeout(Duration::from_secs(2), lookup).await {
                let addrs: Vec<_> = addrs.collect();
                if !addrs.is_empty() && addrs.iter().all(|a| outbound::refusal(a.ip(), allow_private).is_some()) {
                    return Err(ServiceError::validation(format!(
                        "url: {name} resolves only to addresses webhooks may not reach"
                    )));
                }
            }
        }
        Ok(url)
    }

    /// The tenant's endpoints (`GET /v1/webhooks`, and the operator's view of a tenant).
    pub async fn webhooks(&self, tenant: &TenantId) -> ServiceResult<Vec<WebhookView>> {
        Ok(self.store().webhooks(tenant).await?.into_iter().map(view).collect())
    }

    async fn own_webhook(&self, tenant: &TenantId, id: &str) -> ServiceResult<WebhookRow> {
        self.store().webhook(tenant, id).await?.ok_or_else(|| ServiceError::not_found("webhook"))
    }

    /// `DELETE /v1/webhooks/{id}`: the endpoint and its deliveries are removed; nothing more is sent to it.
    pub async fn delete_webhook(&self, ctx: &TenantContext, id: &str) -> ServiceResult<()> {
        if !self.store().delete_webhook(&ctx.tenant_id, id).await? {
            return Err(ServiceError::not_found("webhook"));
        }
        let detail = serde_json::json!({});
        self.audit(crate::audit::Actor::Tenant(ctx), Some(&ctx.tenant_id), "webhook.deleted", id, detail, "").await;
        Ok(())
    }

    /// The endpoint's latest deliveries, newest first, each with its attempts.
    pub async fn webhook_deliveries(&self, tenant: &TenantId, id: &str) -> ServiceResult<Vec<DeliveryView>> {
        let endpoint = self.own_webhook(tenant, id).await?;
        Ok(self.store().deliveries(&endpoint.id, LISTED).await?.into_iter().map(delivery_view).collect())
    }

    /// Sends a delivery again now, whatever became of it.
    pub async fn resend_delivery(&self, ctx: &TenantContext, id: &str, delivery_id: &str) -> ServiceResult<()> {
        let endpoint = self.own_webhook(&ctx.tenant_id, id).await?;
        if !self.store().resend_delivery(&endpoint.id, delivery_id, self.clock().now()).await? {
            return Err(ServiceError::not_found("delivery"));
        }
        self.wake_webhooks();
        Ok(())
    }

    /// Records an event for the tenant's endpoints outside any other change (in its own transaction).
    pub async fn emit(&self, event: &NewEvent<'_>) -> ServiceResult<()> {
        if self.store().emit_event(event, self.clock().now()).await? {
            self.wake_webhooks();
        }
        Ok(())
    }

    pub(crate) fn wake_webhooks(&self) {
        self.inner.wake_webhooks.notify_one();
    }

    /// Delivers due webhooks until `shutdown`: whenever woken, and at least twice a second. Each attempt
    /// runs in a task of its own, up to `CONCURRENCY` at once, and the dispatcher claims more as slots free,
    /// so a receiver that holds its requests delays only its own deliveries.
    pub(crate) async fn dispatch_webhooks(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        loop {
            let free = i64::try_from(slots.available_permits()).unwrap_or(0).min(CLAIM_BATCH);
            let due = if free == 0 {
                Vec::new()
            } else {
                match self.store().claim_deliveries(self.clock().now(), LEASE_SECS, free, PER_ENDPOINT).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim webhook deliveries");
                        Vec::new()
                    }
                }
            };
            if due.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = self.inner.wake_webhooks.notified() => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            for delivery in due {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let services = self.clone();
                tokio::spawn(async move {
                    services.attempt(delivery).await;
                    drop(slot);
                    services.wake_webhooks();
                });
            }
        }
    }

    /// One attempt of a claimed delivery, and its record.
    async fn attempt(&self, delivery: DueDelivery) {
        let started = std::time::Instant::now();
        let outcome = self.post(&delivery).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now = self.clock().now();
        let delivered = outcome.status_code.is_some_and(|c| (200..300).contains(&c));
        let attempts = delivery.attempts + 1;
        let retry_at = now.plus_seconds(retry_delay_secs(attempts));
        let (state, next_attempt_at) = if delivered {
            ("delivered", None)
        } else if retry_at.0 > delivery.created_at.plus_seconds(RETRY_FOR_SECS).0 {
            ("failed", None)
        } else {
            ("pending", Some(retry_at))
        };
        self.inner.webhook_outcomes.record(state);
        if state == "failed" {
            tracing::warn!(tenant_id = %delivery.tenant_id, delivery_id = %delivery.id, attempts,
                "webhook delivery failed for three days; giving up");
        }
        let record = AttemptRecord {
            delivery: &delivery,
            at: now,
            status_code: outcome.status_code,
            error: outcome.error,
            duration_ms,
            state,
            next_attempt_at,
        };
        if let Err(e) = self.store().record_attempt(&record).await {
            tracing::warn!(error = %e, delivery_id = %delivery.id, "webhook attempt not recorded; it will be retried");
        }
    }

    async fn post(&self, delivery: &DueDelivery) -> Outcome {
        let allow_private = self.config().webhooks.allow_private_addresses;
        let url = match reqwest::Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(e) => return Outcome { status_code: None, error: Some(format!("url: {e}")) },
        };
        if let Some(why) = outbound::refusal_of_url(&url, allow_private) {
            return Outcome { status_code: None, error: Some(format!("{why}, which webhooks may not reach")) };
        }
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let secret = self.webhook_secret(&delivery.endpoint_id, &delivery.secret_salt);
        let sent = self
            .inner
            .outbound
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Tenantry-Signature", signature(&secret, t, &delivery.body))
            .header("Tenantry-Event-Id", &delivery.event_id)
            .header("Tenantry-Delivery-Id", &delivery.id)
            .body(delivery.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let code = i64::from(response.status().as_u16());
                let error = (!response.status().is_success()).then(|| format!("the receiver answered {code}"));
                Outcome { status_code: Some(code), error }
            }
            Err(e) => {
                // The chain of causes says why (refused address, timeout, refused connection).
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why = format!("{why}: {s}");
                    source = s.source();
                }
                Outcome { status_code: None, error: Some(why) }
            }
        }
    }

    /// Webhook deliveries attempted by this node since it started, by outcome, for the metrics.
    pub fn webhook_outcomes(&self) -> [(&'static str, u64); 3] {
        self.inner.webhook_outcomes.snapshot()
    }
}

/// The `invoice.payment_failed` event of a failed collection of `invoice`, once per invoice.
pub(crate) fn payment_failed_event<'a>(tenant: &'a TenantId, invoice: &tenantry_store::InvoiceRow) -> NewEvent<'a> {
    NewEvent {
        tenant_id: tenant,
        kind: "invoice.payment_failed",
        data: serde_json::json!({
            "invoice_id": invoice.id,
            "number": invoice.number,
            "currency": invoice.currency,
            "total_cents": invoice.total_cents,
        }),
        dedupe_key: Some(format!("invoice.payment_failed:{}", invoice.id)),
    }
}

/// Counts of attempts by outcome.
#[derive(Default)]
pub(crate) struct Outcomes {
    delivered: std::sync::atomic::AtomicU64,
    retrying: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl Outcomes {
    /// Counts an attempt that left its delivery in `state` (`pending` counts as retrying).
    fn record(&self, state: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        match state {
            "delivered" => self.delivered.fetch_add(1, Relaxed),
            "failed" => self.failed.fetch_add(1, Relaxed),
            _ => self.retrying.fetch_add(1, Relaxed),
        };
    }

    fn snapshot(&self) -> [(&'static str, u64); 3] {
        use std::sync::atomic::Ordering::Relaxed;
        [
            ("delivered", self.delivered.load(Relaxed)),
            ("retrying", self.retrying.load(Relaxed)),
            ("failed", self.failed.load(Relaxed)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_thirty_seconds_to_six_hours() {
        assert_eq!(retry_delay_secs(1), 30);
        assert_eq!(retry_delay_secs(2), 60);
        assert_eq!(retry_delay_secs(5), 480);
        assert_eq!(retry_delay_secs(30), 6 * 3_600);
    }

    #[test]
    fn signature_is_stripes_scheme() {
        // HMAC-SHA256("whsec_test", "1700000000.{}") computed independently (Python's hmac module).
        assert_eq!(
            signature("whsec_test", 1_700_000_000, "{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn event_types_are_checked_and_deduplicated() {
        let asked = vec!["invoice.paid".to_owned(), "invoice.paid".to_owned(), "export.ready".to_owned()];
        assert_eq!(event_types(&asked).expect("valid"), vec!["invoice.paid", "export.ready"]);
        assert!(event_types(&[]).is_err());
        assert!(event_types(&["invoice.*".to_owned()]).is_err());
    }
}
