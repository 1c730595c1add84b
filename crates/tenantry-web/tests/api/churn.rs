//! Activation and the end of a subscription, with the test clock, over HTTP: milestones and nudges at the
//! right times (delivered through the outbox into the tenant's spool), cancellation, win-back offers and
//! reactivation with the discount on the next invoice, and erasure when the retention period ends.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tenantry_domain::Config;

use crate::helpers::{assert_problem, spawn_app_with, TestApp};

const OP: &str = "op-churn";
const HOUR: i64 = 3_600;

fn test_clock(c: &mut Config) {
    c.server.clock = "test".into();
    c.server.operator_token = OP.into();
}

async fn advance(app: &TestApp, seconds: i64) {
    let r = app
        .client
        .post(app.url("/admin/clock/advance"))
        .bearer_auth(OP)
        .json(&json!({"seconds": seconds}))
        .send()
        .await
        .expect("advance");
    assert_eq!(r.status(), StatusCode::OK);
}

async fn detail(app: &TestApp, id: &str) -> Value {
    let r = app.client.get(app.url(&format!("/admin/tenants/{id}"))).bearer_auth(OP).send().await.expect("detail");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("json")
}

fn names<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array().expect("list").iter().filter_map(|v| v[field].as_str()).collect()
}

fn milestones(d: &Value) -> Vec<&str> {
    d["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["from"].is_null())
        .filter_map(|e| e["event"].as_str())
        .collect()
}

fn spool(app: &TestApp, tenant: &str) -> Vec<String> {
    let dir = app.data_dir.path().join("tenants").join(tenant).join("outbox");
    let mut messages: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .map(|e| std::fs::read_to_string(e.path()).expect("readable"))
                .collect()
        })
        .unwrap_or_default();
    messages.sort();
    messages
}

async fn post(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(key).send().await.expect("request")
}

#[tokio::test]
async fn activation_milestones_and_nudges_come_at_the_right_times() {
    activation_milestones_and_nudges_come_at_the_right_times_on(None).await;
}

#[tokio::test]
async fn activation_milestones_and_nudges_come_at_the_right_times_on_postgres() {
    crate::helpers::on_postgres(activation_milestones_and_nudges_come_at_the_right_times_on).await;
}

async fn activation_milestones_and_nudges_come_at_the_right_times_on(database_url: Option<String>) {
    let app = spawn_app_with(move |c| {
        test_clock(c);
        if let Some(url) = database_url {
            c.database.url = url;
        }
    })
    .await;
    let slow = app.signup("slow@churn.test", "trial").await;
    let quick = app.signup("quick@churn.test", "trial").await;
    app.upload_text(&quick.key, "Refunds", "Refunds are issued within 14 days.").await;
    app.query(&quick.key, "How long do refunds take?").await;

    // Nothing before 24 hours; then the tenant without a document is nudged, the active one is not.
    advance(&app, 23 * HOUR).await;
    assert_eq!(detail(&app, &slow.id).await["notifications"], json!([]));
    advance(&app, 2 * HOUR).await;
    let d = detail(&app, &slow.id).await;
    assert_eq!(names(&d["notifications"], "template"), ["nudge_no_document"]);
    assert!(d["notifications"][0]["delivered_at"].is_string(), "delivered through the outbox");
    let mail = spool(&app, &slow.id);
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].contains("To: slow@churn.test") && mail[0].contains("Subject: Your Tenantry workspace"),
        "{}",
        mail[0]
    );
    assert_eq!(detail(&app, &quick.id).await["notifications"], json!([]));
    assert_eq!(
        milestones(&detail(&app, &quick.id).await),
        ["signed_up", "provisioned", "first_document", "first_query", "activated"]
    );

    // A first document but no question: nudged 72 hours later, not before.
    app.upload_text(&slow.key, "Travel", "Economy class for flights under six hours.").await;
    advance(&app, 71 * HOUR).await;
    assert_eq!(names(&detail(&app, &slow.id).await["notifications"], "template"), ["nudge_no_document"]);
    advance(&app, 2 * HOUR).await;
    assert_eq!(
        names(&detail(&app, &slow.id).await["notifications"], "template"),
        ["nudge_no_document", "nudge_no_query"]
    );
    app.query(&slow.key, "Which class for short flights?").await;
    let m = detail(&app, &slow.id).await;
    assert_eq!(milestones(&m), ["signed_up", "provisioned", "first_document", "first_query", "activated"]);
    let at = |name: &str| {
        m["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["event"] == name)
            .and_then(|e| e["at"].as_str())
            .map(str::to_owned)
    };
    assert!(at("provisioned") < at("first_document") && at("first_document") < at("first_query"), "{m}");
}

#[tokio::test]
async fn a_cancelled_tenant_gets_win_back_offers_and_comes_back_with_the_discount() {
    a_cancelled_tenant_gets_win_back_offers_and_comes_back_with_the_discount_on(None).await;
}

#[tokio::test]
async fn a_cancelled_tenant_gets_win_back_offers_and_comes_back_with_the_discount_on_postgres() {
    crate::helpers::on_postgres(a_cancelled_tenant_gets_win_back_offers_and_comes_back_with_the_discount_on).await;
}

async fn a_cancelled_tenant_gets_win_back_offers_and_comes_back_with_the_discount_on(database_url: Option<String>) {
    let app = spawn_app_with(move |c| {
        test_clock(c);
        if let Some(url) = database_url {
            c.database.url = url;
        }
    })
    .await;
    let t = app.signup("leaver@churn.test", "starter").await;
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;

    let r = post(&app, &t.key, "/v1/tenant/cancel").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["state"], "cancelled");
    assert_problem(app.post_json(&t.key, "/v1/query", json!({"question": "refunds?"})).await, 403, "forbidden").await;
    assert_eq!(app.get(&t.key, "/v1/invoices").await.status(), StatusCode::OK);
    assert_problem(post(&app, &t.key, "/v1/tenant/cancel").await, 409, "invalid_transition").await;

    // The first offer comes after win_back_offer_days[0] = 3 days.
    advance(&app, 3 * 24 * HOUR + 60).await;
    let d = detail(&app, &t.id).await;
    assert_eq!(names(&d["notifications"], "template"), ["cancelled", "win_back_offer"]);
    assert!(spool(&app, &t.id).iter().any(|m| m.contains("Come back with 20% off")));
    let stats: Value = app
        .client
        .get(app.url("/admin/win-back"))
        .bearer_auth(OP)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!((stats["offers_sent"].as_i64(), stats["offers_accepted"].as_i64()), (Some(1), Some(0)));

    // It comes back: served again at once, and its next invoice carries the discount.
    let r = post(&app, &t.key, "/v1/tenant/reactivate").await;
    assert_eq!(r.status(), StatusCode::OK);
    let back: Value = r.json().await.expect("json");
    assert_eq!(back["state"], "trialing", "it left during its trial, which has not ended: back in it");
    assert!(app.query(&t.key, "How long do refunds take?").await["answer"].is_string());
    let stats: Value = app
        .client
        .get(app.url("/admin/win-back"))
        .bearer_auth(OP)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["offers_accepted"], 1);
    let closed: Value = app.close_periods(OP).await;
    let invoice = &closed["invoices"][0];
    let lines = invoice["lines"].as_array().expect("lines");
    // The next period's base price (beside it, the rest of this period after the trial).
    let base = lines
        .iter()
        .find(|l| {
            let text = l["description"].as_str().unwrap_or_default();
            l["meter"].is_null() && l["amount_cents"].as_i64() > Some(0) && !text.contains("after the trial")
        })
        .expect("base");
    let discount =
        lines.iter().find(|l| l["description"].as_str().is_some_and(|d| d.contains("Win-back"))).expect("discount");
    assert_eq!(discount["amount_cents"].as_i64(), Some(-(base["amount_cents"].as_i64().expect("base") * 20 / 100)));
    let sum: i64 = lines.iter().filter_map(|l| l["amount_cents"].as_i64()).sum();
    assert_eq!(invoice["total_cents"].as_i64(), Some(sum));

    // The later offer of that cancellation is moot now.
    advance(&app, 14 * 24 * HOUR).await;
    assert_eq!(names(&detail(&app, &t.id).await["notifications"], "template"), ["cancelled", "win_back_offer"]);
}

#[tokio::test]
async fn a_tenant_still_cancelled_when_retention_ends_is_erased_and_an_earlier_cancellation_is_moot() {
    let app = spawn_app_with(test_clock).await;
    let t = app.signup("gone@churn.test", "trial").await;
    let stays = app.signup("stays@churn.test", "trial").await;
    app.upload_text(&t.key, "Secret", "The launch code word is marmalade.").await;

    // Cancelled, back the next day, cancelled again the day after: only the second retention counts.
    assert_eq!(post(&app, &t.key, "/v1/tenant/cancel").await.status(), StatusCode::OK);
    advance(&app, 24 * HOUR).await;
    assert_eq!(post(&app, &t.key, "/v1/tenant/reactivate").await.status(), StatusCode::OK);
    advance(&app, 24 * HOUR).await;
    assert_eq!(post(&app, &t.key, "/v1/tenant/cancel").await.status(), StatusCode::OK);
    advance(&app, 29 * 24 * HOUR).await;
    assert_eq!(detail(&app, &t.id).await["state"], "cancelled", "the first cancellation's retention is moot");
    assert!(!spool(&app, &t.id).is_empty());

    advance(&app, 2 * 24 * HOUR).await;
    let d = detail(&app, &t.id).await;
    assert_eq!(d["state"], "erased");
    assert_eq!(app.get(&t.key, "/v1/tenant").await.status(), StatusCode::UNAUTHORIZED);
    assert!(!app.data_dir.path().join("tenants").join(&t.id).exists(), "files, spool included, are gone");
    assert_eq!(d["notifications"], json!([]), "notifications carry the email and are erased");
    let audit = app.audit(OP, &t.id).await;
    let erased = audit.iter().find(|e| e["action"] == "tenant.erased").expect("erased");
    assert_eq!(erased["actor"], "system");
    assert_eq!(app.get(&stays.key, "/v1/tenant").await.status(), StatusCode::OK, "other tenants are untouched");
}

#[tokio::test]
async fn a_drop_in_weekly_questions_triggers_a_notification() {
    let app = spawn_app_with(test_clock).await;
    let t = app.signup("dropping@churn.test", "trial").await;
    app.upload_text(&t.key, "Refunds", "Refunds are issued within 14 days.").await;
    for _ in 0..12 {
        app.query(&t.key, "How long do refunds take?").await;
    }
    // The first weekly review sees a busy first week and nothing before it: no alarm.
    advance(&app, 7 * 24 * HOUR + 60).await;
    assert_eq!(names(&detail(&app, &t.id).await["notifications"], "template"), Vec::<&str>::new());
    for _ in 0..2 {
        app.query(&t.key, "How long do refunds take?").await;
    }
    // The second sees 2 questions after 12: a drop.
    advance(&app, 7 * 24 * HOUR).await;
    let d = detail(&app, &t.id).await;
    assert_eq!(names(&d["notifications"], "template"), ["usage_dropped"]);
    assert!(spool(&app, &t.id).iter().any(|m| m.contains("2 questions this week, down from 12")));
    assert!(
        d["jobs"].as_array().expect("jobs").iter().any(|j| j["kind"] == "usage_review" && j["state"] == "queued"),
        "the next review is scheduled"
    );
}

/// A suspension skips the weekly reviews but keeps them scheduled, so a reactivated tenant is reviewed again.
#[tokio::test]
async fn weekly_reviews_survive_a_suspension() {
    let app = spawn_app_with(test_clock).await;
    let t = app.signup("suspended-review@churn.test", "trial").await;
    let r = post(&app, OP, &format!("/admin/tenants/{}/suspend", t.id)).await;
    assert_eq!(r.status(), StatusCode::OK);
    advance(&app, 15 * 24 * HOUR).await;
    let reviews = |d: &Value| -> Vec<String> {
        let jobs = d["jobs"].as_array().expect("jobs");
        jobs.iter()
            .filter(|j| j["kind"] == "usage_review")
            .map(|j| j["state"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let d = detail(&app, &t.id).await;
    assert_eq!(reviews(&d).iter().filter(|s| *s == "done").count(), 2, "two weeks skipped: {:?}", reviews(&d));
    assert!(reviews(&d).iter().any(|s| s == "queued"), "still scheduled while suspended");
    let r = post(&app, OP, &format!("/admin/tenants/{}/reactivate", t.id)).await;
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..12 {
        app.query(&t.key, "Anything?").await;
    }
    advance(&app, 14 * 24 * HOUR).await;
    let d = detail(&app, &t.id).await;
    assert_eq!(names(&d["notifications"], "template").iter().filter(|n| **n == "usage_dropped").count(), 1, "{d}");
}

/// A minimal SMTP server (greeting, EHLO, MAIL, RCPT, DATA, QUIT) that keeps each session's transcript.
async fn fake_smtp() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("smtp://{}", listener.local_addr().expect("addr"));
    let mail = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = mail.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 fake ESMTP\r\n").await;
                let (mut transcript, mut in_data) = (String::new(), false);
                while let Ok(Some(line)) = lines.next_line().await {
                    transcript.push_str(&line);
                    transcript.push('\n');
                    if in_data {
                        if line == "." {
                            in_data = false;
                            sink.lock().expect("lock").push(transcript.clone());
                            let _ = write.write_all(b"250 2.0.0 queued\r\n").await;
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-fake\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 end with <CRLF>.<CRLF>\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = write.write_all(reply).await;
                }
            });
        }
    });
    (url, mail)
}

#[tokio::test]
async fn notifications_go_over_smtp_when_configured_and_wait_in_the_outbox_when_it_is_down() {
    let (url, mail) = fake_smtp().await;
    let app = spawn_app_with(move |c| {
        test_clock(c);
        c.notifications.smtp_url = url;
    })
    .await;
    let t = app.signup("smtp@churn.test", "trial").await;
    advance(&app, 25 * HOUR).await;
    let d = detail(&app, &t.id).await;
    assert_eq!(names(&d["notifications"], "template"), ["nudge_no_document"]);
    assert!(d["notifications"][0]["delivered_at"].is_string(), "{}", d["jobs"]);
    let sent = mail.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("RCPT TO:<smtp@churn.test>"), "{}", sent[0]);
    assert!(sent[0].contains("Subject: Your Tenantry workspace is ready"), "{}", sent[0]);
    assert!(spool(&app, &t.id).is_empty(), "no spool when SMTP is configured");

    // A mail server that does not answer: the message stays undelivered and its job retries.
    let down = spawn_app_with(|c| {
        test_clock(c);
        c.notifications.smtp_url = "smtp://127.0.0.1:9".into();
    })
    .await;
    let u = down.signup("nomail@churn.test", "trial").await;
    advance(&down, 25 * HOUR).await;
    let d = detail(&down, &u.id).await;
    assert_eq!(names(&d["notifications"], "template"), ["nudge_no_document"]);
    assert!(d["notifications"][0]["delivered_at"].is_null(), "not delivered, not lost");
    let deliver =
        d["jobs"].as_array().expect("jobs").iter().find(|j| j["kind"] == "deliver").expect("deliver job").clone();
    assert_eq!(deliver["state"], "queued", "{deliver}");
    assert!(deliver["attempts"].as_i64() >= Some(1) && deliver["last_error"].is_string(), "{deliver}");
}
