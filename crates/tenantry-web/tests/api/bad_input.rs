//! Bad input gets a clear problem+json error and leaves nothing behind: no rows, no index entries, no
//! stored files, no ledger events.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, Tenant, TestApp};

/// Nothing of the tenant's is stored: no documents, no ledger levels, no chunk the index can find, no files.
async fn assert_nothing_stored(app: &TestApp, t: &Tenant, probe_word: &str) {
    let list: serde_json::Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(list["documents"], json!([]), "no document rows");
    let usage = app.usage(&t.key).await;
    assert_eq!(usage["totals"]["documents"], 0);
    assert_eq!(usage["totals"]["storage_bytes"], 0);
    let answer = app.query(&t.key, probe_word).await;
    assert_eq!(answer["citations"], json!([]), "no index entries: {answer}");
    let tenant_id = tenantry_domain::TenantId::parse(&t.id).expect("tenant id");
    let rows = app.services.store().documents(&tenant_id).await.expect("store");
    assert!(rows.is_empty(), "no rows in the store: {rows:?}");
    let rows = app.services.store().tenant_content_rows(&tenant_id).await.expect("store");
    for table in ["documents", "chunks", "file_parts", "document_changes"] {
        assert!(rows.contains(&(table, 0)), "nothing in {table}: {rows:?}");
    }
}

/// POSTs a body that claims to be JSON and is not.
async fn post_broken_json(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    let r = app.client.post(app.url(path)).bearer_auth(key).header("content-type", "application/json");
    r.body("{not json").send().await.expect("post")
}

#[tokio::test]
async fn malformed_json_and_missing_fields() {
    let app = spawn_app().await;
    let t = app.signup("bad@input.test", "trial").await;
    assert_problem(post_broken_json(&app, &t.key, "/v1/documents").await, 400, "bad_request").await;
    let r = app.post_json(&t.key, "/v1/documents", json!({"title": "no text"})).await;
    assert_problem(r, 422, "validation_failed").await;
    let r = app.post_json(&t.key, "/v1/query", json!({"top_k": 3})).await;
    assert_problem(r, 422, "validation_failed").await;
    let r = app.post_json(&t.key, "/v1/query", json!({"question": "   "})).await;
    assert_problem(r, 422, "validation_failed").await;
    let r = app.post_json(&t.key, "/v1/query", json!({"question": "x", "top_k": 0})).await;
    assert_problem(r, 422, "validation_failed").await;
    let r = app.client.post(app.url("/v1/signup")).json(&json!({"email": "x@y.test"})).send().await.expect("post");
    assert_problem(r, 422, "validation_failed").await;
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "not-an-email", "organization": "O", "plan": "trial"}))
        .send()
        .await
        .expect("post");
    assert_problem(r, 422, "validation_failed").await;
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": "ok@y.test", "organization": "O", "plan": "platinum"}))
        .send()
        .await
        .expect("post");
    assert_problem(r, 422, "validation_failed").await;
    let r = app.get(&t.key, "/v1/usage?from=yesterday").await;
    assert_problem(r, 422, "validation_failed").await;
    assert_nothing_stored(&app, &t, "title").await;
}

#[tokio::test]
async fn empty_unknown_type_and_unreadable_documents() {
    let app = spawn_app().await;
    let t = app.signup("docs@input.test", "trial").await;
    let r = app.post_json(&t.key, "/v1/documents", json!({"title": "Empty", "text": "   \n "})).await;
    assert_problem(r, 422, "validation_failed").await;

    let form = |bytes: Vec<u8>, name: &str, mime: &str| {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()).mime_str(mime).expect("mime");
        reqwest::multipart::Form::new().part("file", part)
    };
    let post_form =
        |f: reqwest::multipart::Form| app.client.post(app.url("/v1/documents")).bearer_auth(&t.key).multipart(f).send();

    let r = post_form(form(b"\x89PNG\r\n".to_vec(), "photo.png", "image/png")).await.expect("post");
    assert_problem(r, 415, "unsupported_media_type").await;
    let r = post_form(form(vec![0xff, 0xfe, 0xfd, b'z', b'e', b'b', b'r', b'a'], "latin1.txt", "text/plain"))
        .await
        .expect("post");
    assert_problem(r, 422, "validation_failed").await;
    let r = post_form(form(b"#  \n\n".to_vec(), "empty.md", "text/markdown")).await.expect("post");
    assert_problem(r, 422, "validation_failed").await;
    let no_file = reqwest::multipart::Form::new().text("title", "zebra");
    let r = post_form(no_file).await.expect("post");
    assert_problem(r, 422, "validation_failed").await;
    // Two documents in one form: refused rather than one silently dropped; so are two titles.
    let part = |text: &str, name: &str| {
        reqwest::multipart::Part::bytes(text.as_bytes().to_vec()).file_name(name.to_owned()).mime_str("text/plain")
    };
    let two_files = reqwest::multipart::Form::new()
        .part("file", part("zebra one", "a.txt").expect("mime"))
        .part("file", part("zebra two", "b.txt").expect("mime"));
    assert_problem(post_form(two_files).await.expect("post"), 422, "validation_failed").await;
    let two_titles = reqwest::multipart::Form::new()
        .text("title", "A")
        .text("title", "B")
        .part("file", part("zebra", "z.txt").expect("mime"));
    assert_problem(post_form(two_titles).await.expect("post"), 422, "validation_failed").await;
    assert_nothing_stored(&app, &t, "zebra").await;
    let r = app
        .client
        .post(app.url("/v1/documents"))
        .bearer_auth(&t.key)
        .header("content-type", "application/xml")
        .body("<zebra/>")
        .send()
        .await
        .expect("post");
    assert_problem(r, 415, "unsupported_media_type").await;
    assert_nothing_stored(&app, &t, "zebra").await;
}

#[tokio::test]
async fn huge_bodies_are_refused_whole() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 64 * 1024).await;
    let t = app.signup("huge@input.test", "trial").await;
    let text = "zebra ".repeat(20_000); // 120 KB
    let r = app.post_json(&t.key, "/v1/documents", json!({"title": "Huge", "text": text})).await;
    assert_problem(r, 413, "payload_too_large").await;
    let part =
        reqwest::multipart::Part::bytes(text.into_bytes()).file_name("huge.txt").mime_str("text/plain").expect("mime");
    let r = app
        .client
        .post(app.url("/v1/documents"))
        .bearer_auth(&t.key)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("post");
    assert_problem(r, 413, "payload_too_large").await;
    assert_nothing_stored(&app, &t, "zebra").await;
}

#[tokio::test]
async fn bad_keys_are_401_and_say_nothing_more() {
    let app = spawn_app().await;
    let t = app.signup("keys@input.test", "trial").await;
    let (id_part, secret) = t.key.rsplit_once('_').expect("key shape");
    let forged = format!("{id_part}_{}", "A".repeat(secret.len()));
    for key in ["", "tk_not_a_real_key", "sk_live_abc", forged.as_str(), &format!("{}x", t.key)] {
        let r = app
            .client
            .get(app.url("/v1/tenant"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .expect("get");
        let body = assert_problem(r, 401, "unauthenticated").await;
        assert!(!body.to_string().contains(&t.id), "no hint of the real tenant");
    }
    let r = app.client.get(app.url("/v1/tenant")).send().await.expect("get");
    assert_problem(r, 401, "unauthenticated").await;
    let r = app
        .client
        .get(app.url("/v1/tenant"))
        .header("authorization", format!("Basic {}", t.key))
        .send()
        .await
        .expect("get");
    assert_problem(r, 401, "unauthenticated").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/v1/nothing-here")).send().await.expect("get");
    assert_problem(r, 404, "not_found").await;
    let r = app.client.put(app.url("/v1/signup")).send().await.expect("put");
    assert_problem(r, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn an_overlong_target_or_head_is_a_problem_not_a_bare_refusal() {
    let app = spawn_app().await;
    let long_query = format!("/v1/usage?from={}", "9".repeat(9 * 1024));
    let r = app.client.get(app.url(&long_query)).send().await.expect("get");
    assert_problem(r, 414, "uri_too_long").await;

    let mut many = reqwest::header::HeaderMap::new();
    for i in 0..120 {
        many.insert(
            reqwest::header::HeaderName::from_bytes(format!("x-field-{i}").as_bytes()).expect("name"),
            reqwest::header::HeaderValue::from_static("1"),
        );
    }
    let r = app.client.get(app.url("/healthz")).headers(many).send().await.expect("get");
    assert_problem(r, 431, "header_fields_too_large").await;

    let r = app.client.get(app.url("/healthz")).header("x-big", "b".repeat(40 * 1024)).send().await.expect("get");
    assert_problem(r, 431, "header_fields_too_large").await;

    // Within the limits, the same requests are served.
    let r = app.client.get(app.url("/healthz")).header("x-big", "b".repeat(8 * 1024)).send().await.expect("get");
    assert_eq!(r.status(), 200);
}

const SAMPLE_PDF: &[u8] = include_bytes!("../../../tenantry-ingest/tests/fixtures/sample.pdf");
const TRUNCATED_PDF: &[u8] = include_bytes!("../../../tenantry-ingest/tests/fixtures/truncated.pdf");

async fn upload_file(app: &TestApp, t: &Tenant, bytes: &[u8], name: &str, mime: &str) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned()).mime_str(mime).expect("mime");
    let form = reqwest::multipart::Form::new().part("file", part);
    app.client.post(app.url("/v1/documents")).bearer_auth(&t.key).multipart(form).send().await.expect("post")
}

#[tokio::test]
async fn a_broken_pdf_is_refused_whole_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let t = app.signup("pdf@input.test", "trial").await;
    let r = upload_file(&app, &t, TRUNCATED_PDF, "handbook.pdf", "application/pdf").await;
    assert_problem(r, 422, "validation_failed").await;
    let r = upload_file(&app, &t, b"%PDF-1.7 zebra garbage", "zebra.pdf", "application/pdf").await;
    assert_problem(r, 422, "validation_failed").await;
    assert_nothing_stored(&app, &t, "zebra").await;

    // Still serving: the real PDF goes in, cited by page and heading.
    let r = upload_file(&app, &t, SAMPLE_PDF, "handbook.pdf", "application/octet-stream").await;
    assert_eq!(r.status(), 201);
    let doc: serde_json::Value = r.json().await.expect("json");
    assert_eq!(doc["content_type"], "application/pdf");
    assert_eq!(doc["title"], "Tenantry Sample Handbook");
    let answer = app.query(&t.key, "Which rules relate to the protection of natural persons?").await;
    let cited = &answer["citations"][0];
    assert_eq!(cited["document_id"], doc["document_id"]);
    assert!(cited["page"].as_u64().is_some_and(|p| p >= 1), "{cited}");
    assert!(cited["heading"].as_str().is_some_and(|h| h.contains("Article")), "{cited}");
}

#[tokio::test]
async fn html_is_stripped_of_scripts_and_navigation() {
    let app = spawn_app().await;
    let t = app.signup("html@input.test", "trial").await;
    let page = b"<html><head><title>Travel policy</title><script>var zebra = 1;</script></head><body>\
        <nav>Home | Zebra menu</nav><h1>Travel</h1><h2>Trains</h2><p>Book second class for trips under 4 hours.</p>\
        <footer>Zebra footer</footer></body></html>";
    let r = upload_file(&app, &t, page, "travel.html", "text/html").await;
    assert_eq!(r.status(), 201);
    let answer = app.query(&t.key, "trains second class").await;
    assert_eq!(answer["citations"][0]["heading"], "Travel > Trains");
    let zebra = app.query(&t.key, "zebra").await;
    assert_eq!(zebra["citations"], json!([]), "script, navigation and footer are not indexed: {zebra}");
}

/// The caller is judged before the body: without a valid key or operator token a request gets 401 whatever
/// it sends, and the body's error (which names the fields expected) goes only to an authenticated caller.
#[tokio::test]
async fn a_bad_body_without_credentials_is_401_not_its_validation_error() {
    let app = spawn_app().await;
    let t = app.signup("judged@input.test", "trial").await;
    let cases: [(reqwest::Method, &str, &str); 7] = [
        (reqwest::Method::POST, "/v1/query", "{not json"),
        (reqwest::Method::PATCH, "/v1/tenant/config", r#"{"model": 5}"#),
        (reqwest::Method::POST, "/v1/plan", r#"{"plan": 7}"#),
        (reqwest::Method::POST, "/v1/keys", r#"{"bogus": 1}"#),
        (reqwest::Method::POST, "/admin/invoices/inv_x/payment", r#"{"bogus": 1}"#),
        (reqwest::Method::POST, "/admin/clock/advance", r#"{"seconds": "x"}"#),
        (reqwest::Method::POST, "/v1/query", r#"{"question": 1}"#),
    ];
    for (method, path, body) in cases {
        for auth in [None, Some("tk_forged_secret")] {
            let mut r = app.client.request(method.clone(), app.url(path)).header("content-type", "application/json");
            if let Some(key) = auth {
                r = r.bearer_auth(key);
            }
            let r = r.body(body).send().await.expect("request");
            let problem = assert_problem(r, 401, "unauthenticated").await;
            assert!(!problem["detail"].to_string().contains("expected"), "{method} {path}: {problem}");
        }
    }
    // With the tenant's key the same bad body is judged: 400 for broken JSON, 422 for the wrong shape.
    assert_problem(post_broken_json(&app, &t.key, "/v1/query").await, 400, "bad_request").await;
    assert_problem(app.post_json(&t.key, "/v1/keys", json!({"bogus": 1})).await, 422, "validation_failed").await;
}

/// NUL and other control characters: a title holding one is refused; a text holding them is stored without
/// them. On PostgreSQL too, whose text type refuses NUL (it was a 500 there).
#[tokio::test]
async fn control_characters_in_typed_fields_are_refused_and_dropped_from_texts() {
    let mut apps = vec![spawn_app().await];
    apps.extend(crate::helpers::spawn_app_on_postgres().await);
    for app in &apps {
        let t = app.signup("nul@input.test", "trial").await;
        let r = app.post_json(&t.key, "/v1/documents", json!({"title": "ze\u{0}bra", "text": "zebra"})).await;
        assert_problem(r, 422, "validation_failed").await;
        assert_nothing_stored(app, &t, "zebra").await;

        let body = json!({"title": "Refunds", "text": "Refunds take\u{0} fourteen\u{7} days."});
        let r = app.post_json(&t.key, "/v1/documents", body).await;
        assert_eq!(r.status(), 201);
        // A replay of stored content is validated like any upload before it is answered as the stored one.
        for title in ["Re\u{0}funds".to_owned(), "R".repeat(501)] {
            let body = json!({"title": title, "text": "Refunds take\u{0} fourteen\u{7} days."});
            assert_problem(app.post_json(&t.key, "/v1/documents", body).await, 422, "validation_failed").await;
        }
        let answer = app.query(&t.key, "How long do refunds take?").await;
        let cited = answer["citations"][0]["text"].as_str().expect("a citation");
        assert!(cited.contains("Refunds take fourteen days."), "{cited:?}");

        // Every other field a person types refuses them too, on PostgreSQL (which cannot store NUL) as on
        // SQLite, and nothing changes.
        let signup = json!({"email": "nul2@input.test", "organization": "Ze\u{0}bra", "plan": "trial"});
        let r = app.client.post(app.url("/v1/signup")).json(&signup).send().await.expect("signup");
        assert_problem(r, 422, "validation_failed").await;
        let r = app.post_json(&t.key, "/v1/keys", json!({"name": "ci\u{0}"})).await;
        assert_problem(r, 422, "validation_failed").await;
        let r = app.post_json(&t.key, "/v1/query", json!({"question": "refunds\u{0}?"})).await;
        assert_problem(r, 422, "validation_failed").await;
        let r = app
            .client
            .patch(app.url("/v1/tenant/config"))
            .bearer_auth(&t.key)
            .json(&json!({"system_prompt": "Be brief.\u{0}"}))
            .send()
            .await
            .expect("patch");
        assert_problem(r, 422, "validation_failed").await;
        let tenant: serde_json::Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
        assert_eq!(tenant["config"]["system_prompt"], "", "{tenant}");
        let keys: serde_json::Value = app.get(&t.key, "/v1/keys").await.json().await.expect("json");
        assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    }
}

/// Connections that never finish their request head, sit idle after a response or stall their body are
/// closed after the configured timeouts (1 s here), so no client can hold connections open for good.
#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(|c| {
        c.server.header_timeout_secs = 1;
        c.server.body_timeout_secs = 1;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let open = || async { tokio::net::TcpStream::connect(&addr).await.expect("connect") };
    // Everything the server sends until it closes the connection; the test fails if it does not within 10 s.
    async fn until_closed(stream: &mut tokio::net::TcpStream, what: &str) -> String {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut seen)).await;
        assert!(read.is_ok(), "{what}: still open after 10 s; received {:?}", String::from_utf8_lossy(&seen));
        String::from_utf8_lossy(&seen).into_owned()
    }

    let mut silent = open().await;
    assert_eq!(until_closed(&mut silent, "silent").await, "");

    let mut half_head = open().await;
    half_head.write_all(b"GET /healthz HTTP/1.1\r\nHost: tenantry\r\n").await.expect("write");
    assert_eq!(until_closed(&mut half_head, "half a head").await, "");

    let mut idle = open().await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: tenantry\r\n\r\n").await.expect("write");
    let answered = until_closed(&mut idle, "idle after a response").await;
    assert!(answered.starts_with("HTTP/1.1 200"), "served, then closed when idle: {answered:?}");

    let mut stalled = open().await;
    let head =
        "POST /v1/signup HTTP/1.1\r\nHost: tenantry\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    stalled.write_all(head.as_bytes()).await.expect("write");
    stalled.write_all(b"{\"email\": \"slow").await.expect("write");
    let answered = until_closed(&mut stalled, "stalled body").await;
    assert!(!answered.starts_with("HTTP/1.1 2"), "a stalled body is not accepted: {answered:?}");

    // The server still serves everyone else.
    assert_eq!(app.client.get(app.url("/healthz")).send().await.expect("healthz").status(), 200);
}
