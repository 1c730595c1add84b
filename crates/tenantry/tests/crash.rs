//! The real binary under load, killed with SIGKILL again and again: afterwards the ledger holds every success
//! a client saw, at most the requests in flight at each kill beyond that, nothing twice, and no quota stays
//! reserved. Also: no key material ever reaches the logs.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tenantry_domain::quota::Meter;
use tenantry_domain::TenantId;
use tenantry_store::Store;

const CONFIG: &str = r#"
[[plans]]
name = "load"
models = ["local-small"]
default_model = "local-small"
[plans.quotas]
queries = 1000000
tokens = 1000000000
documents = 100
storage_bytes = 100000000
requests_per_minute = 1000000
"#;

fn start(dir: &Path, port: u16, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--config"])
        .arg(dir.join("tenantry.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "debug,sqlx=warn,tantivy=warn,hyper=warn,h2=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("binary starts")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("tenantry.toml"), CONFIG).expect("config");
    let log = dir.path().join("server.log");
    let port = support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    let mut server = start(dir.path(), port, &log);
    wait_healthy(&client, &base).await;
    let signup: Value = client
        .post(format!("{base}/v1/signup"))
        .json(&json!({"email": "crash@test.example", "organization": "Crash", "plan": "load"}))
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("json");
    let key = signup["api_key"].as_str().expect("key").to_owned();
    let tenant = TenantId::parse(signup["tenant_id"].as_str().expect("id")).expect("tenant id");
    let r = client
        .post(format!("{base}/v1/documents"))
        .bearer_auth(&key)
        .json(&json!({"title": "Policy", "text": "Refunds are issued within 14 days of purchase."}))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 201);

    const CLIENTS: usize = 8;
    const KILLS: usize = 5;
    let successes = Arc::new(parking_lot_free::Set::default());
    let next_id = Arc::new(AtomicU64::new(0));
    for round in 0..KILLS {
        let running = Arc::new(AtomicBool::new(true));
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (client, base, key) = (client.clone(), base.clone(), key.clone());
                let (running, successes, next_id) = (running.clone(), successes.clone(), next_id.clone());
                tokio::spawn(async move {
                    while running.load(Ordering::Relaxed) {
                        let id = format!("crash-{}", next_id.fetch_add(1, Ordering::Relaxed));
                        let sent = client
                            .post(format!("{base}/v1/query"))
                            .bearer_auth(&key)
                            .header("x-request-id", &id)
                            .json(&json!({"question": "How long do refunds take?"}))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 200 => {
                                if r.json::<Value>().await.is_ok() {
                                    successes.insert(id);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
        server.kill().expect("SIGKILL");
        server.wait().expect("reaped");
        tokio::time::sleep(Duration::from_millis(100)).await;
        running.store(false, Ordering::Relaxed);
        for w in workers {
            w.await.expect("worker");
        }
        server = start(dir.path(), port, &log);
        wait_healthy(&client, &base).await;
    }
    // Stop cleanly so the store can be opened from here.
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    server.wait().expect("stopped");

    let store = Store::open("", &dir.path().join("data")).await.expect("store opens");
    let ledger = store.usage_request_ids(&tenant, Meter::Queries).await.expect("ledger");
    let seen = successes.all();
    assert!(seen.len() > 50, "the load made progress: {} successes", seen.len());
    let mut unique = ledger.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ledger.len(), "no request is in the ledger twice");
    for id in &seen {
        assert!(ledger.contains(id), "success {id} is missing from the ledger");
    }
    let lost_in_transit = ledger.len() - seen.len();
    assert!(lost_in_transit <= CLIENTS * KILLS, "{lost_in_transit} ledger rows beyond the successes seen");
    assert_eq!(store.reservation_count().await.expect("count"), 0, "no reservation outlives a restart");
    let tenant_row = store.tenant(&tenant).await.expect("read").expect("tenant");
    let period = tenantry_domain::quota::BillingPeriod::containing(
        tenant_row.billing_anchor,
        tenantry_domain::Timestamp::from_datetime(time_now()),
        tenantry_domain::quota::PeriodKind::Month,
    );
    let counters = store.quota_counters(&tenant, period.start).await.expect("counters");
    assert_eq!(counters.reserved.queries, 0);
    assert_eq!(counters.used.queries, ledger.len() as i64, "quota counters agree with the ledger");
    eprintln!(
        "{} successes, {} ledger rows, {} answers lost in transit over {KILLS} kills",
        seen.len(),
        ledger.len(),
        lost_in_transit
    );

    let text = std::fs::read_to_string(&log).expect("log");
    // The secret is base64url and may itself contain '_', so split the way the gateway does.
    let (_, secret) = tenantry_service::keys::parse(&key).expect("key shape");
    assert!(!text.contains(secret), "the key's secret never reaches the logs");
    assert!(text.contains(tenant.as_str()), "the logs do carry the tenant id");
}

fn time_now() -> ::time::OffsetDateTime {
    ::time::OffsetDateTime::now_utc()
}

/// A tiny thread-safe set, to keep the test's dependencies to the workspace's.
mod parking_lot_free {
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Set(Mutex<Vec<String>>);

    impl Set {
        pub fn insert(&self, v: String) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        }

        pub fn all(&self) -> Vec<String> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }
}
