//! Property: whatever interleaving of reserve, settle (with at most what was reserved), release and
//! expiry a tenant's requests go through, settled + reserved never exceeds the limit and nothing goes
//! negative; once every request has ended, nothing stays reserved. Against each quota gate: the embedded
//! store's in-memory one, the row gate on the embedded file as if shared, and the row gate on PostgreSQL (when
//! `TENANTRY_TEST_POSTGRES_URL` is set; required when `TENANTRY_TEST_REQUIRE_POSTGRES=1`).

use proptest::prelude::*;
use tenantry_domain::config::Quotas;
use tenantry_domain::{ApiKeyId, RetrievalMode, TenantId, TenantState, Timestamp};
use tenantry_store::{Amounts, NewApiKey, NewReservation, NewTenant, Settlement, Store};

#[derive(Clone, Debug)]
enum Op {
    Reserve { slot: usize, queries: i64, tokens: i64 },
    Settle { slot: usize, fraction: u8 },
    Release { slot: usize },
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6usize, 0..3i64, 0..400i64).prop_map(|(slot, queries, tokens)| Op::Reserve { slot, queries, tokens }),
        (0..6usize, 0..=100u8).prop_map(|(slot, fraction)| Op::Settle { slot, fraction }),
        (0..6usize).prop_map(|slot| Op::Release { slot }),
        Just(Op::Expire),
    ]
}

const LIMITS: Quotas =
    Quotas { queries: 5, tokens: 1_000, documents: 10, storage_bytes: 10_000, requests_per_minute: 60 };
const PERIOD: Timestamp = Timestamp(1_000);

#[derive(Clone, Copy, Debug)]
enum Gate {
    Memory,
    SharedSqlite,
    RowsOnPostgres,
}

async fn open(gate: Gate, dir: &std::path::Path) -> Option<Store> {
    match gate {
        Gate::Memory => Some(Store::open("", dir).await.expect("store")),
        Gate::SharedSqlite => Some(Store::open_embedded_as_shared(dir).await.expect("store")),
        Gate::RowsOnPostgres => {
            let url = std::env::var("TENANTRY_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
            let required = std::env::var("TENANTRY_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(url.is_some() || !required, "TENANTRY_TEST_REQUIRE_POSTGRES=1 but no TENANTRY_TEST_POSTGRES_URL");
            let db = Store::create_test_database(&url?).await.expect("postgres reachable");
            Some(Store::open(&db, dir).await.expect("postgres opens"))
        }
    }
}

async fn run(ops: Vec<Op>, gate: Gate) {
    let dir = tempfile::tempdir().expect("dir");
    let Some(store) = open(gate, dir.path()).await else { return };
    let t = TenantId::generate();
    let now = Timestamp(0);
    let tenant = NewTenant {
        id: t.clone(),
        email: "p@props.test".into(),
        organization: "P".into(),
        plan: "trial".into(),
        state: TenantState::Active,
        model: "m".into(),
        retrieval_mode: RetrievalMode::Basic,
        system_prompt: String::new(),
        trial_ends_at: None,
        now,
    };
    let key = NewApiKey {
        id: ApiKeyId::generate(),
        tenant_id: t.clone(),
        name: "k".into(),
        secret_hash: "h".into(),
        scopes: String::new(),
        now,
    };
    store.create_tenant(&tenant, &key, None).await.expect("tenant");
    // What each slot's live reservation holds, as the model of the test knows it.
    let mut held: Vec<Option<(String, Amounts)>> = vec![None; 6];
    let mut generation = 0;
    for op in ops {
        match op {
            Op::Reserve { slot, queries, tokens } if held[slot].is_none() => {
                generation += 1;
                let id = format!("r{generation}");
                let amounts = Amounts { queries, tokens, ..Amounts::default() };
                let r = NewReservation {
                    id: id.clone(),
                    tenant_id: t.clone(),
                    period_start: PERIOD,
                    amounts,
                    expires_at: Timestamp(generation),
                    now,
                    spend: None,
                };
                if store.reserve(&r, &LIMITS).await.expect("reserve").is_ok() {
                    held[slot] = Some((id, amounts));
                }
            }
            Op::Settle { slot, fraction } => {
                if let Some((id, amounts)) = held[slot].take() {
                    let actual = Amounts {
                        queries: amounts.queries,
                        tokens: amounts.tokens * i64::from(fraction) / 100,
                        ..Amounts::default()
                    };
                    let s = Settlement {
                        reservation_id: Some(id.clone()),
                        tenant_id: t.clone(),
                        period_start: PERIOD,
                        actual,
                    };
                    store.settle(&s, &[]).await.expect("settle");
                }
            }
            Op::Release { slot } => {
                if let Some((id, _)) = held[slot].take() {
                    store.release(&id).await.expect("release");
                }
            }
            Op::Expire => {
                // Expire everything reserved so far: those requests are now "dead".
                store.expire_reservations(Timestamp(generation + 1)).await.expect("expire");
                held.iter_mut().for_each(|h| *h = None);
            }
            Op::Reserve { .. } => {}
        }
        let c = store.quota_counters(&t, PERIOD).await.expect("counters");
        assert!(c.used.queries + c.reserved.queries <= 5, "{c:?}");
        assert!(c.used.tokens + c.reserved.tokens <= 1_000, "{c:?}");
        assert!(
            c.used.queries >= 0 && c.used.tokens >= 0 && c.reserved.queries >= 0 && c.reserved.tokens >= 0,
            "{c:?}"
        );
        let model_reserved: i64 = held.iter().flatten().map(|(_, a)| a.tokens).sum();
        assert_eq!(c.reserved.tokens, model_reserved, "the store holds exactly what live requests hold");
    }
    for (id, _) in held.iter().flatten() {
        store.release(id).await.expect("release");
    }
    let c = store.quota_counters(&t, PERIOD).await.expect("counters");
    assert_eq!(c.reserved, Amounts::default(), "nothing stays reserved");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn any_interleaving_respects_the_limit(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        for gate in [Gate::Memory, Gate::SharedSqlite, Gate::RowsOnPostgres] {
            runtime.block_on(run(ops.clone(), gate));
        }
    }
}
