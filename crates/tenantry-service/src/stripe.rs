//! The Stripe payment provider (`billing.provider = "stripe"`): a Checkout Session for each paid signup, a
//! Stripe invoice (items, finalise, pay) for each invoice Tenantry opens, payment retries through Stripe, and
//! `POST /webhooks/stripe`, which verifies `Stripe-Signature`, stores each event id before handling it (a
//! processed event delivered again is a no-op), ignores an event older than one already applied to the same
//! object, and turns the rest into the same payment outcomes the manual provider's operator reports.
//!
//! Every call to Stripe carries an idempotency key derived from what it does (`invoice-<id>-pay-<attempt>`),
//! so a job retried after a crash can never create or charge anything twice.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use tenantry_billing::stripe::{
    Event, EventKind, IdempotencyKey, NewCheckoutSession, NewCustomer, NewInvoice, NewInvoiceItem, StripeClient,
    StripeError, StripeErrorType, StripeInvoice, WebhookVerifier,
};
use tenantry_billing::{InvoiceLine, InvoiceNumber, InvoiceStatus};
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{Cents, Clock, ErrorCode, SystemClock, TenantId};
use tenantry_store::{EventSeen, InvoiceRow, StripeLink, TenantRow};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::billing::PaymentOutcome;
use crate::{ServiceError, ServiceResult, Services};

/// Our invoice id on the Stripe objects made for it (next to `tenant_id`).
const METADATA_INVOICE_ID: &str = "invoice_id";

/// The answer to a webhook delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// What came of it: `applied: …`, `duplicate`, or `ignored: …` with the reason.
    pub outcome: String,
}

fn key(raw: String) -> ServiceResult<IdempotencyKey> {
    IdempotencyKey::new(raw).map_err(ServiceError::internal)
}

fn upstream(e: StripeError) -> ServiceError {
    tracing::warn!(error = %e, "stripe call failed");
    ServiceError::new(ErrorCode::UpstreamFailed, "the payment provider failed; try again")
}

/// Whether Stripe refused the payment itself (a decline), as opposed to failing to process the request.
fn declined(e: &StripeError) -> bool {
    e.api().is_some_and(|api| api.kind == StripeErrorType::CardError || api.status == 402)
}

impl Services {
    pub(crate) fn stripe(&self) -> Option<&StripeClient> {
        self.inner.stripe.as_ref()
    }

    /// A hosted Checkout page for a paid signup's first invoice, made before anything is stored (a Stripe
    /// failure leaves nothing behind). `None` with the manual provider.
    pub(crate) async fn signup_checkout(
        &self,
        tenant_id: &TenantId,
        email: &str,
        plan: &str,
        amount: Cents,
        invoice_id: &str,
    ) -> ServiceResult<Option<tenantry_billing::stripe::CheckoutSession>> {
        let Some(stripe) = self.stripe() else { return Ok(None) };
        let base = self.public_url();
        let metadata = BTreeMap::from([(METADATA_INVOICE_ID.to_owned(), invoice_id.to_owned())]);
        let session = NewCheckoutSession {
            tenant_id: tenant_id.clone(),
            amount,
            currency: self.config().billing.currency.clone(),
            product_name: format!("Tenantry {plan}, first period"),
            success_url: format!("{base}/portal?checkout=success"),
            cancel_url: format!("{base}/portal?checkout=cancelled"),
            customer: None,
            customer_email: Some(email.to_owned()),
            invoice_number: None,
            metadata,
        };
        let session =
            stripe.create_checkout_session(&session, &key(format!("checkout-{tenant_id}"))?).await.map_err(upstream)?;
        Ok(Some(session))
    }

    fn public_url(&self) -> String {
        let configured = self.config().server.public_url.trim().trim_end_matches('/');
        if configured.is_empty() {
            format!("http://{}", self.config().server.bind)
        } else {
            configured.to_owned()
        }
    }

    /// The tenant's Stripe customer: the linked one (from Checkout), else one made now and linked.
    async fn stripe_customer(&self, stripe: &StripeClient, tenant: &TenantRow) -> ServiceResult<String> {
        if let Some(link) = self.store().stripe_object_for(&tenant.id, "customer", None).await? {
            return Ok(link.object_id);
        }
        let new = NewCustomer {
            tenant_id: tenant.id.clone(),
            email: tenant.email.clone(),
            name: tenant.organization.clone(),
        };
        let customer =
            stripe.create_customer(&new, &key(format!("customer-{}", tenant.id))?).await.map_err(upstream)?;
        let link = StripeLink {
            object_id: customer.id.clone(),
            kind: "customer".into(),
            tenant_id: tenant.id.clone(),
            invoice_id: None,
        };
        self.store().link_stripe_object(&link, self.clock().now()).await?;
        Ok(customer.id)
    }

    /// The `Charge` job: mirrors an open invoice in Stripe (draft, one item per line, finalised) and charges
    /// it. A decline is a failed payment (dunning starts); a Stripe outage fails the job, which is retried.
    pub(crate) async fn charge_invoice(&self, invoice_id: &str) -> ServiceResult<()> {
        let Some(stripe) = self.stripe() else { return Ok(()) };
        let Some(invoice) = self.store().invoice(invoice_id).await? else { return Ok(()) };
        if invoice.status != InvoiceStatus::Open.as_str() {
            return Ok(());
        }
        let tenant_id = TenantId::from_trusted(invoice.tenant_id.clone());
        let Some(tenant) = self.store().tenant(&tenant_id).await? else { return Ok(()) };
        let stripe_invoice = self.stripe_invoice(stripe, &tenant, &invoice).await?;
        self.pay_through_stripe(stripe, &invoice, &stripe_invoice, 0).await
    }

    async fn stripe_invoice(
        &self,
        stripe: &StripeClient,
        tenant: &TenantRow,
        invoice: &InvoiceRow,
    ) -> ServiceResult<String> {
        if let Some(link) = self.store().stripe_object_for(&tenant.id, "invoice", Some(&invoice.id)).await? {
            return Ok(link.object_id);
        }
        let customer = self.stripe_customer(stripe, tenant).await?;
        let metadata = BTreeMap::from([(METADATA_INVOICE_ID.to_owned(), invoice.id.clone())]);
        let new = NewInvoice {
            tenant_id: tenant.id.clone(),
            customer: customer.clone(),
            number: InvoiceNumber::new(invoice.number.max(0) as u64),
            description: Some(format!("Tenantry {} invoice", invoice.kind)),
            metadata: metadata.clone(),
        };
        let draft = stripe.create_invoice(&new, &key(format!("invoice-{}", invoice.id))?).await.map_err(upstream)?;
        let lines: Vec<InvoiceLine> = serde_json::from_str(&invoice.lines).map_err(ServiceError::internal)?;
        for (i, line) in lines.iter().enumerate() {
            let item = NewInvoiceItem {
                tenant_id: tenant.id.clone(),
                customer: customer.clone(),
                invoice: Some(draft.id.clone()),
                amount: line.amount_cents,
                currency: invoice.currency.clone(),
                description: line.description.clone(),
                metadata: metadata.clone(),
            };
            stripe
                .create_invoice_item(&item, &key(format!("invoice-{}-item-{i}", invoice.id))?)
                .await
                .map_err(upstream)?;
        }
        stripe
            .finalize_invoice(&draft.id, &key(format!("invoice-{}-finalize", invoice.id))?)
            .await
            .map_err(upstream)?;
        let link = StripeLink {
            object_id: draft.id.clone(),
            kind: "invoice".into(),
            tenant_id: tenant.id.clone(),
            invoice_id: Some(invoice.id.clone()),
        };
        self.store().link_stripe_object(&link, self.clock().now()).await?;
        Ok(draft.id)
    }

    async fn pay_through_stripe(
        &self,
        stripe: &StripeClient,
        invoice: &InvoiceRow,
        stripe_invoice: &str,
        attempt: u32,
    ) -> ServiceResult<()> {
        let paid = stripe.pay_invoice(stripe_invoice, &key(format!("invoice-{}-pay-{attempt}", invoice.id))?).await;
        let outcome = match paid {
            Ok(i) if i.status() == Some(InvoiceStatus::Paid) => PaymentOutcome::Succeeded,
            Ok(i) => {
                tracing::warn!(status = ?i.raw_status, "stripe did not settle the invoice");
                PaymentOutcome::Failed
            }
            Err(e) if declined(&e) => PaymentOutcome::Failed,
            Err(e) => return Err(upstream(e)),
        };
        self.settle_if_open(&invoice.id, outcome).await
    }

    /// Applies a payment outcome unless the invoice is no longer open (a webhook may have been first).
    async fn settle_if_open(&self, invoice_id: &str, outcome: PaymentOutcome) -> ServiceResult<()> {
        match self.record_payment(invoice_id, outcome, Actor::System).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::InvalidTransition || e.code == ErrorCode::TransitionInProgress => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A dunning retry through Stripe: charge the invoice again.
    pub(crate) async fn retry_with_stripe(&self, invoice: &InvoiceRow, attempt: u32) -> ServiceResult<bool> {
        let Some(stripe) = self.stripe() else { return Ok(false) };
        let tenant_id = TenantId::from_trusted(invoice.tenant_id.clone());
        let Some(tenant) = self.store().tenant(&tenant_id).await? else { return Ok(true) };
        let stripe_invoice = self.stripe_invoice(stripe, &tenant, invoice).await?;
        self.pay_through_stripe(stripe, invoice, &stripe_invoice, attempt).await?;
        Ok(true)
    }

    /// `POST /webhooks/stripe`.
    pub async fn stripe_webhook(&self, payload: &[u8], signature: Option<&str>) -> ServiceResult<WebhookReceipt> {
        let secret = &self.config().billing.stripe.webhook_secret;
        if secret.is_empty() {
            return Err(ServiceError::new(ErrorCode::Unavailable, "Stripe webhooks are not configured"));
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
                    };
                    self.store().link_stripe_object(&link, now).await?;
                }
                if !matches!(session.payment_status.as_deref(), Some("paid" | "no_payment_required")) {
                    return Ok((Some(tenant_id), "ignored: the session is not paid".into()));
                }
                let invoice = match session.metadata.get(METADATA_INVOICE_ID) {
                    Some(id) => self.store().invoice(id).await?.filter(|i| i.tenant_id == tenant_id.as_str()),
                    None => self.store().open_invoices(&tenant_id).await?.into_iter().find(|i| i.kind == "signup"),
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

    async fn apply_invoice_event(
        &self,
        tenant_id: &TenantId,
        inv: &StripeInvoice,
        outcome: PaymentOutcome,
    ) -> ServiceResult<String> {
        let ours = match inv.metadata.get(METADATA_INVOICE_ID) {
            Some(id) => Some(id.clone()),
            None => self.store().stripe_object(&inv.id).await?.and_then(|l| l.invoice_id),
        };
        let Some(invoice) = ours else { return Ok("ignored: not an invoice Tenantry made".into()) };
        let Some(row) = self.store().invoice(&invoice).await?.filter(|i| i.tenant_id == tenant_id.as_str()) else {
            return Ok("ignored: unknown invoice".into());
        };
        let open = row.status == InvoiceStatus::Open.as_str()
            || (row.status == InvoiceStatus::Uncollectible.as_str() && outcome == PaymentOutcome::Succeeded);
        if !open {
            return Ok(format!("ignored: invoice already {}", row.status));
        }
        self.settle_if_open(&row.id, outcome).await?;
        Ok(format!("applied: payment {} for invoice {}", outcome.as_str(), row.id))
    }
}
