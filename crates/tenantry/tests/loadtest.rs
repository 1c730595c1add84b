//! `tenantry loadtest` end to end: a short mixed run against its own embedded service, and one against two
//! `tenantry serve` nodes on one PostgreSQL database (and ClickHouse, when `TENANTRY_TEST_CLICKHOUSE_URL` is
//! set) configured with `--print-config`, each reconciling to zero mismatches while tight-quota tenants are
//! refused at their quota.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{free_port, wait_listening, Served};

/// Runs `tenantry loadtest ARGS --json` and returns its exit success and its last line as JSON.
fn loadtest(args: &[&str], env: &[(&str, &str)]) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .arg("loadtest")
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
        .output()
        .expect("tenantry loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    (out.status.success(), serde_json::from_str(last).unwrap_or(Value::Null))
}

/// Every guarantee held, the whole mix ran, and the tight plan's quota refused questions without being passed.
fn assert_reconciled(report: &Value) {
    let reconciliation = report["reconciliation"].as_object().expect("a reconciliation object");
    assert!(reconciliation.len() >= 15, "every kind is listed: {reconciliation:?}");
    assert!(reconciliation.values().all(|n| n == 0), "mismatches: {reconciliation:?}");
    for endpoint in ["POST /v1/query", "POST /v1/chat/completions", "GET /v1/usage", "POST /v1/documents"] {
        assert!(report["endpoints"][endpoint]["requests"].as_u64() > Some(0), "{endpoint} ran: {report}");
    }
    assert!(report["upstream_calls"].as_u64() > Some(0), "hosted models were asked: {report}");
    let refused_at_quota = report["errors"]
        .as_object()
        .expect("errors")
        .iter()
        .any(|(what, n)| what.contains("429 quota_exceeded") && n.as_u64() > Some(0));
    assert!(refused_at_quota, "the tight plan's tenants reached their quota: {report}");
}

#[test]
fn a_mixed_run_against_the_embedded_service_reconciles() {
    let (ok, report) = loadtest(&["--tenants", "5", "--duration", "5", "--rate", "40"], &[]);
    assert!(ok, "exit status: {report}");
    assert_eq!(report["sent"], 200);
    assert_eq!(report["answered"], 200, "{report}");
    assert_reconciled(&report);
}

#[test]
fn a_mixed_run_against_two_nodes_on_postgres_reconciles() {
    let required = std::env::var("TENANTRY_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let Some(admin_url) = std::env::var("TENANTRY_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
        assert!(!required, "TENANTRY_TEST_REQUIRE_POSTGRES=1 but TENANTRY_TEST_POSTGRES_URL is not set");
        eprintln!("TENANTRY_TEST_POSTGRES_URL not set: the two-node load test is skipped");
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database = runtime.block_on(tenantry_store::Store::create_test_database(&admin_url)).expect("postgres");
    let dir = tempfile::tempdir().expect("dir");
    let upstream = format!("127.0.0.1:{}", free_port());
    let printed = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["loadtest", "--print-config", "--upstream-bind", &upstream])
        .output()
        .expect("print-config");
    assert!(printed.status.success());
    // With ClickHouse (CI has one), the usage it receives is reconciled too.
    let analytics = match std::env::var("TENANTRY_TEST_CLICKHOUSE_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => format!(
            "[analytics]\nclickhouse_url = \"{url}\"\nclickhouse_database = \"loadtest_{}\"\n\n",
            std::process::id()
        ),
        None => String::new(),
    };
    let config = format!(
        "[server]\noperator_token = \"loadtest-operator\"\n\n[database]\nurl = \"{database}\"\n\n\
         [gateway]\nrate_limiter = \"shared\"\n\n{analytics}{}",
        String::from_utf8_lossy(&printed.stdout)
    );
    std::fs::write(dir.path().join("tenantry.toml"), config).expect("config");
    let first = node(dir.path(), "a");
    let second = node(dir.path(), "b");
    let urls = format!("{},{}", first.base(), second.base());
    let args = ["--tenants", "5", "--duration", "5", "--rate", "40", "--url", &urls, "--upstream-bind", &upstream];
    let (ok, report) = loadtest(&args, &[("TENANTRY_OPERATOR_TOKEN", "loadtest-operator")]);
    assert!(ok, "exit status: {report}");
    assert_eq!(report["nodes"], 2);
    assert_reconciled(&report);
    if !analytics.is_empty() {
        assert_eq!(report["analytics_reconciled_tenants"], 5, "ClickHouse compared for every tenant: {report}");
    }
}

/// A node on the shared configuration, once it answers `/readyz` (the first one migrates the database).
fn node(dir: &Path, name: &str) -> Served {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--config"])
        .arg(dir.join("tenantry.toml"))
        .arg("--data-dir")
        .arg(dir.join(format!("data-{name}")))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("TENANTRY_KEY_PEPPER", "loadtest-pepper-shared-by-both-nodes-0123456789")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("tenantry serve starts");
    let served = Served { child, port };
    wait_listening(port);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(port) {
        assert!(Instant::now() < deadline, "node {name} did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    served
}

fn ready(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let request = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}
