//! What Tenantry keeps about Stripe: the webhook events it has seen (for exactly-once handling) and the
//! Stripe objects linked to its tenants and invoices (for matching events and for ordering them).

use sqlx::Row;
use tenantry_domain::{TenantId, Timestamp};

use crate::{Result, Store};

/// What the store knew about a webhook event when it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSeen {
    /// First delivery: handle it.
    New,
    /// Delivered before but never finished (the process died while handling it): handle it again.
    Unfinished,
    /// Handled already: a duplicate, do nothing.
    Processed,
}

/// A Stripe object linked to a tenant (and, for invoices and Checkout Sessions, to one of its invoices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeLink {
    pub object_id: String,
    /// `customer`, `invoice` or `checkout_session`.
    pub kind: String,
    pub tenant_id: TenantId,
    pub invoice_id: Option<String>,
    /// Where the customer pays it (an invoice's hosted page).
    pub url: Option<String>,
}

impl Store {
    /// Records the event id (if new) and says whether it still needs handling.
    pub async fn receive_stripe_event(
        &self,
        id: &str,
        event_type: &str,
        created: Timestamp,
        now: Timestamp,
    ) -> Result<EventSeen> {
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (id, event_type, created, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(event_type)
        .bind(created.0)
        .bind(now.0)
        .execute(&self.write)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(EventSeen::New);
        }
        let row =
            sqlx::query("SELECT processed_at FROM stripe_events WHERE id = $1").bind(id).fetch_one(&self.write).await?;
        Ok(match row.try_get::<Option<i64>, _>("processed_at")? {
            Some(_) => EventSeen::Processed,
            None => EventSeen::Unfinished,
        })
    }

    /// Marks the event handled, with what came of it.
    pub async fn finish_stripe_event(
        &self,
        id: &str,
        tenant: Option<&TenantId>,
        outcome: &str,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query("UPDATE stripe_events SET tenant_id = $1, outcome = $2, processed_at = $3 WHERE id = $4")
            .bind(tenant.map(|t| t.as_str().to_owned()))
            .bind(outcome)
            .bind(now.0)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Links a Stripe object to a tenant (and invoice). Linking again keeps the first link.
    pub async fn link_stripe_object(&self, link: &StripeLink, now: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO stripe_objects (object_id, kind, tenant_id, invoice_id, created_at, url) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (object_id) DO NOTHING",
        )
        .bind(&link.object_id)
        .bind(&link.kind)
        .bind(link.tenant_id.as_str())
        .bind(link.invoice_id.clone())
        .bind(now.0)
        .bind(link.url.clone())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn stripe_object(&self, object_id: &str) -> Result<Option<StripeLink>> {
        let row =
            sqlx::query("SELECT object_id, kind, tenant_id, invoice_id, url FROM stripe_objects WHERE object_id = $1")
                .bind(object_id)
                .fetch_optional(&self.write)
                .await?;
        row.map(|r| link_from_row(&r)).transpose()
    }

    /// The tenant's Stripe object of `kind` linked to `invoice_id` (any invoice when `None`), newest first.
    pub async fn stripe_object_for(
        &self,
        tenant: &TenantId,
        kind: &str,
        invoice_id: Option<&str>,
    ) -> Result<Option<StripeLink>> {
        let row = sqlx::query(
            "SELECT object_id, kind, tenant_id, invoice_id, url FROM stripe_objects \
             WHERE tenant_id = $1 AND kind = $2 AND ($3 IS NULL OR invoice_id = $4) ORDER BY created_at DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .bind(kind)
        .bind(invoice_id.map(str::to_owned))
        .bind(invoice_id.map(str::to_owned))
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| link_from_row(&r)).transpose()
    }

    /// Where each of the tenant's Stripe invoices is paid, by Tenantry invoice id.
    pub async fn stripe_pay_urls(&self, tenant: &TenantId) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT invoice_id, url FROM stripe_objects \
             WHERE tenant_id = $1 AND kind = 'invoice' AND invoice_id IS NOT NULL AND url IS NOT NULL",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("invoice_id")?, r.try_get("url")?))).collect()
    }

    /// Records that an event created at `created` is being applied to the object; `false` if a newer event
    /// for it was applied already (this one is stale and must not overwrite its state).
    pub async fn advance_stripe_object(&self, object_id: &str, created: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE stripe_objects SET last_event_created = $1 WHERE object_id = $2 AND last_event_created <= $3",
        )
        .bind(created.0)
        .bind(object_id)
        .bind(created.0)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn link_from_row(r: &sqlx::any::AnyRow) -> Result<StripeLink> {
    Ok(StripeLink {
        object_id: r.try_get("object_id")?,
        kind: r.try_get("kind")?,
        tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
        invoice_id: r.try_get("invoice_id")?,
        url: r.try_get("url")?,
    })
}
