//! `spawn_app`: a real Tenantry on an ephemeral port with a fresh data dir, and a client that speaks to it.

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tenantry_domain::Config;
use tenantry_service::Services;
use tenantry_web::Application;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub services: Services,
    pub data_dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::builtin();
    config.server.bind = "127.0.0.1:0".into();
    config.server.data_dir = data_dir.path().to_owned();
    configure(&mut config);
    serve(config, data_dir).await
}

/// The app on `config` as it is (its own data dir and database; `data_dir` is only kept alive).
pub async fn serve(config: Config, data_dir: tempfile::TempDir) -> TestApp {
    let app = Application::build(config).await.expect("app starts");
    let base = format!("http://{}", app.local_addr());
    let services = app.services().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp { base, client: reqwest::Client::new(), services, data_dir, stop, served }
}

/// Adds plan `metered`: the built-in `starter` with one query included and 2 cents per query beyond it, so
/// any usage past the first query shows on an invoice.
pub fn add_metered_plan(c: &mut Config) {
    use tenantry_domain::config::{Included, Overage, PlanConfig};
    let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "starter").expect("starter").clone();
    plan.name = "metered".into();
    plan.included = Included { queries: 1, tokens: 10_000_000 };
    plan.overage = Overage { query_micros: 20_000, token_micros_per_1k: 0, ..Overage::default() };
    c.plans.push(plan);
}

/// A fresh database on the test PostgreSQL server, or `None` when `TENANTRY_TEST_POSTGRES_URL` is not set —
/// a failure instead when `TENANTRY_TEST_REQUIRE_POSTGRES=1` (CI), so PostgreSQL stories cannot pass by
/// skipping.
pub async fn fresh_postgres_database() -> Option<String> {
    let url = std::env::var("TENANTRY_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    let required = std::env::var("TENANTRY_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    assert!(url.is_some() || !required, "TENANTRY_TEST_REQUIRE_POSTGRES=1 but TENANTRY_TEST_POSTGRES_URL is not set");
    let url = url?;
    Some(tenantry_store::Store::create_test_database(&url).await.expect("postgres reachable"))
}

/// The app on a fresh PostgreSQL database, or `None` when `TENANTRY_TEST_POSTGRES_URL` is not set.
pub async fn spawn_app_on_postgres() -> Option<TestApp> {
    let db_url = fresh_postgres_database().await?;
    Some(spawn_app_with(move |c| c.database.url = db_url).await)
}

/// Runs `story` on a fresh PostgreSQL database when `TENANTRY_TEST_POSTGRES_URL` is set; says so otherwise.
pub async fn on_postgres<Fut: std::future::Future<Output = ()>>(story: impl FnOnce(Option<String>) -> Fut) {
    match fresh_postgres_database().await {
        Some(url) => story(Some(url)).await,
        None => eprintln!("TENANTRY_TEST_POSTGRES_URL not set: PostgreSQL variant skipped"),
    }
}

/// A signed-up tenant's credentials.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: String,
    pub key: String,
}

impl TestApp {
    /// Stops serving and waits until the store is closed, so that another app can open the same data.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.expect("served").expect("stopped cleanly");
    }

    /// The tenant's audit trail entries (at most 1,000), read with the operator token.
    pub async fn audit(&self, operator: &str, tenant: &str) -> Vec<Value> {
        let r = self
            .client
            .get(self.url(&format!("/admin/audit?tenant_id={tenant}&limit=1000")))
            .bearer_auth(operator)
            .send()
            .await
            .expect("audit");
        let log: Value = r.json().await.expect("json");
        log["entries"].as_array().expect("entries").clone()
    }

    /// The erasure's certificate once its job has completed it (waits up to 30 s).
    pub async fn completed_erasure(&self, operator: &str, erasure_id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = self.get(operator, &format!("/admin/erasures/{erasure_id}")).await;
            assert_eq!(r.status(), StatusCode::OK, "certificate readable");
            let cert: Value = r.json().await.expect("json");
            if cert["status"] == "completed" {
                return cert;
            }
            assert!(std::time::Instant::now() < deadline, "the erasure did not complete: {cert}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Closes every billable tenant's current period now (`POST /admin/billing/close-period`): the invoices made.
    pub async fn close_periods(&self, operator: &str) -> Value {
        let r = self.client.post(self.url("/admin/billing/close-period")).bearer_auth(operator).send().await;
        let r = r.expect("close");
        assert_eq!(r.status(), StatusCode::OK, "close-period");
        r.json().await.expect("json")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn signup(&self, email: &str, plan: &str) -> Tenant {
        self.signup_as(email, &format!("Org of {email}"), plan).await
    }

    pub async fn signup_as(&self, email: &str, organization: &str, plan: &str) -> Tenant {
        let r = self
            .client
            .post(self.url("/v1/signup"))
            .json(&json!({"email": email, "organization": organization, "plan": plan}))
            .send()
            .await
            .expect("signup request");
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.expect("json");
        Tenant {
            id: body["tenant_id"].as_str().expect("tenant_id").to_owned(),
            key: body["api_key"].as_str().expect("api_key").to_owned(),
        }
    }

    pub async fn get(&self, key: &str, path: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(key).send().await.expect("request")
    }

    pub async fn post_json(&self, key: &str, path: &str, body: Value) -> Response {
        self.client.post(self.url(path)).bearer_auth(key).json(&body).send().await.expect("request")
    }

    pub async fn upload_text(&self, key: &str, title: &str, text: &str) -> Value {
        let r = self.post_json(key, "/v1/documents", json!({"title": title, "text": text})).await;
        assert_eq!(r.status(), StatusCode::CREATED, "upload of {title}");
        r.json().await.expect("json")
    }

    pub async fn query(&self, key: &str, question: &str) -> Value {
        let r = self.post_json(key, "/v1/query", json!({"question": question})).await;
        assert_eq!(r.status(), StatusCode::OK, "query {question}");
        r.json().await.expect("json")
    }

    pub async fn usage(&self, key: &str) -> Value {
        let r = self.get(key, "/v1/usage").await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("json")
    }
}

/// Asserts a problem+json response with `status` and `code`, and returns its body.
pub async fn assert_problem(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(r.headers().contains_key("x-request-id"), "every response carries X-Request-Id");
    if status == 401 {
        let scheme = r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(scheme.starts_with("Bearer"), "a 401 names the Bearer scheme (RFC 6750): {scheme:?}");
    }
    let body: Value = r.json().await.expect("problem body is JSON");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].as_str().is_some_and(|s| !s.is_empty()), "problem has {field}: {body}");
    }
    body
}

/// One server-sent event: its `event` name (empty when unnamed) and its `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is JSON ({e}): {}", self.data))
    }
}

/// Reads a whole `text/event-stream` response into its events (comments and keep-alives dropped).
pub async fn sse_events(r: Response) -> Vec<SseEvent> {
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("text/event-stream"), "content type {content_type}");
    let body = r.text().await.expect("stream body");
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = SseEvent { event: String::new(), data: String::new() };
            let mut has_data = false;
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event.event = name.trim().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                    has_data = true;
                }
            }
            has_data.then_some(event)
        })
        .collect()
}
