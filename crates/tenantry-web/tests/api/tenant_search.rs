//! The operator's tenant list (`GET /admin/tenants`): search by organisation, email or id, filters by state and
//! plan, sorts and pages, with `total` counting every match — the same on SQLite and PostgreSQL.

use serde_json::Value;

use crate::helpers::{assert_problem, on_postgres, spawn_app_with, TestApp};

const OP: &str = "op-search";

async fn list(app: &TestApp, query: &str) -> Value {
    let r = app.get(OP, &format!("/admin/tenants?{query}")).await;
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.expect("json")
}

fn organizations(page: &Value) -> Vec<&str> {
    page["tenants"].as_array().expect("tenants").iter().map(|t| t["organization"].as_str().expect("name")).collect()
}

#[tokio::test]
async fn the_operator_searches_filters_sorts_and_pages_tenants() {
    search_story(None).await;
}

#[tokio::test]
async fn the_operator_searches_filters_sorts_and_pages_tenants_on_postgres() {
    on_postgres(search_story).await;
}

async fn search_story(database: Option<String>) {
    let app = spawn_app_with(|c| {
        c.server.operator_token = OP.into();
        c.database.url = database.unwrap_or_default();
    })
    .await;
    let acme = app.signup_as("ops@acme.test", "Acme Corp", "trial").await.id;
    app.signup_as("team@globex.test", "Globex", "trial").await;
    app.signup_as("it@initech.test", "Initech 100% Ltd", "pro").await;
    app.signup_as("boss@umbrella.test", "umbrella_co", "trial").await;
    app.signup_as("acme-fan@other.test", "Other", "trial").await;

    // Without parameters: everything, oldest first, as before.
    let all = list(&app, "").await;
    assert_eq!(organizations(&all), ["Acme Corp", "Globex", "Initech 100% Ltd", "umbrella_co", "Other"]);
    assert_eq!(all["total"], 5);

    // Text matches organisation or email in any case, or the whole id.
    assert_eq!(organizations(&list(&app, "q=ACME").await), ["Acme Corp", "Other"]);
    assert_eq!(organizations(&list(&app, &format!("q={acme}")).await), ["Acme Corp"]);
    assert_eq!(organizations(&list(&app, &format!("q={}", &acme[..10])).await), Vec::<&str>::new(), "ids match whole");
    // LIKE's wildcards in the search are plain characters.
    assert_eq!(organizations(&list(&app, "q=100%25").await), ["Initech 100% Ltd"]);
    assert_eq!(organizations(&list(&app, "q=m_r").await), Vec::<&str>::new(), "`_` is no wildcard (umbrella)");
    assert_eq!(organizations(&list(&app, "q=la_c").await), ["umbrella_co"]);

    // Filters combine with the search.
    assert_eq!(organizations(&list(&app, "plan=pro").await), ["Initech 100% Ltd"]);
    assert_eq!(organizations(&list(&app, "q=acme&plan=trial&state=trialing").await), ["Acme Corp", "Other"]);
    assert_eq!(list(&app, "q=acme&plan=pro").await["total"], 0);

    // Sorted and paged; `total` counts every match.
    let by_name = list(&app, "sort=organization").await;
    assert_eq!(organizations(&by_name), ["Acme Corp", "Globex", "Initech 100% Ltd", "Other", "umbrella_co"]);
    assert_eq!(organizations(&list(&app, "sort=-created_at&limit=2").await), ["Other", "umbrella_co"]);
    let second = list(&app, "sort=organization&limit=2&offset=2").await;
    assert_eq!(organizations(&second), ["Initech 100% Ltd", "Other"]);
    assert_eq!(second["total"], 5);
    assert_eq!(organizations(&list(&app, "sort=organization&limit=2&offset=4").await), ["umbrella_co"]);

    for bad in ["sort=name", "limit=0", "limit=501", "offset=-1", "state=", "state=gone", "limit=x", "q=a%00b"] {
        assert_problem(app.get(OP, &format!("/admin/tenants?{bad}")).await, 422, "validation_failed").await;
    }
    assert_problem(app.get("not-the-token", "/admin/tenants?q=acme").await, 401, "unauthenticated").await;
}
