//! Quota admission behind one trait, in two implementations:
//!
//! - `RowGate`: counters and reservations are rows, admitted under the database's lock (the counter rows
//!   locked on PostgreSQL, the write lock on SQLite), so any number of processes can share them. PostgreSQL
//!   always uses it.
//! - `MemGate` (`memgate.rs`): reservations live in memory under a per-tenant lock, counters are loaded from
//!   their rows and moved exactly when a settlement commits. Only valid where one process owns the
//!   database, together with its batched ledger writer (`group_commit`).
//!
//! Which one a store uses follows from who writes its database (`ownership`).

use async_trait::async_trait;
use sqlx::Row;
use tenantry_domain::config::Quotas;
use tenantry_domain::{TenantId, Timestamp};

use crate::memgate::MemGate;
use crate::quota::{adjust, admit, admit_spend, take_reservation, Amounts, Counters, Exceeded, NewReservation};
use crate::{Result, Settlement, Store};

/// What a settlement holds across its transaction, so the gate's state moves exactly when the database does.
pub(crate) enum SettlementGuard {
    /// The rows move in the transaction itself.
    Rows,
    /// The tenant's in-memory quota, locked.
    Memory(crate::memgate::Guard),
}

#[async_trait]
pub(crate) trait QuotaGate: Send + Sync + std::fmt::Debug {
    /// Whether reservations are rows, which a settlement's transaction takes (`quota::settle_in`).
    fn reservation_rows(&self) -> bool;

    /// Admits the reservation if every meter fits, atomically; otherwise changes nothing.
    async fn reserve(&self, store: &Store, r: &NewReservation, limits: &Quotas) -> Result<Result<(), Exceeded>>;

    /// Taken before a settlement's transaction begins, held until it committed.
    async fn settlement_guard(&self, store: &Store, s: &Settlement) -> Result<SettlementGuard>;

    /// After a settlement's transaction committed.
    fn settled(&self, guard: &mut SettlementGuard, s: &Settlement);

    /// Gives a reservation's quota back; false if it was already settled, released or expired.
    async fn release(&self, store: &Store, id: &str) -> Result<bool>;

    /// Releases every reservation that expired before `now`; how many.
    async fn expire(&self, store: &Store, now: Timestamp) -> Result<u64>;

    /// Reservations held now.
    async fn count(&self, store: &Store) -> Result<i64>;

    /// The tenant's used and reserved amounts for the period.
    async fn counters(&self, store: &Store, tenant: &TenantId, period_start: Timestamp) -> Result<Counters>;

    /// Forgets what it holds for an erased tenant (its rows went with the erasure).
    fn forget(&self, tenant: &TenantId);
}

/// Counters and reservations as rows.
#[derive(Debug, Default)]
pub(crate) struct RowGate;

#[async_trait]
impl QuotaGate for RowGate {
    fn reservation_rows(&self) -> bool {
        true
    }

    async fn reserve(&self, store: &Store, r: &NewReservation, limits: &Quotas) -> Result<Result<(), Exceeded>> {
        let mut tx = store.begin_write().await?;
        if let Some(spend) = &r.spend {
            if let Err(e) = admit_spend(&mut tx, store.backend, r, spend).await? {
                tx.rollback().await?;
                return Ok(Err(e));
            }
        }
        if let Err(e) = admit(&mut tx, &r.tenant_id, r.period_start, &r.amounts, limits).await? {
            tx.rollback().await?;
            return Ok(Err(e));
        }
        sqlx::query(
            "INSERT INTO reservations (id, tenant_id, period_start, queries, tokens, documents, storage_bytes, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.id)
        .bind(r.tenant_id.as_str())
        .bind(r.period_start.0)
        .bind(r.amounts.queries)
        .bind(r.amounts.tokens)
        .bind(r.amounts.documents)
        .bind(r.amounts.storage_bytes)
        .bind(r.expires_at.0)
        .bind(r.now.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn settlement_guard(&self, _: &Store, _: &Settlement) -> Result<SettlementGuard> {
        Ok(SettlementGuard::Rows)
    }

    fn settled(&self, _: &mut SettlementGuard, _: &Settlement) {}

    async fn release(&self, store: &Store, id: &str) -> Result<bool> {
        let mut tx = store.begin_write().await?;
        let Some((tenant, period, amounts)) = take_reservation(&mut tx, id).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        adjust(&mut tx, &tenant, period, &Amounts::default(), &amounts).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expire(&self, store: &Store, now: Timestamp) -> Result<u64> {
        let ids: Vec<String> = sqlx::query("SELECT id FROM reservations WHERE expires_at < $1")
            .bind(now.0)
            .fetch_all(&store.read)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        let mut n = 0;
        for id in ids {
            if self.release(store, &id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn count(&self, store: &Store) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM reservations").fetch_one(&store.read).await?;
        Ok(row.try_get("n")?)
    }

    async fn counters(&self, store: &Store, tenant: &TenantId, period_start: Timestamp) -> Result<Counters> {
        let rows = sqlx::query(
            "SELECT meter, used, reserved FROM quota_counters \
             WHERE tenant_id = $1 AND (period_start = $2 OR period_start = 0)",
        )
        .bind(tenant.as_str())
        .bind(period_start.0)
        .fetch_all(&store.read)
        .await?;
        let mut c = Counters::default();
        for row in rows {
            let meter: String = row.try_get("meter")?;
            let (used, reserved): (i64, i64) = (row.try_get("used")?, row.try_get("reserved")?);
            let slot = |a: &mut Amounts, v: i64| match meter.as_str() {
                "queries" => a.queries = v,
                "tokens" => a.tokens = v,
                "documents" => a.documents = v,
                "storage_bytes" => a.storage_bytes = v,
                _ => {}
            };
            slot(&mut c.used, used);
            slot(&mut c.reserved, reserved);
        }
        Ok(c)
    }

    fn forget(&self, _: &TenantId) {}
}

#[async_trait]
impl QuotaGate for MemGate {
    fn reservation_rows(&self) -> bool {
        false
    }

    async fn reserve(&self, store: &Store, r: &NewReservation, limits: &Quotas) -> Result<Result<(), Exceeded>> {
        let mut q = self.lock(&store.read, &r.tenant_id, r.period_start).await?;
        Ok(MemGate::reserve(self, &mut q, r, limits))
    }

    async fn settlement_guard(&self, store: &Store, s: &Settlement) -> Result<SettlementGuard> {
        Ok(SettlementGuard::Memory(self.lock(&store.read, &s.tenant_id, s.period_start).await?))
    }

    fn settled(&self, guard: &mut SettlementGuard, s: &Settlement) {
        if let SettlementGuard::Memory(q) = guard {
            MemGate::settled(self, q, s);
        }
    }

    async fn release(&self, store: &Store, id: &str) -> Result<bool> {
        MemGate::release(self, &store.read, id).await
    }

    async fn expire(&self, _: &Store, now: Timestamp) -> Result<u64> {
        Ok(MemGate::expire(self, now).await)
    }

    async fn count(&self, _: &Store) -> Result<i64> {
        Ok(MemGate::count(self) as i64)
    }

    async fn counters(&self, store: &Store, tenant: &TenantId, period_start: Timestamp) -> Result<Counters> {
        let q = self.lock(&store.read, tenant, period_start).await?;
        Ok(MemGate::counters(&q, period_start))
    }

    fn forget(&self, tenant: &TenantId) {
        MemGate::forget(self, tenant);
    }
}
