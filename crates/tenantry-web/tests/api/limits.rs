//! Hostile input (docs/SECURITY.md): a file that expands past its limits, bodies larger than their caller
//! may send, more bodies at once than the server reads, more exports than a tenant may make. Each is refused
//! with a clear problem+json before it can take the memory or the queue, and leaves nothing behind.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, TestApp};

/// A PDF whose one content stream is `expanded` bytes of white space behind a text operator, Flate
/// compressed: a few hundred kilobytes on the wire. The guard reads the streams before the parser, so the
/// file needs no cross-reference table to be refused.
fn flate_bomb_pdf(expanded: usize) -> Vec<u8> {
    let mut content = b"BT /F1 12 Tf 72 700 Td (Boom) Tj ET".to_vec();
    content.resize(expanded, b' ');
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&content).expect("in memory");
    let data = encoder.finish().expect("in memory");
    let mut pdf =
        format!("%PDF-1.5\n1 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n", data.len()).into_bytes();
    pdf.extend_from_slice(&data);
    pdf.extend_from_slice(b"\nendstream\nendobj\ntrailer\n<< >>\n%%EOF\n");
    pdf
}

async fn upload_file(app: &TestApp, key: &str, name: &str, mime: &str, bytes: Vec<u8>) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()).mime_str(mime).expect("mime");
    let form = reqwest::multipart::Form::new().part("file", part);
    app.client.post(app.url("/v1/documents")).bearer_auth(key).multipart(form).send().await.expect("post")
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_and_counts_nothing() {
    let app = spawn_app_with(|c| c.limits.stream_bytes = 16 << 20).await;
    let t = app.signup("bomb@limits.test", "trial").await;
    let bomb = flate_bomb_pdf(512 << 20);
    assert!(bomb.len() < 1 << 20, "half a gigabyte in {} bytes", bomb.len());
    let problem =
        assert_problem(upload_file(&app, &t.key, "bomb.pdf", "application/pdf", bomb).await, 413, "payload_too_large")
            .await;
    assert!(problem["detail"].as_str().expect("detail").contains("16777216 bytes"), "{problem}");
    let documents: Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(documents["documents"], json!([]));
    let usage = app.usage(&t.key).await;
    assert_eq!((usage["totals"]["documents"].as_i64(), usage["totals"]["storage_bytes"].as_i64()), (Some(0), Some(0)));
    // The tenant and everyone else go on as before.
    assert_eq!(app.upload_text(&t.key, "Refunds", "Refunds take 14 days.").await["chunks"], 1);
}

#[tokio::test]
async fn storage_counts_the_upload_and_the_text_drawn_from_it() {
    let app = spawn_app().await;
    let t = app.signup("stored@limits.test", "trial").await;
    let text = "Refunds are issued within fourteen days of purchase.";
    let doc = app.upload_text(&t.key, "Refunds", text).await;
    assert_eq!(doc["bytes"], text.len(), "the document's size is the upload's");
    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["storage_bytes"], 2 * text.len(), "the original and its text: {usage}");
    let id = doc["document_id"].as_str().expect("id");
    let r =
        app.client.delete(app.url(&format!("/v1/documents/{id}"))).bearer_auth(&t.key).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    assert_eq!(app.usage(&t.key).await["totals"]["storage_bytes"], 0, "a deletion releases all it counted");
}

#[tokio::test]
async fn a_document_past_its_plans_limits_is_refused() {
    let app = spawn_app_with(|c| {
        let trial = c.plans.iter_mut().find(|p| p.name == "trial").expect("built-in trial plan");
        trial.limits.document_chunks = 2;
        trial.limits.document_text_bytes = 20_000;
    })
    .await;
    let t = app.signup("chunks@limits.test", "trial").await;
    let many = (0..40).map(|i| format!("Paragraph {i} talks about zebras at some length.\n\n")).collect::<String>();
    let r = app.post_json(&t.key, "/v1/documents", json!({"title": "Many", "text": many.repeat(10)})).await;
    let problem = assert_problem(r, 413, "payload_too_large").await;
    assert!(problem["detail"].as_str().expect("detail").contains("allows 2 per document"), "{problem}");
    let r = app.post_json(&t.key, "/v1/documents", json!({"title": "Long", "text": "zebra ".repeat(5_000)})).await;
    let problem = assert_problem(r, 413, "payload_too_large").await;
    assert!(problem["detail"].as_str().expect("detail").contains("20000 bytes"), "{problem}");
    assert_eq!(app.usage(&t.key).await["totals"]["documents"], 0);
}

/// Writes a request head to a fresh connection and returns what the server answers within `within`
/// (without sending any body).
async fn answer_to_head(app: &TestApp, head: &str, within: Duration) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut seen = vec![0u8; 4096];
    let n = tokio::time::timeout(within, stream.read(&mut seen)).await.expect("answered in time").expect("read");
    String::from_utf8_lossy(&seen[..n]).into_owned()
}

#[tokio::test]
async fn a_declared_size_over_the_limit_is_refused_before_the_body_is_read() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 1 << 20).await;
    let t = app.signup("declared@limits.test", "trial").await;
    let quick = Duration::from_secs(3);
    let upload = format!(
        "POST /v1/documents HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
        t.key
    );
    let answer = answer_to_head(&app, &upload, quick).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("payload_too_large"), "{answer}");

    // Without a valid credential the limit is the anonymous one, whatever the endpoint; a made-up key gets
    // no more than no key.
    for auth in ["", "Authorization: Bearer tk_forged_secret\r\n"] {
        let signup = format!(
            "POST /v1/signup HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
        );
        let answer = answer_to_head(&app, &signup, quick).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{auth:?}: {answer}");
        assert!(answer.contains("without a valid API key"), "{answer}");
    }

    // A chunked anonymous body is cut at the anonymous limit.
    let big = "x".repeat(2_000_000);
    let r = app.client.post(app.url("/v1/signup")).header("content-type", "application/json");
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(big.into_bytes())]);
    let r = r.body(reqwest::Body::wrap_stream(stream)).send().await.expect("post");
    assert_problem(r, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_text_file_past_the_plans_text_limit_is_refused_before_the_rest_arrives() {
    let app = spawn_app_with(|c| {
        let trial = c.plans.iter_mut().find(|p| p.name == "trial").expect("built-in trial plan");
        trial.limits.document_text_bytes = 20_000;
    })
    .await;
    let t = app.signup("floor@limits.test", "trial").await;
    let form_head = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\
                     Content-Type: text/plain\r\n\r\n";
    // Declares 10 MB, sends the form's head and 30,000 bytes of text, then nothing more.
    let head = format!(
        "POST /v1/documents HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n{form_head}{}",
        t.key,
        "Refunds take fourteen days. ".repeat(1_100),
    );
    let answer = answer_to_head(&app, &head, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large") && answer.contains("20000 bytes"), "{answer}");
    assert_eq!(app.usage(&t.key).await["totals"]["documents"], 0);
}

#[tokio::test]
async fn bodies_in_flight_share_one_budget() {
    let app = spawn_app_with(|c| {
        c.limits.inflight_body_bytes = 100 << 10;
        c.limits.inflight_wait_secs = 1;
    })
    .await;
    let t = app.signup("budget@limits.test", "trial").await;
    let head = format!(
        "POST /v1/documents HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 102400\r\n\r\n{{\"title\": \"slow\", \"text\": \"",
        t.key
    );
    // One body of 100 KiB arrives slowly and holds all of the budget but the share kept for small bodies...
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A question, a small body, is answered meanwhile: small bodies have a share of their own.
    let asked = Instant::now();
    let r = app.post_json(&t.key, "/v1/query", json!({"question": "anything?"})).await;
    assert_eq!(r.status(), 200);
    assert!(asked.elapsed() < Duration::from_millis(900), "the question did not wait for the budget");
    // ...but a second large one waits its second, then hears 503 with Retry-After.
    let started = Instant::now();
    let answer = answer_to_head(&app, &head, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited for room first");
    // Requests without a body, and small ones, are not held back by the budget's owner... once it ends.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.upload_text(&t.key, "After", "Room again for bodies.").await["chunks"], 1);
}

#[tokio::test]
async fn a_tenant_makes_one_export_at_a_time_and_a_few_a_day() {
    let app = spawn_app_with(|c| c.limits.exports_per_day = 1).await;
    let t = app.signup("exports@limits.test", "trial").await;
    let first: Value = app.post_json(&t.key, "/v1/export", json!({})).await.json().await.expect("json");
    let id = first["export_id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get(&t.key, &format!("/v1/export/{id}")).await.status() == 202 {
        assert!(Instant::now() < deadline, "export not built");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = app.post_json(&t.key, "/v1/export", json!({})).await;
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let problem = assert_problem(r, 429, "rate_limited").await;
    assert!(problem["detail"].as_str().expect("detail").contains("1 exports a day"), "{problem}");
    // Another tenant is not held back by this one's allowance.
    let other = app.signup("other-exports@limits.test", "trial").await;
    assert_eq!(app.post_json(&other.key, "/v1/export", json!({})).await.status(), 202);
}

#[tokio::test]
async fn a_compressed_body_is_refused_not_read_as_plain() {
    let app = spawn_app().await;
    let t = app.signup("gzip@limits.test", "trial").await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"title": "Zipped", "text": "zebras in gzip"}"#).expect("in memory");
    let body = gz.finish().expect("in memory");
    let r = app
        .client
        .post(app.url("/v1/documents"))
        .bearer_auth(&t.key)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_problem(r, 415, "unsupported_media_type").await;
    assert_eq!(app.usage(&t.key).await["totals"]["documents"], 0);
    let r = app
        .client
        .post(app.url("/v1/documents"))
        .bearer_auth(&t.key)
        .header("content-encoding", "identity")
        .json(&json!({"title": "Plain", "text": "zebras in plain text"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201, "identity is no encoding");
}
