//! Traces and metrics over OTLP: `tenantry serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` sends its spans and
//! metrics to a receiver that decodes the real OTLP/HTTP protobuf (`ExportTraceServiceRequest`,
//! `ExportMetricsServiceRequest`). Every span of a question — the request, authentication, quota reservation
//! and settlement, the ledger write, retrieval and the model call — carries the tenant and the request id;
//! the metrics arrive as the same counters, histograms and gauges `/metrics` serves.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use serde_json::{json, Value};

/// A span as received: its name and its string attributes.
#[derive(Clone, Debug)]
struct Received {
    name: String,
    attributes: HashMap<String, String>,
    service: String,
}

type Spans = Arc<Mutex<Vec<Received>>>;

async fn receive(State(spans): State<Spans>, body: Bytes) -> impl IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP ExportTraceServiceRequest");
    let mut received = spans.lock().expect("lock");
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some((kv.key.clone(), s.clone())),
                    other => Some((kv.key.clone(), format!("{other:?}"))),
                })
                .collect();
            received.push(Received { name: span.name, attributes, service: service.clone() });
        }
    }
    ([(header::CONTENT_TYPE, "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
}

/// Serves `app` as an OTLP collector on a free port; its base URL.
async fn collector(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Signs up a starter tenant; its API key and tenant id.
async fn signup(http: &reqwest::Client, base: &str, email: &str) -> (String, String) {
    let signup: Value = http
        .post(format!("{base}/v1/signup"))
        .json(&json!({"email": email, "organization": "Observed", "plan": "starter"}))
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("json");
    let key = signup["api_key"].as_str().expect("key").to_owned();
    (key, signup["tenant_id"].as_str().expect("tenant").to_owned())
}

fn is_tenant_job(span: &Received, tenant: &str) -> bool {
    span.name == "job" && span.attributes.get("tenant_id").map(String::as_str) == Some(tenant)
}

#[tokio::test]
async fn every_span_of_a_question_reaches_the_collector_with_its_tenant_and_request() {
    let spans: Spans = Arc::default();
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(spans.clone());
    let endpoint = collector(app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let server = support::serve(&dir.path().join("data"), &env);
    let base = server.base();
    let http = reqwest::Client::new();
    let (key, tenant) = signup(&http, &base, "otel@trace.test").await;
    let key = key.as_str();
    let upload = http
        .post(format!("{base}/v1/documents"))
        .bearer_auth(key)
        .json(&json!({"title": "Refunds", "text": "Refunds are issued within 14 days of purchase."}))
        .send()
        .await
        .expect("upload");
    assert!(upload.status().is_success());
    let request_id = "req-traced-question-1";
    let answer = http
        .post(format!("{base}/v1/query"))
        .bearer_auth(key)
        .header("x-request-id", request_id)
        .json(&json!({"question": "How long do refunds take?"}))
        .send()
        .await
        .expect("query");
    assert!(answer.status().is_success());

    let export = http.post(format!("{base}/v1/export")).bearer_auth(key).send().await.expect("export");
    assert_eq!(export.status(), 202);

    let wanted = ["request", "authenticate", "quota.reserve", "retrieval", "model", "quota.settle", "ledger.write"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let of_question = loop {
        let of_question: Vec<Received> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.attributes.get("request_id").map(String::as_str) == Some(request_id))
            .cloned()
            .collect();
        let job_seen = spans.lock().expect("lock").iter().any(|s| is_tenant_job(s, &tenant));
        if (job_seen && wanted.iter().all(|w| of_question.iter().any(|s| s.name == *w))) || Instant::now() > deadline {
            break of_question;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(server);

    // The export's archive was built by a background job, traced with its tenant.
    let jobs: Vec<Received> =
        spans.lock().expect("lock").iter().filter(|s| is_tenant_job(s, &tenant)).cloned().collect();
    assert!(!jobs.is_empty(), "a job span carrying the tenant");
    assert!(jobs.iter().all(|j| j.attributes.contains_key("kind") && j.service == "tenantry"), "{jobs:?}");
    let names: Vec<&str> = of_question.iter().map(|s| s.name.as_str()).collect();
    for w in wanted {
        assert!(names.contains(&w), "a {w} span for the question; got {names:?}");
    }
    for span in &of_question {
        assert_eq!(span.service, "tenantry", "{span:?}");
        assert_eq!(span.attributes.get("tenant_id"), Some(&tenant), "{} carries the tenant: {span:?}", span.name);
    }
    let model = of_question.iter().find(|s| s.name == "model").expect("model span");
    assert_eq!(model.attributes.get("model").map(String::as_str), Some("local-small"), "{model:?}");
}

type Exports = Arc<Mutex<Vec<ExportMetricsServiceRequest>>>;

async fn receive_metrics(State(exports): State<Exports>, body: Bytes) -> impl IntoResponse {
    let request = ExportMetricsServiceRequest::decode(body).expect("an OTLP ExportMetricsServiceRequest");
    exports.lock().expect("lock").push(request);
    ([(header::CONTENT_TYPE, "application/x-protobuf")], ExportMetricsServiceResponse::default().encode_to_vec())
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s),
        _ => None,
    }
}

/// The newest export's metric of `name`, if any export has arrived.
fn latest(exports: &Exports, name: &str) -> Option<metric::Data> {
    let exports = exports.lock().expect("lock");
    let metrics = exports.last()?.resource_metrics.first()?.scope_metrics.first()?.metrics.clone();
    metrics.into_iter().find(|m| m.name == name)?.data
}

#[tokio::test]
async fn the_metrics_reach_the_collector_as_otlp_sums_gauges_and_histograms() {
    let exports: Exports = Arc::default();
    let app = axum::Router::new()
        .route("/v1/metrics", axum::routing::post(receive_metrics))
        .route("/v1/traces", axum::routing::post(|| async { "" }))
        .with_state(exports.clone());
    let endpoint = collector(app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_METRIC_EXPORT_INTERVAL", "200")];
    let server = support::serve(&dir.path().join("data"), &env);
    let base = server.base();
    let http = reqwest::Client::new();
    let (key, _) = signup(&http, &base, "otel@metrics.test").await;
    for _ in 0..3 {
        let r = http.post(format!("{base}/v1/query")).bearer_auth(&key).json(&json!({"question": "Refunds?"})).send();
        assert!(r.await.expect("query").status().is_success());
    }

    // The export after the third answer counts all three (cumulative), and times each.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (requests, durations) = loop {
        let requests = latest(&exports, "tenantry_http_requests").and_then(|data| match data {
            metric::Data::Sum(sum) => sum.data_points.into_iter().find(|p| {
                string_attribute(&p.attributes, "route") == Some("/v1/query")
                    && p.value == Some(number_data_point::Value::AsInt(3))
            }),
            _ => None,
        });
        let durations = latest(&exports, "tenantry_http_request_duration_seconds").and_then(|data| match data {
            metric::Data::Histogram(h) => {
                h.data_points.into_iter().find(|p| string_attribute(&p.attributes, "route") == Some("/v1/query"))
            }
            _ => None,
        });
        match (requests, durations) {
            (Some(r), Some(d)) if d.count == 3 => break (r, d),
            _ if Instant::now() > deadline => panic!("no export counted the three questions"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(string_attribute(&requests.attributes, "status"), Some("200"));
    assert_eq!(durations.bucket_counts.iter().sum::<u64>(), 3, "{durations:?}");
    assert_eq!(durations.bucket_counts.len(), durations.explicit_bounds.len() + 1);
    let Some(metric::Data::Gauge(tenants)) = latest(&exports, "tenantry_tenants") else { panic!("a tenants gauge") };
    let trialing = tenants.data_points.iter().find(|p| string_attribute(&p.attributes, "state") == Some("trialing"));
    assert_eq!(trialing.and_then(|p| p.value), Some(number_data_point::Value::AsInt(1)));
    let exported = exports.lock().expect("lock");
    let resource = exported[0].resource_metrics[0].resource.as_ref().expect("resource");
    assert_eq!(string_attribute(&resource.attributes, "service.name"), Some("tenantry"));
    drop(server);
}
