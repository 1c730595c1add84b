//! Invoices: stored with their lines (JSON, as rated) and totals; numbered from one sequence in the same
//! transaction; status changes are conditional on the status the caller saw.

use sqlx::{Any, Row, Transaction};
use tenantry_domain::{InvoiceKind, InvoiceStatus, TenantId, Timestamp};

use crate::jobs::{enqueue_in, NewJob};
use crate::prepaid::apply_credit_in;
use crate::webhooks::{emit_in, NewEvent};
use crate::{parsed, Result, Store, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvoice {
    pub id: String,
    pub tenant_id: TenantId,
    pub kind: InvoiceKind,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub status: InvoiceStatus,
    pub currency: String,
    pub subtotal_cents: i64,
    pub total_cents: i64,
    /// The rated lines as JSON.
    pub lines: String,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceRow {
    pub id: String,
    pub number: i64,
    pub tenant_id: String,
    pub kind: InvoiceKind,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub status: InvoiceStatus,
    pub currency: String,
    pub subtotal_cents: i64,
    pub total_cents: i64,
    pub lines: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const COLUMNS: &str = "id, number, tenant_id, kind, period_start, period_end, status, currency, subtotal_cents, \
                       total_cents, lines, created_at, updated_at";

/// What else happens in the invoice's transaction.
#[derive(Clone, Debug, Default)]
pub struct InvoiceEffects {
    /// Jobs the invoice sets in motion (the next period's close).
    pub jobs: Vec<NewJob>,
    /// The job that collects the invoice's total through the payment provider; dropped when prepaid credit
    /// pays it in full.
    pub collect: Option<NewJob>,
    /// Pending invoice items the invoice bills: each is marked as billed by it. If one was billed by another
    /// invoice meanwhile, the invoice is not stored (`Concurrent`).
    pub consume_items: Vec<String>,
    /// Items the invoice leaves for the tenant's next one (a credit it could not use up).
    pub carry_items: Vec<NewPendingItem>,
    /// Draw the tenant's prepaid credit: the line that shows the cents drawn (negative), as invoice JSON. An
    /// invoice that credit pays in full is `paid` as it is made and its `collect` job is dropped.
    pub prepaid_credit: Option<CreditLine>,
}

/// Makes the invoice line of `cents` of prepaid credit drawn (a negative amount).
#[derive(Clone)]
pub struct CreditLine(pub std::sync::Arc<dyn Fn(i64) -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for CreditLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreditLine")
    }
}

/// Leaves `item` for the tenant's next invoice, inside `tx`.
pub(crate) async fn insert_pending_item_in(
    tx: &mut Transaction<'static, Any>,
    tenant: &TenantId,
    item: &NewPendingItem,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO pending_invoice_items (id, tenant_id, description, amount_cents, created_at, invoice_id, kind) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6)",
    )
    .bind(&item.id)
    .bind(tenant.as_str())
    .bind(&item.description)
    .bind(item.amount_cents)
    .bind(now.0)
    .bind(item.kind)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An invoice item waiting for the tenant's next invoice (see `migrations/0009_pending_items.sql`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPendingItem {
    pub id: String,
    pub description: String,
    /// Signed: a credit is negative.
    pub amount_cents: i64,
    /// What it bills: `base`, `proration`, `credit` or `discount` (tenantry-billing's `LineKind`).
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingItemRow {
    pub id: String,
    pub tenant_id: String,
    pub description: String,
    pub amount_cents: i64,
    /// `None` for an item from before kinds were recorded.
    pub kind: Option<String>,
    pub created_at: Timestamp,
    /// The invoice that billed it; `None` while it waits.
    pub invoice_id: Option<String>,
}

impl Store {
    /// Stores the invoice under the next number, with its effects, in one transaction; `Conflict` if the
    /// tenant's period of that kind already has one (and then nothing is changed).
    pub async fn create_invoice(&self, inv: &NewInvoice, effects: &InvoiceEffects) -> Result<InvoiceRow> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT id FROM invoices WHERE tenant_id = $1 AND kind = $2 AND period_start = $3")
            .bind(inv.tenant_id.as_str())
            .bind(inv.kind.as_str())
            .bind(inv.period_start.0)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict("invoice for this period"));
        }
        let number: i64 = sqlx::query("UPDATE invoice_sequence SET last = last + 1 WHERE id = 1 RETURNING last")
            .fetch_one(&mut *tx)
            .await?
            .try_get("last")?;
        let mut inv = inv.clone();
        let mut collect = effects.collect.clone();
        if let Some(credit) = &effects.prepaid_credit {
            let drawn =
                apply_credit_in(&mut tx, self.backend, &inv.tenant_id, &inv.id, inv.total_cents, inv.now).await?;
            if drawn > 0 {
                let mut lines: Vec<serde_json::Value> =
                    serde_json::from_str(&inv.lines).map_err(|e| StoreError::Corrupt(format!("invoice lines: {e}")))?;
                lines.push((credit.0)(drawn));
                inv.lines = serde_json::Value::Array(lines).to_string();
                inv.total_cents -= drawn;
                if inv.total_cents == 0 {
                    inv.status = InvoiceStatus::Paid;
                    collect = None;
                }
            }
        }
        let inv = &inv;
        sqlx::query(&format!(
            "INSERT INTO invoices ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)"
        ))
        .bind(&inv.id)
        .bind(number)
        .bind(inv.tenant_id.as_str())
        .bind(inv.kind.as_str())
        .bind(inv.period_start.0)
        .bind(inv.period_end.0)
        .bind(inv.status.as_str())
        .bind(&inv.currency)
        .bind(inv.subtotal_cents)
        .bind(inv.total_cents)
        .bind(&inv.lines)
        .bind(inv.now.0)
        .execute(&mut *tx)
        .await?;
        for job in effects.jobs.iter().chain(&collect) {
            enqueue_in(&mut tx, job, inv.now).await?;
        }
        for item in &effects.consume_items {
            let billed = sqlx::query(
                "UPDATE pending_invoice_items SET invoice_id = $1 \
                 WHERE id = $2 AND tenant_id = $3 AND invoice_id IS NULL",
            )
            .bind(&inv.id)
            .bind(item)
            .bind(inv.tenant_id.as_str())
            .execute(&mut *tx)
            .await?;
            if billed.rows_affected() != 1 {
                return Err(StoreError::Concurrent);
            }
        }
        for item in &effects.carry_items {
            insert_pending_item_in(&mut tx, &inv.tenant_id, item, inv.now).await?;
        }
        let created = NewEvent {
            tenant_id: &inv.tenant_id,
            kind: "invoice.created",
            data: serde_json::json!({
                "invoice_id": inv.id,
                "number": number,
                "kind": inv.kind,
                "status": inv.status,
                "currency": inv.currency,
                "subtotal_cents": inv.subtotal_cents,
                "total_cents": inv.total_cents,
                "period_start": inv.period_start.to_rfc3339(),
                "period_end": inv.period_end.to_rfc3339(),
            }),
            dedupe_key: Some(format!("invoice.created:{}", inv.id)),
        };
        emit_in(&mut tx, &created, inv.now).await?;
        tx.commit().await?;
        self.invoice(&inv.id).await?.ok_or(StoreError::NotFound)
    }

    /// The tenant's invoice items still waiting for an invoice, oldest first (items written together in the
    /// order of their ids, which are time-ordered).
    pub async fn pending_items(&self, tenant: &TenantId) -> Result<Vec<PendingItemRow>> {
        self.items_where(tenant, "AND invoice_id IS NULL").await
    }

    /// All of the tenant's invoice items, billed or not, oldest first.
    pub async fn invoice_items(&self, tenant: &TenantId) -> Result<Vec<PendingItemRow>> {
        self.items_where(tenant, "").await
    }

    async fn items_where(&self, tenant: &TenantId, filter: &str) -> Result<Vec<PendingItemRow>> {
        let rows = sqlx::query(&format!(
            "SELECT id, tenant_id, description, amount_cents, created_at, invoice_id, kind FROM pending_invoice_items \
             WHERE tenant_id = $1 {filter} ORDER BY created_at, id"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingItemRow {
                    id: r.try_get("id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    description: r.try_get("description")?,
                    amount_cents: r.try_get("amount_cents")?,
                    kind: r.try_get("kind")?,
                    created_at: Timestamp(r.try_get("created_at")?),
                    invoice_id: r.try_get("invoice_id")?,
                })
            })
            .collect()
    }

    pub async fn invoice(&self, id: &str) -> Result<Option<InvoiceRow>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM invoices WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.write)
            .await?;
        row.map(|r| invoice_from_row(&r)).transpose()
    }

    /// The tenant's invoices that are still `open`, oldest first.
    pub async fn open_invoices(&self, tenant: &TenantId) -> Result<Vec<InvoiceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE tenant_id = $1 AND status = 'open' ORDER BY number"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(invoice_from_row).collect()
    }

    /// What the tenant still owes: its open invoices and those written off (uncollectible), oldest first.
    pub async fn unpaid_invoices(&self, tenant: &TenantId) -> Result<Vec<InvoiceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE tenant_id = $1 AND status IN ('open', 'uncollectible') \
             ORDER BY number"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(invoice_from_row).collect()
    }

    /// The tenant's invoices, newest first.
    /// Every tenant's invoices made in `[from, to)`, oldest first (revenue reporting).
    pub async fn invoices_made_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<InvoiceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invoices WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, number"
        ))
        .bind(from.0)
        .bind(to.0)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(invoice_from_row).collect()
    }

    pub async fn invoices(&self, tenant: &TenantId) -> Result<Vec<InvoiceRow>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM invoices WHERE tenant_id = $1 ORDER BY number DESC"))
            .bind(tenant.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(invoice_from_row).collect()
    }

    /// Moves the invoice from `from` to `to`; `Concurrent` if its status changed meanwhile. A move to `paid`
    /// records the `invoice.paid` webhook event with it.
    pub async fn set_invoice_status(
        &self,
        id: &str,
        from: InvoiceStatus,
        to: InvoiceStatus,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(&format!(
            "UPDATE invoices SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4 RETURNING {COLUMNS}"
        ))
        .bind(to.as_str())
        .bind(now.0)
        .bind(id)
        .bind(from.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = moved else { return Err(StoreError::Concurrent) };
        if to == InvoiceStatus::Paid {
            let invoice = invoice_from_row(&row)?;
            let tenant = TenantId::from_trusted(invoice.tenant_id.clone());
            let paid = NewEvent {
                tenant_id: &tenant,
                kind: "invoice.paid",
                data: serde_json::json!({
                    "invoice_id": invoice.id,
                    "number": invoice.number,
                    "currency": invoice.currency,
                    "total_cents": invoice.total_cents,
                }),
                dedupe_key: Some(format!("invoice.paid:{id}")),
            };
            emit_in(&mut tx, &paid, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn invoice_from_row(r: &sqlx::any::AnyRow) -> Result<InvoiceRow> {
    Ok(InvoiceRow {
        id: r.try_get("id")?,
        number: r.try_get("number")?,
        tenant_id: r.try_get("tenant_id")?,
        kind: parsed(r, "kind", InvoiceKind::parse)?,
        period_start: Timestamp(r.try_get("period_start")?),
        period_end: Timestamp(r.try_get("period_end")?),
        status: parsed(r, "status", InvoiceStatus::parse)?,
        currency: r.try_get("currency")?,
        subtotal_cents: r.try_get("subtotal_cents")?,
        total_cents: r.try_get("total_cents")?,
        lines: r.try_get("lines")?,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
    })
}
