//! GDPR erasure over HTTP: the tenant's keys stop working at once, the deletion certificate says what went
//! where, no byte of its documents, name or email is left in any file under the data dir (SQLite database
//! and WAL included), and the other tenant is intact.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app_with};

const MARKERS: [&str; 4] = ["zebracorn", "xylophonic", "quokka-erasure@zz.test", "Quokka Unique Org"];

/// Every file under `dir` that contains one of `needles`, with the needle.
fn files_containing(dir: &std::path::Path, needles: &[&str]) -> Vec<(std::path::PathBuf, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            for needle in needles {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push((path.clone(), (*needle).to_owned()));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn erasure_leaves_no_trace_and_a_certificate() {
    let app = spawn_app_with(|c| c.server.operator_token = "op-erasure".into()).await;
    let r = app
        .client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": MARKERS[2], "organization": MARKERS[3], "plan": "trial"}))
        .send()
        .await
        .expect("signup");
    let signup: Value = r.json().await.expect("json");
    let (id, key) =
        (signup["tenant_id"].as_str().expect("id").to_owned(), signup["api_key"].as_str().expect("key").to_owned());
    let text = "The zebracorn protocol requires xylophonic calibration every spring. ".repeat(40);
    app.upload_text(&key, "Zebracorn manual", &text).await;
    let part = reqwest::multipart::Part::bytes(b"# Zebracorn care\n\nFeed the zebracorn xylophonic hay.".to_vec())
        .file_name("care.md")
        .mime_str("text/markdown")
        .expect("mime");
    let r = app
        .client
        .post(app.url("/v1/documents"))
        .bearer_auth(&key)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 201);
    assert!(!app.query(&key, "zebracorn calibration").await["citations"].as_array().expect("c").is_empty());

    let other = app.signup("bystander@zz.test", "trial").await;
    app.upload_text(&other.key, "Bystander notes", "Otters hold hands while sleeping.").await;
    assert!(!files_containing(app.data_dir.path(), &MARKERS).is_empty(), "the markers were stored to begin with");

    let r = app.client.delete(app.url("/v1/tenant")).bearer_auth(&key).send().await.expect("erase");
    assert_eq!(r.status(), 202);
    let erasure_id = r.json::<Value>().await.expect("json")["erasure_id"].as_str().expect("id").to_owned();

    // Keys stop working at once.
    assert_problem(app.get(&key, "/v1/tenant").await, 401, "unauthenticated").await;
    assert_problem(app.get(&key, "/v1/documents").await, 401, "unauthenticated").await;

    let cert = app.completed_erasure("op-erasure", &erasure_id).await;
    assert_eq!(cert["tenant_id"].as_str(), Some(id.as_str()), "{cert}");
    assert_eq!(cert["certificate"]["removed"]["analytics"]["store"], "none configured", "{cert}");
    let removed = &cert["certificate"]["removed"];
    assert_eq!(
        (removed["database"]["documents"].as_u64(), removed["database"]["api_keys"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(removed["database"]["chunks"].as_u64().is_some_and(|n| n >= 2), "{cert}");
    assert!(removed["files"]["bytes"].as_u64().is_some_and(|b| b > 0), "{cert}");
    assert!(cert["certificate"]["kept"]["usage_events"].as_u64().is_some_and(|n| n > 0), "the ledger is kept");
    assert_eq!(cert["digest"].as_str().map(str::len), Some(64));
    let r = app.client.get(app.url(&format!("/admin/erasures/{erasure_id}"))).bearer_auth(&other.key).send().await;
    assert_eq!(r.expect("request").status(), 401, "only the operator reads certificates");

    let leftovers = files_containing(app.data_dir.path(), &MARKERS);
    assert!(leftovers.is_empty(), "erased bytes remain: {leftovers:?}");

    // The audit trail records the erasure; the bystander is intact.
    let r = app.client.get(app.url(&format!("/admin/audit?tenant_id={id}"))).bearer_auth("op-erasure").send().await;
    let audit: Value = r.expect("audit").json().await.expect("json");
    assert!(audit["entries"].as_array().expect("entries").iter().any(|e| e["action"] == "tenant.erased"));
    let answer = app.query(&other.key, "Do otters hold hands?").await;
    assert_eq!(answer["citations"][0]["title"], "Bystander notes");
    let r = app.client.delete(app.url("/v1/tenant")).bearer_auth(&key).send().await.expect("again");
    assert_problem(r, 401, "unauthenticated").await;
}

/// An app on a fresh PostgreSQL database with the operator token these tests use, or `None` (and a note)
/// when no server is configured.
async fn app_on_postgres() -> Option<crate::helpers::TestApp> {
    let Some(db) = crate::helpers::fresh_postgres_database().await else {
        eprintln!("TENANTRY_TEST_POSTGRES_URL not set: PostgreSQL erasure skipped");
        return None;
    };
    Some(
        spawn_app_with(move |c| {
            c.database.url = db;
            c.server.operator_token = "op-erasure".into();
        })
        .await,
    )
}

#[tokio::test]
async fn erasure_on_postgresql_completes_with_its_certificate() {
    let Some(app) = app_on_postgres().await else { return };
    let t = app.signup("pg-erasure@zz.test", "trial").await;
    app.upload_text(&t.key, "Zebracorn manual", "The zebracorn protocol.").await;
    let r = app.client.delete(app.url("/v1/tenant")).bearer_auth(&t.key).send().await.expect("erase");
    assert_eq!(r.status(), 202);
    let erasure_id = r.json::<Value>().await.expect("json")["erasure_id"].as_str().expect("id").to_owned();
    assert_problem(app.get(&t.key, "/v1/tenant").await, 401, "unauthenticated").await;
    let cert = app.completed_erasure("op-erasure", &erasure_id).await;
    assert_eq!(cert["certificate"]["removed"]["purge"], "PostgreSQL tables vacuumed");
    let rows =
        app.services.store().documents(&tenantry_domain::TenantId::parse(&t.id).expect("id")).await.expect("store");
    assert!(rows.is_empty());
}

/// An upload authenticated before the erasure and finishing after it (the probe's race: in flight during
/// `DELETE /v1/tenant`) stores nothing: its insert finds the tenant erased, the files it recreated go again,
/// and it is answered 401 like the tenant's next request.
async fn an_upload_outliving_the_erasure_stores_nothing(app: crate::helpers::TestApp) {
    use tenantry_domain::lifecycle::EndpointClass;
    use tenantry_domain::{ErrorCode, RequestId, TenantId};
    use tenantry_service::documents::Upload;
    use tenantry_service::gateway::Scope;

    let t = app.signup("late-upload@zz.test", "trial").await;
    app.upload_text(&t.key, "First manual", "Plain words about the onboarding.").await;
    let in_flight = app
        .services
        .authenticate(Some(&t.key), RequestId::generate(), EndpointClass::Service, Scope::Ingest)
        .await
        .expect("authenticated before the erasure");
    let r = app.client.delete(app.url("/v1/tenant")).bearer_auth(&t.key).send().await.expect("erase");
    assert_eq!(r.status(), 202);
    let erasure_id = r.json::<Value>().await.expect("json")["erasure_id"].as_str().expect("id").to_owned();
    app.completed_erasure("op-erasure", &erasure_id).await;

    let late = Upload {
        title: Some("Zebracorn manual".into()),
        file_name: None,
        content_type: Some("text/plain".into()),
        bytes: "The zebracorn protocol requires xylophonic calibration.".as_bytes().to_vec(),
    };
    let Err(refused) = app.services.upload_document(&in_flight, late).await else {
        panic!("a document stored for an erased tenant");
    };
    assert_eq!(refused.code, ErrorCode::Unauthenticated, "{refused:?}");

    let tenant = TenantId::parse(&t.id).expect("id");
    assert!(app.services.store().documents(&tenant).await.expect("store").is_empty(), "no row");
    assert!(!app.data_dir.path().join("tenants").join(&t.id).exists(), "the tenant's directory is gone again");
    let leftovers = files_containing(app.data_dir.path(), &MARKERS[..2]);
    assert!(leftovers.is_empty(), "the late upload's bytes remain: {leftovers:?}");
}

#[tokio::test]
async fn an_upload_outliving_the_erasure_stores_nothing_on_sqlite() {
    let app = spawn_app_with(|c| c.server.operator_token = "op-erasure".into()).await;
    an_upload_outliving_the_erasure_stores_nothing(app).await;
}

#[tokio::test]
async fn an_upload_outliving_the_erasure_stores_nothing_on_postgresql() {
    if let Some(app) = app_on_postgres().await {
        an_upload_outliving_the_erasure_stores_nothing(app).await;
    }
}
