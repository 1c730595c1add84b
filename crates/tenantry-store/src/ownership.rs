//! Whether other processes may write the database decides how a store admits quota, writes settlements
//! and reads the gateway's key rows. One trait, two implementations, one conformance suite
//! (`tests/conformance.rs` and `tests/quota_properties.rs` run every story against both on SQLite, and
//! against `Shared` on PostgreSQL):
//!
//! - `Shared`: other processes may write the same rows (several nodes on PostgreSQL). Quota is admitted in
//!   rows under the database's lock (`gate::RowGate`), each settlement is its own transaction, and key rows
//!   are read on every request.
//! - `SoleOwner`: this process owns the embedded SQLite file, so every write passes through it. Quota is
//!   admitted in memory (`memgate`), settlements are written in batches by the ledger thread
//!   (`group_commit`), key and tenant rows are remembered between the writes that change them (`keycache`),
//!   and the WAL is checkpointed off the write path (`checkpoint`).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tenantry_domain::{ApiKeyId, Timestamp};

use crate::checkpoint::Checkpoints;
use crate::gate::{QuotaGate, RowGate};
use crate::group_commit::GroupCommit;
use crate::keycache::KeyCache;
use crate::keys::ApiKeyRow;
use crate::memgate::MemGate;
use crate::quota::Settlement;
use crate::tenants::TenantRow;
use crate::usage::UsageEvent;
use crate::{Result, Store};

#[async_trait]
pub(crate) trait Ownership: Send + Sync + std::fmt::Debug {
    /// How quota is admitted.
    fn gate(&self) -> &dyn QuotaGate;

    /// Closes a reservation with the actual usage and appends the ledger events; returns once they are
    /// committed; false if they had been recorded before.
    async fn settle(&self, store: &Store, s: &Settlement, events: &[UsageEvent]) -> Result<bool>;

    /// A key and its tenant.
    async fn key_with_tenant(&self, store: &Store, key: &ApiKeyId) -> Result<Option<(ApiKeyRow, TenantRow)>>;

    /// After a committed UPDATE or DELETE of `tenants` or `api_keys` rows.
    fn rows_changed(&self);

    /// After a key's `last_used_at` was written.
    fn key_touched(&self, key: &ApiKeyId, now: Timestamp);

    /// Starts what writes in the background for `store` as it is configured now (its analytics outbox),
    /// over its migrated database; what ran before ends when its last handle goes.
    fn started(&self, store: &Store) -> Result<Arc<dyn Ownership>>;

    /// Writes what the background writers hold and stops them.
    async fn close(&self);

    #[cfg(test)]
    fn sole_owner(&self) -> Option<&SoleOwner> {
        None
    }
}

/// Rows other processes may write too.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    gate: RowGate,
}

#[async_trait]
impl Ownership for Shared {
    fn gate(&self) -> &dyn QuotaGate {
        &self.gate
    }

    async fn settle(&self, store: &Store, s: &Settlement, events: &[UsageEvent]) -> Result<bool> {
        store.settle_in_own_transaction(s, events).await
    }

    async fn key_with_tenant(&self, store: &Store, key: &ApiKeyId) -> Result<Option<(ApiKeyRow, TenantRow)>> {
        store.read_key_with_tenant(key).await
    }

    fn rows_changed(&self) {}

    fn key_touched(&self, _: &ApiKeyId, _: Timestamp) {}

    fn started(&self, _: &Store) -> Result<Arc<dyn Ownership>> {
        Ok(Arc::new(Self::default()))
    }

    async fn close(&self) {}
}

/// The embedded store's file, owned by this process alone.
#[derive(Debug)]
pub(crate) struct SoleOwner {
    gate: Arc<MemGate>,
    keys: Arc<KeyCache>,
    checkpoints: Arc<Checkpoints>,
    /// The database file, which the ledger thread opens on a connection of its own.
    path: Arc<PathBuf>,
    /// Started once the file is migrated (`started`).
    ledger: Option<GroupCommit>,
}

impl SoleOwner {
    pub(crate) fn new(checkpoints: Checkpoints, path: PathBuf) -> Self {
        Self {
            gate: Arc::default(),
            keys: Arc::default(),
            checkpoints: Arc::new(checkpoints),
            path: Arc::new(path),
            ledger: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    #[cfg(test)]
    pub(crate) fn ledger(&self) -> Option<&GroupCommit> {
        self.ledger.as_ref()
    }
}

#[async_trait]
impl Ownership for SoleOwner {
    fn gate(&self) -> &dyn QuotaGate {
        self.gate.as_ref()
    }

    async fn settle(&self, store: &Store, s: &Settlement, events: &[UsageEvent]) -> Result<bool> {
        // Only settlements of a reservation go through the ledger thread: until memory moves after its
        // commit, their usage still counts as reserved. One without a reservation would be invisible to
        // admission for that moment.
        match (&self.ledger, &s.reservation_id) {
            (Some(ledger), Some(_)) => {
                // Loads the tenant's counters before the commit (`group_commit`), and lets go of the lock,
                // which the ledger thread takes after it.
                drop(store.settlement_guard(s).await?);
                ledger.settle(s, events).await
            }
            _ => store.settle_in_own_transaction(s, events).await,
        }
    }

    async fn key_with_tenant(&self, store: &Store, key: &ApiKeyId) -> Result<Option<(ApiKeyRow, TenantRow)>> {
        if let Some(hit) = self.keys.get(key) {
            return Ok(Some(hit));
        }
        let epoch = self.keys.epoch();
        let found = store.read_key_with_tenant(key).await?;
        if let Some((k, t)) = &found {
            self.keys.put(epoch, k, t);
        }
        Ok(found)
    }

    fn rows_changed(&self) {
        self.keys.changed();
    }

    fn key_touched(&self, key: &ApiKeyId, now: Timestamp) {
        self.keys.touched(key, now);
    }

    fn started(&self, store: &Store) -> Result<Arc<dyn Ownership>> {
        let ledger =
            GroupCommit::start(&self.path, self.gate.clone(), self.checkpoints.finish_due(), store.analytics_outbox())?;
        Ok(Arc::new(Self {
            gate: self.gate.clone(),
            keys: self.keys.clone(),
            checkpoints: self.checkpoints.clone(),
            path: self.path.clone(),
            ledger: Some(ledger),
        }))
    }

    async fn close(&self) {
        if let Some(ledger) = &self.ledger {
            ledger.stop().await;
        }
        self.checkpoints.close().await;
    }

    #[cfg(test)]
    fn sole_owner(&self) -> Option<&SoleOwner> {
        Some(self)
    }
}
