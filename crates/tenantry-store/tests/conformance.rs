//! One suite, every backend and ownership: the same stories run against the embedded SQLite store as its
//! sole owner (in-memory quota gate, batched ledger writer, remembered key rows), against the same file as
//! if other processes shared it (row gate, a transaction per settlement, key rows read every time), and
//! against PostgreSQL (when `TENANTRY_TEST_POSTGRES_URL` points at a server; CI sets it and requires it).

use tenantry_domain::config::Quotas;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::quota::Meter;
use tenantry_domain::{
    ApiKeyId, ChunkId, DocumentId, InvoiceKind, InvoiceStatus, RetrievalMode, TenantId, TenantState, Timestamp,
};
use tenantry_store::{
    Amounts, ChangeKind, ConfigChange, ExportRow, ExportStart, Inserted, InvoiceEffects, JobState, NewApiKey, NewChunk,
    NewDocument, NewInvoice, NewJob, NewPendingItem, NewReservation, NewTenant, PlanChange, Settlement, Store,
    StoreError, TransitionEffects, UsageEvent,
};

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (Store::open("", dir.path()).await.expect("sqlite opens"), dir)
}

/// A fresh database on the test server, or `None` when no server is configured — a failure instead when
/// `TENANTRY_TEST_REQUIRE_POSTGRES=1` (CI), so a CI that forgot the server cannot pass by skipping.
async fn postgres() -> Option<Store> {
    let url = std::env::var("TENANTRY_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    let required = std::env::var("TENANTRY_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    assert!(url.is_some() || !required, "TENANTRY_TEST_REQUIRE_POSTGRES=1 but TENANTRY_TEST_POSTGRES_URL is not set");
    let url = url?;
    let db = Store::create_test_database(&url).await.expect("postgres reachable");
    Some(Store::open(&db, std::path::Path::new(".")).await.expect("postgres opens"))
}

fn tenant(email: &str) -> (NewTenant, NewApiKey) {
    let id = TenantId::generate();
    let now = Timestamp(1_700_000_000_000);
    (
        NewTenant {
            id: id.clone(),
            email: email.into(),
            organization: "Org".into(),
            plan: "trial".into(),
            state: TenantState::Provisioning,
            model: "local-small".into(),
            retrieval_mode: RetrievalMode::Basic,
            system_prompt: String::new(),
            trial_ends_at: Some(Timestamp(now.0 + 1_000)),
            now,
        },
        NewApiKey {
            id: ApiKeyId::generate(),
            tenant_id: id,
            name: "default".into(),
            secret_hash: "h".into(),
            scopes: "query".into(),
            now,
        },
    )
}

fn audit_entry(t: &TenantId, action: &str, detail: &str) -> tenantry_store::NewAuditEntry {
    tenantry_store::NewAuditEntry {
        at: Timestamp(5),
        tenant_id: Some(t.clone()),
        actor: "system".into(),
        action: action.into(),
        target: t.as_str().into(),
        detail: detail.into(),
        request_id: String::new(),
    }
}

/// The actions of the tenant's audit entries, oldest first.
async fn audit_actions(store: &Store, t: &TenantId) -> Vec<String> {
    store.audit_entries(Some(t), 0, 100).await.expect("audit").into_iter().map(|e| e.action).collect()
}

fn settlement(t: &TenantId, reservation: Option<&str>, actual: Amounts) -> Settlement {
    Settlement { reservation_id: reservation.map(str::to_owned), tenant_id: t.clone(), period_start: PERIOD, actual }
}

const PERIOD: Timestamp = Timestamp(1_000);

fn event(t: &TenantId, id: &str, meter: Meter, quantity: i64, at: i64) -> UsageEvent {
    UsageEvent {
        event_id: id.into(),
        tenant_id: t.clone(),
        request_id: id.into(),
        meter,
        model: "local-small".into(),
        quantity,
        cost_micros: quantity * 2,
        at: Timestamp(at),
    }
}

async fn tenants_keys_and_transitions(store: Store) {
    let (t, k) = tenant("a@conformance.test");
    store.create_tenant(&t, &k, Some(&audit_entry(&t.id, "tenant.signed_up", "{}"))).await.expect("create");
    let (mut dup, dup_key) = tenant("a@conformance.test");
    dup.organization = "Other".into();
    let dup_entry = audit_entry(&dup.id, "tenant.signed_up", "{}");
    assert!(matches!(store.create_tenant(&dup, &dup_key, Some(&dup_entry)).await, Err(StoreError::Conflict("email"))));
    assert!(store.tenant(&dup.id).await.expect("read").is_none(), "the failed signup left no tenant");
    assert!(store.key(&dup_key.id).await.expect("read").is_none(), "and no key");
    assert!(audit_actions(&store, &dup.id).await.is_empty(), "and no audit entry");

    let row = store.tenant(&t.id).await.expect("read").expect("exists");
    assert_eq!((row.state, row.state_version, row.config_version), (TenantState::Provisioning, 0, 1));
    assert_eq!(row.trial_ends_at, t.trial_ends_at, "the trial's end, as fixed at signup");
    let next = store
        .transition(&t.id, 0, row.state, LifecycleEvent::ProvisionedTrial, Timestamp(1), &TransitionEffects::default())
        .await
        .expect("transition");
    assert_eq!(next, TenantState::Trialing);
    // A second writer that read version 0 loses.
    let stale = store
        .transition(
            &t.id,
            0,
            TenantState::Provisioning,
            LifecycleEvent::ProvisionedActive,
            Timestamp(2),
            &TransitionEffects::default(),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Concurrent)), "{stale:?}");
    let invalid = store
        .transition(
            &t.id,
            1,
            TenantState::Trialing,
            LifecycleEvent::GraceExpired,
            Timestamp(2),
            &TransitionEffects::default(),
        )
        .await;
    assert!(matches!(invalid, Err(StoreError::Conflict(_))));

    let changed = store
        .update_config(&t.id, &ConfigChange { model: Some("local-large".into()), ..Default::default() }, Timestamp(3))
        .await
        .expect("config");
    assert_eq!((changed.model.as_str(), changed.config_version), ("local-large", 2));
    assert_eq!(changed.system_prompt, "", "unchanged fields are kept");

    let key = store.key(&k.id).await.expect("read").expect("exists");
    assert_eq!(key.tenant_id, t.id);
    let (other, other_key) = tenant("b@conformance.test");
    store.create_tenant(&other, &other_key, None).await.expect("create");
    let revoked = audit_entry(&t.id, "key.revoked", "{}");
    let not_theirs = audit_entry(&other.id, "key.revoked", "{}");
    assert!(
        matches!(store.revoke_key(&other.id, &k.id, Timestamp(4), Some(&not_theirs)).await, Err(StoreError::NotFound)),
        "not another tenant's key"
    );
    assert!(store.revoke_key(&t.id, &k.id, Timestamp(5), Some(&revoked)).await.expect("revoke"));
    assert!(!store.revoke_key(&t.id, &k.id, Timestamp(6), Some(&revoked)).await.expect("again"), "already revoked");
    assert_eq!(store.key(&k.id).await.expect("read").expect("exists").revoked_at, Some(Timestamp(5)));
    assert_eq!(audit_actions(&store, &t.id).await, ["tenant.signed_up", "key.revoked"], "one entry per change");
    assert!(audit_actions(&store, &other.id).await.is_empty());
    let second = NewApiKey { id: ApiKeyId::generate(), ..k.clone() };
    store.create_key(&second, Some(&audit_entry(&t.id, "key.created", "{}"))).await.expect("key");
    let clash = NewApiKey { tenant_id: other.id.clone(), ..second.clone() };
    assert!(store.create_key(&clash, Some(&audit_entry(&other.id, "key.created", "{}"))).await.is_err(), "id taken");
    assert_eq!(audit_actions(&store, &t.id).await, ["tenant.signed_up", "key.revoked", "key.created"]);
    assert!(audit_actions(&store, &other.id).await.is_empty(), "the refused key left no entry");
    assert_eq!(store.verify_audit().await.expect("verify"), Ok(3));
    assert_eq!(store.tenants(Some(TenantState::Trialing)).await.expect("list").len(), 1);

    // The last unrevoked admin key stays.
    let admin = |name: &str| NewApiKey {
        id: ApiKeyId::generate(),
        name: name.into(),
        scopes: "query ingest admin".into(),
        ..k.clone()
    };
    let (a1, a2) = (admin("a1"), admin("a2"));
    store.create_key(&a1, None).await.expect("key");
    assert!(matches!(store.revoke_key(&t.id, &a1.id, Timestamp(7), None).await, Err(StoreError::LastAdminKey)));
    store.create_key(&a2, None).await.expect("key");
    assert!(store.revoke_key(&t.id, &a1.id, Timestamp(8), None).await.expect("another admin key exists"));
    assert!(matches!(store.revoke_key(&t.id, &a2.id, Timestamp(9), None).await, Err(StoreError::LastAdminKey)));
    assert_eq!(store.key(&a2.id).await.expect("read").expect("exists").revoked_at, None);
}

async fn documents_and_ledger(store: Store) {
    let (t, k) = tenant("docs@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let doc = NewDocument {
        id: DocumentId::generate(),
        tenant_id: t.id.clone(),
        title: "Doc".into(),
        content_type: "text/plain".into(),
        bytes: 60,
        stored_bytes: 100,
        content_sha256: "abc".into(),
        now: Timestamp(10),
        embedder: "constant-2".into(),
        embed_later: None,
    };
    let chunks: Vec<NewChunk> = (0..3)
        .map(|i| NewChunk {
            id: ChunkId::new(&doc.id, i),
            ordinal: i64::from(i),
            heading: String::new(),
            page: None,
            text: format!("chunk {i}"),
            embedding: Some(vec![i as f32, -0.5]),
        })
        .collect();
    let up = [event(&t.id, "up:d", Meter::Documents, 1, 10), event(&t.id, "up:s", Meter::StorageBytes, 100, 10)];
    let row = store
        .insert_document(
            &doc,
            &chunks,
            b"original bytes",
            &settlement(&t.id, None, Amounts { documents: 1, storage_bytes: 100, ..Amounts::default() }),
            &up,
        )
        .await
        .expect("insert");
    let Inserted::New(row) = row else { panic!("a first upload is stored") };
    assert_eq!(row.chunks, 3);
    let read = store.document(&t.id, &doc.id).await.expect("read").expect("stored");
    assert_eq!((read.bytes, read.stored_bytes), (60, 100), "the upload's size and what it holds in storage");
    assert_eq!(store.chunks(&t.id, &doc.id).await.expect("chunks").len(), 3);
    assert_eq!(store.usage_level(&t.id, Meter::StorageBytes, Timestamp(11)).await.expect("level"), 100);
    assert_eq!(
        store.usage_level(&t.id, Meter::StorageBytes, Timestamp(10)).await.expect("level"),
        0,
        "levels are as of a time"
    );

    // Everything a node needs to index the document, and its original, come back from the rows.
    assert_eq!(store.file(&t.id, doc.id.as_str()).await.expect("file").as_deref(), Some(&b"original bytes"[..]));
    assert_eq!(store.document_seq(&t.id).await.expect("seq"), Some(1));
    let changes = store.document_changes(&t.id, 0, 10).await.expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].seq, &changes[0].document_id, changes[0].kind), (1, &doc.id, ChangeKind::Put));
    let [indexed] = &store.documents_to_index(&t.id, std::slice::from_ref(&doc.id)).await.expect("read")[..] else {
        panic!("one live document")
    };
    assert_eq!(indexed.embedder, "constant-2");
    let vectors: Vec<_> = indexed.chunks.iter().map(|c| c.embedding.clone()).collect();
    assert_eq!(vectors, [Some(vec![0.0, -0.5]), Some(vec![1.0, -0.5]), Some(vec![2.0, -0.5])]);

    let (other, other_key) = tenant("docs2@conformance.test");
    store.create_tenant(&other, &other_key, None).await.expect("create");
    assert!(store.document(&other.id, &doc.id).await.expect("read").is_none(), "tenant-scoped read");
    assert!(store.file(&other.id, doc.id.as_str()).await.expect("file").is_none(), "tenant-scoped file");
    assert!(store.documents_to_index(&other.id, std::slice::from_ref(&doc.id)).await.expect("read").is_empty());
    assert!(store.live_documents(&other.id, std::slice::from_ref(&doc.id)).await.expect("live").is_empty());
    // Many ids at once (more than one query's worth), answered in the caller's order, unknown ones dropped.
    let mut ids: Vec<DocumentId> = (0..69).map(|_| DocumentId::generate()).collect();
    ids.insert(3, doc.id.clone());
    ids.push(doc.id.clone());
    assert_eq!(store.live_documents(&t.id, &ids).await.expect("live"), vec![doc.id.clone(), doc.id.clone()]);
    assert!(store.live_documents(&t.id, &[]).await.expect("none asked").is_empty());
    assert!(matches!(
        store.delete_document(&other.id, &doc.id, &settlement(&other.id, None, Amounts::default()), &[]).await,
        Err(StoreError::NotFound)
    ));

    // The same bytes again under a new id: the stored document is returned and nothing is written.
    let copy = NewDocument { id: DocumentId::generate(), ..doc.clone() };
    let replay = store
        .insert_document(
            &copy,
            &[],
            b"original bytes",
            &settlement(&t.id, None, Amounts { documents: 1, ..Amounts::default() }),
            &[event(&t.id, "copy", Meter::Documents, 1, 11)],
        )
        .await
        .expect("replay");
    assert!(matches!(&replay, Inserted::Existing(existing) if existing.id == doc.id), "{replay:?}");
    assert!(store.document(&t.id, &copy.id).await.expect("read").is_none(), "no second row");
    assert_eq!(store.document_seq(&t.id).await.expect("seq"), Some(1), "no change recorded");
    assert_eq!(store.usage_event_count(&t.id, Meter::Documents).await.expect("count"), 1, "nothing metered");

    // A tenant that does not exist (or was erased meanwhile) gets no document, no chunk and no ledger event.
    let stray = TenantId::generate();
    let orphan = NewDocument { id: DocumentId::generate(), tenant_id: stray.clone(), ..doc.clone() };
    let refused = store
        .insert_document(
            &orphan,
            &chunks,
            b"orphan",
            &settlement(&stray, None, Amounts { documents: 1, ..Amounts::default() }),
            &[event(&stray, "orphan", Meter::Documents, 1, 11)],
        )
        .await;
    assert!(matches!(refused, Err(StoreError::TenantErased)), "{refused:?}");
    assert!(store.documents(&stray).await.expect("read").is_empty());
    assert_eq!(store.usage_event_count(&stray, Meter::Documents).await.expect("count"), 0);

    // A failing transaction leaves nothing: the duplicate document id aborts the insert of a second copy.
    let clash = NewDocument { content_sha256: "other bytes".into(), ..doc.clone() };
    let again = store
        .insert_document(
            &clash,
            &chunks,
            b"other bytes",
            &settlement(&t.id, None, Amounts { documents: 1, ..Amounts::default() }),
            &[event(&t.id, "again", Meter::Documents, 1, 12)],
        )
        .await;
    assert!(again.is_err());
    assert_eq!(
        store.usage_event_count(&t.id, Meter::Documents).await.expect("count"),
        1,
        "its ledger event rolled back"
    );

    let down =
        [event(&t.id, "down:d", Meter::Documents, -1, 20), event(&t.id, "down:s", Meter::StorageBytes, -100, 20)];
    store
        .delete_document(
            &t.id,
            &doc.id,
            &settlement(&t.id, None, Amounts { documents: -1, storage_bytes: -100, ..Amounts::default() }),
            &down,
        )
        .await
        .expect("delete");
    assert!(store.chunks(&t.id, &doc.id).await.expect("chunks").is_empty());
    assert_eq!(store.usage_level(&t.id, Meter::Documents, Timestamp(21)).await.expect("level"), 0);
    assert!(store.file(&t.id, doc.id.as_str()).await.expect("file").is_none(), "the original went with it");
    let changes = store.document_changes(&t.id, 1, 10).await.expect("changes");
    assert_eq!(changes.iter().map(|c| (c.seq, c.kind)).collect::<Vec<_>>(), [(2, ChangeKind::Delete)]);
    assert!(store.documents_to_index(&t.id, std::slice::from_ref(&doc.id)).await.expect("read").is_empty());
    assert!(matches!(
        store.set_document_vectors(&t.id, &doc.id, "constant-2", &[], true).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.document_seq(&t.id).await.expect("seq"), Some(2), "a refused change records nothing");
}

/// Files span parts; re-embedding a document announces it as a change; the cluster's settings are claimed
/// by the first writer.
async fn files_vectors_and_cluster_settings(store: Store) {
    let (t, k) = tenant("files@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let big: Vec<u8> = (0..tenantry_store::PART_BYTES * 2 + 17).map(|i| (i % 251) as u8).collect();
    store.put_file(&t.id, "exp_big", &big).await.expect("put");
    assert_eq!(store.file(&t.id, "exp_big").await.expect("read").as_deref(), Some(big.as_slice()));
    store.put_file(&t.id, "exp_big", b"smaller").await.expect("replace");
    assert_eq!(store.file(&t.id, "exp_big").await.expect("read").as_deref(), Some(&b"smaller"[..]));
    store.delete_file("exp_big").await.expect("delete");
    assert!(store.file(&t.id, "exp_big").await.expect("read").is_none());

    let doc = NewDocument {
        id: DocumentId::generate(),
        tenant_id: t.id.clone(),
        title: "Doc".into(),
        content_type: "text/plain".into(),
        bytes: 3,
        stored_bytes: 3,
        content_sha256: "def".into(),
        now: Timestamp(10),
        embedder: String::new(),
        embed_later: Some(NewJob {
            tenant_id: Some(t.id.clone()),
            ..job("embed_document", Some("embed-later"), 10, 3)
        }),
    };
    let chunk = |i: u32| NewChunk {
        id: ChunkId::new(&doc.id, i),
        ordinal: i64::from(i),
        heading: "H".into(),
        page: Some(2),
        text: "t".into(),
        embedding: None,
    };
    store
        .insert_document(&doc, &[chunk(0), chunk(1)], b"abc", &settlement(&t.id, None, Amounts::default()), &[])
        .await
        .expect("insert");
    let stored = store.documents_to_index(&t.id, std::slice::from_ref(&doc.id)).await.expect("read");
    assert!(stored[0].chunks.iter().all(|c| c.embedding.is_none()), "stored without vectors");
    let queued = store.jobs(Some(JobState::Queued), Some(&t.id), 10).await.expect("jobs");
    assert_eq!(queued.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(), ["embed_document"], "with its job");
    assert_eq!(store.document(&t.id, &doc.id).await.expect("read").expect("stored").embedder, "");
    // Written back quietly (a node embedding for itself): no change announced.
    store.set_document_vectors(&t.id, &doc.id, "e", &[vec![1.0], vec![2.0]], false).await.expect("vectors");
    assert_eq!(store.document_seq(&t.id).await.expect("seq"), Some(1));
    // A re-embedding: every node must take the new vectors.
    store.set_document_vectors(&t.id, &doc.id, "e", &[vec![3.0], vec![4.0]], true).await.expect("vectors");
    assert_eq!(store.document_seq(&t.id).await.expect("seq"), Some(2));
    let stored = store.documents_to_index(&t.id, std::slice::from_ref(&doc.id)).await.expect("read");
    assert_eq!(stored[0].embedder, "e");
    assert_eq!(store.document(&t.id, &doc.id).await.expect("read").expect("stored").embedder, "e");
    assert_eq!(stored[0].chunks[1].embedding, Some(vec![4.0]));
    assert!(matches!(
        store.set_document_vectors(&t.id, &doc.id, "e", &[vec![1.0]], true).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(store.document_seq(&t.id).await.expect("seq"), Some(2), "a refused change records nothing");
    let heads = store.tenant_heads().await.expect("heads");
    assert!(heads.iter().any(|h| h.id == t.id && h.document_seq == 2 && h.state == TenantState::Provisioning));
    assert!(store.documents_without_original().await.expect("read").is_empty());

    assert_eq!(store.claim_setting("fingerprint", "first").await.expect("claim"), "first");
    assert_eq!(store.claim_setting("fingerprint", "second").await.expect("claim"), "first", "the first one stays");
}

async fn usage_is_idempotent_and_summed(store: Store) {
    let (t, k) = tenant("usage@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let batch = [event(&t.id, "r1:q", Meter::Queries, 1, 100), event(&t.id, "r1:p", Meter::PromptTokens, 40, 100)];
    let one = settlement(&t.id, None, Amounts { queries: 1, tokens: 40, ..Amounts::default() });
    assert!(store.settle(&one, &batch).await.expect("settle"));
    assert!(!store.settle(&one, &batch).await.expect("replay"), "a replayed settlement changes nothing");
    assert_eq!(store.quota_counters(&t.id, PERIOD).await.expect("counters").used.queries, 1, "counted once");
    let two = settlement(&t.id, None, Amounts { queries: 1, ..Amounts::default() });
    store.settle(&two, &[event(&t.id, "r2:q", Meter::Queries, 1, 200)]).await.expect("settle");
    let lines = store.usage_lines(&t.id, Timestamp(0), Timestamp(1_000)).await.expect("lines");
    let queries = lines.iter().find(|l| l.meter == Meter::Queries).expect("queries line");
    assert_eq!((queries.quantity, queries.cost_micros), (2, 4));
    let in_range = store.usage_lines(&t.id, Timestamp(150), Timestamp(1_000)).await.expect("lines");
    assert_eq!(in_range.len(), 1, "half-open range");
}

fn reservation(t: &TenantId, id: &str, amounts: Amounts) -> NewReservation {
    NewReservation {
        id: id.into(),
        tenant_id: t.clone(),
        period_start: PERIOD,
        amounts,
        expires_at: Timestamp(10_000),
        now: Timestamp(2_000),
        spend: None,
    }
}

fn limits(queries: u64, tokens: u64) -> Quotas {
    Quotas { queries, tokens, documents: 5, storage_bytes: 1_000, requests_per_minute: 1_000 }
}

async fn concurrent_reservations_never_overshoot(store: Store) {
    let (t, k) = tenant("race@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let q = Amounts { queries: 1, tokens: 100, ..Amounts::default() };
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (store, t) = (store.clone(), t.id.clone());
        tasks.push(tokio::spawn(async move {
            store.reserve(&reservation(&t, &format!("race-{i}"), q), &limits(10, 1_000_000)).await
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        if task.await.expect("join").expect("store").is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "exactly the limit is admitted");
    let c = store.quota_counters(&t.id, PERIOD).await.expect("counters");
    assert_eq!((c.reserved.queries, c.used.queries), (10, 0));
    assert_eq!(store.reservation_count().await.expect("count"), 10);
}

/// Overage of 3 cents a query past 2 included, and 1 cent per 100 tokens past 1,000.
fn spend_cap(cap_cents: i64) -> tenantry_store::SpendCap {
    let price = |queries: i64, tokens: i64| (queries - 2).max(0) * 3 + (tokens - 1_000).max(0) / 100;
    tenantry_store::SpendCap { cap_cents, overage_cents: std::sync::Arc::new(price) }
}

async fn a_spend_cap_holds_under_concurrent_reservations(store: Store) {
    let (t, k) = tenant("cap@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    // Queries and tokens reserved by different requests at once: each sees the others' totals.
    let mut tasks = Vec::new();
    for i in 0..48 {
        let (store, t) = (store.clone(), t.id.clone());
        let amounts =
            if i % 2 == 0 { Amounts { queries: 1, ..Amounts::default() } } else { Amounts::default().tokens_only(100) };
        tasks.push(tokio::spawn(async move {
            let r = NewReservation { spend: Some(spend_cap(20)), ..reservation(&t, &format!("cap-{i}"), amounts) };
            store.reserve(&r, &limits(1_000, 1_000_000)).await
        }));
    }
    let mut refused_by_cap = 0;
    for task in tasks {
        match task.await.expect("join").expect("store") {
            Ok(()) => {}
            Err(tenantry_store::Exceeded::SpendCap { cap_cents: 20 }) => refused_by_cap += 1,
            Err(other) => panic!("refused for {other:?}"),
        }
    }
    let held = store.quota_counters(&t.id, PERIOD).await.expect("counters").reserved;
    let overage = (spend_cap(20).overage_cents)(held.queries, held.tokens);
    assert!(overage <= 20, "the cap holds: {held:?} costs {overage} cents");
    assert!(refused_by_cap > 0, "48 requests cannot all fit under 20 cents");
    // What adds no overage still passes at the cap.
    let docs = NewReservation {
        spend: Some(spend_cap(20)),
        ..reservation(&t.id, "docs", Amounts { documents: 1, ..Amounts::default() })
    };
    store.reserve(&docs, &limits(1_000, 1_000_000)).await.expect("store").expect("no overage, no refusal");
}

async fn reserve_settle_release_and_expire(store: Store) {
    let (t, k) = tenant("life@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let lim = limits(3, 1_000);
    let q = |tokens| Amounts { queries: 1, tokens, ..Amounts::default() };
    store.reserve(&reservation(&t.id, "a", q(400)), &lim).await.expect("store").expect("fits");
    store.reserve(&reservation(&t.id, "b", q(400)), &lim).await.expect("store").expect("fits");
    let over = store.reserve(&reservation(&t.id, "c", q(400)), &lim).await.expect("store");
    assert_eq!(
        over,
        Err(tenantry_store::Exceeded::Quota(tenantry_store::QuotaMeter::Tokens)),
        "tokens would pass 1000"
    );
    assert_eq!(
        store.quota_counters(&t.id, PERIOD).await.expect("c").reserved,
        Amounts { queries: 2, tokens: 800, ..Amounts::default() },
        "a refused reservation holds nothing"
    );

    // Settle a with less than reserved; release b.
    let ev = event(&t.id, "a:q", Meter::Queries, 1, 3_000);
    assert!(store.settle(&settlement(&t.id, Some("a"), q(350)), &[ev]).await.expect("settle"));
    assert!(store.release("b").await.expect("release"));
    assert!(!store.release("b").await.expect("release twice"), "a second release is a no-op");
    let c = store.quota_counters(&t.id, PERIOD).await.expect("c");
    assert_eq!((c.used, c.reserved), (q(350), Amounts::default()));

    // A reservation whose request died is reclaimed after it expires, not before.
    store.reserve(&reservation(&t.id, "dead", q(10)), &lim).await.expect("store").expect("fits");
    assert_eq!(store.expire_reservations(Timestamp(9_999)).await.expect("sweep"), 0);
    assert_eq!(store.expire_reservations(Timestamp(10_001)).await.expect("sweep"), 1);
    assert_eq!(store.quota_counters(&t.id, PERIOD).await.expect("c").reserved, Amounts::default());
    assert_eq!(store.reservation_count().await.expect("count"), 0);
}

/// Many settlements at once (on the embedded store they share commits), each delivered twice side by side:
/// every one applies exactly once, and the ledger, the counters and the admission state agree.
async fn concurrent_settlements_apply_once(store: Store) {
    let lim = limits(1_000, 1_000_000);
    let q = |tokens| Amounts { queries: 1, tokens, ..Amounts::default() };
    let mut tenants = Vec::new();
    for name in ["one", "two"] {
        let (t, k) = tenant(&format!("{name}@settle.test"));
        store.create_tenant(&t, &k, None).await.expect("create");
        tenants.push(t.id);
    }
    let mut tasks = Vec::new();
    for t in &tenants {
        for i in 0..100 {
            let id = format!("{t}-r{i}");
            store.reserve(&reservation(t, &id, q(50)), &lim).await.expect("store").expect("fits");
            let events = vec![
                event(t, &format!("{id}:q"), Meter::Queries, 1, 3_000),
                event(t, &format!("{id}:t"), Meter::PromptTokens, 40, 3_000),
            ];
            for _ in 0..2 {
                let (store, s, events) = (store.clone(), settlement(t, Some(&id), q(40)), events.clone());
                tasks.push(tokio::spawn(async move { store.settle(&s, &events).await }));
            }
        }
    }
    let mut applied = 0;
    for task in tasks {
        if task.await.expect("join").expect("settle") {
            applied += 1;
        }
    }
    assert_eq!(applied, 200, "each of the 200 settlements applied once, its duplicate not at all");
    for t in &tenants {
        let c = store.quota_counters(t, PERIOD).await.expect("counters");
        assert_eq!(
            (c.used, c.reserved),
            (Amounts { queries: 100, tokens: 4_000, ..Amounts::default() }, Amounts::default())
        );
        assert_eq!(store.usage_event_count(t, Meter::Queries).await.expect("count"), 100);
        assert_eq!(store.usage_event_count(t, Meter::PromptTokens).await.expect("count"), 100);
    }
    assert_eq!(store.reservation_count().await.expect("count"), 0);
    // Nothing is left over for the next settlements: admission sees exactly the used amounts.
    let full = limits(201, 1_000_000);
    store.reserve(&reservation(&tenants[0], "last", q(1)), &full).await.expect("store").expect("fits");
    let refused = store.reserve(&reservation(&tenants[0], "over", q(1)), &limits(101, 1_000_000)).await;
    assert!(refused.expect("store").is_err(), "100 used + 1 reserved leaves nothing under 101");
}

async fn append_entries(store: &Store, times: std::ops::Range<i64>) {
    for at in times {
        let entry = tenantry_store::NewAuditEntry {
            at: Timestamp(at),
            tenant_id: None,
            actor: "system".into(),
            action: "test.appended".into(),
            target: format!("t{at}"),
            detail: "{}".into(),
            request_id: String::new(),
        };
        store.append_audit(&entry).await.expect("append");
    }
}

/// Retention removes the oldest entries, moves the anchor, records itself in the chain, which still verifies.
async fn audit_pruning_keeps_the_chain_verifiable(store: Store) {
    append_entries(&store, 1..11).await;
    assert_eq!(store.prune_audit(Timestamp(1), Timestamp(20)).await.expect("prune"), None, "nothing that old");
    let pruned = store.prune_audit(Timestamp(6), Timestamp(20)).await.expect("prune").expect("pruned");
    assert_eq!((pruned.through_seq, pruned.entries), (5, 5));
    let left = store.audit_entries(None, 0, 100).await.expect("entries");
    assert_eq!(left.first().map(|e| e.seq), Some(6));
    assert_eq!(left.last().map(|e| e.action.as_str()), Some("audit.pruned"));
    assert_eq!(left[0].prev_hash, pruned.anchor_hash, "the anchor is the hash the first entry links to");
    assert_eq!(store.verify_audit().await.expect("verify"), Ok(6), "entries 6 to 11");
    append_entries(&store, 30..32).await;
    assert_eq!(store.verify_audit().await.expect("verify"), Ok(8));
}

/// Concurrent appends still form one unbroken chain (they serialise on the head row).
async fn audit_chain_holds_under_concurrent_appends(store: Store) {
    let store = std::sync::Arc::new(store);
    let tenant = TenantId::generate();
    let appends = (0..20).map(|i| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            let entry = tenantry_store::NewAuditEntry {
                at: Timestamp(1_700_000_000_000 + i),
                tenant_id: (i % 2 == 0).then_some(tenant),
                actor: "system".into(),
                action: "test.appended".into(),
                target: format!("t{i}"),
                detail: format!("{{\"i\":{i}}}"),
                request_id: String::new(),
            };
            store.append_audit(&entry).await.expect("append")
        }
    });
    let appended = futures::future::join_all(appends).await;
    let mut seqs: Vec<i64> = appended.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(store.verify_audit().await.expect("store"), Ok(20));
    assert_eq!(store.audit_entries(Some(&tenant), 0, 100).await.expect("store").len(), 10);
    assert_eq!(store.audit_entries(None, 15, 100).await.expect("store").len(), 5);
}

fn job(kind: &str, key: Option<&str>, run_at: i64, max_attempts: i64) -> NewJob {
    NewJob {
        kind: kind.into(),
        tenant_id: None,
        payload: format!("{{\"kind\":\"{kind}\"}}"),
        idempotency_key: key.map(str::to_owned),
        max_attempts,
        run_at: Timestamp(run_at),
    }
}

/// Workers racing for due jobs (as several nodes do) each get different ones: every job is claimed once.
async fn racing_workers_claim_each_job_once(store: Store) {
    let now = Timestamp(10_000);
    for i in 0..60 {
        assert!(store.enqueue(&job(&format!("j{i}"), None, 5_000, 3), now).await.expect("enqueue"));
    }
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claimed = store.claim_jobs(now, 60, 4).await.expect("claim");
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|j| j.kind));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    all.sort();
    let claimed = all.len();
    all.dedup();
    assert_eq!((claimed, all.len()), (60, 60), "each of the 60 jobs claimed exactly once");
}

async fn jobs_are_scheduled_claimed_retried_and_parked(store: Store) {
    let now = Timestamp(10_000);
    assert!(store.enqueue(&job("a", Some("k1"), 5_000, 2), now).await.expect("enqueue"));
    assert!(!store.enqueue(&job("a", Some("k1"), 5_000, 2), now).await.expect("enqueue"), "same key twice");
    assert!(store.enqueue(&job("b", None, 20_000, 3), now).await.expect("enqueue"));
    assert!(store.enqueue(&job("c", None, 20_000, 3), now).await.expect("enqueue"), "no key never collides");

    // Only the due job is claimed, once.
    let claimed = store.claim_jobs(now, 60, 10).await.expect("claim");
    assert_eq!(claimed.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(claimed[0].attempts, 1);
    assert!(store.claim_jobs(now, 60, 10).await.expect("claim").is_empty(), "leased jobs are not claimed again");
    assert!(store.jobs_pending(now).await.expect("pending"), "a running job is pending");

    // A failure requeues it for later; the last allowed failure parks it.
    let a = &claimed[0];
    let state = store.fail_job(a, "boom", Timestamp(11_000), now).await.expect("fail");
    assert_eq!(state, JobState::Queued);
    assert!(store.claim_jobs(now, 60, 10).await.expect("claim").is_empty(), "not before its retry time");
    let again = store.claim_jobs(Timestamp(11_000), 60, 10).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert!(
        matches!(store.complete_job(a, now).await, Err(StoreError::Concurrent)),
        "a stale attempt cannot finish it"
    );
    let state = store.fail_job(&again[0], "boom again", Timestamp(12_000), now).await.expect("fail");
    assert_eq!(state, JobState::Parked);
    let parked = store.jobs(Some(JobState::Parked), None, 10).await.expect("list");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].last_error.as_deref(), Some("boom again"));

    // The operator requeues it with fresh attempts.
    let requeued = store.requeue_job(&parked[0].id, Timestamp(13_000)).await.expect("requeue");
    assert_eq!((requeued.state, requeued.attempts), (JobState::Queued, 0));

    // A worker that dies loses its lease; the job is claimed again after it expires.
    let due = store.claim_jobs(Timestamp(20_000), 5, 10).await.expect("claim");
    assert_eq!(due.len(), 3);
    assert!(store.claim_jobs(Timestamp(24_000), 5, 10).await.expect("claim").is_empty());
    let reclaimed = store.claim_jobs(Timestamp(26_000), 5, 10).await.expect("claim");
    assert_eq!(reclaimed.len(), 3, "expired leases are reclaimed");
    for j in &reclaimed {
        store.complete_job(j, Timestamp(26_000)).await.expect("complete");
    }
    assert!(!store.jobs_pending(Timestamp(1_000_000)).await.expect("pending"));
}

async fn exports_queue_behind_every_other_due_job(store: Store) {
    let now = Timestamp(10_000);
    for kind in ["export", "export", "finish_erasure", "export", "charge"] {
        store.enqueue(&job(kind, None, 1_000, 3), now).await.expect("enqueue");
    }
    let kinds = |jobs: &[tenantry_store::JobRow]| jobs.iter().map(|j| j.kind.clone()).collect::<Vec<_>>();
    let first = store.claim_jobs(now, 60, 2).await.expect("claim");
    assert_eq!(kinds(&first), ["finish_erasure", "charge"], "the erasure and the charge go first");
    let rest = store.claim_jobs(now, 60, 10).await.expect("claim");
    assert_eq!(kinds(&rest), ["export", "export", "export"]);
}

async fn a_tenant_has_one_export_pending_and_a_few_a_day(store: Store) {
    let (t, k) = tenant("exports@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let export = |id: &str, at: i64| ExportRow {
        id: id.into(),
        tenant_id: t.id.to_string(),
        status: tenantry_domain::ExportStatus::Pending,
        created_at: Timestamp(at),
        expires_at: Timestamp(at + 86_400_000),
        bytes: 0,
        sha256: String::new(),
    };
    let day = 86_400_000;
    let first = export("exp_1", day);
    assert_eq!(
        store.start_export(&first, &[job("export", None, day, 3)], 2).await.expect("start"),
        ExportStart::Started
    );
    assert_eq!(
        store.start_export(&export("exp_2", day + 1), &[job("export", None, day, 3)], 2).await.expect("start"),
        ExportStart::Pending(first.clone()),
        "the pending one stands, nothing written"
    );
    assert!(store.export(&t.id, "exp_2").await.expect("read").is_none());
    store.set_export_status("exp_1", tenantry_domain::ExportStatus::Ready, 10, "abc").await.expect("ready");
    let second = export("exp_3", day + 1_000);
    assert_eq!(store.start_export(&second, &[], 2).await.expect("start"), ExportStart::Started);
    store.set_export_status("exp_3", tenantry_domain::ExportStatus::Ready, 10, "abc").await.expect("ready");
    assert_eq!(
        store.start_export(&export("exp_4", day + 2_000), &[], 2).await.expect("start"),
        ExportStart::DailyLimit { oldest: Timestamp(day) },
        "two a day"
    );
    assert_eq!(
        store.start_export(&export("exp_5", 2 * day + 1), &[], 2).await.expect("start"),
        ExportStart::Started,
        "a day after the first, one more"
    );
}

async fn concurrent_workers_claim_each_job_once(store: Store) {
    let now = Timestamp(10_000);
    for _ in 0..60 {
        store.enqueue(&job("work", None, 1_000, 3), now).await.expect("enqueue");
    }
    let workers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_jobs(now, 60, 3).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                for j in batch {
                    store.complete_job(&j, now).await.expect("complete");
                    mine.push(j.id);
                }
            }
        })
    });
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (60, 60), "every job ran exactly once");
}

async fn transitions_are_recorded_with_their_jobs(store: Store) {
    let (t, k) = tenant("events@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let audit = |event: &str| audit_entry(&t.id, "tenant.transition", &format!("{{\"event\":\"{event}\"}}"));
    let provision = NewJob { tenant_id: Some(t.id.clone()), ..job("close", Some("close-1"), 99_000, 3) };
    let won = audit("provisioned_active");
    let effects = TransitionEffects { jobs: &[provision], audit: Some(&won), events: &[] };
    store
        .transition(&t.id, 0, TenantState::Provisioning, LifecycleEvent::ProvisionedActive, Timestamp(5), &effects)
        .await
        .expect("transition");
    // A losing transition writes neither its event nor its jobs nor its audit entry.
    let late = NewJob { tenant_id: Some(t.id.clone()), ..job("close", Some("close-2"), 99_000, 3) };
    let lost_entry = audit("provisioned_trial");
    let effects = TransitionEffects { jobs: &[late], audit: Some(&lost_entry), events: &[] };
    let lost = store
        .transition(&t.id, 0, TenantState::Provisioning, LifecycleEvent::ProvisionedTrial, Timestamp(6), &effects)
        .await;
    assert!(matches!(lost, Err(StoreError::Concurrent)));
    let entries = store.audit_entries(Some(&t.id), 0, 10).await.expect("audit");
    assert_eq!(entries.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(), [won.detail.as_str()]);
    assert_eq!(store.verify_audit().await.expect("verify"), Ok(1), "the chain holds the winner's entry");
    assert!(store.record_milestone(&t.id, "first_document", Timestamp(7)).await.expect("milestone"));
    assert!(!store.record_milestone(&t.id, "first_document", Timestamp(8)).await.expect("milestone"), "once");

    let events = store.tenant_events(&t.id).await.expect("events");
    let names: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["provisioned_active", "first_document"]);
    assert_eq!(events[0].from_state.as_deref(), Some("provisioning"));
    assert_eq!(events[0].to_state.as_deref(), Some("active"));
    let jobs = store.jobs(None, Some(&t.id), 10).await.expect("jobs");
    assert_eq!(jobs.iter().map(|j| j.idempotency_key.as_deref()).collect::<Vec<_>>(), [Some("close-1")]);
}

async fn plan_changes_and_their_pending_items(store: Store) {
    let (t, k) = tenant("plan@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    store
        .transition(
            &t.id,
            0,
            TenantState::Provisioning,
            LifecycleEvent::ProvisionedActive,
            Timestamp(5),
            &TransitionEffects::default(),
        )
        .await
        .expect("active");
    let row = store.tenant(&t.id).await.expect("read").expect("exists");
    let item = |id: &str, amount_cents| NewPendingItem {
        id: id.into(),
        description: format!("item {id}"),
        amount_cents,
        kind: "proration",
    };
    let change = |plan: &str, config_version, state_version, items| PlanChange {
        plan: plan.into(),
        model: "local-large".into(),
        retrieval_mode: RetrievalMode::Advanced,
        items,
        expected_config_version: config_version,
        expected_state_version: state_version,
        period_close_kind: "close_period".into(),
        audit: Some(audit_entry(&t.id, "plan.changed", &format!("{{\"to\":\"{plan}\"}}"))),
    };
    let now = Timestamp(10_000);

    // The change, its config bump and its items in one transaction.
    let items = vec![item("ii_1_credit", -1_500), item("ii_2_charge", 3_000)];
    let changed = store
        .change_plan(&t.id, &change("pro", row.config_version, row.state_version, items), now)
        .await
        .expect("change");
    assert_eq!((changed.plan.as_str(), changed.model.as_str()), ("pro", "local-large"));
    assert_eq!((changed.retrieval_mode, changed.config_version), (RetrievalMode::Advanced, row.config_version + 1));

    // Computed from a stale config or state version, or while a period close is due or running: refused,
    // and nothing of it is written.
    let stale = [
        change("starter", row.config_version, row.state_version, vec![item("ii_stale1", 1)]),
        change("starter", changed.config_version, row.state_version + 1, vec![item("ii_stale2", 1)]),
    ];
    for c in &stale {
        assert!(matches!(store.change_plan(&t.id, c, now).await, Err(StoreError::Concurrent)));
    }
    let close =
        |key: &str, run_at| NewJob { tenant_id: Some(t.id.clone()), ..job("close_period", Some(key), run_at, 3) };
    store.enqueue(&close("next-close", 99_000), now).await.expect("enqueue");
    store.enqueue(&close("due-close", 9_000), now).await.expect("enqueue");
    let blocked = change("starter", changed.config_version, changed.state_version, vec![item("ii_blocked", 1)]);
    assert!(matches!(store.change_plan(&t.id, &blocked, now).await, Err(StoreError::Concurrent)));
    let claimed = store.claim_jobs(now, 60, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(matches!(store.change_plan(&t.id, &blocked, now).await, Err(StoreError::Concurrent)), "running");
    store.complete_job(&claimed[0], now).await.expect("done");
    let pending = store.pending_items(&t.id).await.expect("items");
    assert_eq!(pending.iter().map(|i| i.amount_cents).collect::<Vec<_>>(), [-1_500, 3_000]);
    assert_eq!(store.tenant(&t.id).await.expect("read").expect("exists").plan, "pro");

    // An invoice bills them once: a second invoice that claims them too is not stored at all.
    let invoice = |id: &str, kind: InvoiceKind| NewInvoice {
        id: id.into(),
        tenant_id: t.id.clone(),
        kind,
        period_start: Timestamp(0),
        period_end: Timestamp(86_400_000),
        status: InvoiceStatus::Open,
        currency: "usd".into(),
        subtotal_cents: 1_500,
        total_cents: 1_500,
        lines: "[]".into(),
        now,
    };
    let consume_items = pending.iter().map(|i| i.id.clone()).collect();
    let effects = InvoiceEffects { consume_items, ..InvoiceEffects::default() };
    let first = store.create_invoice(&invoice("inv_first", InvoiceKind::Closing), &effects).await.expect("invoice");
    assert!(store.pending_items(&t.id).await.expect("items").is_empty());
    let billed = store.invoice_items(&t.id).await.expect("items");
    assert!(billed.iter().all(|i| i.invoice_id.as_deref() == Some(first.id.as_str())), "{billed:?}");
    let twice = store.create_invoice(&invoice("inv_twice", InvoiceKind::TrueUp), &effects).await;
    assert!(matches!(twice, Err(StoreError::Concurrent)));
    assert!(store.invoice("inv_twice").await.expect("read").is_none());
    let next =
        store.create_invoice(&invoice("inv_next", InvoiceKind::TrueUp), &InvoiceEffects::default()).await.expect("ok");
    assert_eq!(next.number, first.number + 1, "the refused invoice took no number");

    // The accepted change still applies once nothing is in the way; each applied change has its audit entry,
    // the refused ones none.
    let later = store.change_plan(&t.id, &blocked, now).await.expect("change");
    assert_eq!(later.plan, "starter");
    let entries = store.audit_entries(Some(&t.id), 0, 10).await.expect("audit");
    let details: Vec<_> = entries.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(details, [r#"{"to":"pro"}"#, r#"{"to":"starter"}"#]);
}

/// Invoices made at once draw each cent of credit once: the soonest-expiring grant first, an expired one never,
/// and a balance never below zero.
async fn credit_is_drawn_once_by_invoices_made_at_once(store: Store) {
    let (t, k) = tenant("credit@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let grant = |id: &str, cents: i64, expires: Option<i64>| tenantry_store::CreditGrantRow {
        id: id.into(),
        tenant_id: t.id.clone(),
        amount_cents: cents,
        remaining_cents: cents,
        reason: "goodwill".into(),
        expires_at: expires.map(Timestamp),
        created_at: Timestamp(1),
        applied: Vec::new(),
    };
    store.grant_credit(&grant("crd_late", 700, None)).await.expect("grant");
    store.grant_credit(&grant("crd_soon", 500, Some(50_000))).await.expect("grant");
    store.grant_credit(&grant("crd_gone", 9_000, Some(5))).await.expect("grant");
    let line = tenantry_store::CreditLine(std::sync::Arc::new(|cents| serde_json::json!({"amount_cents": -cents})));
    let mut tasks = Vec::new();
    for i in 0..4i64 {
        let (store, tenant, line) = (store.clone(), t.id.clone(), line.clone());
        let tenant_for_job = tenant.clone();
        tasks.push(tokio::spawn(async move {
            let invoice = NewInvoice {
                id: format!("inv_credit_{i}"),
                tenant_id: tenant,
                kind: InvoiceKind::Closing,
                period_start: Timestamp(i * 1_000),
                period_end: Timestamp(i * 1_000 + 1_000),
                status: InvoiceStatus::Open,
                currency: "usd".into(),
                subtotal_cents: 400,
                total_cents: 400,
                lines: "[]".into(),
                now: Timestamp(10_000),
            };
            let collect =
                NewJob { tenant_id: Some(tenant_for_job), ..job("charge", Some(&format!("charge-{i}")), 0, 3) };
            let effects =
                InvoiceEffects { prepaid_credit: Some(line), collect: Some(collect), ..InvoiceEffects::default() };
            store.create_invoice(&invoice, &effects).await.expect("invoice")
        }));
    }
    let mut totals = Vec::new();
    for task in tasks {
        let invoice = task.await.expect("join");
        let lines: Vec<serde_json::Value> = serde_json::from_str(&invoice.lines).expect("lines");
        let drawn = lines.iter().map(|l| -l["amount_cents"].as_i64().expect("amount")).sum::<i64>();
        assert_eq!(invoice.total_cents + drawn, 400, "the line shows what was drawn: {invoice:?}");
        assert_eq!(invoice.status == InvoiceStatus::Paid, invoice.total_cents == 0, "paid when credit covers it");
        totals.push(invoice.total_cents);
    }
    totals.sort_unstable();
    assert_eq!(totals, [0, 0, 0, 400], "1,200 cents of unexpired credit pay three invoices of 400");
    let charges = store.jobs(None, Some(&t.id), 10).await.expect("jobs");
    assert_eq!(charges.len(), 1, "only the invoice credit did not pay is collected: {charges:?}");
    let grants = store.credit_grants(&t.id).await.expect("grants");
    let left = |id: &str| grants.iter().find(|g| g.id == id).map(|g| (g.remaining_cents, g.applied.len()));
    assert_eq!(left("crd_soon"), Some((0, 2)), "the soonest expiry goes first");
    assert_eq!(left("crd_late"), Some((0, 2)));
    assert_eq!(left("crd_gone"), Some((9_000, 0)), "an expired grant is never drawn");
}

macro_rules! conformance_suite {
    ($($story:ident),* $(,)?) => {
        mod sqlite_backend {
            $(#[tokio::test] async fn $story() { let (store, _dir) = super::sqlite().await; super::$story(store).await; })*
        }
        /// The embedded file as if other processes shared it (`Ownership::Shared`, as on PostgreSQL): both
        /// ownerships pass the same stories.
        mod sqlite_shared {
            $(#[tokio::test] async fn $story() {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = tenantry_store::Store::open_embedded_as_shared(dir.path()).await.expect("opens");
                super::$story(store).await;
            })*
        }
        mod postgres_backend {
            $(#[tokio::test] async fn $story() {
                match super::postgres().await {
                    Some(store) => super::$story(store).await,
                    None => eprintln!("TENANTRY_TEST_POSTGRES_URL not set: PostgreSQL story skipped"),
                }
            })*
        }
    };
}

trait TokensOnly {
    fn tokens_only(self, tokens: i64) -> Amounts;
}

impl TokensOnly for Amounts {
    fn tokens_only(self, tokens: i64) -> Amounts {
        Amounts { tokens, ..Amounts::default() }
    }
}

conformance_suite!(
    tenants_keys_and_transitions,
    documents_and_ledger,
    files_vectors_and_cluster_settings,
    racing_workers_claim_each_job_once,
    usage_is_idempotent_and_summed,
    concurrent_reservations_never_overshoot,
    a_spend_cap_holds_under_concurrent_reservations,
    reserve_settle_release_and_expire,
    concurrent_settlements_apply_once,
    audit_chain_holds_under_concurrent_appends,
    audit_pruning_keeps_the_chain_verifiable,
    jobs_are_scheduled_claimed_retried_and_parked,
    concurrent_workers_claim_each_job_once,
    exports_queue_behind_every_other_due_job,
    a_tenant_has_one_export_pending_and_a_few_a_day,
    transitions_are_recorded_with_their_jobs,
    plan_changes_and_their_pending_items,
    credit_is_drawn_once_by_invoices_made_at_once,
);

#[tokio::test]
async fn sqlite_runs_with_the_intended_pragmas() {
    let (store, _dir) = sqlite().await;
    assert_eq!(store.sqlite_pragma("journal_mode").await.expect("pragma"), "wal");
    assert_eq!(store.sqlite_pragma("synchronous").await.expect("pragma"), "1", "NORMAL");
    assert_eq!(store.sqlite_pragma("secure_delete").await.expect("pragma"), "1");
    assert_eq!(store.sqlite_pragma("foreign_keys").await.expect("pragma"), "1");
    assert_eq!(store.sqlite_pragma("busy_timeout").await.expect("pragma"), "10000");
    assert_eq!(store.sqlite_pragma("page_size").await.expect("pragma"), "1024", "small WAL frames");
    assert_eq!(store.sqlite_pragma("wal_autocheckpoint").await.expect("pragma"), "16384", "only a backstop");
}

/// An in-memory SQLite URL is refused when opened: the ledger writer's own connection would see another,
/// empty database, and settlements would vanish from every read.
#[tokio::test]
async fn sqlite_in_memory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for url in ["sqlite::memory:", "sqlite://ledger.db?mode=memory"] {
        let refused = Store::open(url, dir.path()).await.expect_err(url);
        assert!(refused.to_string().contains("needs a database file"), "{url}: {refused}");
    }
}

/// Under a steady stream of settlements the WAL keeps starting over, so its file stays a fraction of what was
/// written, although SQLite's own checkpoint is only a backstop far above what this test writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_steady_settlements() {
    let (store, dir) = sqlite().await;
    let (t, k) = tenant("wal@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let lim = limits(1_000_000, 1_000_000_000);
    let q = Amounts { queries: 1, tokens: 10, ..Amounts::default() };
    let started = std::time::Instant::now();
    let mut commits: u64 = 0;
    // Paced (tokio sleeps at least a millisecond) so that each half-second between background passes writes
    // far fewer frames than the 16,384-page backstop; several passes happen meanwhile.
    while started.elapsed() < std::time::Duration::from_secs(3) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let id = format!("wal-{commits}");
        store.reserve(&reservation(&t.id, &id, q), &lim).await.expect("store").expect("fits");
        let events = [event(&t.id, &format!("{id}:q"), Meter::Queries, 1, 2_000)];
        assert!(store.settle(&settlement(&t.id, Some(&id), q), &events).await.expect("settle"));
        commits += 1;
    }
    let written_at_least = commits * 3 * (1024 + 24);
    let wal = std::fs::metadata(dir.path().join("tenantry.db-wal")).expect("wal file").len();
    assert!(
        commits > 200 && wal < written_at_least / 2,
        "{commits} commits wrote at least {written_at_least} bytes of WAL frames; the WAL file holds {wal}"
    );
}

/// The embedded store has two writers: the ledger writer's connection (settlements) and the pool's (the rest).
/// A transaction that reads before it writes, such as a usage retention sweep (it sums what it will remove,
/// then removes it), must wait for its turn rather than fail when a settlement commits between its read and
/// its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beside_the_ledger_writer_wait_their_turn() {
    let (store, _dir) = sqlite().await;
    let (t, k) = tenant("writers@conformance.test");
    store.create_tenant(&t, &k, None).await.expect("create");
    let lim = limits(1_000_000, 1_000_000_000);
    let q = Amounts { queries: 1, tokens: 10, ..Amounts::default() };
    let settling: Vec<_> = (0..8)
        .map(|worker| {
            let (store, t) = (store.clone(), t.id.clone());
            tokio::spawn(async move {
                for i in 0..60 {
                    let id = format!("w{worker}-{i}");
                    store.reserve(&reservation(&t, &id, q), &lim).await.expect("store").expect("fits");
                    let events = [event(&t, &format!("{id}:q"), Meter::Queries, 1, 2_000)];
                    assert!(store.settle(&settlement(&t, Some(&id), q), &events).await.expect("settle"));
                }
            })
        })
        .collect();
    let sweeping = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..150 {
                // Nothing is old enough to go; the sweep still reads, then writes.
                store.prune_usage(Timestamp(1)).await.expect("a sweep waits for the ledger writer, never fails");
                tokio::task::yield_now().await;
            }
        })
    };
    for task in settling.into_iter().chain([sweeping]) {
        task.await.expect("no task failed");
    }
    assert_eq!(store.usage_event_count(&t.id, Meter::Queries).await.expect("count"), 480);
    let c = store.quota_counters(&t.id, PERIOD).await.expect("counters");
    assert_eq!((c.used.queries, c.reserved.queries), (480, 0));
}

/// After retention pruned the chain, removing its oldest remaining entry is caught, also when the anchor is
/// moved along with it.
#[tokio::test]
async fn tampering_with_a_pruned_chain_is_detected() {
    use sqlx::{ConnectOptions, Connection};
    for (name, sql, expected) in [
        (
            "delete the oldest",
            "DELETE FROM audit_log WHERE seq = 6",
            tenantry_store::AuditBreak::Gap { expected: 6, found: 7 },
        ),
        (
            "delete the oldest and move the anchor",
            "UPDATE audit_anchor SET seq = 6, hash = (SELECT hash FROM audit_log WHERE seq = 6); \
             DELETE FROM audit_log WHERE seq = 6",
            tenantry_store::AuditBreak::Anchor(6),
        ),
    ] {
        let (store, dir) = sqlite().await;
        append_entries(&store, 1..11).await;
        store.prune_audit(Timestamp(6), Timestamp(20)).await.expect("prune");
        drop(store);
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("tenantry.db"))
            .connect()
            .await
            .expect("open");
        sqlx::raw_sql(sql).execute(&mut conn).await.expect("tamper");
        conn.close().await.expect("close");
        let store = Store::open("", dir.path()).await.expect("reopen");
        assert_eq!(store.verify_audit().await.expect("verify"), Err(expected), "{name}");
    }
}
