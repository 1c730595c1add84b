//! Retention with the test clock: the daily sweep removes invoiced usage rows and old audit entries; levels
//! of documents and storage survive as carry-forward rows, and the audit chain still verifies.

use serde_json::{json, Value};
use tenantry_domain::quota::Meter;
use tenantry_domain::{TenantId, Timestamp};

use crate::helpers::{add_metered_plan, on_postgres, spawn_app_with, TestApp};

const OP: &str = "op-retention";

async fn advance_days(app: &TestApp, days: i64) {
    let r = app.post_json(OP, "/admin/clock/advance", json!({"seconds": days * 86_400})).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_daily_sweep_prunes_invoiced_usage_and_old_audit_entries() {
    retention_story(None).await;
}

#[tokio::test]
async fn the_daily_sweep_on_postgresql() {
    on_postgres(retention_story).await;
}

async fn retention_story(postgres: Option<String>) {
    let app = spawn_app_with(|c| {
        c.database.url = postgres.unwrap_or_default();
        c.server.clock = "test".into();
        c.server.operator_token = OP.into();
        c.retention.usage_days = 62;
        c.retention.audit_days = 30;
        add_metered_plan(c);
    })
    .await;
    let t = app.signup("retention@zz.test", "metered").await;
    let free = app.signup("free@zz.test", "trial").await;
    app.query(&free.key, "Anything?").await;
    let free_tenant = TenantId::parse(&free.id).expect("id");
    let tenant = TenantId::parse(&t.id).expect("id");
    app.upload_text(&t.key, "Kept", "Refunds are issued within 14 days of purchase.").await;
    let gone = app.upload_text(&t.key, "Deleted", "Shipping takes three days.").await;
    let r = app.client.delete(app.url(&format!("/v1/documents/{}", gone["document_id"].as_str().expect("id"))));
    assert_eq!(r.bearer_auth(&t.key).send().await.expect("delete").status(), 204);
    for _ in 0..3 {
        app.query(&t.key, "How long do refunds take?").await;
    }
    let store = app.services.store();
    let far = Timestamp(i64::MAX);
    let documents = store.usage_level(&tenant, Meter::Documents, far).await.expect("level");
    let bytes = store.usage_level(&tenant, Meter::StorageBytes, far).await.expect("level");
    assert_eq!(documents, 1);
    assert_eq!(store.usage_event_count(&tenant, Meter::Queries).await.expect("count"), 3);
    assert_eq!(store.usage_event_count(&tenant, Meter::Documents).await.expect("count"), 3, "+1 +1 -1");

    // Not old yet: a sweep changes nothing.
    advance_days(&app, 1).await;
    assert_eq!(store.usage_event_count(&tenant, Meter::Queries).await.expect("count"), 3);
    let r = app.post_json(OP, "/admin/billing/close-period", json!({})).await;
    assert_eq!(r.status(), 200);
    let closed: Value = r.json().await.expect("json");
    assert!(closed["invoices"].as_array().is_some_and(|i| i.iter().any(|i| i["tenant_id"] == t.id)), "{closed}");

    // Invoiced, but 61 days old: kept. Three days later, older than 62 days: gone.
    advance_days(&app, 60).await;
    assert_eq!(store.usage_event_count(&tenant, Meter::Queries).await.expect("count"), 3, "61 days: kept");
    advance_days(&app, 3).await;
    assert_eq!(store.usage_event_count(&tenant, Meter::Queries).await.expect("count"), 0, "invoiced and old: gone");
    // The free tenant never had an invoice: its usage is kept.
    assert_eq!(store.usage_event_count(&free_tenant, Meter::Queries).await.expect("count"), 1, "never invoiced: kept");
    assert_eq!(store.usage_event_count(&tenant, Meter::Documents).await.expect("count"), 1, "one carry-forward row");
    assert_eq!(store.usage_level(&tenant, Meter::Documents, far).await.expect("level"), documents, "level kept");
    assert_eq!(store.usage_level(&tenant, Meter::StorageBytes, far).await.expect("level"), bytes, "level kept");
    let invoices: Value = app.get(&t.key, "/v1/invoices").await.json().await.expect("json");
    assert!(!invoices["invoices"].as_array().expect("invoices").is_empty(), "the invoices stay: {invoices}");
    let quotas = app.get(&t.key, "/v1/quotas").await;
    assert_eq!(quotas.status(), 200, "quotas still read the ledger");

    // The audit trail lost its entries older than 30 days, recorded the pruning, and still verifies.
    let log = app.audit(OP, &t.id).await;
    assert!(!log.iter().any(|e| e["action"] == "tenant.signed_up"), "the signup entry is older than 30 days");
    let all: Value = app.get(OP, "/admin/audit?limit=1000").await.json().await.expect("json");
    let entries = all["entries"].as_array().expect("entries");
    let pruned = entries.iter().find(|e| e["action"] == "audit.pruned").expect("an audit.pruned entry");
    assert!(pruned["detail"].as_str().is_some_and(|d| d.contains("through_seq")), "{pruned}");
    assert!(entries.iter().any(|e| e["action"] == "retention.usage"), "usage retention is audited");
    let verified = app.services.verify_audit().await.expect("verify");
    assert!(verified.as_ref().is_ok_and(|n| *n as usize == entries.len()), "{verified:?} vs {}", entries.len());
}
