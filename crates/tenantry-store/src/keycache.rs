//! The gateway's key and tenant rows, remembered between the writes that change them, for the embedded
//! store: one process owns the SQLite file, so every write to those rows passes through this process and
//! can say so. Authentication is then no database round trip at all on the request path.
//!
//! An entry is served only while no UPDATE or DELETE of `tenants` or `api_keys` rows has committed since
//! it was read. Each entry carries the write epoch observed *before* its read, and every such write bumps
//! the epoch *after* it commits and before its method returns, so a read racing a write either saw the
//! committed row or is tagged with an epoch the bump has already left behind: a revocation, suspension or
//! configuration change applies to the next request, as without the cache. Inserts need no bump: nothing
//! remembered refers to a row that did not exist, and unknown keys are never remembered (a guesser cannot
//! fill the memory, and a key created a moment later is found).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tenantry_domain::{ApiKeyId, Timestamp};

use crate::keys::ApiKeyRow;
use crate::tenants::TenantRow;

/// Keys remembered at most; past this the memory starts over.
const CAPACITY: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    epoch: AtomicU64,
    entries: parking_lot::Mutex<HashMap<ApiKeyId, Entry>>,
}

#[derive(Debug)]
struct Entry {
    epoch: u64,
    key: ApiKeyRow,
    tenant: TenantRow,
}

impl KeyCache {
    /// The epoch to tag a read with; take it before the read.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub(crate) fn get(&self, id: &ApiKeyId) -> Option<(ApiKeyRow, TenantRow)> {
        let epoch = self.epoch();
        let entries = self.entries.lock();
        entries.get(id).filter(|e| e.epoch == epoch).map(|e| (e.key.clone(), e.tenant.clone()))
    }

    /// Remembers what a read tagged `epoch` found, unless a write has committed since.
    pub(crate) fn put(&self, epoch: u64, key: &ApiKeyRow, tenant: &TenantRow) {
        let mut entries = self.entries.lock();
        if epoch != self.epoch() {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key.id.clone(), Entry { epoch, key: key.clone(), tenant: tenant.clone() });
    }

    /// A write to `tenants` or `api_keys` rows has committed: nothing remembered is served again.
    pub(crate) fn changed(&self) {
        let mut entries = self.entries.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    /// The key's use was recorded: bookkeeping only, so the entry stays and just learns the time.
    pub(crate) fn touched(&self, id: &ApiKeyId, at: Timestamp) {
        if let Some(e) = self.entries.lock().get_mut(id) {
            e.key.last_used_at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_domain::{RetrievalMode, TenantId, TenantState};

    fn rows() -> (ApiKeyRow, TenantRow) {
        let tenant = TenantRow {
            id: TenantId::generate(),
            email: "a@b.test".into(),
            organization: "Org".into(),
            plan: "trial".into(),
            state: TenantState::Active,
            state_version: 1,
            model: "local-small".into(),
            retrieval_mode: RetrievalMode::Basic,
            system_prompt: String::new(),
            config_version: 1,
            billing_anchor: Timestamp(0),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            pending_plan: None,
            trial_ends_at: None,
            overage_limit_cents: None,
        };
        let key = ApiKeyRow {
            id: ApiKeyId::generate(),
            tenant_id: tenant.id.clone(),
            name: "k".into(),
            secret_hash: "h".into(),
            scopes: "query".into(),
            created_at: Timestamp(0),
            last_used_at: None,
            revoked_at: None,
        };
        (key, tenant)
    }

    #[test]
    fn a_write_committed_after_the_read_began_keeps_the_read_out() {
        let cache = KeyCache::default();
        let (key, tenant) = rows();
        let before = cache.epoch();
        cache.changed();
        cache.put(before, &key, &tenant);
        assert!(cache.get(&key.id).is_none(), "a row read before the write is not remembered");
        cache.put(cache.epoch(), &key, &tenant);
        assert_eq!(cache.get(&key.id).map(|(k, _)| k.id), Some(key.id.clone()));
        cache.changed();
        assert!(cache.get(&key.id).is_none(), "a write forgets everything read before it");
    }

    #[test]
    fn a_touch_updates_the_entry_in_place() {
        let cache = KeyCache::default();
        let (key, tenant) = rows();
        cache.put(cache.epoch(), &key, &tenant);
        cache.touched(&key.id, Timestamp(42));
        assert_eq!(cache.get(&key.id).and_then(|(k, _)| k.last_used_at), Some(Timestamp(42)));
    }
}
