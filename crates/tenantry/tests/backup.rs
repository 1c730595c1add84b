//! The restore drill of docs/OPERATIONS.md: `tenantry backup` while the service serves, then a service
//! started from the backup serves the same tenants, keys, documents, answers and usage.

mod support;

use std::process::Command;

use serde_json::{json, Value};

async fn ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_tenants_keys_documents_and_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let live = support::serve(&dir.path().join("data"), &[]);
    let base = live.base();

    let signup = ok(http
        .post(format!("{base}/v1/signup"))
        .json(&json!({"email": "ops@backup.test", "organization": "Backup", "plan": "starter"}))
        .send()
        .await
        .expect("signup"))
    .await;
    let key = signup["api_key"].as_str().expect("key").to_owned();
    let text = "Refunds are issued within 14 days of purchase.";
    ok(http
        .post(format!("{base}/v1/documents"))
        .bearer_auth(&key)
        .json(&json!({"title": "Refund policy", "text": text}))
        .send()
        .await
        .expect("upload"))
    .await;
    let ask = json!({"question": "How long do refunds take?"});
    let before = ok(http.post(format!("{base}/v1/query")).bearer_auth(&key).json(&ask).send().await.expect("q")).await;
    let usage_before = ok(http.get(format!("{base}/v1/usage")).bearer_auth(&key).send().await.expect("u")).await;

    // The backup, with the service still up.
    let backup = dir.path().join("backup");
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["backup", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--to")
        .arg(&backup)
        .output()
        .expect("backup runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("checked"), "{printed}");
    let health = http.get(format!("{base}/readyz")).send().await.expect("still serving");
    assert!(health.status().is_success(), "the service kept serving during the backup");
    assert!(backup.join("key-pepper").is_file() && !backup.join("tenants").join("x").exists());
    // A second backup into the same directory is refused rather than mixed with the first.
    let again = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["backup", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--to")
        .arg(&backup)
        .output()
        .expect("runs");
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty"));
    drop(live);

    // The restore: a service started from the backup, its search indexes rebuilt from the rows.
    let restored = support::serve(&backup, &[]);
    let base = restored.base();
    let tenant = ok(http.get(format!("{base}/v1/tenant")).bearer_auth(&key).send().await.expect("t")).await;
    assert_eq!(tenant["tenant_id"], signup["tenant_id"], "the same tenant, its key verifying");
    let docs = ok(http.get(format!("{base}/v1/documents")).bearer_auth(&key).send().await.expect("d")).await;
    assert_eq!(docs["documents"].as_array().map(Vec::len), Some(1), "{docs}");
    let after = ok(http.post(format!("{base}/v1/query")).bearer_auth(&key).json(&ask).send().await.expect("q")).await;
    assert_eq!(after["answer"], before["answer"], "the same answer from the rebuilt index");
    assert!(after["answer"].as_str().is_some_and(|a| a.contains("14 days")), "{after}");
    let usage_after = ok(http.get(format!("{base}/v1/usage")).bearer_auth(&key).send().await.expect("u")).await;
    assert_eq!(
        usage_after["totals"]["queries"].as_i64(),
        usage_before["totals"]["queries"].as_i64().map(|q| q + 1),
        "the usage of before the backup, plus the one question asked since"
    );
    drop(restored);
}

/// A PostgreSQL installation is not copied file by file: the command says which tool backs it up.
#[test]
fn a_postgres_installation_is_pointed_at_pg_dump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tenantry.toml");
    std::fs::write(&config, "[database]\nurl = \"postgres://tenantry:secret@db.internal/tenantry\"\n").expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["backup", "--config"])
        .arg(&config)
        .arg("--to")
        .arg(dir.path().join("b"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pg_dump") && !stderr.contains("secret"), "{stderr}");
}
