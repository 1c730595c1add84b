//! Logs on stderr and, when a collector is configured, traces over OTLP/HTTP (protobuf) to
//! `<endpoint>/v1/traces` (metrics go to `<endpoint>/v1/metrics`, `otlp_metrics`): the spans of every request, authentication, quota reservation and settlement, the
//! ledger write, retrieval, the model call and background jobs, each carrying `tenant_id` and `request_id` as
//! attributes (a trace backend searches by them), exported in batches off the request path.

use std::io::IsTerminal;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tenantry_domain::config::TelemetryConfig;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What the spans exported over OTLP include: this service's own spans at `info` and above (the HTTP stack's
/// and database driver's are left out).
const EXPORTED: &str = "info,sqlx=off,tantivy=off,tower_http=off,hyper=off,reqwest=off,h2=off";

/// Flushes the spans not yet exported when dropped (at the end of `serve`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // On a thread of its own: shutting down waits for the export thread, and must not block the runtime.
        if let Some(provider) = self.provider.take() {
            let flushed = std::thread::spawn(move || provider.shutdown()).join();
            if let Ok(Err(e)) = flushed {
                eprintln!("tenantry: the last traces were not exported: {e}");
            }
        }
    }
}

/// Human-readable lines on stderr, coloured only on a terminal (a log file or a pipe gets no escape codes);
/// `TENANTRY_LOG_FORMAT=json` for one JSON object per line. `RUST_LOG` overrides `default_filter`. With an
/// OTLP endpoint (`telemetry.otlp_endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are exported too.
pub fn init(default_filter: &str, config: Option<&TelemetryConfig>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("TENANTRY_LOG_FORMAT").is_ok_and(|f| f == "json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let logs = if json {
        fmt.json().with_current_span(true).with_span_list(false).with_filter(filter).boxed()
    } else {
        fmt.compact().with_filter(filter).boxed()
    };
    let Some(endpoint) = otlp_endpoint(config) else {
        tracing_subscriber::registry().with(logs).init();
        return Ok(Telemetry { provider: None });
    };
    let service_name = config.map_or_else(|| "tenantry".to_owned(), |c| c.service_name.clone());
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient(std::sync::OnceLock::new()))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .build()
        .with_context(|| format!("the OTLP exporter for {url}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build();
    let traces =
        tracing_opentelemetry::layer().with_tracer(provider.tracer("tenantry")).with_filter(EnvFilter::new(EXPORTED));
    tracing_subscriber::registry().with(logs).with(traces).init();
    tracing::info!(url, "exporting traces over OTLP");
    Ok(Telemetry { provider: Some(provider) })
}

/// The OTLP collector's base URL: `telemetry.otlp_endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn otlp_endpoint(config: Option<&TelemetryConfig>) -> Option<String> {
    config
        .and_then(|c| c.otlp_endpoint.clone())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty()))
}

/// How often metrics are pushed: `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds), else
/// `telemetry.metrics_interval_secs`.
pub fn metrics_interval(config: &TelemetryConfig) -> std::time::Duration {
    let from_env = std::env::var("OTEL_METRIC_EXPORT_INTERVAL").ok().and_then(|ms| ms.trim().parse::<u64>().ok());
    match from_env {
        Some(ms) => std::time::Duration::from_millis(ms.max(100)),
        None => std::time::Duration::from_secs(config.metrics_interval_secs.max(1)),
    }
}

/// The exporter's HTTP client: the workspace's reqwest, blocking, because the batch processor exports from a
/// thread of its own, outside the async runtime; made there on the first export, so that it is never made or
/// dropped on the runtime's threads (which reqwest's blocking client forbids).
#[derive(Debug)]
struct BlockingClient(std::sync::OnceLock<reqwest::blocking::Client>);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<opentelemetry_http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::blocking::Request::try_from(request.map(reqwest::blocking::Body::from))?;
        let client = self.0.get_or_init(|| {
            reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_else(|_| reqwest::blocking::Client::new())
        });
        let response = client.execute(request)?;
        let mut builder = opentelemetry_http::Response::builder().status(response.status().as_u16());
        for (name, value) in response.headers() {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
        let body = response.bytes()?;
        Ok(builder.body(body)?)
    }
}
