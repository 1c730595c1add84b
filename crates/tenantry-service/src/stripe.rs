//! Stripe's reports (the provider that charges is in `payments.rs`): `POST /webhooks/stripe` verifies
//! `Stripe-Signature`, stores each event id before handling it (a processed event delivered again is a no-op),
//! ignores an event older than one already applied to the same object, and turns the rest into the same
//! payment outcomes the manual provider's operator reports.

use serde::Serialize;
use serde_json::json;
use tenantry_billing::stripe::{Event, EventKind, StripeInvoice, WebhookVerifier};
use tenantry_billing::InvoiceStatus;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{Clock, ErrorCode, SystemClock, TenantId};
use tenantry_store::{EventSeen, InvoiceRow, StripeLink, TenantRow};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::billing::PaymentOutcome;
use crate::payments::METADATA_INVOICE_ID;
use crate::{ServiceError, ServiceResult, Services};

/// The answer to a webhook delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// What came of it: `applied: …`, `duplicate`, or `ignored: …` with the reason.
    pub outcome: String,
}

impl Services {
    /// Applies a payment outcome unless the invoice is no longer open (a webhook may have been first).
    pub(crate) async fn settle_if_open(&self, invoice_id: &str, outcome: PaymentOutcome) -> ServiceResult<()> {
        match self.record_payment(invoice_id, outcome, Actor::System).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::InvalidTransition || e.code == ErrorCode::TransitionInProgress => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /webhooks/stripe`.
    pub async fn stripe_webhook(&self, payload: &[u8], signature: Option<&str>) -> ServiceResult<WebhookReceipt> {
        let secret = &self.config().billing.stripe.webhook_secret;
        if secret.is_empty() {
            // Without Stripe there is no such endpoint on this deployment: a 404, not a failure of the service.
            return Err(ServiceError::new(ErrorCode::NotFound, "Stripe webhooks are not configured on this service"));
        }
        let verifier = WebhookVerifier::new([secret.as_str()]).map_err(ServiceError::internal)?;
        let header = signature.ok_or_else(|| ServiceError::new(ErrorCode::BadRequest, "missing Stripe-Signature"))?;
        // Signatures are made in real time, whatever the service clock says.
        verifier
            .verify(payload, header, SystemClock.now())
            .map_err(|e| ServiceError::new(ErrorCode::BadRequest, format!("signature rejected: {e}")))?;
        let event = Event::parse(payload)
            .map_err(|e| ServiceError::new(ErrorCode::BadRequest, format!("not a Stripe event: {e}")))?;
        let now = self.clock().now();
        let seen = self.store().receive_stripe_event(&event.id, event.event_type(), event.created_at(), now).await?;
        if seen == EventSeen::Processed {
            return Ok(WebhookReceipt { received: true, outcome: "duplicate".into() });
        }
        let (tenant, outcome) = self.apply_stripe_event(&event).await?;
        self.store().finish_stripe_event(&event.id, tenant.as_ref(), &outcome, self.clock().now()).await?;
        tracing::info!(event_id = %event.id, event_type = event.event_type(), tenant_id = ?tenant.as_ref().map(|t| t.to_string()), outcome, "stripe event");
        if let Some(t) = &tenant {
            let detail = json!({"event_id": event.id, "type": event.event_type(), "outcome": outcome});
            self.audit(Actor::System, Some(t), "stripe.event", &event.id, detail, "").await;
        }
        Ok(WebhookReceipt { received: true, outcome })
    }

    /// The tenant an event is about: `metadata.tenant_id`, else the stored link of its object or customer.
    async fn event_tenant(&self, event: &Event) -> ServiceResult<Option<TenantRow>> {
        if let Some(id) = event.tenant_id() {
            return Ok(self.store().tenant(&id).await?);
        }
        for object in [event.object_id(), event.customer_id()].into_iter().flatten() {
            if let Some(link) = self.store().stripe_object(object).await? {
                return Ok(self.store().tenant(&link.tenant_id).await?);
            }
        }
        Ok(None)
    }

    async fn apply_stripe_event(&self, event: &Event) -> ServiceResult<(Option<TenantId>, String)> {
        if let EventKind::Other(kind) = &event.kind {
            return Ok((None, format!("ignored: {kind} is not handled")));
        }
        let Some(tenant) = self.event_tenant(event).await? else {
            return Ok((None, "ignored: no tenant matches the event".into()));
        };
        let tenant_id = tenant.id.clone();
        let now = self.clock().now();
        // Order by the object's own event history: an older event never overwrites newer state.
        if let Some(object_id) = event.object_id() {
            let kind = event.object.get("object").and_then(|o| o.as_str()).unwrap_or("object").replace('.', "_");
            let invoice_id =
                event.object.get("metadata").and_then(|m| m.get(METADATA_INVOICE_ID)).and_then(|v| v.as_str());
            let link = StripeLink {
                object_id: object_id.to_owned(),
                kind,
                tenant_id: tenant_id.clone(),
                invoice_id: invoice_id.map(str::to_owned),
                url: None,
            };
            self.store().link_stripe_object(&link, now).await?;
            if !self.store().advance_stripe_object(object_id, event.created_at()).await? {
                return Ok((Some(tenant_id), "ignored: a newer event for this object was applied".into()));
            }
        }
        let outcome = match &event.kind {
            EventKind::CheckoutSessionCompleted(session) => {
                if let Some(customer) = &session.customer {
                    let link = StripeLink {
                        object_id: customer.clone(),
                        kind: "customer".into(),
                        tenant_id: tenant_id.clone(),
                        invoice_id: None,
                        url: None,
                    };
                    self.store().link_stripe_object(&link, now).await?;
                    if let Some(intent) = &session.payment_intent {
                        self.payments().checkout_completed(self, customer, intent).await?;
                    }
                }
                if !matches!(session.payment_status.as_deref(), Some("paid" | "no_payment_required")) {
                    return Ok((Some(tenant_id), "ignored: the session is not paid".into()));
                }
                let invoice = match session.metadata.get(METADATA_INVOICE_ID) {
                    Some(id) => self.store().invoice(id).await?.filter(|i| i.tenant_id == tenant_id.as_str()),
                    None => self
                        .store()
                        .open_invoices(&tenant_id)
                        .await?
                        .into_iter()
                        .find(|i| i.kind == tenantry_domain::InvoiceKind::Signup),
                };
                match invoice {
                    Some(i) => {
                        self.settle_if_open(&i.id, PaymentOutcome::Succeeded).await?;
                        format!("applied: invoice {} paid by checkout", i.id)
                    }
                    None => "ignored: no signup invoice to pay".into(),
                }
            }
            EventKind::InvoicePaid(inv) | EventKind::InvoicePaymentSucceeded(inv) => {
                self.apply_invoice_event(&tenant_id, inv, PaymentOutcome::Succeeded).await?
            }
            EventKind::InvoicePaymentFailed(inv) => {
                self.apply_invoice_event(&tenant_id, inv, PaymentOutcome::Failed).await?
            }
            EventKind::InvoiceVoided(inv) => self.apply_invoice_close(&tenant_id, inv, InvoiceStatus::Void).await?,
            EventKind::InvoiceMarkedUncollectible(inv) => {
                self.apply_invoice_close(&tenant_id, inv, InvoiceStatus::Uncollectible).await?
            }
            EventKind::CustomerSubscriptionDeleted(_) => {
                if tenant.state.on(LifecycleEvent::Cancelled).is_some() {
                    self.cancel(&tenant_id, Actor::System).await?;
                    "applied: tenant cancelled".into()
                } else {
                    "ignored: the tenant cannot be cancelled from its state".into()
                }
            }
            EventKind::Other(kind) => format!("ignored: {kind} is not handled"),
        };
        Ok((Some(tenant_id), outcome))
    }

    /// Our invoice that a Stripe invoice mirrors, or why the event is ignored.
    async fn our_invoice(
        &self,
        tenant_id: &TenantId,
        inv: &StripeInvoice,
    ) -> ServiceResult<Result<InvoiceRow, String>> {
        let ours = match inv.metadata.get(METADATA_INVOICE_ID) {
            Some(id) => Some(id.clone()),
            None => self.store().stripe_object(&inv.id).await?.and_then(|l| l.invoice_id),
        };
        let Some(invoice) = ours else { return Ok(Err("ignored: not an invoice Tenantry made".into())) };
        match self.store().invoice(&invoice).await?.filter(|i| i.tenant_id == tenant_id.as_str()) {
            Some(row) => Ok(Ok(row)),
            None => Ok(Err("ignored: unknown invoice".into())),
        }
    }

    /// `invoice.voided` / `invoice.marked_uncollectible`: someone ended the invoice in Stripe; ours follows
    /// (without calling Stripe back).
    async fn apply_invoice_close(
        &self,
        tenant_id: &TenantId,
        inv: &StripeInvoice,
        to: InvoiceStatus,
    ) -> ServiceResult<String> {
        let row = match self.our_invoice(tenant_id, inv).await? {
            Ok(row) => row,
            Err(ignored) => return Ok(ignored),
        };
        let from = row.status;
        if !from.can_become(to) {
            return Ok(format!("ignored: invoice already {from}"));
        }
        self.record_unpaid_close(&row, from, to, Actor::System).await?;
        Ok(format!("applied: invoice {} is {}", row.id, to.as_str()))
    }

    async fn apply_invoice_event(
        &self,
        tenant_id: &TenantId,
        inv: &StripeInvoice,
        outcome: PaymentOutcome,
    ) -> ServiceResult<String> {
        let row = match self.our_invoice(tenant_id, inv).await? {
            Ok(row) => row,
            Err(ignored) => return Ok(ignored),
        };
        let open = row.status == InvoiceStatus::Open
            || (row.status == InvoiceStatus::Uncollectible && outcome == PaymentOutcome::Succeeded);
        if !open {
            return Ok(format!("ignored: invoice already {}", row.status));
        }
        self.settle_if_open(&row.id, outcome).await?;
        Ok(format!("applied: payment {} for invoice {}", outcome.as_str(), row.id))
    }
}
