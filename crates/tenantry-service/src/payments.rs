//! How invoices get paid: one `PaymentProvider`, chosen by `billing.provider`.
//!
//! - `manual`: nothing is charged; the operator reports outcomes (`POST /admin/invoices/{id}/payment`).
//! - `stripe`: a Checkout Session for each paid signup, and each invoice mirrored in Stripe (draft, one item
//!   per line, finalised) and charged. Every call carries an idempotency key derived from the work
//!   (`invoice-<id>-pay-<attempt>`), so a job retried after a crash never creates or charges anything twice.
//!
//! Outcomes from either way go through `Services::record_payment`; Stripe's webhook (`stripe.rs`) reports
//! the asynchronous ones.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tenantry_billing::stripe::{
    IdempotencyKey, NewCheckoutSession, NewCustomer, NewInvoice, NewInvoiceItem, StripeClient, StripeError,
    StripeErrorType,
};
use tenantry_billing::{InvoiceLine, InvoiceNumber, InvoiceStatus};
use tenantry_domain::{Cents, ErrorCode, TenantId};
use tenantry_store::{InvoiceRow, StripeLink, TenantRow};

use crate::billing::PaymentOutcome;
use crate::{ServiceError, ServiceResult, Services};

/// Our invoice id on the Stripe objects made for it (next to `tenant_id`).
pub(crate) const METADATA_INVOICE_ID: &str = "invoice_id";

/// A paid signup's first payment, before anything is stored.
pub struct SignupPayment<'a> {
    pub tenant_id: &'a TenantId,
    pub email: &'a str,
    pub plan: &'a str,
    pub amount: Cents,
    pub invoice_id: &'a str,
}

/// Where the customer pays: a hosted page, and its id for matching the provider's report.
pub struct Checkout {
    pub id: String,
    pub url: Option<String>,
}

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    fn name(&self) -> &'static str;

    /// Whether it charges invoices by itself (else the operator reports outcomes).
    fn collects(&self) -> bool;

    /// A page where a paid signup pays its first invoice; `None` when payment is reported otherwise.
    async fn signup_checkout(&self, services: &Services, payment: SignupPayment<'_>)
        -> ServiceResult<Option<Checkout>>;

    /// A hosted checkout was paid by `customer` through `payment_intent`: remember how to charge them later.
    async fn checkout_completed(
        &self,
        _services: &Services,
        _customer: &str,
        _payment_intent: &str,
    ) -> ServiceResult<()> {
        Ok(())
    }

    /// Tries to collect an open invoice: attempt 0 when it is opened, then one per dunning retry. `None` when
    /// the provider cannot charge by itself. A provider outage is an error (the job retries).
    async fn collect(
        &self,
        services: &Services,
        invoice: &InvoiceRow,
        attempt: u32,
    ) -> ServiceResult<Option<PaymentOutcome>>;

    /// An unpaid invoice is being voided or written off (`to`): stop collecting it where the provider
    /// holds a copy. An error leaves the invoice as it was.
    async fn close_unpaid(&self, _services: &Services, _invoice: &InvoiceRow, _to: InvoiceStatus) -> ServiceResult<()> {
        Ok(())
    }
}

/// `billing.provider = "manual"`.
pub struct Manual;

#[async_trait]
impl PaymentProvider for Manual {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn collects(&self) -> bool {
        false
    }

    async fn signup_checkout(&self, _: &Services, _: SignupPayment<'_>) -> ServiceResult<Option<Checkout>> {
        Ok(None)
    }

    async fn collect(&self, _: &Services, _: &InvoiceRow, _: u32) -> ServiceResult<Option<PaymentOutcome>> {
        Ok(None)
    }
}

/// `billing.provider = "stripe"`.
pub struct Stripe {
    client: StripeClient,
}

impl Stripe {
    pub fn new(client: StripeClient) -> Self {
        Self { client }
    }
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

#[async_trait]
impl PaymentProvider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn collects(&self) -> bool {
        true
    }

    async fn signup_checkout(
        &self,
        services: &Services,
        payment: SignupPayment<'_>,
    ) -> ServiceResult<Option<Checkout>> {
        let base = services.public_url();
        let metadata = BTreeMap::from([(METADATA_INVOICE_ID.to_owned(), payment.invoice_id.to_owned())]);
        let session = NewCheckoutSession {
            tenant_id: payment.tenant_id.clone(),
            amount: payment.amount,
            currency: services.config().billing.currency.clone(),
            product_name: format!("Tenantry {}, first period", payment.plan),
            success_url: format!("{base}/portal?checkout=success"),
            cancel_url: format!("{base}/portal?checkout=cancelled"),
            customer: None,
            customer_email: Some(payment.email.to_owned()),
            invoice_number: None,
            metadata,
        };
        let session = self
            .client
            .create_checkout_session(&session, &key(format!("checkout-{}", payment.tenant_id))?)
            .await
            .map_err(upstream)?;
        Ok(Some(Checkout { id: session.id, url: session.url }))
    }

    /// Checkout saved the card (`setup_future_usage = off_session`); making it the customer's default for
    /// invoices lets the next invoices be charged without the customer present.
    async fn checkout_completed(
        &self,
        _services: &Services,
        customer: &str,
        payment_intent: &str,
    ) -> ServiceResult<()> {
        let intent = self.client.retrieve_payment_intent(payment_intent).await.map_err(upstream)?;
        let Some(method) = intent.payment_method else {
            tracing::warn!(payment_intent, "checkout paid without a reusable payment method");
            return Ok(());
        };
        let key = key(format!("default-payment-method-{customer}-{method}"))?;
        self.client.set_default_payment_method(customer, &method, &key).await.map_err(upstream)?;
        Ok(())
    }

    async fn collect(
        &self,
        services: &Services,
        invoice: &InvoiceRow,
        attempt: u32,
    ) -> ServiceResult<Option<PaymentOutcome>> {
        let tenant_id = TenantId::from_trusted(invoice.tenant_id.clone());
        let Some(tenant) = services.store().tenant(&tenant_id).await? else { return Ok(None) };
        let stripe_invoice = self.mirror(services, &tenant, invoice).await?;
        let paid =
            self.client.pay_invoice(&stripe_invoice, &key(format!("invoice-{}-pay-{attempt}", invoice.id))?).await;
        match paid {
            Ok(i) if i.status() == Some(InvoiceStatus::Paid) => Ok(Some(PaymentOutcome::Succeeded)),
            Ok(i) => {
                tracing::warn!(status = ?i.raw_status, "stripe did not settle the invoice");
                Ok(Some(PaymentOutcome::Failed))
            }
            Err(e) if declined(&e) => Ok(Some(PaymentOutcome::Failed)),
            Err(e) => Err(upstream(e)),
        }
    }

    /// The Stripe copy, if one was made, is voided or marked uncollectible too; without a copy there is
    /// nothing Stripe could collect.
    async fn close_unpaid(&self, services: &Services, invoice: &InvoiceRow, to: InvoiceStatus) -> ServiceResult<()> {
        let tenant_id = TenantId::from_trusted(invoice.tenant_id.clone());
        let Some(link) = services.store().stripe_object_for(&tenant_id, "invoice", Some(&invoice.id)).await? else {
            return Ok(());
        };
        let key = key(format!("invoice-{}-{}", invoice.id, to.as_str()))?;
        let closed = match to {
            InvoiceStatus::Void => self.client.void_invoice(&link.object_id, &key).await,
            _ => self.client.mark_uncollectible(&link.object_id, &key).await,
        };
        closed.map(drop).map_err(upstream)
    }
}

impl Stripe {
    /// The tenant's Stripe customer: the linked one (from Checkout), else one made now and linked.
    async fn customer(&self, services: &Services, tenant: &TenantRow) -> ServiceResult<String> {
        if let Some(link) = services.store().stripe_object_for(&tenant.id, "customer", None).await? {
            return Ok(link.object_id);
        }
        let new = NewCustomer {
            tenant_id: tenant.id.clone(),
            email: tenant.email.clone(),
            name: tenant.organization.clone(),
        };
        let customer =
            self.client.create_customer(&new, &key(format!("customer-{}", tenant.id))?).await.map_err(upstream)?;
        let link = StripeLink {
            object_id: customer.id.clone(),
            kind: "customer".into(),
            tenant_id: tenant.id.clone(),
            invoice_id: None,
            url: None,
        };
        services.store().link_stripe_object(&link, services.clock().now()).await?;
        Ok(customer.id)
    }

    /// The Stripe invoice mirroring ours: made once (draft, one item per line, finalised) and linked.
    async fn mirror(&self, services: &Services, tenant: &TenantRow, invoice: &InvoiceRow) -> ServiceResult<String> {
        if let Some(link) = services.store().stripe_object_for(&tenant.id, "invoice", Some(&invoice.id)).await? {
            return Ok(link.object_id);
        }
        let customer = self.customer(services, tenant).await?;
        let metadata = BTreeMap::from([(METADATA_INVOICE_ID.to_owned(), invoice.id.clone())]);
        let new = NewInvoice {
            tenant_id: tenant.id.clone(),
            customer: customer.clone(),
            number: InvoiceNumber::new(invoice.number.max(0) as u64),
            description: Some(format!("Tenantry {} invoice", invoice.kind)),
            metadata: metadata.clone(),
        };
        let draft =
            self.client.create_invoice(&new, &key(format!("invoice-{}", invoice.id))?).await.map_err(upstream)?;
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
            self.client
                .create_invoice_item(&item, &key(format!("invoice-{}-item-{i}", invoice.id))?)
                .await
                .map_err(upstream)?;
        }
        let finalized = self
            .client
            .finalize_invoice(&draft.id, &key(format!("invoice-{}-finalize", invoice.id))?)
            .await
            .map_err(upstream)?;
        let link = StripeLink {
            object_id: draft.id.clone(),
            kind: "invoice".into(),
            tenant_id: tenant.id.clone(),
            invoice_id: Some(invoice.id.clone()),
            url: finalized.hosted_invoice_url,
        };
        services.store().link_stripe_object(&link, services.clock().now()).await?;
        Ok(draft.id)
    }
}

impl Services {
    pub(crate) fn payments(&self) -> &dyn PaymentProvider {
        self.inner.payments.as_ref()
    }

    pub(crate) fn public_url(&self) -> String {
        let configured = self.config().server.public_url.trim().trim_end_matches('/');
        if configured.is_empty() {
            format!("http://{}", self.config().server.bind)
        } else {
            configured.to_owned()
        }
    }

    /// The `Charge` job: the provider collects an open invoice; a decline starts dunning.
    pub(crate) async fn charge_invoice(&self, invoice_id: &str) -> ServiceResult<()> {
        let Some(invoice) = self.store().invoice(invoice_id).await? else { return Ok(()) };
        if invoice.status != InvoiceStatus::Open {
            return Ok(());
        }
        match self.payments().collect(self, &invoice, 0).await? {
            Some(outcome) => self.settle_if_open(&invoice.id, outcome).await,
            None => Ok(()),
        }
    }
}
