//! The gateway's promises under real traffic: exact quotas under concurrency, rate limits, key scopes and
//! revocation, and the lifecycle gate within one request of a change.

use futures::future::join_all;
use serde_json::{json, Value};
use tenantry_domain::config::{Config, PlanConfig, Quotas};
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::quota::Meter;
use tenantry_domain::TenantId;
use tenantry_store::TransitionEffects;

use crate::helpers::{assert_problem, fresh_postgres_database, spawn_app_with, TestApp};

const QUOTA_HEADER: &str = "x-quota-queries-remaining";

fn add_plan(c: &mut Config, name: &str, quotas: Quotas) {
    let mut plan: PlanConfig = c.plans.iter().find(|p| p.name == "trial").expect("trial plan").clone();
    plan.name = name.into();
    plan.quotas = quotas;
    c.plans.push(plan);
}

const ROOMY: Quotas = Quotas {
    queries: 1_000_000,
    tokens: 1_000_000_000,
    documents: 1_000,
    storage_bytes: 1 << 30,
    requests_per_minute: 100_000,
};

async fn gateway_app() -> TestApp {
    spawn_app_with(|c| {
        add_plan(c, "ten-queries", Quotas { queries: 10, ..ROOMY });
        add_plan(c, "few-tokens", Quotas { tokens: 5_000, ..ROOMY });
        add_plan(c, "slow", Quotas { requests_per_minute: 5, ..ROOMY });
        add_plan(c, "two-docs", Quotas { documents: 2, storage_bytes: 1_000, ..ROOMY });
        add_plan(c, "roomy", ROOMY);
        c.server.operator_token = "op-secret".into();
    })
    .await
}

async fn concurrent_queries(app: &TestApp, key: &str, n: usize) -> Vec<(u16, Value)> {
    let requests = (0..n).map(|i| {
        let client = app.client.clone();
        let url = app.url("/v1/query");
        let key = key.to_owned();
        async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"question": format!("How long do refunds take? #{i}")}))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    join_all(requests).await
}

#[tokio::test]
async fn sixty_four_concurrent_clients_against_ten_queries() {
    let app = gateway_app().await;
    let t = app.signup("race@gateway.test", "ten-queries").await;
    app.upload_text(&t.key, "Policy", "Refunds are issued within 14 days of purchase.").await;
    let results = concurrent_queries(&app, &t.key, 64).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(ok, 10, "exactly the quota succeeds");
    assert_eq!(refused.len(), 54, "the rest are refused");
    assert!(refused.iter().all(|(_, b)| b["code"] == "quota_exceeded"), "{refused:?}");

    let tenant = TenantId::parse(&t.id).expect("id");
    assert_eq!(
        app.services.store().usage_event_count(&tenant, Meter::Queries).await.expect("count"),
        10,
        "ledger holds exactly 10 query events"
    );
    let r = app.get(&t.key, "/v1/quotas").await;
    assert_eq!(r.headers()["x-quota-queries-remaining"], "0");
    let q: Value = r.json().await.expect("json");
    assert_eq!(q["limits"]["queries"], 10);
    assert_eq!(q["used"]["queries"], 10);
    assert_eq!(q["reserved"]["queries"], 0, "nothing left reserved");
    assert_eq!(q["remaining"]["queries"], 0);
    let one_more = app.post_json(&t.key, "/v1/query", json!({"question": "again?"})).await;
    assert!(one_more.headers().contains_key("retry-after"), "per-period quota says when it comes back");
    assert_problem(one_more, 429, "quota_exceeded").await;
}

#[tokio::test]
async fn token_quota_is_never_exceeded_under_concurrency() {
    let app = gateway_app().await;
    let t = app.signup("tokens@gateway.test", "few-tokens").await;
    let text: String = (0..40).map(|i| format!("Refunds for order class {i} are issued within {i} days. ")).collect();
    app.upload_text(&t.key, "Policy", &text).await;
    let results = concurrent_queries(&app, &t.key, 64).await;
    let ok: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert!(!ok.is_empty() && ok.len() < 64, "some fit, some do not: {}", ok.len());
    assert!(results.iter().all(|(s, b)| *s == 200 || (*s == 429 && b["code"] == "quota_exceeded")));
    let answered: i64 = ok.iter().map(|(_, b)| b["usage"]["total_tokens"].as_i64().expect("tokens")).sum();
    // The bound: with tokens counted by the tokenizer the reservation used (here: every model), a request
    // reserves its exact prompt plus the completion cap before generating, so settled usage never exceeds
    // the limit at all.
    assert!(answered <= 5_000, "settled {answered} tokens against a 5,000 limit");
    let q: Value = app.get(&t.key, "/v1/quotas").await.json().await.expect("json");
    assert_eq!(q["used"]["tokens"].as_i64(), Some(answered), "the ledger holds exactly what the clients were told");
    assert_eq!(q["reserved"]["tokens"], 0);
    let usage = app.usage(&t.key).await;
    let ledger = usage["totals"]["prompt_tokens"].as_i64().expect("p")
        + usage["totals"]["completion_tokens"].as_i64().expect("c");
    assert_eq!(ledger, answered);
}

#[tokio::test]
async fn document_quota_holds_under_concurrent_uploads() {
    let app = gateway_app().await;
    let t = app.signup("docs@gateway.test", "two-docs").await;
    let uploads = (0..8).map(|i| {
        app.post_json(
            &t.key,
            "/v1/documents",
            json!({"title": format!("D{i}"), "text": format!("Document number {i}.")}),
        )
    });
    let statuses: Vec<u16> = join_all(uploads).await.into_iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 6, "{statuses:?}");
    let list: Value = app.get(&t.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(list["documents"].as_array().map(Vec::len), Some(2));
    // Deleting one frees its slot.
    let id = list["documents"][0]["document_id"].as_str().expect("id").to_owned();
    let r =
        app.client.delete(app.url(&format!("/v1/documents/{id}"))).bearer_auth(&t.key).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    let r = app.post_json(&t.key, "/v1/documents", json!({"title": "again", "text": "A new document."})).await;
    assert_eq!(r.status(), 201);
    let big = app.post_json(&t.key, "/v1/documents", json!({"title": "big", "text": "x".repeat(2_000)})).await;
    assert_problem(big, 429, "quota_exceeded").await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let app = gateway_app().await;
    let t = app.signup("slow@gateway.test", "slow").await;
    for _ in 0..5 {
        assert_eq!(app.get(&t.key, "/v1/documents").await.status(), 200);
    }
    let r = app.get(&t.key, "/v1/documents").await;
    let retry: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.headers().contains_key(QUOTA_HEADER), "quota headers on a rate-limited answer too");
    assert_problem(r, 429, "rate_limited").await;
    // Another tenant is not affected.
    let other = app.signup("fast@gateway.test", "slow").await;
    assert_eq!(app.get(&other.key, "/v1/documents").await.status(), 200);
}

/// A tenant cannot revoke its last key with the admin scope (it could no longer manage keys, export or erase):
/// 409 until another admin key exists.
#[tokio::test]
async fn the_last_admin_key_is_not_revoked() {
    let app = gateway_app().await;
    let t = app.signup("last-admin@gateway.test", "roomy").await;
    let delete = |key: String, id: String| {
        let request = app.client.delete(app.url(&format!("/v1/keys/{id}"))).bearer_auth(key);
        async move { request.send().await.expect("delete") }
    };
    let list: Value = app.get(&t.key, "/v1/keys").await.json().await.expect("json");
    let first = list["keys"][0]["key_id"].as_str().expect("id").to_owned();
    let r = app.post_json(&t.key, "/v1/keys", json!({"name": "bot", "scopes": ["query", "ingest"]})).await;
    assert_eq!(r.status(), 201);
    assert_problem(delete(t.key.clone(), first.clone()).await, 409, "conflict").await;
    assert_eq!(app.get(&t.key, "/v1/keys").await.status(), 200, "still valid");

    let r = app.post_json(&t.key, "/v1/keys", json!({"name": "ops"})).await;
    let ops: Value = r.json().await.expect("json");
    let (ops_key, ops_id) = (ops["api_key"].as_str().expect("key").to_owned(), ops["key_id"].as_str().expect("id"));
    assert_eq!(delete(ops_key.clone(), first).await.status(), 204, "another admin key exists now");
    assert_problem(app.get(&t.key, "/v1/keys").await, 401, "unauthenticated").await;
    assert_problem(delete(ops_key.clone(), ops_id.to_owned()).await, 409, "conflict").await;
    assert_eq!(app.get(&ops_key, "/v1/keys").await.status(), 200);
}

#[tokio::test]
async fn keys_have_scopes_and_revocation_is_immediate() {
    let app = gateway_app().await;
    let t = app.signup("keys@gateway.test", "roomy").await;
    let r = app.post_json(&t.key, "/v1/keys", json!({"name": "ci bot", "scopes": ["query"]})).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.expect("json");
    let bot = created["api_key"].as_str().expect("key").to_owned();
    assert_eq!(created["scopes"], json!(["query"]));

    let r = app.post_json(&bot, "/v1/query", json!({"question": "anything"})).await;
    assert_eq!(r.status(), 200, "query scope queries");
    let r = app.post_json(&bot, "/v1/documents", json!({"title": "t", "text": "x"})).await;
    assert_problem(r, 403, "forbidden").await;
    assert_problem(app.get(&bot, "/v1/keys").await, 403, "forbidden").await;

    let list: Value = app.get(&t.key, "/v1/keys").await.json().await.expect("json");
    let keys = list["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    let text = list.to_string();
    assert!(!text.contains(&bot) && !text.contains(&t.key), "no key material is listed");
    assert!(!text.contains("secret") && !text.contains("hash"));
    let bot_id = created["key_id"].as_str().expect("id");
    assert!(keys.iter().any(|k| k["key_id"] == bot_id && !k["last_used_at"].is_null()), "last use is recorded");

    let other = app.signup("keys-other@gateway.test", "roomy").await;
    let r =
        app.client.delete(app.url(&format!("/v1/keys/{bot_id}"))).bearer_auth(&other.key).send().await.expect("delete");
    assert_problem(r, 404, "not_found").await;
    let r = app.client.delete(app.url(&format!("/v1/keys/{bot_id}"))).bearer_auth(&t.key).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    let r = app.post_json(&bot, "/v1/query", json!({"question": "anything"})).await;
    assert_problem(r, 401, "unauthenticated").await;
    assert_eq!(app.get(&t.key, "/v1/tenant").await.status(), 200, "the other key still works");

    // Failed authentications with an existing key id are on the audit trail (throttled to one a minute per
    // key), without the presented secret.
    let prefix = &t.key[..t.key.len() - 43]; // `tk_<key id>_`; the secret is the last 43 characters
    let forged = format!("{prefix}{}", "A".repeat(43));
    for _ in 0..5 {
        assert_problem(app.get(&forged, "/v1/tenant").await, 401, "unauthenticated").await;
    }
    let audit = app.audit("op-secret", &t.id).await;
    let failed: Vec<&Value> = audit.iter().filter(|e| e["action"] == "auth.failed").collect();
    let reasons: Vec<String> = failed
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|d| d["reason"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(reasons, ["revoked key", "wrong secret"], "{failed:?}");
    assert!(!Value::from(audit.clone()).to_string().contains(&"A".repeat(43)), "never the presented secret");

    for bad in [json!({"name": ""}), json!({"name": "x", "scopes": []}), json!({"name": "x", "scopes": ["root"]})] {
        assert_problem(app.post_json(&t.key, "/v1/keys", bad).await, 422, "validation_failed").await;
    }

    // DELETE on the collection names the key in the query or in a JSON body; another tenant's is 404 there too.
    let mut named = Vec::new();
    for name in ["by query", "by body"] {
        let r = app.post_json(&t.key, "/v1/keys", json!({"name": name, "scopes": ["query"]})).await;
        let created: Value = r.json().await.expect("json");
        named.push((
            created["key_id"].as_str().expect("id").to_owned(),
            created["api_key"].as_str().expect("key").to_owned(),
        ));
    }
    let delete = |key: &str| app.client.delete(app.url("/v1/keys")).bearer_auth(key.to_owned());
    let by_query = &named[0];
    let r = delete(&other.key).query(&[("key_id", &by_query.0)]).send().await.expect("delete");
    assert_problem(r, 404, "not_found").await;
    assert_eq!(delete(&t.key).query(&[("key_id", &by_query.0)]).send().await.expect("delete").status(), 204);
    let by_body = &named[1];
    let r = delete(&t.key).json(&json!({"key_id": by_body.0})).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    for (_, revoked) in &named {
        assert_problem(app.get(revoked, "/v1/tenant").await, 401, "unauthenticated").await;
    }
    assert_problem(delete(&t.key).send().await.expect("delete"), 422, "validation_failed").await;
    assert_problem(delete(&t.key).body("{oops").send().await.expect("delete"), 422, "validation_failed").await;
    assert_eq!(app.get(&t.key, "/v1/tenant").await.status(), 200, "the caller's own key still works");
}

#[tokio::test]
async fn lifecycle_gate_applies_within_one_request_of_a_change() {
    let app = gateway_app().await;
    let t = app.signup("gate@gateway.test", "roomy").await;
    let admin = |path: String| app.client.post(app.url(&path)).bearer_auth("op-secret").send();

    let r = app
        .client
        .post(app.url(&format!("/admin/tenants/{}/suspend", t.id)))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("post");
    assert_problem(r, 401, "unauthenticated").await;
    let r = app
        .client
        .post(app.url(&format!("/admin/tenants/{}/suspend", t.id)))
        .bearer_auth(&t.key)
        .send()
        .await
        .expect("post");
    assert_problem(r, 401, "unauthenticated").await;

    assert_eq!(admin(format!("/admin/tenants/{}/suspend", t.id)).await.expect("suspend").status(), 200);
    let refused = app.get(&t.key, "/v1/documents").await;
    assert!(refused.headers().contains_key(QUOTA_HEADER), "a refused tenant still learns its quota");
    assert_problem(refused, 402, "payment_required").await;
    assert_problem(app.post_json(&t.key, "/v1/query", json!({"question": "q"})).await, 402, "payment_required").await;
    let view: Value = app.get(&t.key, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(view["state"], "suspended");
    assert_problem(admin(format!("/admin/tenants/{}/suspend", t.id)).await.expect("again"), 409, "invalid_transition")
        .await;

    assert_eq!(admin(format!("/admin/tenants/{}/reactivate", t.id)).await.expect("reactivate").status(), 200);
    assert_eq!(app.get(&t.key, "/v1/documents").await.status(), 200);

    // Cancelled: 403 except the account endpoints; erased: the key is dead.
    let id = TenantId::parse(&t.id).expect("id");
    let store = app.services.store();
    let row = store.tenant(&id).await.expect("read").expect("exists");
    store
        .transition(
            &id,
            row.state_version,
            row.state,
            LifecycleEvent::Cancelled,
            app.services.clock().now(),
            &TransitionEffects::default(),
        )
        .await
        .expect("cancel");
    let refused = app.get(&t.key, "/v1/documents").await;
    assert!(refused.headers().contains_key(QUOTA_HEADER));
    assert_problem(refused, 403, "forbidden").await;
    assert_eq!(app.get(&t.key, "/v1/tenant").await.status(), 200);
    let row = store.tenant(&id).await.expect("read").expect("exists");
    store
        .transition(
            &id,
            row.state_version,
            row.state,
            LifecycleEvent::Erased,
            app.services.clock().now(),
            &TransitionEffects::default(),
        )
        .await
        .expect("erase");
    let dead = app.get(&t.key, "/v1/tenant").await;
    assert!(!dead.headers().contains_key(QUOTA_HEADER), "an erased tenant's key authenticates nobody");
    assert_problem(dead, 401, "unauthenticated").await;
    assert_problem(app.get(&t.key, "/v1/documents").await, 401, "unauthenticated").await;

    let list: Value = app
        .client
        .get(app.url("/admin/tenants?state=erased"))
        .bearer_auth("op-secret")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(list["tenants"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn quota_headers_are_on_tenant_responses() {
    let app = gateway_app().await;
    let t = app.signup("headers@gateway.test", "ten-queries").await;
    app.upload_text(&t.key, "Doc", "Refunds take 14 days.").await;
    let r = app.post_json(&t.key, "/v1/query", json!({"question": "refunds?"})).await;
    assert_eq!(r.headers()["x-quota-queries-remaining"], "9");
    let tokens: i64 = r.headers()["x-quota-tokens-remaining"].to_str().expect("ascii").parse().expect("number");
    let body: Value = r.json().await.expect("json");
    assert_eq!(tokens, 1_000_000_000 - body["usage"]["total_tokens"].as_i64().expect("tokens"));
    for path in ["/v1/tenant", "/v1/documents", "/v1/usage", "/v1/quotas", "/v1/keys"] {
        let r = app.get(&t.key, path).await;
        assert_eq!(r.headers()["x-quota-queries-remaining"], "9", "{path}");
    }
}

#[tokio::test]
async fn two_api_nodes_on_one_postgres_agree_on_the_quota() {
    let Some(db) = fresh_postgres_database().await else {
        eprintln!("TENANTRY_TEST_POSTGRES_URL not set: two-node quota test skipped");
        return;
    };
    let node = |db: String| {
        spawn_app_with(move |c| {
            add_plan(c, "ten-queries", Quotas { queries: 10, ..ROOMY });
            c.database.url = db;
            c.server.key_pepper = "shared-pepper-for-both-nodes".into();
        })
    };
    let (a, b) = (node(db.clone()).await, node(db).await);
    let t = a.signup("nodes@gateway.test", "ten-queries").await;
    a.upload_text(&t.key, "Policy", "Refunds are issued within 14 days of purchase.").await;
    assert_eq!(b.get(&t.key, "/v1/tenant").await.status(), 200, "node B accepts node A's key");
    let (ra, rb) = futures::join!(concurrent_queries(&a, &t.key, 32), concurrent_queries(&b, &t.key, 32));
    let ok = ra.iter().chain(rb.iter()).filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 10, "two processes together admit exactly the quota");
    let tenant = TenantId::parse(&t.id).expect("id");
    assert_eq!(b.services.store().usage_event_count(&tenant, Meter::Queries).await.expect("count"), 10);
}
