//! Quota admission in memory, for the embedded store. One process owns the SQLite file, so its reservations
//! need not be rows: a per-tenant lock guards `used` and `reserved`, admission is a check under that lock,
//! and a crash takes the reservations of its dead requests with it. `used` is loaded from the counters
//! table on first use and moved only in the critical section that commits the settlement, so memory and
//! database agree; `reserved` never reaches the database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{AnyPool, Row};
use tenantry_domain::config::Quotas;
use tenantry_domain::{TenantId, Timestamp};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::quota::{Amounts, Counters, Exceeded, NewReservation, QuotaMeter, Settlement};
use crate::Result;

#[derive(Default)]
pub(crate) struct TenantQuota {
    loaded: HashSet<i64>,
    /// (period key, meter) → (used, reserved)
    counters: HashMap<(i64, &'static str), (i64, i64)>,
    reservations: HashMap<String, Held>,
}

#[derive(Clone, Copy)]
struct Held {
    period_start: Timestamp,
    amounts: Amounts,
    expires_at: Timestamp,
}

fn key(m: QuotaMeter, period_start: Timestamp) -> (i64, &'static str) {
    (m.period_key(period_start), m.as_str())
}

#[derive(Default)]
pub(crate) struct MemGate {
    tenants: parking_lot::Mutex<HashMap<TenantId, Arc<Mutex<TenantQuota>>>>,
    /// reservation id → tenant, for `release(id)`.
    owners: parking_lot::Mutex<HashMap<String, TenantId>>,
}

impl std::fmt::Debug for MemGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemGate").field("reservations", &self.count()).finish()
    }
}

pub(crate) type Guard = OwnedMutexGuard<TenantQuota>;

impl MemGate {
    /// Drops everything held for an erased tenant.
    pub(crate) fn forget(&self, tenant: &TenantId) {
        self.tenants.lock().remove(tenant);
        self.owners.lock().retain(|_, owner| owner != tenant);
    }

    /// Locks the tenant's quota state, loading `period_start`'s counters on first use.
    pub(crate) async fn lock(&self, read: &AnyPool, tenant: &TenantId, period_start: Timestamp) -> Result<Guard> {
        let cell = self.tenants.lock().entry(tenant.clone()).or_default().clone();
        let mut q = cell.lock_owned().await;
        for period_key in [period_start.0, 0] {
            if q.loaded.contains(&period_key) {
                continue;
            }
            let rows = sqlx::query("SELECT meter, used FROM quota_counters WHERE tenant_id = $1 AND period_start = $2")
                .bind(tenant.as_str())
                .bind(period_key)
                .fetch_all(read)
                .await?;
            for row in rows {
                let meter: String = row.try_get("meter")?;
                if let Some(m) = QuotaMeter::ALL.into_iter().find(|m| m.as_str() == meter) {
                    q.counters.insert((period_key, m.as_str()), (row.try_get("used")?, 0));
                }
            }
            q.loaded.insert(period_key);
        }
        Ok(q)
    }

    pub(crate) fn reserve(&self, q: &mut Guard, r: &NewReservation, limits: &Quotas) -> Result<(), Exceeded> {
        if let Some(spend) = &r.spend {
            let total = |m| {
                let (used, reserved) = q.counters.get(&key(m, r.period_start)).copied().unwrap_or_default();
                used + reserved
            };
            let (queries, tokens) = (total(QuotaMeter::Queries), total(QuotaMeter::Tokens));
            if spend.refuses(queries, tokens, r.amounts.queries, r.amounts.tokens) {
                return Err(Exceeded::SpendCap { cap_cents: spend.cap_cents });
            }
        }
        admit(q, r.period_start, &r.amounts, limits)?;
        q.reservations
            .insert(r.id.clone(), Held { period_start: r.period_start, amounts: r.amounts, expires_at: r.expires_at });
        self.owners.lock().insert(r.id.clone(), r.tenant_id.clone());
        Ok(())
    }

    /// After the settlement's transaction committed: the usage moves from reserved to used.
    pub(crate) fn settled(&self, q: &mut Guard, s: &Settlement) {
        for m in QuotaMeter::ALL {
            let n = m.of(&s.actual);
            if n != 0 {
                q.counters.entry(key(m, s.period_start)).or_default().0 += n;
            }
        }
        if let Some(id) = &s.reservation_id {
            take(q, id);
            self.owners.lock().remove(id);
        }
    }

    /// `settled`, from the ledger writer's thread (outside the runtime), after the commit that holds the
    /// settlement's rows. The settling request loaded the tenant's counters before it handed the settlement
    /// over, so the lock reads nothing; a tenant forgotten meanwhile (erased) has nothing left to move.
    pub(crate) fn settled_after_commit(&self, s: &Settlement) {
        let Some(cell) = self.tenants.lock().get(&s.tenant_id).cloned() else { return };
        let mut q = cell.blocking_lock_owned();
        if q.loaded.contains(&s.period_start.0) && q.loaded.contains(&0) {
            self.settled(&mut q, s);
        } else {
            // Unreachable while the settling request loads first; moving now would be overwritten by the load.
            tracing::error!(tenant = %s.tenant_id, "quota state not loaded at a settlement; left to the next load");
        }
    }

    pub(crate) async fn release(&self, read: &AnyPool, id: &str) -> Result<bool> {
        let Some(tenant) = self.owners.lock().get(id).cloned() else { return Ok(false) };
        let mut q = self.lock(read, &tenant, Timestamp(0)).await?;
        let released = take(&mut q, id);
        self.owners.lock().remove(id);
        Ok(released)
    }

    pub(crate) async fn expire(&self, now: Timestamp) -> u64 {
        let cells: Vec<_> = self.tenants.lock().values().cloned().collect();
        let mut n = 0;
        for cell in cells {
            let mut q = cell.lock_owned().await;
            let dead: Vec<String> =
                q.reservations.iter().filter(|(_, h)| h.expires_at < now).map(|(id, _)| id.clone()).collect();
            for id in dead {
                if take(&mut q, &id) {
                    self.owners.lock().remove(&id);
                    n += 1;
                }
            }
        }
        n
    }

    pub(crate) fn count(&self) -> usize {
        self.owners.lock().len()
    }

    pub(crate) fn counters(q: &Guard, period_start: Timestamp) -> Counters {
        let mut c = Counters::default();
        for m in QuotaMeter::ALL {
            let (used, reserved) = q.counters.get(&key(m, period_start)).copied().unwrap_or_default();
            set(&mut c.used, m, used);
            set(&mut c.reserved, m, reserved);
        }
        c
    }
}

fn admit(q: &mut Guard, period_start: Timestamp, amounts: &Amounts, limits: &Quotas) -> Result<(), Exceeded> {
    for m in QuotaMeter::ALL {
        let n = m.of(amounts);
        if n <= 0 {
            continue;
        }
        let (used, reserved) = q.counters.get(&key(m, period_start)).copied().unwrap_or_default();
        if used + reserved + n > m.limit(limits) {
            return Err(Exceeded::Quota(m));
        }
    }
    for m in QuotaMeter::ALL {
        let n = m.of(amounts);
        if n > 0 {
            q.counters.entry(key(m, period_start)).or_default().1 += n;
        }
    }
    Ok(())
}

fn take(q: &mut Guard, id: &str) -> bool {
    let Some(held) = q.reservations.remove(id) else { return false };
    for m in QuotaMeter::ALL {
        let n = m.of(&held.amounts);
        if n != 0 {
            q.counters.entry(key(m, held.period_start)).or_default().1 -= n;
        }
    }
    true
}

fn set(a: &mut Amounts, m: QuotaMeter, v: i64) {
    match m {
        QuotaMeter::Queries => a.queries = v,
        QuotaMeter::Tokens => a.tokens = v,
        QuotaMeter::Documents => a.documents = v,
        QuotaMeter::StorageBytes => a.storage_bytes = v,
    }
}
