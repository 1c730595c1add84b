//! Quota reservation and settlement. A request reserves what it may use before it works; admission is one
//! conditional update per meter (`used + reserved + n <= limit`), so no interleaving of requests — on one
//! node or many — can hold more than the limit. Settlement releases the reservation, adds the actual usage
//! and appends the ledger events in one transaction: usage is counted exactly when its ledger rows exist.

use sqlx::{Any, Row, Transaction};
use tenantry_domain::config::Quotas;
use tenantry_domain::{TenantId, Timestamp};

use crate::gate::SettlementGuard;
use crate::usage::{insert_events, queue_for_analytics, UsageEvent};
use crate::{Backend, Result, Store};

/// Amounts per quota meter. Queries and tokens count per billing period; documents and storage bytes are
/// levels (a deletion is negative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub queries: i64,
    pub tokens: i64,
    pub documents: i64,
    pub storage_bytes: i64,
}

/// The quota meters, in the one order every transaction locks them (no deadlocks between them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaMeter {
    Queries,
    Tokens,
    Documents,
    StorageBytes,
}

impl QuotaMeter {
    pub const ALL: [QuotaMeter; 4] = [Self::Queries, Self::Tokens, Self::Documents, Self::StorageBytes];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queries => "queries",
            Self::Tokens => "tokens",
            Self::Documents => "documents",
            Self::StorageBytes => "storage_bytes",
        }
    }

    /// Per-period meters are keyed by the period; levels by 0.
    pub(crate) fn period_key(self, period_start: Timestamp) -> i64 {
        match self {
            Self::Queries | Self::Tokens => period_start.0,
            Self::Documents | Self::StorageBytes => 0,
        }
    }

    pub fn of(self, a: &Amounts) -> i64 {
        match self {
            Self::Queries => a.queries,
            Self::Tokens => a.tokens,
            Self::Documents => a.documents,
            Self::StorageBytes => a.storage_bytes,
        }
    }

    pub fn limit(self, q: &Quotas) -> i64 {
        let l = match self {
            Self::Queries => q.queries,
            Self::Tokens => q.tokens,
            Self::Documents => q.documents,
            Self::StorageBytes => q.storage_bytes,
        };
        i64::try_from(l).unwrap_or(i64::MAX)
    }
}

/// A reservation to admit.
#[derive(Clone, Debug)]
pub struct NewReservation {
    pub id: String,
    pub tenant_id: TenantId,
    pub period_start: Timestamp,
    pub amounts: Amounts,
    pub expires_at: Timestamp,
    pub now: Timestamp,
    /// The tenant's spend cap, checked in the same critical section as the quotas.
    pub spend: Option<SpendCap>,
}

/// The most a period's overage may cost, and how to price it: the overage, in cents, of a period whose
/// queries and tokens (settled plus reserved) come to the given totals. The store only compares; billing
/// prices.
#[derive(Clone)]
pub struct SpendCap {
    pub cap_cents: i64,
    pub overage_cents: std::sync::Arc<dyn Fn(i64, i64) -> i64 + Send + Sync>,
}

impl std::fmt::Debug for SpendCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendCap").field("cap_cents", &self.cap_cents).finish_non_exhaustive()
    }
}

impl SpendCap {
    /// Whether adding `queries` and `tokens` to totals of `queries_before` and `tokens_before` would bring the
    /// overage above the cap. A request that adds no overage (still within the included amounts) passes
    /// even when the overage already stands above a cap lowered since.
    pub fn refuses(&self, queries_before: i64, tokens_before: i64, queries: i64, tokens: i64) -> bool {
        if queries <= 0 && tokens <= 0 {
            return false;
        }
        let after = (self.overage_cents)(queries_before + queries.max(0), tokens_before + tokens.max(0));
        after > self.cap_cents && after > (self.overage_cents)(queries_before, tokens_before)
    }
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// The plan's limit of this meter.
    Quota(QuotaMeter),
    /// The tenant's spend cap (`overage_limit_cents`).
    SpendCap { cap_cents: i64 },
}

/// What a settlement changes: the reservation it closes (if any) and the actual usage.
#[derive(Clone, Debug)]
pub struct Settlement {
    pub reservation_id: Option<String>,
    pub tenant_id: TenantId,
    pub period_start: Timestamp,
    pub actual: Amounts,
}

/// Settled and reserved amounts of one tenant for one period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub used: Amounts,
    pub reserved: Amounts,
}

/// Adds `n` to `reserved` of each meter if it fits under its limit; `Err(Exceeded)` names the first that
/// does not (the caller rolls back). One upsert per meter: it creates the period's row on first use and
/// otherwise admits only if `used + reserved + n <= limit`.
pub(crate) async fn admit(
    tx: &mut Transaction<'_, Any>,
    tenant: &TenantId,
    period_start: Timestamp,
    amounts: &Amounts,
    limits: &Quotas,
) -> Result<Result<(), Exceeded>> {
    for m in QuotaMeter::ALL {
        let n = m.of(amounts);
        if n <= 0 {
            continue;
        }
        let limit = m.limit(limits);
        if n > limit {
            return Ok(Err(Exceeded::Quota(m)));
        }
        let done = sqlx::query(
            "INSERT INTO quota_counters (tenant_id, period_start, meter, used, reserved) VALUES ($1, $2, $3, 0, $4) \
             ON CONFLICT (tenant_id, period_start, meter) DO UPDATE \
             SET reserved = quota_counters.reserved + excluded.reserved \
             WHERE quota_counters.used + quota_counters.reserved + excluded.reserved <= $5",
        )
        .bind(tenant.as_str())
        .bind(m.period_key(period_start))
        .bind(m.as_str())
        .bind(n)
        .bind(limit)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(Err(Exceeded::Quota(m)));
        }
    }
    Ok(Ok(()))
}

/// The spend cap's check inside a reservation's transaction, before `admit`. The period's `queries` and
/// `tokens` counter rows are created if missing and then locked, in the order every transaction locks them
/// (`QuotaMeter::ALL`), so concurrent reservations of the tenant see each other's totals and the cap holds
/// exactly; SQLite's write transaction already serialises them.
pub(crate) async fn admit_spend(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    r: &NewReservation,
    spend: &SpendCap,
) -> Result<Result<(), Exceeded>> {
    if r.amounts.queries <= 0 && r.amounts.tokens <= 0 {
        return Ok(Ok(()));
    }
    let metered = [QuotaMeter::Queries, QuotaMeter::Tokens];
    for m in metered {
        sqlx::query(
            "INSERT INTO quota_counters (tenant_id, period_start, meter, used, reserved) VALUES ($1, $2, $3, 0, 0) \
             ON CONFLICT (tenant_id, period_start, meter) DO NOTHING",
        )
        .bind(r.tenant_id.as_str())
        .bind(m.period_key(r.period_start))
        .bind(m.as_str())
        .execute(&mut **tx)
        .await?;
    }
    let lock = match backend {
        Backend::Postgres => "FOR UPDATE",
        Backend::Sqlite => "",
    };
    let rows = sqlx::query(&format!(
        "SELECT meter, used + reserved AS total FROM quota_counters \
         WHERE tenant_id = $1 AND period_start = $2 AND meter IN ('queries', 'tokens') ORDER BY meter {lock}"
    ))
    .bind(r.tenant_id.as_str())
    .bind(r.period_start.0)
    .fetch_all(&mut **tx)
    .await?;
    let (mut queries, mut tokens) = (0, 0);
    for row in rows {
        let meter: String = row.try_get("meter")?;
        let total: i64 = row.try_get("total")?;
        match meter.as_str() {
            "queries" => queries = total,
            _ => tokens = total,
        }
    }
    if spend.refuses(queries, tokens, r.amounts.queries, r.amounts.tokens) {
        return Ok(Err(Exceeded::SpendCap { cap_cents: spend.cap_cents }));
    }
    Ok(Ok(()))
}

pub(crate) async fn take_reservation(
    tx: &mut Transaction<'_, Any>,
    id: &str,
) -> Result<Option<(TenantId, Timestamp, Amounts)>> {
    let row = sqlx::query(
        "DELETE FROM reservations WHERE id = $1 \
         RETURNING tenant_id, period_start, queries, tokens, documents, storage_bytes",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((
        TenantId::from_trusted(row.try_get("tenant_id")?),
        Timestamp(row.try_get("period_start")?),
        Amounts {
            queries: row.try_get("queries")?,
            tokens: row.try_get("tokens")?,
            documents: row.try_get("documents")?,
            storage_bytes: row.try_get("storage_bytes")?,
        },
    )))
}

/// `used += used_delta`, `reserved -= released` for every meter (creating the period's row if needed).
pub(crate) async fn adjust(
    tx: &mut Transaction<'_, Any>,
    tenant: &TenantId,
    period_start: Timestamp,
    used_delta: &Amounts,
    released: &Amounts,
) -> Result<()> {
    for m in QuotaMeter::ALL {
        let (u, r) = (m.of(used_delta), m.of(released));
        if u == 0 && r == 0 {
            continue;
        }
        sqlx::query(
            "INSERT INTO quota_counters (tenant_id, period_start, meter, used, reserved) VALUES ($1, $2, $3, $4, 0) \
             ON CONFLICT (tenant_id, period_start, meter) DO UPDATE \
             SET used = quota_counters.used + excluded.used, reserved = quota_counters.reserved - $5",
        )
        .bind(tenant.as_str())
        .bind(m.period_key(period_start))
        .bind(m.as_str())
        .bind(u)
        .bind(r)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// What a settlement writes besides the ledger rows and counters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LedgerWrites {
    /// Reservations are rows (PostgreSQL), not in-process memory (the embedded store's `memgate`).
    pub reservation_rows: bool,
    /// Analytics is configured: queue each new ledger event in `analytics_outbox`.
    pub analytics_outbox: bool,
}

/// Settles inside the caller's transaction. Returns false (and changes nothing) when the events were
/// already recorded: a settlement applies at most once.
pub(crate) async fn settle_in(
    tx: &mut Transaction<'_, Any>,
    s: &Settlement,
    events: &[UsageEvent],
    writes: LedgerWrites,
) -> Result<bool> {
    let inserted = insert_events(tx, events).await?;
    if !events.is_empty() && inserted == 0 {
        return Ok(false);
    }
    if writes.analytics_outbox {
        queue_for_analytics(tx, &events.iter().collect::<Vec<_>>()).await?;
    }
    // On the embedded store reservations live in memory (`memgate`), not in rows.
    let released = match &s.reservation_id {
        Some(id) if writes.reservation_rows => take_reservation(tx, id).await?.map(|(_, _, a)| a).unwrap_or_default(),
        _ => Amounts::default(),
    };
    adjust(tx, &s.tenant_id, s.period_start, &s.actual, &released).await?;
    Ok(true)
}

impl Store {
    /// Admits the reservation if every meter fits, atomically; otherwise changes nothing.
    pub async fn reserve(&self, r: &NewReservation, limits: &Quotas) -> Result<Result<(), Exceeded>> {
        self.gate().reserve(self, r, limits).await
    }

    /// Closes a reservation with the actual usage and appends the ledger events, in one transaction (on the
    /// embedded store, one shared with the settlements waiting beside it: `group_commit`). Returns once that
    /// transaction committed. Idempotent: settling the same events again changes nothing and returns false.
    pub async fn settle(&self, s: &Settlement, events: &[UsageEvent]) -> Result<bool> {
        self.ownership.settle(self, s, events).await
    }

    /// `settle` in a transaction of its own.
    pub(crate) async fn settle_in_own_transaction(&self, s: &Settlement, events: &[UsageEvent]) -> Result<bool> {
        let mut guard = self.settlement_guard(s).await?;
        let mut tx = self.begin_write().await?;
        let applied = settle_in(&mut tx, s, events, self.ledger_writes()).await?;
        if applied {
            tx.commit().await?;
            self.settled(&mut guard, s);
        } else {
            tx.rollback().await?;
        }
        Ok(applied)
    }

    /// The gate's hold on the tenant's quota across a settlement's transaction, so its state moves exactly
    /// when the database does.
    pub(crate) async fn settlement_guard(&self, s: &Settlement) -> Result<SettlementGuard> {
        self.gate().settlement_guard(self, s).await
    }

    /// After a settlement's transaction committed.
    pub(crate) fn settled(&self, guard: &mut SettlementGuard, s: &Settlement) {
        self.gate().settled(guard, s);
    }

    /// Gives a reservation's quota back (the request failed: nothing is billed). Returns false if it was
    /// already settled, released or expired.
    pub async fn release(&self, id: &str) -> Result<bool> {
        self.gate().release(self, id).await
    }

    /// Releases every reservation that expired before `now` (requests that died holding quota). Returns
    /// how many were reclaimed.
    pub async fn expire_reservations(&self, now: Timestamp) -> Result<u64> {
        self.gate().expire(self, now).await
    }

    /// Releases every reservation regardless of expiry. Only for the embedded store at start, when no other
    /// process can be holding one.
    pub async fn release_all_reservations(&self) -> Result<u64> {
        self.expire_reservations(Timestamp(i64::MAX)).await
    }

    pub async fn reservation_count(&self) -> Result<i64> {
        self.gate().count(self).await
    }

    pub async fn quota_counters(&self, tenant: &TenantId, period_start: Timestamp) -> Result<Counters> {
        self.gate().counters(self, tenant, period_start).await
    }
}
