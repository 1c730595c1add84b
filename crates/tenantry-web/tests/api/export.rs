//! GDPR export over HTTP: the archive holds everything listed in its format (profile, key metadata without
//! secrets, originals, extracted chunks, ledger, audit trail) and nothing of another tenant; its manifest's
//! digests match its files; another tenant cannot fetch it; erasure removes it.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_problem, spawn_app_with};

/// The archive's files by path.
fn unpack(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        files.insert(path, bytes);
    }
    files
}

#[tokio::test]
async fn an_export_holds_everything_of_the_tenant_and_nothing_else() {
    let app = spawn_app_with(|c| c.server.operator_token = "op-export".into()).await;
    let t = app.signup("export@zz.test", "trial").await;
    let other = app.signup("other-export@zz.test", "trial").await;
    let doc = app.upload_text(&t.key, "Narwhal guide", "Narwhals use their tusks to sense water salinity.").await;
    app.upload_text(&other.key, "Secret plan", "Capybara operation begins at dawn.").await;
    app.query(&t.key, "What do narwhals sense?").await;
    let created: Value =
        app.post_json(&t.key, "/v1/keys", json!({"name": "exporter"})).await.json().await.expect("json");
    let secret = created["api_key"].as_str().expect("secret").to_owned();

    let r = app.post_json(&t.key, "/v1/export", json!({})).await;
    assert_eq!(r.status(), 202);
    let started: Value = r.json().await.expect("json");
    let id = started["export_id"].as_str().expect("id").to_owned();
    assert_eq!(started["status"], "pending");

    let r = app.get(&other.key, &format!("/v1/export/{id}")).await;
    assert_problem(r, 404, "not_found").await;

    // Built in the background: 202 with the status until the archive is ready.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = app.get(&t.key, &format!("/v1/export/{id}")).await;
        if r.status() != 202 {
            break r;
        }
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(std::time::Instant::now() < deadline, "export not built");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let digest = r.headers()["x-export-sha256"].to_str().expect("header").to_owned();
    let archive = r.bytes().await.expect("body").to_vec();
    assert_eq!(hex::encode(Sha256::digest(&archive)), digest);
    let files = unpack(&archive);

    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest");
    assert_eq!(manifest["format"], "tenantry-export/1");
    assert_eq!(manifest["tenant_id"], t.id);
    for f in manifest["files"].as_array().expect("files") {
        let path = f["path"].as_str().expect("path");
        let bytes = &files[path];
        assert_eq!(f["sha256"].as_str(), Some(hex::encode(Sha256::digest(bytes)).as_str()), "{path}");
    }
    for expected in ["tenant.json", "api_keys.json", "documents.json", "usage.jsonl", "audit.jsonl", "invoices.json"] {
        assert!(files.contains_key(expected), "{expected} in {:?}", files.keys());
    }
    let tenant: Value = serde_json::from_slice(&files["tenant.json"]).expect("json");
    assert_eq!(tenant["email"], "export@zz.test");
    let doc_id = doc["document_id"].as_str().expect("id");
    assert_eq!(files[&format!("documents/{doc_id}/original")], b"Narwhals use their tusks to sense water salinity.");
    let chunks = String::from_utf8(files[&format!("documents/{doc_id}/chunks.jsonl")].clone()).expect("utf8");
    assert!(chunks.contains("sense water salinity"));
    let keys: Value = serde_json::from_slice(&files["api_keys.json"]).expect("json");
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    let usage = String::from_utf8(files["usage.jsonl"].clone()).expect("utf8");
    assert!(usage.lines().any(|l| l.contains("\"meter\":\"queries\"")));
    let audit = String::from_utf8(files["audit.jsonl"].clone()).expect("utf8");
    assert!(audit.contains("key.created") && audit.contains("tenant.signed_up"));

    let everything: Vec<u8> = files.values().flatten().copied().collect();
    let everything = String::from_utf8_lossy(&everything);
    for foreign in ["Capybara", "Secret plan", "other-export@zz.test", other.id.as_str()] {
        assert!(!everything.contains(foreign), "another tenant's {foreign:?} is in the export");
    }
    let secret_part = secret.splitn(3, '_').nth(2).expect("secret");
    assert!(!everything.contains(secret_part), "never a key secret");

    // Erasure takes the export with it.
    let r = app.client.delete(app.url("/v1/tenant")).bearer_auth(&t.key).send().await.expect("erase");
    assert_eq!(r.status(), 202);
    let erasure_id = r.json::<Value>().await.expect("json")["erasure_id"].as_str().expect("id").to_owned();
    app.completed_erasure("op-export", &erasure_id).await;
    let tenant = tenantry_domain::TenantId::parse(&t.id).expect("id");
    assert!(app.services.store().file(&tenant, &id).await.expect("store").is_none());
    assert!(!app.data_dir.path().join("tenants").join(&t.id).exists(), "nothing of the tenant on disk");
}

#[tokio::test]
async fn an_export_expires_and_its_archive_is_deleted() {
    let app = spawn_app_with(|c| {
        c.server.clock = "test".into();
        c.server.operator_token = "op-export".into();
    })
    .await;
    let t = app.signup("expiry@zz.test", "trial").await;
    app.upload_text(&t.key, "Note", "Kept for a week.").await;
    let started: Value = app.post_json(&t.key, "/v1/export", json!({})).await.json().await.expect("json");
    let id = started["export_id"].as_str().expect("id").to_owned();
    let advance = |seconds: i64| {
        app.client
            .post(app.url("/admin/clock/advance"))
            .bearer_auth("op-export")
            .json(&json!({"seconds": seconds}))
            .send()
    };
    // Moving the clock runs the build job too.
    assert_eq!(advance(1).await.expect("advance").status(), 200);
    assert_eq!(app.get(&t.key, &format!("/v1/export/{id}")).await.status(), 200);
    let tenant = tenantry_domain::TenantId::parse(&t.id).expect("id");
    let archive = || app.services.store().file(&tenant, &id);
    assert!(archive().await.expect("store").is_some(), "the archive is stored in the database");

    assert_eq!(advance(7 * 86_400).await.expect("advance").status(), 200);
    assert_problem(app.get(&t.key, &format!("/v1/export/{id}")).await, 404, "not_found").await;
    assert!(archive().await.expect("store").is_none(), "the expiry job deleted the archive");
}

#[tokio::test]
async fn an_export_includes_the_lifecycle_and_the_notifications_sent() {
    let app = spawn_app_with(|c| {
        c.server.clock = "test".into();
        c.server.operator_token = "op-export".into();
    })
    .await;
    let t = app.signup("nudged@zz.test", "trial").await;
    // A day without a document sends the activation nudge.
    let r = app.post_json("op-export", "/admin/clock/advance", json!({"seconds": 25 * 3_600})).await;
    assert_eq!(r.status(), 200);
    app.upload_text(&t.key, "Note", "Finally a document.").await;
    let started: Value = app.post_json(&t.key, "/v1/export", json!({})).await.json().await.expect("json");
    let id = started["export_id"].as_str().expect("id").to_owned();
    assert_eq!(app.post_json("op-export", "/admin/clock/advance", json!({"seconds": 1})).await.status(), 200);
    let r = app.get(&t.key, &format!("/v1/export/{id}")).await;
    assert_eq!(r.status(), 200);
    let files = unpack(&r.bytes().await.expect("body"));

    let lines = |name: &str| -> Vec<Value> {
        let text = String::from_utf8(files[name].clone()).expect("utf8");
        text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
    };
    let events: Vec<String> =
        lines("lifecycle.jsonl").iter().map(|e| e["event"].as_str().expect("event").to_owned()).collect();
    for expected in ["signed_up", "provisioned", "first_document"] {
        assert!(events.iter().any(|e| e == expected), "{expected} in {events:?}");
    }
    let notifications = lines("notifications.jsonl");
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    assert_eq!(notifications[0]["template"], "nudge_no_document");
    assert_eq!(notifications[0]["recipient"], "nudged@zz.test");
    assert!(notifications[0]["delivered_at"].is_string(), "delivered before the export: {notifications:?}");
}
