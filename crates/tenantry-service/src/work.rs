//! Bounds on expensive work: how much of it one tenant may have in progress, and how many documents are
//! parsed at once over all tenants (parsing is CPU and memory bound: more at once than there are cores only
//! adds up their peaks).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tenantry_domain::TenantId;

use crate::{ServiceError, ServiceResult};

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

/// The threads that parse uploads: one per core but one (at least one), so that parsing (a burst of
/// uploads, a stream of bombs refused only after their limit's worth of decoding) always leaves a core to
/// answer questions, and each at the lowest scheduling priority of its policy (nice 19 on Linux), so that
/// what questions need of the CPU comes first even on a machine with one core. Jobs wait in a queue; each holds its request's share of
/// the body budget while it waits, so the queue is bounded by that budget.
pub(crate) struct Parsers {
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Parsers {
    pub(crate) fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for i in 0..cores.saturating_sub(1).max(1) {
            let queue = queue.clone();
            let started = std::thread::Builder::new().name(format!("parser-{i}")).spawn(move || {
                // Failing to lower it only loses the preference.
                if let Err(e) = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min) {
                    tracing::warn!(error = ?e, "could not lower a parser thread's priority");
                }
                loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    let Ok(job) = job else { return };
                    // A panicking job drops its reply (the caller sees a failure); the thread goes on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
            if let Err(e) = started {
                tracing::error!(error = %e, "could not start a parser thread");
            }
        }
        Self { jobs }
    }

    /// Runs `work` on a parser thread and waits for its result.
    pub(crate) async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = reply.send(work());
        });
        self.jobs.send(job).map_err(|_| ServiceError::internal("the parser threads have stopped"))?;
        result.await.map_err(|_| ServiceError::internal("a parser thread failed"))
    }
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
