//! Bounds on expensive work: how much of it one tenant may have in progress, and how many documents are
//! parsed at once over all tenants (parsing is CPU and memory bound: more at once than there are cores only
//! adds up their peaks).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tenantry_domain::TenantId;

/// One kind of work in progress, counted per tenant.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    counts: Mutex<HashMap<TenantId, u32>>,
}

/// A unit of work counted in `InFlight` until dropped.
#[derive(Debug)]
pub(crate) struct Started {
    of: Arc<InFlight>,
    tenant: TenantId,
}

impl InFlight {
    /// Counts one more for `tenant` unless it already has `limit` in progress.
    pub(crate) fn try_start(self: &Arc<Self>, tenant: &TenantId, limit: u32) -> Option<Started> {
        let mut counts = self.counts.lock();
        let count = counts.entry(tenant.clone()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Started { of: Arc::clone(self), tenant: tenant.clone() })
    }

    #[cfg(test)]
    fn count(&self, tenant: &TenantId) -> u32 {
        self.counts.lock().get(tenant).copied().unwrap_or(0)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let mut counts = self.of.counts.lock();
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

/// Documents parsed at once: one per core but one, so that parsing (a burst of uploads, a stream of bombs
/// refused only after their limit's worth of decoding) always leaves a core to answer questions.
pub(crate) fn parse_permits() -> tokio::sync::Semaphore {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_counted_per_tenant_until_it_ends() {
        let in_flight = Arc::new(InFlight::default());
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let first = in_flight.try_start(&a, 2).expect("one of two");
        let second = in_flight.try_start(&a, 2).expect("two of two");
        assert!(in_flight.try_start(&a, 2).is_none(), "a third is refused");
        assert!(in_flight.try_start(&b, 2).is_some(), "another tenant is not held back");
        drop(first);
        let third = in_flight.try_start(&a, 2).expect("room again once one ended");
        drop((second, third));
        assert_eq!(in_flight.count(&a), 0);
        assert!(in_flight.counts.lock().is_empty(), "no entry is kept for idle tenants");
    }
}
