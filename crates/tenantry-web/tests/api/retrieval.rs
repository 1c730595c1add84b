//! Retrieval modes over HTTP: `advanced` fuses BM25 with vector search in the tenant's own namespace, finds
//! what exact terms miss, forgets deleted documents, and is refused to plans that do not include it.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app};
use tenantry_rag::FusionMethod;

#[tokio::test]
async fn advanced_mode_finds_what_bm25_misses_and_forgets_deleted_documents() {
    let app = spawn_app().await;
    let t = app.signup("hybrid@retrieval.test", "starter").await;
    let other = app.signup("other@retrieval.test", "starter").await;
    let guide =
        app.upload_text(&t.key, "Brand guide", "The logo color is ocean blue. Headings use the Inter font.").await;
    app.upload_text(&t.key, "Billing", "Invoices are due within 30 days of issue.").await;
    app.upload_text(&other.key, "Their guide", "Our logo color is red.").await;

    // "colour" shares no term with the guide, so BM25 finds nothing.
    let basic = app.query(&t.key, "colour").await;
    assert_eq!(basic["retrieval_mode"], "basic");
    assert_eq!(basic["citations"], json!([]));

    let r = app
        .client
        .patch(app.url("/v1/tenant/config"))
        .bearer_auth(&t.key)
        .json(&json!({"retrieval_mode": "advanced"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    let advanced = app.query(&t.key, "colour").await;
    assert_eq!(advanced["retrieval_mode"], "advanced");
    let titles: Vec<&str> =
        advanced["citations"].as_array().expect("citations").iter().filter_map(|c| c["title"].as_str()).collect();
    assert_eq!(titles.first(), Some(&"Brand guide"), "{advanced}");
    assert!(!titles.contains(&"Their guide"), "never another tenant's chunks: {titles:?}");

    let id = guide["document_id"].as_str().expect("id");
    let r =
        app.client.delete(app.url(&format!("/v1/documents/{id}"))).bearer_auth(&t.key).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    let after = app.query(&t.key, "colour").await;
    assert!(after["citations"].as_array().expect("citations").iter().all(|c| c["title"] != "Brand guide"), "{after}");
}

#[tokio::test]
async fn a_mode_outside_the_plan_is_refused() {
    let app = spawn_app().await;
    let t = app.signup("trial@retrieval.test", "trial").await;
    let r = app
        .client
        .patch(app.url("/v1/tenant/config"))
        .bearer_auth(&t.key)
        .json(&json!({"retrieval_mode": "advanced"}))
        .send()
        .await
        .expect("patch");
    assert_problem(r, 422, "validation_failed").await;
}

#[tokio::test]
async fn agentic_mode_plans_steps_and_cites_evidence_for_each() {
    let app = crate::helpers::spawn_app_with(|c| {
        let mut plan = c.plans.iter().find(|p| p.name == "trial").expect("trial").clone();
        plan.name = "agent".into();
        plan.retrieval_modes = vec!["basic".into(), "advanced".into(), "agentic".into()];
        plan.default_retrieval_mode = "agentic".into();
        c.plans.push(plan);
    })
    .await;
    let t = app.signup("agent@retrieval.test", "agent").await;
    for i in 0..4 {
        let text = format!("Refund rule {i}: refunds take {} days once the returned item arrives.", 10 + i);
        app.upload_text(&t.key, &format!("Refunds {i}"), &text).await;
    }
    app.upload_text(&t.key, "Shipping", "Orders ship with DHL Express from the Berlin warehouse.").await;

    let question = "How long do refunds take and which carrier ships the orders?";
    let r = app.post_json(&t.key, "/v1/query", json!({"question": question, "top_k": 2})).await;
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.expect("json");
    assert_eq!(answer["retrieval_mode"], "agentic");
    assert_eq!(answer["steps"], json!(["How long do refunds take?", "which carrier ships the orders?"]));
    let titles: Vec<&str> =
        answer["citations"].as_array().expect("citations").iter().filter_map(|c| c["title"].as_str()).collect();
    assert!(titles.contains(&"Shipping") && titles.iter().any(|t| t.starts_with("Refunds")), "{titles:?}");
    let text = answer["answer"].as_str().expect("answer");
    assert!(text.contains("DHL") && text.contains("days"), "{text}");
    assert_eq!(app.usage(&t.key).await["totals"]["queries"], 1, "one query, however many steps");
}

#[tokio::test]
async fn fusion_weights_come_from_the_configuration_and_bad_ones_stop_the_start() {
    let builtin = spawn_app().await;
    let w = builtin.services.fusion_weights();
    assert_eq!(
        (w.method, w.lexical, w.expanded, w.semantic),
        (FusionMethod::Convex, 1.0, 0.0, 0.3),
        "the built-in embedder's own"
    );
    let configured = crate::helpers::spawn_app_with(|c| c.search.fusion_weights = "1:0:2".into()).await;
    let w = configured.services.fusion_weights();
    assert_eq!((w.method, w.lexical, w.expanded, w.semantic), (FusionMethod::Rrf, 1.0, 0.0, 2.0));

    for bad in ["1:0.3", "1:-1:1", "0:0:0", "heavy", "weighted:1:0:1"] {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = tenantry_domain::Config::builtin();
        config.server.data_dir = dir.path().to_owned();
        config.search.fusion_weights = bad.into();
        let err = tenantry_service::Services::start(config).await.err().expect("refused");
        assert!(err.to_string().contains("search.fusion_weights"), "{bad}: {err}");
    }
}

/// The configured embedder changed: at start, every tenant whose vectors are another embedder's gets a
/// `reembed` job, which embeds its documents again and deletes the other embedder's vectors.
#[tokio::test]
async fn vectors_of_another_embedder_are_rebuilt_after_a_restart() {
    use std::sync::Arc;
    use tenantry_domain::lifecycle::EndpointClass;
    use tenantry_domain::{DocumentId, RequestId};
    use tenantry_search::embed::{EmbedError, TextEmbedder};
    use tenantry_search::{ChunkToIndex, SearchIndexes};
    use tenantry_service::documents::{Upload, Uploaded};
    use tenantry_service::gateway::Scope;
    use tenantry_service::Services;
    use tenantry_store::JobState;

    struct Other;
    impl TextEmbedder for Other {
        fn name(&self) -> &str {
            "another-embedder"
        }
        fn dimensions(&self) -> usize {
            3
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(texts.iter().map(|_| vec![1.0, 0.0, 0.0]).collect())
        }
    }

    let dir = tempfile::tempdir().expect("dir");
    let mut config = tenantry_domain::Config::builtin();
    config.server.data_dir = dir.path().to_owned();
    let services = Services::start(config.clone()).await.expect("start");
    let signup = services
        .signup(tenantry_service::tenants::SignupRequest {
            email: "reembed@retrieval.test".into(),
            organization: "Reembed".into(),
            plan: "starter".into(),
        })
        .await
        .expect("signup");
    services.drain_jobs().await.expect("provisioned");
    let key = signup.api_key.clone();
    let ctx = |services: &Services| {
        let services = services.clone();
        let key = key.clone();
        async move {
            services
                .authenticate(Some(&key), RequestId::generate(), EndpointClass::Service, Scope::Admin)
                .await
                .expect("authenticated")
        }
    };
    let c = ctx(&services).await;
    let mut chunks = 0;
    for (title, text) in [("Refunds", "Refunds are issued within 14 days."), ("Carriers", "Orders ship with DHL.")] {
        let upload = Upload {
            title: Some(title.into()),
            file_name: None,
            content_type: Some("text/plain".into()),
            bytes: text.as_bytes().to_vec(),
        };
        let (Uploaded::Created(view) | Uploaded::Duplicate(view)) =
            services.upload_document(&c, upload).await.expect("upload");
        chunks += view.chunks;
    }
    assert_eq!(services.vector_count(&c).expect("count") as i64, chunks);
    services.shutdown().await;
    drop(services);

    // Another embedder wrote the tenant's vectors meanwhile (the configuration changed and changed back).
    let tenant = signup.tenant_id.clone();
    let other = SearchIndexes::with_embedder(dir.path().join("tenants"), 4, Arc::new(Other));
    let chunk = ChunkToIndex { chunk_id: "x".into(), ordinal: 0, heading: String::new(), page: None, text: "x".into() };
    other.index_vectors(&tenant, &DocumentId::generate(), "x", &[chunk]).expect("indexed");
    drop(other);

    let services = Services::start(config.clone()).await.expect("restart");
    let queued = services.store().jobs(Some(JobState::Queued), Some(&tenant), 100).await.expect("jobs");
    assert_eq!(queued.iter().filter(|j| j.kind == "reembed").count(), 1, "the start found the other vectors");
    services.drain_jobs().await.expect("re-embedded");
    let c = ctx(&services).await;
    assert_eq!(services.vector_count(&c).expect("count") as i64, chunks, "every document embedded again");
    let left: Vec<String> = std::fs::read_dir(dir.path().join("tenants").join(tenant.as_str()).join("vectors"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["vectors.log"], "the other embedder's vectors are gone");
    services.shutdown().await;
    drop(services);

    let services = Services::start(config).await.expect("restart again");
    let queued = services.store().jobs(Some(JobState::Queued), Some(&tenant), 100).await.expect("jobs");
    assert!(queued.iter().all(|j| j.kind != "reembed"), "nothing left to re-embed");
}

/// A long upload is answered once its text is stored: BM25 finds it at once, the document says `indexing`
/// until the `embed_document` job made its vectors, then `ready`. A short one is embedded in the request.
#[tokio::test]
async fn a_long_upload_is_searchable_at_once_and_indexing_until_its_vectors_exist() {
    use tenantry_domain::lifecycle::EndpointClass;
    use tenantry_domain::RequestId;
    use tenantry_service::documents::{DocumentStatus, Upload, Uploaded};
    use tenantry_service::gateway::Scope;
    use tenantry_service::Services;
    use tenantry_store::JobState;

    let dir = tempfile::tempdir().expect("dir");
    let mut config = tenantry_domain::Config::builtin();
    config.server.data_dir = dir.path().to_owned();
    // Services alone run no job worker: the test runs the jobs when it chooses.
    let services = Services::start(config).await.expect("start");
    let signup = services
        .signup(tenantry_service::tenants::SignupRequest {
            email: "long@retrieval.test".into(),
            organization: "Long".into(),
            plan: "starter".into(),
        })
        .await
        .expect("signup");
    services.drain_jobs().await.expect("provisioned");
    let ctx = services
        .authenticate(Some(&signup.api_key), RequestId::generate(), EndpointClass::Service, Scope::Admin)
        .await
        .expect("authenticated");
    let upload = |title: &str, text: String| Upload {
        title: Some(title.into()),
        file_name: None,
        content_type: Some("text/plain".into()),
        bytes: text.into_bytes(),
    };
    let created = |uploaded| match uploaded {
        Uploaded::Created(view) => view,
        Uploaded::Duplicate(_) => panic!("not a duplicate"),
    };

    let short =
        created(services.upload_document(&ctx, upload("Short", "Refunds take 14 days.".into())).await.expect("up"));
    assert_eq!(short.status, DocumentStatus::Ready, "embedded in the request");
    let with_short = services.vector_count(&ctx).expect("count");
    assert_eq!(with_short as i64, short.chunks);

    let sections: Vec<String> = (0..60)
        .map(|i| {
            format!("Section {i}\n\n{}", format!("Clause {i} of the warehouse handbook covers pallet {i}. ").repeat(20))
        })
        .collect();
    let mut text = sections.join("\n\n");
    text.push_str("\n\nThe night shift forklift operator is Marguerite.");
    let long = created(services.upload_document(&ctx, upload("Handbook", text)).await.expect("upload"));
    // The test's services embed with the built-in embedder.
    let in_request =
        tenantry_search::embed::TextEmbedder::chunks_in_request(&tenantry_search::embed::HashEmbedder::default());
    assert!(usize::try_from(long.chunks).is_ok_and(|n| n > in_request), "{} chunks", long.chunks);
    assert_eq!(long.status, DocumentStatus::Indexing);
    assert_eq!(services.vector_count(&ctx).expect("count"), with_short, "no vectors yet");
    let hits = services.retrieve(&ctx, "who operates the forklift at night", 3).await.expect("retrieve");
    assert!(hits.first().is_some_and(|h| h.text.contains("Marguerite")), "BM25 finds it meanwhile: {hits:?}");
    let listed = services.list_documents(&ctx).await.expect("list");
    assert_eq!(listed.iter().filter(|d| d.status == DocumentStatus::Indexing).count(), 1);
    let queued = services.store().jobs(Some(JobState::Queued), Some(&signup.tenant_id), 10).await.expect("jobs");
    assert_eq!(queued.iter().filter(|j| j.kind == "embed_document").count(), 1, "stored with its job");

    services.drain_jobs().await.expect("embedded");
    let id = long.document_id.to_string();
    assert_eq!(services.get_document(&ctx, &id).await.expect("get").status, DocumentStatus::Ready);
    assert_eq!(services.vector_count(&ctx).expect("count") as i64, short.chunks + long.chunks);
    services.shutdown().await;
}
