//! Group commit of settlements for the embedded store. SQLite has one writer, and through sqlx every
//! statement is a hop to that connection's worker thread, so a settlement of its own (begin, ledger rows,
//! counters, commit) costs the writer five round trips per request. Here one task takes every settlement
//! waiting in its queue and writes them together: one multi-row ledger insert that returns the rows it added
//! (a settlement whose events were all recorded before applies nothing, as alone), one multi-row counter
//! upsert with the sums per tenant, period and meter, the analytics outbox rows, and one commit. A request
//! still waits for the commit that holds its rows before it answers, so every answered request is in the
//! ledger. If a batch fails, each of its settlements is retried alone, so one bad settlement fails only
//! itself.
//!
//! The in-memory quota state (`memgate`) moves after the commit, under each tenant's lock. Until then the
//! settled usage is still counted as reserved, and a reservation always covers the usage it settles
//! (queries exactly, tokens by their upper bound), so admission never sees less than the truth. Each
//! tenant's counters are loaded from the table *before* the commit, so a first load cannot read rows this
//! batch then adds again in memory.

use std::collections::{BTreeMap, HashSet};

use sqlx::{Any, Transaction};
use tenantry_domain::{TenantId, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::quota::{QuotaMeter, Settlement};
use crate::usage::{insert_events_returning, placeholders, queue_for_analytics, runs, UsageEvent};
use crate::{Result, Store};

/// Settlements per transaction at most; what waits beyond goes into the next one.
const MAX_BATCH: usize = 256;

struct Pending {
    settlement: Settlement,
    events: Vec<UsageEvent>,
    done: oneshot::Sender<Result<bool>>,
}

/// The queue in front of the writer task; dropping every handle ends the task.
#[derive(Clone, Debug)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
}

impl GroupCommit {
    /// Starts the writer over `lone`: the store whose own `settle` (one settlement, one transaction) is the
    /// fallback, so it must be a handle without a group commit of its own.
    pub(crate) fn start(lone: Store) -> Self {
        debug_assert!(lone.group_commit.is_none(), "the writer's store settles alone");
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(Writer { store: lone }.run(rx));
        Self { queue }
    }

    /// Settles once the transaction holding the settlement's rows has committed; false if its events were
    /// already recorded (nothing changed).
    pub(crate) async fn settle(&self, settlement: &Settlement, events: &[UsageEvent]) -> Result<bool> {
        let (done, answer) = oneshot::channel();
        let pending = Pending { settlement: settlement.clone(), events: events.to_vec(), done };
        let closed = || crate::StoreError::Database(sqlx::Error::PoolClosed);
        self.queue.send(pending).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

struct Writer {
    store: Store,
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.write_batch(std::mem::take(&mut batch)).await;
            self.finish_checkpoint().await;
        }
    }

    /// Between two batches, completes the checkpoint the background passes left almost done (`checkpoint`).
    async fn finish_checkpoint(&self) {
        if self.store.checkpoints.as_ref().is_some_and(|c| c.take_finish()) {
            if let Err(e) = sqlx::query(crate::checkpoint::PASSIVE).execute(&self.store.write).await {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next background pass");
            }
        }
    }

    async fn write_batch(&self, batch: Vec<Pending>) {
        let together: Vec<(&Settlement, &[UsageEvent])> =
            batch.iter().map(|p| (&p.settlement, p.events.as_slice())).collect();
        let written = match self.preload(&batch).await {
            Ok(()) => self.commit(&together).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(applied) => {
                for (p, applied) in batch.into_iter().zip(applied) {
                    if applied {
                        self.move_memory(&p.settlement).await;
                    }
                    let _ = p.done.send(Ok(applied));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, settlements = batch.len(), "group commit failed; settling one by one");
                for p in batch {
                    let alone = self.store.settle(&p.settlement, &p.events).await;
                    let _ = p.done.send(alone);
                }
            }
        }
    }

    /// Loads every tenant's counters for the batch's periods before anything commits.
    async fn preload(&self, batch: &[Pending]) -> Result<()> {
        let mut seen: HashSet<(&TenantId, Timestamp)> = HashSet::new();
        for p in batch {
            if seen.insert((&p.settlement.tenant_id, p.settlement.period_start)) {
                drop(self.store.settlement_guard(&p.settlement).await?);
            }
        }
        Ok(())
    }

    /// Moves the in-memory state of a committed settlement.
    async fn move_memory(&self, s: &Settlement) {
        match self.store.settlement_guard(s).await {
            Ok(mut q) => self.store.settled(q.as_mut(), s),
            // Loaded before the commit, so the lock reads nothing and cannot fail on the database; if it
            // did, memory lags the table (admission refuses early) until the process restarts.
            Err(e) => tracing::error!(error = %e, "quota state not updated after a settlement"),
        }
    }

    /// Writes the whole batch in one transaction; per settlement, whether it applied.
    async fn commit(&self, batch: &[(&Settlement, &[UsageEvent])]) -> Result<Vec<bool>> {
        let mut tx = self.store.write.begin().await?;
        let all: Vec<&UsageEvent> = batch.iter().flat_map(|(_, events)| events.iter()).collect();
        let inserted: HashSet<String> = insert_events_returning(&mut tx, &all).await?.into_iter().collect();
        // An event id belongs to the first settlement that carries it; a later duplicate applies nothing.
        let mut claimed: HashSet<&str> = HashSet::new();
        let applied: Vec<bool> = batch
            .iter()
            .map(|(_, events)| {
                let mine = events.iter().filter(|e| inserted.contains(&e.event_id) && claimed.insert(&e.event_id));
                events.is_empty() || mine.count() > 0
            })
            .collect();
        if self.store.analytics_outbox {
            let new: Vec<&UsageEvent> = all.iter().copied().filter(|e| inserted.contains(&e.event_id)).collect();
            queue_for_analytics(&mut tx, &new).await?;
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
        add_used(&mut tx, &used).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

/// `used += n` for each (tenant, period key, meter), creating rows as needed: multi-row upserts (the keys are
/// distinct, as an upsert of several rows needs).
async fn add_used(tx: &mut Transaction<'_, Any>, used: &BTreeMap<(&str, i64, &'static str), i64>) -> Result<()> {
    let used: Vec<_> = used.iter().collect();
    for run in runs(&used) {
        let values = placeholders(tx.backend_name(), run.len(), 5);
        let sql = format!(
            "INSERT INTO quota_counters (tenant_id, period_start, meter, used, reserved) VALUES {values} \
             ON CONFLICT (tenant_id, period_start, meter) DO UPDATE SET used = quota_counters.used + excluded.used"
        );
        let mut q = sqlx::query(&sql);
        for ((tenant, period_key, meter), n) in run {
            q = q.bind(*tenant).bind(*period_key).bind(*meter).bind(**n).bind(0_i64);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
