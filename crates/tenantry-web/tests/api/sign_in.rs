//! Sign-in for the portal and the console: passwords, one-time links from the outbox, admin keys and the
//! operator token each open a session in an HttpOnly, Secure, SameSite=Strict cookie; a change made with the
//! cookie needs the session's CSRF token; sessions expire, end at sign-out, with their key, at a password
//! change and with the tenant; a tenant's session never reaches another tenant or the console.

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, on_postgres, spawn_app, spawn_app_with, TestApp};

const OP: &str = "operator-secret-for-sign-in";
const PASSWORD: &str = "a long enough passphrase";

/// A browser's view of one session: the cookie it was given and the CSRF token the page read.
struct Browser {
    cookie: String,
    csrf: String,
    view: Value,
}

impl Browser {
    /// Signs in at `path` with `body`, asserting the cookie's attributes.
    async fn sign_in(app: &TestApp, path: &str, body: Value) -> Browser {
        let r = app.client.post(app.url(path)).json(&body).send().await.expect("sign in");
        assert_eq!(r.status(), StatusCode::CREATED, "sign in at {path}");
        Browser::from_response(r).await
    }

    async fn from_response(r: Response) -> Browser {
        let set_cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("set-cookie").to_owned();
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(set_cookie.contains(attribute), "{attribute} in {set_cookie}");
        }
        assert_eq!(r.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
        let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
        let view: Value = r.json().await.expect("json");
        let csrf = view["csrf_token"].as_str().expect("csrf token").to_owned();
        assert!(csrf.len() >= 40, "a CSRF token of 256 bits: {csrf}");
        Browser { cookie, csrf, view }
    }

    async fn get(&self, app: &TestApp, path: &str) -> Response {
        app.client.get(app.url(path)).header("cookie", &self.cookie).send().await.expect("get")
    }

    /// A request that changes something, with the CSRF token as the page sends it.
    async fn send(&self, app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Response {
        self.send_with(app, method, path, body, Some(&self.csrf)).await
    }

    async fn send_with(
        &self,
        app: &TestApp,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: Option<&str>,
    ) -> Response {
        let mut request = app.client.request(method, app.url(path)).header("cookie", &self.cookie);
        if let Some(token) = csrf {
            request = request.header("x-csrf-token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }
}

async fn set_password(app: &TestApp, key: &str, password: &str) -> Response {
    app.client
        .put(app.url("/v1/tenant/password"))
        .bearer_auth(key)
        .json(&json!({"password": password}))
        .send()
        .await
        .expect("put")
}

/// The password story, on whichever store `app` runs.
async fn password_story(app: &TestApp) {
    let t = app.signup("ada@example.com", "starter").await;
    let r = app.client.post(app.url("/v1/session")).json(&json!({"email": "ada@example.com", "password": PASSWORD}));
    assert_problem(r.send().await.expect("post"), 401, "unauthenticated").await;

    assert_problem(set_password(app, &t.key, "too short").await, 422, "validation_failed").await;
    assert_eq!(set_password(app, &t.key, PASSWORD).await.status(), StatusCode::NO_CONTENT);

    // Wrong password and unknown email look the same.
    let mut details = Vec::new();
    for (email, password) in [("ada@example.com", "not the passphrase"), ("nobody@example.com", PASSWORD)] {
        let r = app.client.post(app.url("/v1/session")).json(&json!({"email": email, "password": password}));
        details.push(assert_problem(r.send().await.expect("post"), 401, "unauthenticated").await["detail"].clone());
    }
    assert_eq!(details[0], details[1], "a wrong password does not reveal which accounts exist");

    // Emails are matched as signup stored them (lowercased, trimmed).
    let browser =
        Browser::sign_in(app, "/v1/session", json!({"email": " Ada@Example.com ", "password": PASSWORD})).await;
    assert_eq!(browser.view["tenant_id"], t.id.as_str());
    assert_eq!(browser.view["method"], "password");
    assert_eq!(browser.view["scopes"], json!(["query", "ingest", "admin"]));

    // The cookie alone reads; it carries the tenant's quota headers like a key does.
    let r = browser.get(app, "/v1/tenant").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-quota-queries-remaining"));
    assert_eq!(r.json::<Value>().await.expect("json")["tenant_id"], t.id.as_str());
    let shown: Value = browser.get(app, "/v1/session").await.json().await.expect("json");
    assert_eq!(shown["csrf_token"], browser.csrf.as_str(), "the page can read the CSRF token back");

    // A change needs the CSRF token as well as the cookie.
    let create = json!({"name": "from the portal", "scopes": ["query"]});
    for csrf in [None, Some("not-the-token")] {
        let r = browser.send_with(app, Method::POST, "/v1/keys", Some(create.clone()), csrf).await;
        assert_problem(r, 403, "forbidden").await;
    }
    assert_eq!(browser.send(app, Method::POST, "/v1/keys", Some(create)).await.status(), StatusCode::CREATED);
    let audit = app.audit(OP, &t.id).await;
    let created = audit.iter().find(|e| e["action"] == "key.created").expect("key creation audited");
    let session_id = browser.view["session_id"].as_str().expect("session id");
    assert_eq!(created["actor"], format!("tenant:{session_id}"), "the session is the actor");
    assert!(audit.iter().any(|e| e["action"] == "session.opened"), "sign-in audited");

    // Signing out ends the session on the server, not only in the browser.
    assert_problem(browser.send_with(app, Method::DELETE, "/v1/session", None, None).await, 403, "forbidden").await;
    let r = browser.send(app, Method::DELETE, "/v1/session", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("cleared").to_owned();
    assert!(cleared.starts_with("tenantry_portal=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_problem(browser.get(app, "/v1/tenant").await, 401, "unauthenticated").await;
}

#[tokio::test]
async fn an_admin_signs_in_with_a_password_and_the_cookie_stands_for_the_session() {
    let app = spawn_app_with(|c| c.server.operator_token = OP.into()).await;
    password_story(&app).await;
}

#[tokio::test]
async fn an_admin_signs_in_with_a_password_on_postgres() {
    on_postgres(|url| async move {
        let Some(url) = url else { return };
        let app = spawn_app_with(move |c| {
            c.database.url = url;
            c.server.operator_token = OP.into();
        })
        .await;
        password_story(&app).await;
    })
    .await;
}

#[tokio::test]
async fn a_sign_in_link_from_the_outbox_works_once() {
    let app = spawn_app_with(|c| c.server.public_url = "https://tenantry.example.com/".into()).await;
    let t = app.signup("link@example.com", "starter").await;
    let mut answers = Vec::new();
    for email in ["link@example.com", "unknown@example.com"] {
        let r = app.client.post(app.url("/v1/session/link")).json(&json!({"email": email})).send().await.expect("post");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        answers.push(r.json::<Value>().await.expect("json"));
    }
    assert_eq!(answers[0], answers[1], "the answer does not say whether the account exists");

    let tenant = tenantry_domain::TenantId::parse(&t.id).expect("id");
    let sent = app.services.notifications(&tenant).await.expect("outbox");
    let message = sent.iter().find(|n| n.template == "sign_in_link").expect("a sign-in link was queued");
    assert_eq!(message.recipient, "link@example.com");
    let token = message
        .body
        .split_whitespace()
        .find_map(|word| word.split_once("/portal?sign_in=").map(|(_, token)| token.to_owned()))
        .expect("the message holds the link");
    assert!(message.body.contains("https://tenantry.example.com/portal?sign_in="), "{}", message.body);

    let browser = Browser::sign_in(&app, "/v1/session", json!({"link_token": token})).await;
    assert_eq!(browser.view["method"], "link");
    assert_eq!(browser.get(&app, "/v1/tenant").await.status(), StatusCode::OK);
    // With the link's session the admin sets a password: that is how an account gets its first one.
    let r = browser.send(&app, Method::PUT, "/v1/tenant/password", Some(json!({"password": PASSWORD}))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    Browser::sign_in(&app, "/v1/session", json!({"email": "link@example.com", "password": PASSWORD})).await;

    let again = app.client.post(app.url("/v1/session")).json(&json!({"link_token": token})).send().await.expect("post");
    assert_problem(again, 401, "unauthenticated").await;
    let forged = app.client.post(app.url("/v1/session")).json(&json!({"link_token": "x".repeat(43)})).send().await;
    assert_problem(forged.expect("post"), 401, "unauthenticated").await;
}

#[tokio::test]
async fn sessions_expire_after_twelve_hours_and_links_after_fifteen_minutes() {
    let app = spawn_app_with(|c| {
        c.server.clock = "test".into();
        c.server.operator_token = OP.into();
    })
    .await;
    let t = app.signup("clock@example.com", "starter").await;
    let browser = Browser::sign_in(&app, "/v1/session", json!({"api_key": t.key})).await;
    let r = app.client.post(app.url("/v1/session/link")).json(&json!({"email": "clock@example.com"})).send().await;
    assert_eq!(r.expect("post").status(), StatusCode::ACCEPTED);
    let tenant = tenantry_domain::TenantId::parse(&t.id).expect("id");
    let sent = app.services.notifications(&tenant).await.expect("outbox");
    let body = &sent.iter().find(|n| n.template == "sign_in_link").expect("link").body;
    let token =
        body.split("sign_in=").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("token").to_owned();

    let advance = |seconds: i64| {
        app.client.post(app.url("/admin/clock/advance")).bearer_auth(OP).json(&json!({"seconds": seconds})).send()
    };
    assert_eq!(advance(15 * 60 + 1).await.expect("advance").status(), StatusCode::OK);
    let late = app.client.post(app.url("/v1/session")).json(&json!({"link_token": token})).send().await;
    assert_problem(late.expect("post"), 401, "unauthenticated").await;
    assert_eq!(browser.get(&app, "/v1/tenant").await.status(), StatusCode::OK, "the session is still young");

    assert_eq!(advance(12 * 3600).await.expect("advance").status(), StatusCode::OK);
    assert_problem(browser.get(&app, "/v1/tenant").await, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_key_session_needs_the_admin_scope_and_ends_with_its_key() {
    let app = spawn_app().await;
    let t = app.signup("keys@example.com", "starter").await;
    let create = |scopes: Value| app.post_json(&t.key, "/v1/keys", json!({"name": "k", "scopes": scopes}));
    let query_only: Value = create(json!(["query"])).await.json().await.expect("json");
    let r = app.client.post(app.url("/v1/session")).json(&json!({"api_key": query_only["api_key"]})).send().await;
    let refused = assert_problem(r.expect("post"), 403, "forbidden").await;
    assert!(refused["detail"].as_str().expect("detail").contains("`admin` scope"), "{refused}");

    let admin: Value = create(json!(["admin", "query"])).await.json().await.expect("json");
    let browser = Browser::sign_in(&app, "/v1/session", json!({"api_key": admin["api_key"]})).await;
    assert_eq!(browser.view["method"], "api_key");
    assert_eq!(browser.view["scopes"], json!(["query", "admin"]), "the key's scopes, no more");
    let upload = browser.send(&app, Method::POST, "/v1/documents", Some(json!({"title": "t", "text": "x"}))).await;
    assert_problem(upload, 403, "forbidden").await;
    assert_eq!(browser.get(&app, "/v1/keys").await.status(), StatusCode::OK);

    let revoked = app.client.delete(app.url(&format!("/v1/keys/{}", admin["key_id"].as_str().expect("id"))));
    assert_eq!(revoked.bearer_auth(&t.key).send().await.expect("revoke").status(), StatusCode::NO_CONTENT);
    assert_problem(browser.get(&app, "/v1/keys").await, 401, "unauthenticated").await;

    let r = app.client.post(app.url("/v1/session")).json(&json!({"api_key": "tk_nonsense"})).send().await;
    assert_problem(r.expect("post"), 401, "unauthenticated").await;
    let both = json!({"api_key": t.key, "email": "keys@example.com", "password": PASSWORD});
    let r = app.client.post(app.url("/v1/session")).json(&both).send().await;
    assert_problem(r.expect("post"), 422, "validation_failed").await;
}

#[tokio::test]
async fn a_portal_session_never_reaches_another_tenant_or_the_console() {
    let app = spawn_app_with(|c| c.server.operator_token = OP.into()).await;
    let a = app.signup("a@example.com", "starter").await;
    let b = app.signup("b@example.com", "starter").await;
    app.upload_text(&a.key, "A's handbook", "Only tenant A may read this.").await;
    app.upload_text(&b.key, "B's handbook", "Only tenant B may read this.").await;
    let browser = Browser::sign_in(&app, "/v1/session", json!({"api_key": a.key})).await;

    let docs: Value = browser.get(&app, "/v1/documents").await.json().await.expect("json");
    let titles: Vec<&str> =
        docs["documents"].as_array().expect("list").iter().filter_map(|d| d["title"].as_str()).collect();
    assert_eq!(titles, ["A's handbook"]);
    let me: Value = browser.get(&app, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(me["tenant_id"], a.id.as_str());

    // The portal's cookie is no console session, under either cookie name.
    assert_problem(browser.get(&app, "/admin/overview").await, 401, "unauthenticated").await;
    let renamed = browser.cookie.replacen("tenantry_portal", "tenantry_console", 1);
    let r = app.client.get(app.url("/admin/overview")).header("cookie", renamed).send().await.expect("get");
    assert_problem(r, 401, "unauthenticated").await;
    let r = app.client.get(app.url("/admin/session")).header("cookie", &browser.cookie).send().await;
    assert_problem(r.expect("get"), 401, "unauthenticated").await;
}

#[tokio::test]
async fn the_operator_signs_in_to_the_console_with_its_token() {
    let app = spawn_app_with(|c| c.server.operator_token = OP.into()).await;
    let t = app.signup("ops@example.com", "starter").await;
    let r = app.client.post(app.url("/admin/session")).json(&json!({"token": "wrong"})).send().await;
    assert_problem(r.expect("post"), 401, "unauthenticated").await;

    let console = Browser::sign_in(&app, "/admin/session", json!({"token": OP})).await;
    assert_eq!(console.view["kind"], "operator");
    assert_eq!(console.get(&app, "/admin/overview").await.status(), StatusCode::OK);
    let suspend = format!("/admin/tenants/{}/suspend", t.id);
    assert_problem(console.send_with(&app, Method::POST, &suspend, None, None).await, 403, "forbidden").await;
    assert_eq!(console.send(&app, Method::POST, &suspend, None).await.status(), StatusCode::OK);
    // An operator session is nobody's tenant session.
    assert_problem(console.get(&app, "/v1/tenant").await, 401, "unauthenticated").await;

    assert_eq!(console.send(&app, Method::DELETE, "/admin/session", None).await.status(), StatusCode::NO_CONTENT);
    assert_problem(console.get(&app, "/admin/overview").await, 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_locked_out_tenant_signs_in_and_sees_what_it_owes() {
    let app = spawn_app_with(|c| c.server.operator_token = OP.into()).await;
    let t = app.signup("late@example.com", "starter").await;
    assert_eq!(set_password(&app, &t.key, PASSWORD).await.status(), StatusCode::NO_CONTENT);
    let suspend = app.client.post(app.url(&format!("/admin/tenants/{}/suspend", t.id))).bearer_auth(OP).send().await;
    assert_eq!(suspend.expect("suspend").status(), StatusCode::OK);

    let browser =
        Browser::sign_in(&app, "/v1/session", json!({"email": "late@example.com", "password": PASSWORD})).await;
    let me: Value = browser.get(&app, "/v1/tenant").await.json().await.expect("json");
    assert_eq!(me["state"], "suspended");
    assert_eq!(browser.get(&app, "/v1/invoices").await.status(), StatusCode::OK, "what is owed stays visible");
    assert_problem(browser.get(&app, "/v1/documents").await, 402, "payment_required").await;
}

#[tokio::test]
async fn too_many_failed_sign_ins_wait_even_with_the_right_password() {
    let app = spawn_app().await;
    let t = app.signup("guess@example.com", "starter").await;
    assert_eq!(set_password(&app, &t.key, PASSWORD).await.status(), StatusCode::NO_CONTENT);
    let attempt = |password: &'static str| {
        app.client
            .post(app.url("/v1/session"))
            .json(&json!({"email": "guess@example.com", "password": password}))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(attempt("wrong guess!").await.expect("post").status(), StatusCode::UNAUTHORIZED);
    }
    let r = attempt(PASSWORD).await.expect("post");
    assert!(r.headers().contains_key("retry-after"), "says when to retry");
    assert_problem(r, 429, "rate_limited").await;
    // Another account is not held up by this one's failures.
    let other = app.signup("other@example.com", "starter").await;
    assert_eq!(set_password(&app, &other.key, PASSWORD).await.status(), StatusCode::NO_CONTENT);
    Browser::sign_in(&app, "/v1/session", json!({"email": "other@example.com", "password": PASSWORD})).await;
}

#[tokio::test]
async fn a_password_change_signs_out_the_other_sessions_and_erasure_all() {
    let app = spawn_app().await;
    let t = app.signup("change@example.com", "starter").await;
    let first = Browser::sign_in(&app, "/v1/session", json!({"api_key": t.key})).await;
    let second = Browser::sign_in(&app, "/v1/session", json!({"api_key": t.key})).await;
    let r = first.send(&app, Method::PUT, "/v1/tenant/password", Some(json!({"password": PASSWORD}))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(first.get(&app, "/v1/tenant").await.status(), StatusCode::OK, "the session that changed it stays");
    assert_problem(second.get(&app, "/v1/tenant").await, 401, "unauthenticated").await;

    let r = first.send(&app, Method::DELETE, "/v1/tenant", None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_problem(first.get(&app, "/v1/tenant").await, 401, "unauthenticated").await;
    let r = app.client.post(app.url("/v1/session")).json(&json!({"email": "change@example.com", "password": PASSWORD}));
    assert_problem(r.send().await.expect("post"), 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_cookie_session_may_send_bodies_past_the_anonymous_limit() {
    let app = spawn_app_with(|c| c.limits.anonymous_body_bytes = 1024).await;
    let t = app.signup("big@example.com", "starter").await;
    let browser = Browser::sign_in(&app, "/v1/session", json!({"api_key": t.key})).await;
    let text = "A paragraph about the handbook. ".repeat(200);
    let body = json!({"title": "big", "text": text});
    let r = browser.send(&app, Method::POST, "/v1/documents", Some(body.clone())).await;
    assert_eq!(r.status(), StatusCode::CREATED, "a signed-in session is a credentialed caller");
    let r = app.client.post(app.url("/v1/documents")).json(&body).send().await.expect("post");
    assert_problem(r, 413, "payload_too_large").await;
}

#[tokio::test]
async fn an_idempotency_key_holds_for_a_cookie_session_too() {
    let app = spawn_app().await;
    let t = app.signup("retry@example.com", "starter").await;
    let browser = Browser::sign_in(&app, "/v1/session", json!({"api_key": t.key})).await;
    let create = || {
        app.client
            .post(app.url("/v1/keys"))
            .header("cookie", &browser.cookie)
            .header("x-csrf-token", &browser.csrf)
            .header("idempotency-key", "portal-create-1")
            .json(&json!({"name": "once", "scopes": ["query"]}))
            .send()
    };
    let first = create().await.expect("post");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let again = create().await.expect("post");
    assert_eq!(again.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(again.json::<Value>().await.expect("json")["key_id"], first["key_id"]);
    let keys: Value = app.get(&t.key, "/v1/keys").await.json().await.expect("json");
    let named: Vec<&Value> = keys["keys"].as_array().expect("keys").iter().filter(|k| k["name"] == "once").collect();
    assert_eq!(named.len(), 1, "created once: {keys}");
}
