//! Quota reservation and settlement. A request reserves what it may use before it works; admission is one
//! conditional update per meter (`used + reserved + n <= limit`), so no interleaving of requests — on one
//! node or many — can hold more than the limit. Settlement releases the reservation, adds the actual usage
//! and appends the ledger events in one transaction: usage is counted exactly when its ledger rows exist.

use sqlx::{Any, Row, Transaction};
use tenantry_domain::config::Quotas;
use tenantry_domain::{TenantId, Timestamp};

use crate::usage::{insert_events, queue_for_analytics, UsageEvent};
use crate::{Result, Store};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exceeded(pub QuotaMeter);

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
async fn admit(
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
            return Ok(Err(Exceeded(m)));
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
            return Ok(Err(Exceeded(m)));
        }
    }
    Ok(Ok(()))
}

async fn take_reservation(tx: &mut Transaction<'_, Any>, id: &str) -> Result<Option<(TenantId, Timestamp, Amounts)>> {
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
async fn adjust(
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
        if let Some(gate) = &self.gate {
            let mut q = gate.lock(&self.read, &r.tenant_id, r.period_start).await?;
            return Ok(gate.reserve(&mut q, r, limits));
        }
        let mut tx = self.begin_write().await?;
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

    /// Reserves `extra` more under an existing reservation (e.g. once the exact prompt size is known). A
    /// reservation that no longer exists (expired) cannot grow.
    pub async fn grow_reservation(
        &self,
        id: &str,
        tenant: &TenantId,
        period_start: Timestamp,
        extra: &Amounts,
        limits: &Quotas,
    ) -> Result<Result<(), Exceeded>> {
        if let Some(gate) = &self.gate {
            let mut q = gate.lock(&self.read, tenant, period_start).await?;
            return Ok(gate.grow(&mut q, id, extra, limits));
        }
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE reservations SET queries = queries + $1, tokens = tokens + $2, documents = documents + $3, \
             storage_bytes = storage_bytes + $4 WHERE id = $5 AND tenant_id = $6",
        )
        .bind(extra.queries)
        .bind(extra.tokens)
        .bind(extra.documents)
        .bind(extra.storage_bytes)
        .bind(id)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Err(Exceeded(QuotaMeter::Queries)));
        }
        if let Err(e) = admit(&mut tx, tenant, period_start, extra, limits).await? {
            tx.rollback().await?;
            return Ok(Err(e));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Closes a reservation with the actual usage and appends the ledger events, in one transaction (on the
    /// embedded store, one shared with the settlements waiting beside it: `group_commit`). Returns once that
    /// transaction committed. Idempotent: settling the same events again changes nothing and returns false.
    pub async fn settle(&self, s: &Settlement, events: &[UsageEvent]) -> Result<bool> {
        // Only settlements of a reservation: until memory moves after the shared commit, their usage still
        // counts as reserved. One without a reservation would be invisible to admission for that moment.
        if let (Some(writer), Some(_)) = (&self.group_commit, &s.reservation_id) {
            // Loads the tenant's counters before the commit (`group_commit`), and lets go of the lock, which
            // the ledger thread takes after it.
            drop(self.settlement_guard(s).await?);
            return writer.settle(s, events).await;
        }
        let mut guard = self.settlement_guard(s).await?;
        let mut tx = self.begin_write().await?;
        let applied = settle_in(&mut tx, s, events, self.ledger_writes()).await?;
        if applied {
            tx.commit().await?;
            self.settled(guard.as_mut(), s);
        } else {
            tx.rollback().await?;
        }
        Ok(applied)
    }

    /// On the embedded store, the tenant's quota lock, held across a settlement's transaction so memory moves
    /// exactly when the database does.
    pub(crate) async fn settlement_guard(&self, s: &Settlement) -> Result<Option<crate::memgate::Guard>> {
        match &self.gate {
            Some(gate) => Ok(Some(gate.lock(&self.read, &s.tenant_id, s.period_start).await?)),
            None => Ok(None),
        }
    }

    /// After a settlement's transaction committed.
    pub(crate) fn settled(&self, guard: Option<&mut crate::memgate::Guard>, s: &Settlement) {
        if let (Some(gate), Some(q)) = (&self.gate, guard) {
            gate.settled(q, s);
        }
    }

    /// Gives a reservation's quota back (the request failed: nothing is billed). Returns false if it was
    /// already settled, released or expired.
    pub async fn release(&self, id: &str) -> Result<bool> {
        if let Some(gate) = &self.gate {
            return gate.release(&self.read, id).await;
        }
        let mut tx = self.begin_write().await?;
        let Some((tenant, period, amounts)) = take_reservation(&mut tx, id).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        adjust(&mut tx, &tenant, period, &Amounts::default(), &amounts).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Releases every reservation that expired before `now` (requests that died holding quota). Returns
    /// how many were reclaimed.
    pub async fn expire_reservations(&self, now: Timestamp) -> Result<u64> {
        if let Some(gate) = &self.gate {
            return Ok(gate.expire(now).await);
        }
        let ids: Vec<String> = sqlx::query("SELECT id FROM reservations WHERE expires_at < $1")
            .bind(now.0)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        let mut n = 0;
        for id in ids {
            if self.release(&id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Releases every reservation regardless of expiry. Only for the embedded store at start, when no other
    /// process can be holding one.
    pub async fn release_all_reservations(&self) -> Result<u64> {
        self.expire_reservations(Timestamp(i64::MAX)).await
    }

    pub async fn reservation_count(&self) -> Result<i64> {
        if let Some(gate) = &self.gate {
            return Ok(gate.count() as i64);
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM reservations").fetch_one(&self.read).await?;
        Ok(row.try_get("n")?)
    }

    pub async fn quota_counters(&self, tenant: &TenantId, period_start: Timestamp) -> Result<Counters> {
        if let Some(gate) = &self.gate {
            let q = gate.lock(&self.read, tenant, period_start).await?;
            return Ok(crate::memgate::MemGate::counters(&q, period_start));
        }
        let rows = sqlx::query(
            "SELECT meter, used, reserved FROM quota_counters \
             WHERE tenant_id = $1 AND (period_start = $2 OR period_start = 0)",
        )
        .bind(tenant.as_str())
        .bind(period_start.0)
        .fetch_all(&self.read)
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
}
