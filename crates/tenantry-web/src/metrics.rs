//! Prometheus metrics at `GET /metrics`: HTTP traffic per route, status and problem code, request durations,
//! and the service's state read at scrape time (tenants by state, jobs, invoices, outboxes). No label holds a
//! tenant (STYLE.md: labels stay bounded). Instead the duration histogram keeps, per bucket, the tenant and
//! request id of the latest request that fell in it as an OpenMetrics exemplar, so a slow bucket leads to one
//! tenant's request and, by its id, to its log lines.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;
use tenantry_domain::invoice::InvoiceStatus;
use tenantry_domain::lifecycle::TenantState;
use tenantry_domain::RequestId;
use tenantry_service::jobs::JobState;
use tenantry_service::Services;

use crate::problem::ApiError;

/// The problem code of an error response, left in its extensions for the metrics layer (`problem`).
#[derive(Clone, Copy, Debug)]
pub struct ProblemCode(pub &'static str);

/// The tenant a request authenticated as, left in the response's extensions (`extract::tenant_response`).
#[derive(Clone, Debug)]
pub struct AuthenticatedTenant(pub String);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route's template (`/v1/documents/{id}`), or `unmatched`: never a raw path, which could be anything.
    route: String,
    status: u16,
    /// The problem+json `code` of an error; empty (absent) on success.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Exemplar {
    tenant_id: String,
    request_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

type Durations = HistogramWithExemplars<Exemplar>;

/// 0.5 ms to ~8 s, doubling.
fn durations() -> Durations {
    HistogramWithExemplars::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The registry and the handles the middleware and the scrape write through.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Durations, fn() -> Durations>,
    tenants: Family<StateLabel, Gauge>,
    jobs: Family<StateLabel, Gauge>,
    invoices: Family<StatusLabel, Gauge>,
    invoice_cents: Family<StatusLabel, Gauge>,
    notifications_undelivered: Gauge,
    stripe_events_unprocessed: Gauge,
    /// Webhook deliveries by state, over the service.
    webhook_deliveries: Family<StateLabel, Gauge>,
    /// Webhook attempts this node made, by outcome (`delivered`, `retrying`, `failed`).
    webhook_attempts: Family<OutcomeLabel, Counter>,
    /// Tenants this node has still to warm since it started (`index_sync`).
    indexes_warming: Gauge,
    /// Ledger events not yet shipped to ClickHouse, and the age of the oldest (the analytics lag).
    analytics_outbox_events: Gauge,
    analytics_outbox_oldest_age: Gauge,
    /// The store could not be read at the last scrape (the gauges above keep their previous values).
    scrape_errors: Counter,
    /// Answers on this node that a model provider failed or timed out (`MODEL_ROUTES`), for the console.
    upstream_model_errors: std::sync::atomic::AtomicU64,
}

/// The routes that call a model: their `upstream_failed` and `upstream_timeout` answers are model errors.
const MODEL_ROUTES: [&str; 5] =
    ["/v1/query", "/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/documents"];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tenantry");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, status and problem code",
            requests.clone(),
        );
        let durations = Family::<RouteLabels, Durations, fn() -> Durations>::new_with_constructor(durations);
        registry.register_with_unit(
            "http_request_duration",
            "Time from the request's arrival to its response's head (exemplars: tenant_id, request_id)",
            prometheus_client::registry::Unit::Seconds,
            durations.clone(),
        );
        let tenants = Family::<StateLabel, Gauge>::default();
        registry.register("tenants", "Tenants by lifecycle state", tenants.clone());
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("jobs", "Background jobs by state", jobs.clone());
        let invoices = Family::<StatusLabel, Gauge>::default();
        registry.register("invoices", "Invoices by status", invoices.clone());
        let invoice_cents = Family::<StatusLabel, Gauge>::default();
        registry.register("invoice_total_cents", "Invoice totals in cents by status", invoice_cents.clone());
        let notifications_undelivered = Gauge::default();
        registry.register(
            "notifications_undelivered",
            "Tenant notifications not yet delivered",
            notifications_undelivered.clone(),
        );
        let stripe_events_unprocessed = Gauge::default();
        registry.register(
            "stripe_events_unprocessed",
            "Stripe webhook events stored but not processed",
            stripe_events_unprocessed.clone(),
        );
        let webhook_deliveries = Family::<StateLabel, Gauge>::default();
        registry.register("webhook_deliveries", "Webhook deliveries by state", webhook_deliveries.clone());
        let webhook_attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by this node, by outcome",
            webhook_attempts.clone(),
        );
        let indexes_warming = Gauge::default();
        registry.register(
            "search_indexes_warming_tenants",
            "Tenants whose search indexes this node has still to catch up since it started",
            indexes_warming.clone(),
        );
        let analytics_outbox_events = Gauge::default();
        registry.register(
            "analytics_outbox_events",
            "Ledger events settled but not yet shipped to the analytics store",
            analytics_outbox_events.clone(),
        );
        let analytics_outbox_oldest_age = Gauge::default();
        registry.register_with_unit(
            "analytics_outbox_oldest_age",
            "Age of the oldest ledger event waiting for the analytics store (0 when none waits)",
            prometheus_client::registry::Unit::Seconds,
            analytics_outbox_oldest_age.clone(),
        );
        let scrape_errors = Counter::default();
        registry.register("metrics_scrape_errors", "Scrapes whose store read failed", scrape_errors.clone());
        Self {
            registry,
            requests,
            durations,
            tenants,
            jobs,
            invoices,
            invoice_cents,
            notifications_undelivered,
            stripe_events_unprocessed,
            webhook_deliveries,
            webhook_attempts,
            indexes_warming,
            analytics_outbox_events,
            analytics_outbox_oldest_age,
            scrape_errors,
            upstream_model_errors: Default::default(),
        }
    }
}

impl Metrics {
    fn record(&self, method: &str, route: &str, response: &Response, seconds: f64, request_id: Option<&RequestId>) {
        let code = response.extensions().get::<ProblemCode>().map_or("", |c| c.0);
        if matches!(code, "upstream_failed" | "upstream_timeout") && MODEL_ROUTES.contains(&route) {
            self.upstream_model_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: response.status().as_u16(),
                code: code.to_owned(),
            })
            .inc();
        let exemplar = match (response.extensions().get::<AuthenticatedTenant>(), request_id) {
            (Some(tenant), Some(rid)) => {
                Some(Exemplar { tenant_id: tenant.0.clone(), request_id: rid.as_str().to_owned() })
            }
            _ => None,
        };
        self.durations
            .get_or_create(&RouteLabels { method: method.to_owned(), route: route.to_owned() })
            .observe(seconds, exemplar, None);
    }

    /// Model provider failures and timeouts answered by this node since it started.
    pub fn upstream_model_errors(&self) -> u64 {
        self.upstream_model_errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn refresh(&self, services: &Services) {
        self.indexes_warming.set(i64::try_from(services.indexes_warming()).unwrap_or(i64::MAX));
        for (outcome, n) in services.webhook_outcomes() {
            let counter = self.webhook_attempts.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() });
            counter.inner().store(n, std::sync::atomic::Ordering::Relaxed);
        }
        let counts = match services.store().overview_counts().await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: the store could not be read");
                self.scrape_errors.inc();
                return;
            }
        };
        // Every known state has a series, zero when no row has it, so a dashboard's lines and an alert's
        // expression exist from the first scrape; a state the code does not know yet still shows when counted.
        fn set<L: Clone + std::hash::Hash + Eq>(
            family: &Family<L, Gauge>,
            known: impl Iterator<Item = L>,
            rows: impl Iterator<Item = (L, i64)>,
        ) {
            family.clear();
            for label in known {
                family.get_or_create(&label).set(0);
            }
            for (label, n) in rows {
                family.get_or_create(&label).set(n);
            }
        }
        let state = |(k, n): &(String, i64)| (StateLabel { state: k.clone() }, *n);
        let states = |names: &[&str]| names.iter().map(|n| StateLabel { state: (*n).to_owned() }).collect::<Vec<_>>();
        let tenant_states: Vec<&str> = TenantState::ALL.iter().map(|s| s.as_str()).collect();
        let job_states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        set(&self.tenants, states(&tenant_states).into_iter(), counts.tenants_by_state.iter().map(state));
        set(&self.jobs, states(&job_states).into_iter(), counts.jobs_by_state.iter().map(state));
        let statuses = || InvoiceStatus::ALL.iter().map(|s| StatusLabel { status: s.as_str().to_owned() });
        let by_status = counts.invoices_by_status.iter();
        set(&self.invoices, statuses(), by_status.clone().map(|(s, n, _)| (StatusLabel { status: s.clone() }, *n)));
        set(
            &self.invoice_cents,
            statuses(),
            by_status.map(|(s, _, cents)| (StatusLabel { status: s.clone() }, *cents)),
        );
        self.notifications_undelivered.set(counts.notifications_undelivered);
        self.stripe_events_unprocessed.set(counts.stripe_events_unprocessed);
        let deliveries = counts.webhook_deliveries_by_state.iter().map(state);
        set(&self.webhook_deliveries, states(&["pending", "delivered", "failed"]).into_iter(), deliveries);
        self.analytics_outbox_events.set(counts.analytics_outbox_events);
        let now = services.clock().now();
        let age_ms = counts.analytics_outbox_oldest.map_or(0, |oldest| (now.0 - oldest.0).max(0));
        self.analytics_outbox_oldest_age.set(age_ms / 1000);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The service's metrics as a scrape reads them, for an exporter that pushes them (OTLP).
#[derive(Clone)]
pub struct MetricsSource {
    metrics: Arc<Metrics>,
    services: Services,
}

impl MetricsSource {
    pub(crate) fn new(metrics: Arc<Metrics>, services: Services) -> Self {
        Self { metrics, services }
    }

    /// Every metric in the OpenMetrics text format, the store's gauges read now (as `GET /metrics` does).
    pub async fn openmetrics(&self) -> Result<String, std::fmt::Error> {
        self.metrics.refresh(&self.services).await;
        self.metrics.encode()
    }
}

/// Counts and times every request by its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let request_id = req.extensions().get::<RequestId>().cloned();
    let response = next.run(req).await;
    metrics.record(&method, &route, &response, started.elapsed().as_secs_f64(), request_id.as_ref());
    response
}

/// Prometheus metrics: the OpenMetrics text format to a scraper that asks for it (Prometheus does), else
/// Prometheus's classic text format 0.0.4. Requests by route, status and problem code; request durations,
/// with tenant and request id exemplars in OpenMetrics; tenants, jobs and invoices by state, read at the
/// scrape. No metric is labelled by tenant.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics or Prometheus text exposition",
        content((String = "text/plain; version=0.0.4"), (String = "application/openmetrics-text")))))]
pub async fn scrape(
    State(services): State<Services>,
    metrics: axum::Extension<Arc<Metrics>>,
    request: HeaderMap,
) -> Response {
    metrics.refresh(&services).await;
    let Ok(text) = metrics.encode() else {
        return ApiError::new(tenantry_domain::ErrorCode::Internal, "metrics could not be encoded").into_response();
    };
    let openmetrics = request
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    } else {
        ("text/plain; version=0.0.4; charset=utf-8", classic(&text))
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (StatusCode::OK, headers, body).into_response()
}

/// OpenMetrics text as Prometheus's classic format (0.0.4), which prometheus-client does not write: a
/// counter's HELP and TYPE name its `_total` samples, and exemplars, `# UNIT` and `# EOF` are left out.
fn classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|rest| rest.strip_suffix(" counter")) {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let line = match line.split_once(" # {") {
            Some((sample, _exemplar)) if !line.starts_with('#') => sample,
            _ => line,
        };
        let renamed = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::classic;

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_drops_exemplars() {
        let om = "# HELP t_requests Requests.\n# TYPE t_requests counter\nt_requests_total{route=\"/a\"} 3\n\
                  # HELP t_seconds Time.\n# TYPE t_seconds histogram\n# UNIT t_seconds seconds\n\
                  t_seconds_bucket{le=\"0.5\"} 1 # {tenant_id=\"ten_1\"} 0.2\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP t_requests_total Requests.\n# TYPE t_requests_total counter\nt_requests_total{route=\"/a\"} 3\n\
             # HELP t_seconds Time.\n# TYPE t_seconds histogram\nt_seconds_bucket{le=\"0.5\"} 1\n"
        );
    }
}
