//! The walking skeleton's story: signup → upload → query → usage, over HTTP.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, spawn_app_on_postgres, spawn_app_with, TestApp};

#[tokio::test]
async fn signup_upload_query_usage() {
    walk_the_story(spawn_app().await).await;
}

#[tokio::test]
async fn signup_upload_query_usage_on_postgres() {
    match spawn_app_on_postgres().await {
        Some(app) => walk_the_story(app).await,
        None => eprintln!("TENANTRY_TEST_POSTGRES_URL not set: PostgreSQL story skipped"),
    }
}

async fn walk_the_story(app: TestApp) {
    let t = app.signup("founder@acme.test", "trial").await;
    assert!(t.key.starts_with("tk_"));

    let r = app.get(&t.key, "/v1/tenant").await;
    assert_eq!(r.status(), 200);
    let tenant: serde_json::Value = r.json().await.expect("json");
    assert_eq!(tenant["tenant_id"], t.id);
    assert_eq!(tenant["state"], "trialing");
    assert_eq!(tenant["plan"], "trial");
    assert_eq!(tenant["config"]["model"], "local-small");
    assert_eq!(tenant["config"]["retrieval_mode"], "basic");

    let md = "# Handbook\n\n## Refunds\n\nRefunds are issued within 14 days of purchase.\n\n## Shipping\n\nWe ship to 40 countries.";
    let part = reqwest::multipart::Part::bytes(md.as_bytes().to_vec())
        .file_name("handbook.md")
        .mime_str("text/markdown")
        .expect("mime");
    let r = app
        .client
        .post(app.url("/v1/documents"))
        .bearer_auth(&t.key)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 201);
    let handbook: serde_json::Value = r.json().await.expect("json");
    assert_eq!(handbook["title"], "Handbook", "title from the first heading");
    assert_eq!(handbook["content_type"], "text/markdown");
    assert_eq!(handbook["bytes"], md.len());
    assert!(handbook["chunks"].as_i64() >= Some(2), "sections are chunked apart: {handbook}");
    let notes = app.upload_text(&t.key, "Notes", "Support answers within one business day.").await;

    let answer = app.query(&t.key, "How long do refunds take?").await;
    assert!(answer["answer"].as_str().is_some_and(|a| a.contains("14 days")), "{answer}");
    let cited: Vec<_> =
        answer["citations"].as_array().expect("citations").iter().map(|c| c["document_id"].clone()).collect();
    assert_eq!(cited, [handbook["document_id"].clone()], "cites the handbook only");
    assert_eq!(answer["model"], "local-small");
    assert_eq!(answer["retrieval_mode"], "basic");
    let usage = &answer["usage"];
    let (p, c) = (usage["prompt_tokens"].as_i64().expect("p"), usage["completion_tokens"].as_i64().expect("c"));
    assert!(p > 0 && c > 0);
    assert_eq!(usage["total_tokens"].as_i64(), Some(p + c));
    assert!(usage["cost_micros"].as_i64() > Some(0));

    let report = app.usage(&t.key).await;
    assert_eq!(report["tenant_id"], t.id);
    let totals = &report["totals"];
    assert_eq!(totals["queries"], 1);
    assert_eq!(totals["prompt_tokens"].as_i64(), Some(p));
    assert_eq!(totals["completion_tokens"].as_i64(), Some(c));
    assert_eq!(totals["documents"], 2);
    // Storage holds each upload and the text drawn from it: the handbook's sections under their heading
    // paths, and the plain text as it is.
    let handbook_text = ["Handbook > Refunds", "Refunds are issued within 14 days of purchase."]
        .iter()
        .chain(&["Handbook > Shipping", "We ship to 40 countries."])
        .map(|s| s.len())
        .sum::<usize>();
    let support = "Support answers within one business day.";
    assert_eq!(totals["storage_bytes"].as_i64(), Some((md.len() + handbook_text + 2 * support.len()) as i64));
    assert_eq!(totals["cost_micros"], usage["cost_micros"]);
    assert_eq!(report["by_model"]["local-small"]["queries"], 1);
    assert_eq!(report["by_model"]["local-small"]["cost_micros"], usage["cost_micros"]);

    let r = app.get(&t.key, "/v1/documents").await;
    let list: serde_json::Value = r.json().await.expect("json");
    let ids: Vec<_> = list["documents"].as_array().expect("array").iter().map(|d| d["document_id"].clone()).collect();
    assert_eq!(ids, [handbook["document_id"].clone(), notes["document_id"].clone()]);

    let doc_path = format!("/v1/documents/{}", handbook["document_id"].as_str().expect("id"));
    assert_eq!(app.get(&t.key, &doc_path).await.status(), 200);
    let r = app.client.delete(app.url(&doc_path)).bearer_auth(&t.key).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    assert_problem(app.get(&t.key, &doc_path).await, 404, "not_found").await;
    let after = app.query(&t.key, "How long do refunds take?").await;
    assert!(
        after["citations"].as_array().expect("citations").iter().all(|c| c["document_id"] != handbook["document_id"]),
        "deleted document is gone from the index: {after}"
    );
    let totals = app.usage(&t.key).await["totals"].clone();
    assert_eq!(totals["documents"], 1);
    assert_eq!(totals["queries"], 2);
}

#[tokio::test]
async fn identical_uploads_are_deduplicated() {
    let app = spawn_app().await;
    let t = app.signup("dedup@acme.test", "trial").await;
    let first = app.upload_text(&t.key, "One", "The same words twice.").await;
    let r = app.post_json(&t.key, "/v1/documents", json!({"title": "Two", "text": "The same words twice."})).await;
    assert_eq!(r.status(), 201, "a repeat upload is replayed: API.md's 201 with the existing document");
    assert_eq!(r.headers()["tenantry-duplicate-of"], first["document_id"].as_str().expect("id"));
    let second: serde_json::Value = r.json().await.expect("json");
    assert_eq!(second["document_id"], first["document_id"]);
    assert_eq!(app.usage(&t.key).await["totals"]["documents"], 1);
    let fresh = app.post_json(&t.key, "/v1/documents", json!({"title": "Three", "text": "Other words."})).await;
    assert_eq!(fresh.status(), 201);
    assert!(!fresh.headers().contains_key("tenantry-duplicate-of"), "only a replay is marked");
}

#[tokio::test]
async fn identical_uploads_racing_each_other_store_one_document() {
    let app = spawn_app_with(|c| c.limits.uploads_in_flight = 6).await;
    let t = app.signup("race@acme.test", "trial").await;
    let text = "Refunds are issued within 14 days of the request. ".repeat(40);
    let uploads = (0..6).map(|i| {
        let body = json!({"title": format!("Copy {i}"), "text": text.clone()});
        let (app, key) = (&app, t.key.clone());
        async move { app.post_json(&key, "/v1/documents", body).await }
    });
    let mut ids = std::collections::BTreeSet::new();
    for r in futures::future::join_all(uploads).await {
        assert_eq!(r.status(), 201, "the first is stored, the others are its replays");
        let body: serde_json::Value = r.json().await.expect("json");
        ids.insert(body["document_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "one document for six identical uploads: {ids:?}");
    let listed: serde_json::Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(listed["documents"].as_array().expect("documents").len(), 1);
    let totals = app.usage(&t.key).await["totals"].clone();
    assert_eq!(totals["documents"], 1, "metered once: {totals}");
    assert_eq!(totals["storage_bytes"], text.len() + text.trim_end().len(), "the upload and its text: {totals}");
    let answer = app.query(&t.key, "How long do refunds take?").await;
    let cited: std::collections::BTreeSet<&str> = answer["citations"]
        .as_array()
        .expect("citations")
        .iter()
        .map(|c| c["document_id"].as_str().expect("id"))
        .collect();
    assert!(cited.iter().all(|id| ids.contains(*id)), "the undone copies left nothing in the index: {answer}");
}

#[tokio::test]
async fn config_changes_apply_to_the_next_query_and_refuse_what_the_plan_lacks() {
    let app = spawn_app().await;
    let t = app.signup("config@acme.test", "starter").await;
    app.upload_text(&t.key, "Policy", "Refunds are issued within 14 days.").await;
    let r = app
        .client
        .patch(app.url("/v1/tenant/config"))
        .bearer_auth(&t.key)
        .json(&json!({"model": "local-large", "system_prompt": "Be formal."}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["config"]["model"], "local-large");
    assert_eq!(body["config"]["system_prompt"], "Be formal.");
    let a = app.query(&t.key, "refunds?").await;
    assert_eq!(a["model"], "local-large", "the next request runs the new model");
    assert_eq!(app.usage(&t.key).await["by_model"]["local-large"]["queries"], 1, "and is billed to it");

    let trial = app.signup("config-trial@acme.test", "trial").await;
    for body in [
        json!({"model": "local-large"}),
        json!({"model": "gpt-9"}),
        json!({"retrieval_mode": "agentic"}),
        json!({"retrieval_mode": "nonsense"}),
    ] {
        let r = app
            .client
            .patch(app.url("/v1/tenant/config"))
            .bearer_auth(&trial.key)
            .json(&body)
            .send()
            .await
            .expect("patch");
        assert_problem(r, 422, "validation_failed").await;
    }
    let tenant: serde_json::Value = app.get(&trial.key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(tenant["config"]["model"], "local-small", "a refused change changes nothing");
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = spawn_app().await;
    let spec: serde_json::Value =
        app.client.get(app.url("/openapi.json")).send().await.expect("get").json().await.expect("json");
    let paths = spec["paths"].as_object().expect("paths");
    for p in [
        "/v1/signup",
        "/v1/tenant",
        "/v1/tenant/config",
        "/v1/documents",
        "/v1/documents/{id}",
        "/v1/query",
        "/v1/usage",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the spec");
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
}
