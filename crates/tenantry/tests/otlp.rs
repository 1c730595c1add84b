//! Traces over OTLP: `tenantry serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` sends its spans to a receiver that
//! decodes the real OTLP/HTTP protobuf (`ExportTraceServiceRequest`), and every span of a question — the
//! request, authentication, quota reservation and settlement, the ledger write, retrieval and the model call —
//! carries the tenant and the request id.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
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

#[tokio::test]
async fn every_span_of_a_question_reaches_the_collector_with_its_tenant_and_request() {
    let spans: Spans = Arc::default();
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let collector = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("http://{collector}");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let server = support::serve(&dir.path().join("data"), &env);
    let base = server.base();
    let http = reqwest::Client::new();

    let signup: Value = http
        .post(format!("{base}/v1/signup"))
        .json(&json!({"email": "otel@trace.test", "organization": "Traced", "plan": "starter"}))
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("json");
    let key = signup["api_key"].as_str().expect("key");
    let tenant = signup["tenant_id"].as_str().expect("tenant").to_owned();
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
        if wanted.iter().all(|w| of_question.iter().any(|s| s.name == *w)) || Instant::now() > deadline {
            break of_question;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(server);

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
