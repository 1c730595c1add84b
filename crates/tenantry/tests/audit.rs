//! The audit trail as an operator uses it: actions over HTTP land in `GET /admin/audit`, and `tenantry audit
//! verify` passes on the untouched database and fails on each kind of tampering (edit, delete, reorder,
//! truncation of the newest entries), each tried on its own copy of the database.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

const OPERATOR: &str = "op-audit-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn verify(data: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A copy of the data dir with `sql` applied to its database.
async fn tampered(data: &Path, scratch: &Path, name: &str, sql: &str) -> std::path::PathBuf {
    let copy = scratch.join(name);
    std::fs::create_dir_all(&copy).expect("mkdir");
    std::fs::copy(data.join("tenantry.db"), copy.join("tenantry.db")).expect("copy db");
    let mut conn = SqliteConnectOptions::new().filename(copy.join("tenantry.db")).connect().await.expect("open copy");
    sqlx::raw_sql(sql).execute(&mut conn).await.expect("tamper");
    conn.close().await.expect("close");
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_records_actions_and_exposes_any_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("TENANTRY_OPERATOR_TOKEN", OPERATOR)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{base}/readyz")).send().await.map_or(true, |r| r.status() != 200) {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let post =
        |path: &str, key: &str, body: Value| client.post(format!("{base}{path}")).bearer_auth(key).json(&body).send();
    let signup: Value =
        post("/v1/signup", "", json!({"email": "audit@x.test", "organization": "Audit Org", "plan": "trial"}))
            .await
            .expect("signup")
            .json()
            .await
            .expect("json");
    let (tenant, key) = (signup["tenant_id"].as_str().expect("id"), signup["api_key"].as_str().expect("key"));
    let created: Value = post("/v1/keys", key, json!({"name": "ci"})).await.expect("key").json().await.expect("json");
    let key_id = created["key_id"].as_str().expect("key id");
    let r = client.delete(format!("{base}/v1/keys/{key_id}")).bearer_auth(key).send().await.expect("revoke");
    assert_eq!(r.status(), 204);
    let r = client
        .patch(format!("{base}/v1/tenant/config"))
        .bearer_auth(key)
        .json(&json!({"system_prompt": "Be brief."}))
        .send()
        .await;
    assert_eq!(r.expect("patch").status(), 200);
    for action in ["suspend", "reactivate"] {
        let r = post(&format!("/admin/tenants/{tenant}/{action}"), OPERATOR, json!({})).await.expect("admin");
        assert_eq!(r.status(), 200);
    }
    let other: Value =
        post("/v1/signup", "", json!({"email": "other@x.test", "organization": "Other", "plan": "trial"}))
            .await
            .expect("signup")
            .json()
            .await
            .expect("json");

    let r =
        client.get(format!("{base}/admin/audit?tenant_id={tenant}")).bearer_auth(OPERATOR).send().await.expect("audit");
    let log: Value = r.json().await.expect("json");
    let actions: Vec<&str> =
        log["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "tenant.signed_up",
            "tenant.transition",
            "key.created",
            "key.revoked",
            "config.updated",
            "tenant.transition",
            "tenant.transition"
        ]
    );
    let entries = log["entries"].as_array().expect("entries");
    assert!(entries.iter().all(|e| e["tenant_id"] == tenant), "only this tenant's entries");
    assert_eq!(entries[1]["actor"], "system", "provisioning");
    assert_eq!(entries[2]["target"], key_id);
    assert!(entries[2]["actor"].as_str().is_some_and(|a| a.starts_with("tenant:key_")));
    assert_eq!(entries[5]["actor"], "operator");
    assert!(!log.to_string().contains(created["api_key"].as_str().expect("secret")), "never a key secret");
    let r = client.get(format!("{base}/admin/audit")).bearer_auth(key).send().await.expect("audit");
    assert_eq!(r.status(), 401, "tenant keys cannot read the trail");
    assert!(other["tenant_id"].is_string());

    // Stop cleanly so the database file holds everything.
    let pid = server.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    server.wait().expect("stopped");

    let (ok, text) = verify(&data);
    assert!(ok && text.contains("9 entries verified"), "{text}");

    let scratch = dir.path().join("tampered");
    let cases = [
        ("edit", "UPDATE audit_log SET detail = '{\"scopes\":\"admin\"}' WHERE seq = 2", "entry 2 was altered"),
        ("delete", "DELETE FROM audit_log WHERE seq = 3", "entry 3 is missing"),
        (
            "reorder",
            "UPDATE audit_log SET seq = -1 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 3; \
             UPDATE audit_log SET seq = 3 WHERE seq = -1",
            "entry 2 does not link",
        ),
        ("truncate", "DELETE FROM audit_log WHERE seq = 9", "the newest entries were removed"),
        (
            "rewrite-and-rehash-one",
            "UPDATE audit_log SET hash = '00', detail = '{}' WHERE seq = 5",
            "entry 5 was altered",
        ),
    ];
    for (name, sql, expected) in cases {
        let copy = tampered(&data, &scratch, name, sql).await;
        let (ok, text) = verify(&copy);
        assert!(!ok, "{name}: tampering not detected: {text}");
        assert!(text.contains(expected), "{name}: {text}");
    }
}
