//! Group commit of settlements for the embedded store. Each settlement goes straight to the ledger writer,
//! a thread of its own with its own SQLite connection, which takes every settlement waiting in its queue and
//! writes them together: one multi-row ledger insert that returns the rows it added (a settlement whose
//! events were all recorded before applies nothing, as alone), one multi-row counter upsert with the sums per
//! tenant, period and meter, the analytics outbox rows, and one commit. A request still waits for the commit
//! that holds its rows before it answers, so every answered request is in the ledger. If a batch fails, each
//! of its settlements is written again alone, so one bad settlement fails only itself.
//!
//! Why a thread and a connection of its own: through sqlx every statement is a message to the connection's
//! worker thread and a wake-up back, and so is the test of a pooled connection as it is taken and returned.
//! A batch cost six such round trips (the test on acquire, begin, ledger, counters, commit, release), each a
//! pair of context switches on a 2-core machine under load; the gateway's p99 was mostly that waiting. The ledger
//! writer runs the same statements directly, and the request hands its settlement to the thread and is
//! answered by it, with no task in between: one hand-over and one answer. It is a second writer beside the
//! pool's, so both begin their transactions `IMMEDIATE` (`Store::begin_write`): each waits for SQLite's write
//! lock up front (the busy timeout) instead of failing to upgrade a read transaction after the other committed.
//!
//! The in-memory quota state (`memgate`) moves after the commit, on the ledger thread, under each tenant's
//! lock, before the requests are answered; a request that stopped waiting (its client went away) is moved
//! all the same. Until then the settled usage is still counted as reserved, and a reservation always covers
//! the usage it settles (queries exactly, tokens by their upper bound), so admission never sees less than
//! the truth. The request loads its tenant's counters from the table *before* it hands the settlement over
//! (`SoleOwner::settle`), so a first load cannot read rows the commit then adds again in memory.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params_from_iter, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::memgate::MemGate;
use crate::quota::{QuotaMeter, Settlement};
use crate::usage::{insert_events_sql, outbox_sql, placeholders, runs, UsageEvent};
use crate::{Result, StoreError};

/// Settlements per transaction at most; what waits beyond goes into the next one.
const MAX_BATCH: usize = 256;

struct Pending {
    settlement: Settlement,
    events: Vec<UsageEvent>,
    done: oneshot::Sender<Result<bool>>,
}

/// What the ledger thread is sent: a settlement, or (from `Store::close`) the word to write what it holds
/// and stop, answered once it has.
enum Message {
    Settle(Pending),
    Stop(oneshot::Sender<()>),
}

/// The queue in front of the ledger thread; `stop`, or dropping every handle, ends the thread.
#[derive(Clone, Debug)]
pub(crate) struct GroupCommit {
    queue: Sender<Message>,
}

impl GroupCommit {
    /// Starts the ledger writer for the database file at `path` (migrated already), moving quota state in
    /// `gate` after each commit, finishing the checkpoints the checkpointer marks `finish_due`, and queueing
    /// new events in the analytics outbox when `outbox`.
    pub(crate) fn start(path: &Path, gate: Arc<MemGate>, finish_due: Arc<AtomicBool>, outbox: bool) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_millis(crate::BUSY_TIMEOUT_MS))?;
        conn.execute_batch(crate::CONNECTION_PRAGMAS)?;
        // Seven shapes (`runs`) of three multi-row statements, and the pragma.
        conn.set_prepared_statement_cache_capacity(32);
        let ledger = Ledger { conn, gate, finish_due, outbox };
        let (queue, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || ledger.run(rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the ledger writer: {e}")))?;
        Ok(Self { queue })
    }

    /// Settles once the transaction holding the settlement's rows has committed and quota memory moved;
    /// false if its events were already recorded (nothing changed). The caller has loaded the tenant's
    /// counters for the settlement's period (`Store::settlement_guard`).
    pub(crate) async fn settle(&self, settlement: &Settlement, events: &[UsageEvent]) -> Result<bool> {
        let (done, answer) = oneshot::channel();
        let pending = Pending { settlement: settlement.clone(), events: events.to_vec(), done };
        self.queue.send(Message::Settle(pending)).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Writes every settlement sent before this call, then ends the thread and closes its connection;
    /// settlements sent afterwards get the closed error. Returns once the thread has stopped (at once if it
    /// had already).
    pub(crate) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.queue.send(Message::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }
}

fn closed() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

/// The ledger thread's state: its connection, and what it moves after each commit.
struct Ledger {
    conn: Connection,
    gate: Arc<MemGate>,
    /// Set by the checkpointer every 500 ms: the short finishing pass is due (`checkpoint`).
    finish_due: Arc<AtomicBool>,
    outbox: bool,
}

impl Ledger {
    /// Writes batches until every queue handle is gone. Were the thread to panic, the answer channels of
    /// what it held would go with it, and each waiting request would get the closed error.
    fn run(mut self, rx: Receiver<Message>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut stop = None;
        while let Ok(first) = rx.recv() {
            let messages = std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1));
            for message in messages {
                match message {
                    Message::Settle(p) => batch.push(p),
                    // What came before the stop is in `batch`; nothing after it is taken.
                    Message::Stop(done) => {
                        stop = Some(done);
                        break;
                    }
                }
            }
            self.write(std::mem::take(&mut batch));
            if let Some(done) = stop {
                drop(rx);
                drop(self);
                let _ = done.send(());
                return;
            }
            // Between two batches, so no write is in progress and the pass completes.
            if self.finish_due.swap(false, Ordering::AcqRel) {
                finish_checkpoint(&self.conn);
            }
        }
    }

    fn write(&mut self, batch: Vec<Pending>) {
        for (p, result) in write_batch(&mut self.conn, batch, self.outbox) {
            if matches!(result, Ok(true)) {
                self.gate.settled_after_commit(&p.settlement);
            }
            let _ = p.done.send(result);
        }
    }
}

/// Between two batches, completes the checkpoint the background passes left almost done (`checkpoint`).
fn finish_checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row(crate::checkpoint::PASSIVE, [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next background pass");
    }
}

/// The whole batch in one transaction, or, if that fails, each settlement alone.
fn write_batch(conn: &mut Connection, batch: Vec<Pending>, outbox: bool) -> Vec<(Pending, Result<bool>)> {
    let together: Vec<(&Settlement, &[UsageEvent])> =
        batch.iter().map(|p| (&p.settlement, p.events.as_slice())).collect();
    match commit(conn, &together, outbox) {
        Ok(applied) => batch.into_iter().zip(applied).map(|(p, applied)| (p, Ok(applied))).collect(),
        Err(e) => {
            tracing::warn!(error = %e, settlements = batch.len(), "group commit failed; settling one by one");
            batch
                .into_iter()
                .map(|p| {
                    let alone = commit(conn, &[(&p.settlement, &p.events)], outbox);
                    let result = alone.map(|applied| applied[0]).map_err(StoreError::from);
                    (p, result)
                })
                .collect()
        }
    }
}

/// Writes settlements in one transaction; per settlement, whether it applied.
fn commit(conn: &mut Connection, batch: &[(&Settlement, &[UsageEvent])], outbox: bool) -> rusqlite::Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let all: Vec<&UsageEvent> = batch.iter().flat_map(|(_, events)| events.iter()).collect();
    let inserted = insert_events(&tx, &all)?;
    // An event id belongs to the first settlement that carries it; a later duplicate applies nothing.
    let mut claimed: HashSet<&str> = HashSet::new();
    let applied: Vec<bool> = batch
        .iter()
        .map(|(_, events)| {
            let mine = events.iter().filter(|e| inserted.contains(&e.event_id) && claimed.insert(&e.event_id));
            events.is_empty() || mine.count() > 0
        })
        .collect();
    if outbox {
        let new: Vec<&UsageEvent> = all.iter().copied().filter(|e| inserted.contains(&e.event_id)).collect();
        queue_for_analytics(&tx, &new)?;
    }
    let mut used: BTreeMap<(&str, i64, &'static str), i64> = BTreeMap::new();
    for ((s, _), _) in batch.iter().zip(&applied).filter(|(_, applied)| **applied) {
        for m in QuotaMeter::ALL {
            let n = m.of(&s.actual);
            if n != 0 {
                *used.entry((s.tenant_id.as_str(), m.period_key(s.period_start), m.as_str())).or_default() += n;
            }
        }
    }
    add_used(&tx, &used)?;
    tx.commit()?;
    Ok(applied)
}

/// Inserts ledger rows, skipping ids already recorded; the ids it added.
fn insert_events(tx: &rusqlite::Transaction<'_>, events: &[&UsageEvent]) -> rusqlite::Result<HashSet<String>> {
    let mut added = HashSet::with_capacity(events.len());
    for run in runs(events) {
        let mut stmt = tx.prepare_cached(&insert_events_sql(&placeholders("sqlite", run.len(), 8)))?;
        let params = run.iter().flat_map(|e| {
            [
                e.event_id.as_str().into(),
                e.tenant_id.as_str().into(),
                e.request_id.as_str().into(),
                e.meter.as_str().into(),
                e.model.as_str().into(),
                e.quantity.into(),
                e.cost_micros.into(),
                e.at.0.into(),
            ]
        });
        let ids = stmt.query_map(params_from_iter(params.collect::<Vec<Param>>()), |r| r.get::<_, String>(0))?;
        for id in ids {
            added.insert(id?);
        }
    }
    Ok(added)
}

/// Queues new ledger events for the analytics store, in the ledger's transaction.
fn queue_for_analytics(tx: &rusqlite::Transaction<'_>, events: &[&UsageEvent]) -> rusqlite::Result<()> {
    for run in runs(events) {
        let mut stmt = tx.prepare_cached(&outbox_sql(&placeholders("sqlite", run.len(), 3)))?;
        let params = run.iter().flat_map(|e| [e.event_id.as_str().into(), e.tenant_id.as_str().into(), e.at.0.into()]);
        stmt.execute(params_from_iter(params.collect::<Vec<Param>>()))?;
    }
    Ok(())
}

/// `used += n` for each (tenant, period key, meter), creating rows as needed: multi-row upserts (the keys are
/// distinct, as an upsert of several rows needs).
fn add_used(tx: &rusqlite::Transaction<'_>, used: &BTreeMap<(&str, i64, &'static str), i64>) -> rusqlite::Result<()> {
    let used: Vec<_> = used.iter().collect();
    for run in runs(&used) {
        let values = placeholders("sqlite", run.len(), 5);
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO quota_counters (tenant_id, period_start, meter, used, reserved) VALUES {values} \
             ON CONFLICT (tenant_id, period_start, meter) DO UPDATE SET used = quota_counters.used + excluded.used"
        ))?;
        let params = run.iter().flat_map(|((tenant, period_key, meter), n)| {
            [(*tenant).into(), (*period_key).into(), (*meter).into(), (**n).into(), 0_i64.into()]
        });
        stmt.execute(params_from_iter(params.collect::<Vec<Param>>()))?;
    }
    Ok(())
}

/// A bound value: text borrowed from the batch, or an integer.
enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(s: &'a str) -> Self {
        Self::Text(s)
    }
}

impl From<i64> for Param<'_> {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Self::Text(s) => s.to_sql(),
            Self::Int(n) => n.to_sql(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tenantry_domain::config::Quotas;
    use tenantry_domain::quota::Meter;
    use tenantry_domain::{TenantId, Timestamp};

    use crate::quota::{Amounts, NewReservation, Settlement};
    use crate::usage::UsageEvent;
    use crate::Store;

    const PERIOD: Timestamp = Timestamp(1_000);

    fn reserve_and_settle(
        store: &Store,
        tenant: &TenantId,
        id: &str,
    ) -> impl std::future::Future<Output = crate::Result<bool>> {
        let (store, tenant, id) = (store.clone(), tenant.clone(), id.to_owned());
        async move {
            let amounts = Amounts { queries: 1, tokens: 5, ..Amounts::default() };
            let limits =
                Quotas { queries: 100, tokens: 1_000, documents: 1, storage_bytes: 1, requests_per_minute: 1_000 };
            let r = NewReservation {
                id: id.clone(),
                tenant_id: tenant.clone(),
                period_start: PERIOD,
                amounts,
                expires_at: Timestamp(i64::MAX),
                now: Timestamp(2_000),
                spend: None,
            };
            store.reserve(&r, &limits).await?.expect("fits");
            let s = Settlement {
                reservation_id: Some(id.clone()),
                tenant_id: tenant.clone(),
                period_start: PERIOD,
                actual: amounts,
            };
            let event = UsageEvent {
                event_id: format!("{id}:queries"),
                tenant_id: tenant,
                request_id: id,
                meter: Meter::Queries,
                model: String::new(),
                quantity: 1,
                cost_micros: 0,
                at: Timestamp(2_000),
            };
            store.settle(&s, &[event]).await
        }
    }

    /// A settlement the database refuses fails alone: the batch it was in is written again one by one, the
    /// others apply, and its reservation is still held for the request to release.
    #[tokio::test]
    async fn one_bad_settlement_fails_only_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open("", dir.path()).await.expect("open");
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON usage_events WHEN NEW.request_id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )
        .execute(&store.write)
        .await
        .expect("trigger");
        let tenant = TenantId::generate();
        // The test holds SQLite's write lock while the five queue up, so the ledger thread waits in its first
        // batch's BEGIN and finds the rest waiting together after it: the poisoned one shares a batch.
        let hold = store.begin_write().await.expect("write lock");
        let ids = ["a", "b", "poison", "c", "d"];
        let settles: Vec<_> = ids.iter().map(|id| tokio::spawn(reserve_and_settle(&store, &tenant, id))).collect();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        hold.rollback().await.expect("let go");
        let mut results = Vec::new();
        for s in settles {
            results.push(s.await.expect("join"));
        }
        for (id, result) in ids.iter().zip(&results) {
            match *id {
                "poison" => assert!(result.is_err(), "the refused settlement fails: {result:?}"),
                _ => assert!(matches!(result, Ok(true)), "{id} applies: {result:?}"),
            }
        }
        assert_eq!(store.usage_event_count(&tenant, Meter::Queries).await.expect("count"), 4);
        let c = store.quota_counters(&tenant, PERIOD).await.expect("counters");
        assert_eq!((c.used.queries, c.reserved.queries), (4, 1), "the refused one's reservation is still held");
        assert!(store.release("poison").await.expect("release"));
    }

    /// Closing the store stops the ledger thread after it has written what it was sent: the settlements
    /// queued before are in the ledger, one sent after is refused, and the database file is free to be
    /// opened again, with everything in it.
    #[tokio::test]
    async fn closing_writes_what_was_sent_and_stops_the_ledger_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open("", dir.path()).await.expect("open");
        let tenant = TenantId::generate();
        let hold = store.begin_write().await.expect("write lock");
        let settles: Vec<_> =
            ["a", "b", "c"].iter().map(|id| tokio::spawn(reserve_and_settle(&store, &tenant, id))).collect();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let closing = tokio::spawn({
            let store = store.clone();
            async move { store.close().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        hold.rollback().await.expect("let go");
        for s in settles {
            assert!(matches!(s.await.expect("join"), Ok(true)), "sent before the close: written");
        }
        closing.await.expect("closed");
        let writer = store.sole_owner().and_then(|o| o.ledger()).expect("the embedded store has a ledger writer");
        let s = Settlement {
            reservation_id: Some("late".into()),
            tenant_id: tenant.clone(),
            period_start: PERIOD,
            actual: Amounts::default(),
        };
        assert!(writer.settle(&s, &[]).await.is_err(), "after the close, refused");

        let reopened = Store::open("", dir.path()).await.expect("reopen");
        assert_eq!(reopened.usage_event_count(&tenant, Meter::Queries).await.expect("count"), 3);
    }
}
