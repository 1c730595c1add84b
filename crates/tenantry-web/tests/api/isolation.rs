//! Two tenants with overlapping vocabulary: each sees only its own documents, citations and usage.

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn tenants_see_only_their_own_documents_citations_and_usage() {
    let app = spawn_app().await;
    let a = app.signup("a@isolation.test", "trial").await;
    let b = app.signup("b@isolation.test", "trial").await;
    let doc_a = app.upload_text(&a.key, "A refunds", "Refunds at Alpha take 14 days via bank transfer.").await;
    let doc_b = app.upload_text(&b.key, "B refunds", "Refunds at Bravo take 30 days via store credit.").await;

    for (me, mine, theirs) in [(&a, &doc_a, &doc_b), (&b, &doc_b, &doc_a)] {
        let answer = app.query(&me.key, "How long do refunds take?").await;
        let cited: Vec<_> =
            answer["citations"].as_array().expect("citations").iter().map(|c| c["document_id"].clone()).collect();
        assert_eq!(cited, [mine["document_id"].clone()], "only own citations: {answer}");
        assert!(!answer.to_string().contains(theirs["title"].as_str().expect("title")));

        let list: serde_json::Value = app.get(&me.key, "/v1/documents").await.json().await.expect("json");
        let ids: Vec<_> =
            list["documents"].as_array().expect("array").iter().map(|d| d["document_id"].clone()).collect();
        assert_eq!(ids, [mine["document_id"].clone()]);

        // The other tenant's document id is simply not found, for every verb.
        let path = format!("/v1/documents/{}", theirs["document_id"].as_str().expect("id"));
        assert_problem(app.get(&me.key, &path).await, 404, "not_found").await;
        let r = app.client.delete(app.url(&path)).bearer_auth(&me.key).send().await.expect("delete");
        assert_problem(r, 404, "not_found").await;

        let usage = app.usage(&me.key).await;
        assert_eq!(usage["tenant_id"], me.id);
        assert_eq!(usage["totals"]["queries"], 1);
        assert_eq!(usage["totals"]["documents"], 1);
    }
    // The failed cross-tenant delete left the owner's document in place.
    let list: serde_json::Value = app.get(&a.key, "/v1/documents").await.json().await.expect("json");
    assert_eq!(list["documents"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn malformed_and_unknown_document_ids_are_404() {
    let app = spawn_app().await;
    let t = app.signup("ids@isolation.test", "trial").await;
    for id in
        ["nope", "doc_00000000000000000000000000000000", "..%2F..%2Fkey-pepper", "ten_0192f0c4a1b27c3d8e9f0a1b2c3d4e5f"]
    {
        assert_problem(app.get(&t.key, &format!("/v1/documents/{id}")).await, 404, "not_found").await;
    }
}

/// Every retrieval mode reads only the tenant's own namespace, lexical and vector alike.
#[tokio::test]
async fn no_mode_reaches_another_tenants_chunks() {
    let app = crate::helpers::spawn_app_with(|c| {
        let mut plan = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.name = "all-modes".into();
        plan.retrieval_modes = vec!["basic".into(), "advanced".into(), "agentic".into()];
        c.plans.push(plan);
    })
    .await;
    let a = app.signup("modes-a@isolation.test", "all-modes").await;
    let b = app.signup("modes-b@isolation.test", "all-modes").await;
    let doc_a = app.upload_text(&a.key, "A refunds", "Refunds at Alpha take 14 days via bank transfer.").await;
    let doc_b = app.upload_text(&b.key, "B refunds", "Refunds at Bravo take 30 days via store credit.").await;
    for mode in ["basic", "advanced", "agentic"] {
        for (me, mine) in [(&a, &doc_a), (&b, &doc_b)] {
            let body = serde_json::json!({"retrieval_mode": mode});
            let r = app.client.patch(app.url("/v1/tenant/config")).bearer_auth(&me.key).json(&body).send().await;
            assert_eq!(r.expect("patch").status(), 200);
            let question = "How long do refunds take and are refunds paid by bank transfer or store credit?";
            let answer = app.query(&me.key, question).await;
            assert_eq!(answer["retrieval_mode"], mode);
            let cited: Vec<_> =
                answer["citations"].as_array().expect("citations").iter().map(|c| c["document_id"].clone()).collect();
            assert!(!cited.is_empty() && cited.iter().all(|d| *d == mine["document_id"]), "{mode}: {answer}");
        }
    }
}
