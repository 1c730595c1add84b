//! Per-tenant request rate limits (the plan's `requests_per_minute`): a generic cell rate algorithm, i.e. a
//! token bucket that holds a minute's worth of requests and refills continuously. `gateway.rate_limiter`
//! says where the bucket lives: `local` (the default) keeps it in memory, exact on one node, while with
//! several nodes each enforces the limit on its own share of the traffic; `shared` keeps it in the database
//! (`Store::admit_rate`, one statement per request), so the limit holds for the tenant across all nodes, on
//! the nodes' wall clocks (keep them in sync, e.g. NTP). When the database cannot answer, the shared limiter
//! admits the request (fails open) and logs it: the limit protects capacity rather than money, and the same
//! request's quota reservation needs the same database and refuses it there.
//!
//! Rates are measured on the process's monotonic clock, not the service clock: the service clock is the
//! business calendar (periods, trials, dunning) and stands still under `server.clock = "test"`, where a
//! bucket read from it would never refill.

use std::collections::HashMap;

use parking_lot::Mutex;
use tenantry_domain::{TenantId, Timestamp};

const MINUTE_NS: i64 = 60_000_000_000;

pub struct RateLimiter {
    /// Theoretical arrival time of the next request, in nanoseconds, per tenant.
    cells: Mutex<HashMap<TenantId, i64>>,
    /// The origin of `check_now`'s monotonic time.
    started: std::time::Instant,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self { cells: Mutex::default(), started: std::time::Instant::now() }
    }
}

/// How long to wait before the request would be allowed.
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

impl RateLimiter {
    /// Admits one request of `tenant` now, by the monotonic clock, under `per_minute`.
    pub fn check_now(&self, tenant: &TenantId, per_minute: u64) -> Result<(), Limited> {
        // A minute in, so that the first requests find their buckets full whatever the origin.
        let ns = i64::try_from(self.started.elapsed().as_nanos()).unwrap_or(i64::MAX).saturating_add(MINUTE_NS);
        self.check_ns(tenant, per_minute, ns)
    }

    /// Admits one request of `tenant` at `now` under `per_minute`, or says when to retry.
    pub fn check(&self, tenant: &TenantId, per_minute: u64, now: Timestamp) -> Result<(), Limited> {
        self.check_ns(tenant, per_minute, now.0.saturating_mul(1_000_000))
    }

    fn check_ns(&self, tenant: &TenantId, per_minute: u64, now_ns: i64) -> Result<(), Limited> {
        // Nanoseconds, so that even a limit of many millions a minute has a nonzero interval, and the
        // tolerance is a minute less one interval rather than (n - 1) rounded intervals: with microseconds a
        // limit above 60 million a minute rounded both to zero, and requests whose clock readings reached the
        // lock out of order were refused (seen in `tenantry bench gateway` at 2,500 requests/s). A full
        // bucket admits a minute's worth of requests at once.
        let Some((interval, tolerance)) = shape(per_minute) else {
            return Err(Limited { retry_after_secs: 60 });
        };
        let mut cells = self.cells.lock();
        if cells.len() > 100_000 {
            // Tenants idle for a minute or more have full buckets; forgetting them changes nothing.
            cells.retain(|_, tat| *tat > now_ns);
        }
        let tat = cells.get(tenant).copied().unwrap_or(now_ns).max(now_ns);
        if tat - now_ns > tolerance {
            let wait_ns = tat - now_ns - tolerance;
            return Err(Limited { retry_after_secs: (wait_ns as u64).div_ceil(1_000_000_000).max(1) });
        }
        cells.insert(tenant.clone(), tat + interval);
        Ok(())
    }
}

/// The configured limiter.
pub(crate) enum Limiter {
    Local(RateLimiter),
    Shared,
}

impl Limiter {
    pub(crate) fn from_config(name: &str) -> Option<Self> {
        match name {
            "local" => Some(Self::Local(RateLimiter::default())),
            "shared" => Some(Self::Shared),
            _ => None,
        }
    }
}

/// The bucket's step and tolerance, in nanoseconds, for `per_minute` (`None`: nothing is admitted).
pub(crate) fn shape(per_minute: u64) -> Option<(i64, i64)> {
    if per_minute == 0 {
        return None;
    }
    let interval = (MINUTE_NS / i64::try_from(per_minute).unwrap_or(i64::MAX)).max(1);
    Some((interval, MINUTE_NS - interval))
}

impl crate::Services {
    /// Admits one request of `tenant` under `per_minute` by the configured limiter.
    pub(crate) async fn check_rate(&self, tenant: &TenantId, per_minute: u64) -> Result<(), Limited> {
        match &self.inner.rate {
            Limiter::Local(local) => local.check_now(tenant, per_minute),
            Limiter::Shared => {
                let Some((interval, tolerance)) = shape(per_minute) else {
                    return Err(Limited { retry_after_secs: 60 });
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
                match self.store().admit_rate(tenant, now, interval, tolerance).await {
                    Ok(None) => Ok(()),
                    Ok(Some(wait_ns)) => {
                        Err(Limited { retry_after_secs: (wait_ns as u64).div_ceil(1_000_000_000).max(1) })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "shared rate limiter unavailable; request admitted");
                        Ok(())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_in_real_time_whatever_the_service_clock() {
        let rl = RateLimiter::default();
        let t = TenantId::generate();
        // 6,000 a minute: one every 10 ms.
        while rl.check_now(&t, 6_000).is_ok() {}
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(rl.check_now(&t, 6_000), Ok(()), "refilled after 30 ms");
    }

    #[test]
    fn admits_a_minute_of_burst_then_refills_at_the_rate() {
        let rl = RateLimiter::default();
        let t = TenantId::generate();
        let start = Timestamp(1_000_000);
        for i in 0..60 {
            assert_eq!(rl.check(&t, 60, start), Ok(()), "request {i}");
        }
        let refused = rl.check(&t, 60, start).expect_err("61st in the same instant");
        assert_eq!(refused.retry_after_secs, 1);
        assert!(rl.check(&t, 60, Timestamp(start.0 + 999)).is_err());
        assert_eq!(rl.check(&t, 60, Timestamp(start.0 + 1_000)), Ok(()), "one more a second later");
        assert!(rl.check(&t, 60, Timestamp(start.0 + 1_000)).is_err());
        // Another tenant is unaffected.
        assert_eq!(rl.check(&TenantId::generate(), 60, start), Ok(()));
    }

    #[test]
    fn never_more_than_limit_plus_elapsed_rate() {
        let rl = RateLimiter::default();
        let t = TenantId::generate();
        let mut admitted = 0;
        // 10 seconds of 1,000 attempts a second against 600/minute.
        for ms in 0..10_000 {
            if rl.check(&t, 600, Timestamp(ms)).is_ok() {
                admitted += 1;
            }
        }
        assert!(admitted <= 600 + 100, "{admitted}");
        assert!(admitted >= 600 + 99, "{admitted}");
    }

    #[test]
    fn a_very_high_limit_admits_requests_whose_clock_readings_arrive_out_of_order() {
        let rl = RateLimiter::default();
        let t = TenantId::generate();
        // Two requests read the clock a millisecond apart and take the lock in the other order.
        assert_eq!(rl.check(&t, 100_000_000, Timestamp(1_000_001)), Ok(()));
        assert_eq!(rl.check(&t, 100_000_000, Timestamp(1_000_000)), Ok(()));
        // Ordinary limits too.
        let u = TenantId::generate();
        assert_eq!(rl.check(&u, 600, Timestamp(1_000_001)), Ok(()));
        assert_eq!(rl.check(&u, 600, Timestamp(1_000_000)), Ok(()));
    }
}
