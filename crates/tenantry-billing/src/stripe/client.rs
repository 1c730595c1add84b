//! A small Stripe REST client: the calls billing makes, and nothing else.
//!
//! Every call is a POST with an `Idempotency-Key` the caller chooses. Callers derive it from their own
//! ids (`inv_…:finalize`), so a retried job repeats the same request and Stripe answers with the first
//! result instead of charging twice. Within one call, a 429, a 5xx, a connection failure or a timeout is
//! retried with exponential backoff, reusing the same key; `Stripe-Should-Retry` overrides that choice when
//! Stripe sends it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tenantry_domain::config::StripeConfig;
use tenantry_domain::{Cents, TenantId};

use super::form::Form;
use super::objects::{CheckoutSession, Customer, InvoiceItem, PaymentIntent, StripeInvoice};
use super::{METADATA_INVOICE, METADATA_TENANT_ID};
use crate::invoice::InvoiceNumber;

/// Stripe's kinds of error (`error.type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StripeErrorType {
    ApiError,
    CardError,
    IdempotencyError,
    InvalidRequestError,
    Other(String),
}

impl StripeErrorType {
    fn parse(raw: &str) -> Self {
        match raw {
            "api_error" => Self::ApiError,
            "card_error" => Self::CardError,
            "idempotency_error" => Self::IdempotencyError,
            "invalid_request_error" => Self::InvalidRequestError,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for StripeErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ApiError => "api_error",
            Self::CardError => "card_error",
            Self::IdempotencyError => "idempotency_error",
            Self::InvalidRequestError => "invalid_request_error",
            Self::Other(other) => other,
        })
    }
}

/// An error answer from Stripe: `{"error": {type, code, message, …}}` and its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub kind: StripeErrorType,
    /// e.g. `resource_missing`, `card_declined`, `invoice_not_editable`.
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    /// Stripe's `Request-Id`, for its support.
    pub request_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("stripe client misconfigured: {0}")]
    Config(String),
    #[error("invalid request to stripe: {0}")]
    InvalidRequest(String),
    #[error("stripe answered {} {}: {}", .0.status, .0.kind, .0.message)]
    Api(Box<ApiError>),
    #[error("stripe unreachable: {0}")]
    Transport(String),
    #[error("unexpected answer from stripe ({status}): {message}")]
    Decode { status: u16, message: String },
}

impl StripeError {
    /// Whether the same request (same idempotency key) may succeed later: rate limits, Stripe's own
    /// failures, and failures to reach it. A decline or a bad request will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api(e) => e.status == 429 || e.status >= 500,
            Self::Transport(_) => true,
            Self::Config(_) | Self::InvalidRequest(_) | Self::Decode { .. } => false,
        }
    }

    /// The Stripe API error, when Stripe answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// A key Stripe uses to recognise a repeated request (at most 255 printable ASCII characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(key: impl Into<String>) -> Result<Self, StripeError> {
        let key = key.into();
        let printable = key.bytes().all(|b| b.is_ascii_graphic());
        if key.is_empty() || key.len() > 255 || !printable {
            return Err(StripeError::InvalidRequest(format!("bad idempotency key {key:?}")));
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Stripe's libraries' defaults are similar: a couple of retries, half a second doubling.
    fn default() -> Self {
        Self { max_retries: 2, initial_backoff: Duration::from_millis(500), max_backoff: Duration::from_secs(5) }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCustomer {
    pub tenant_id: TenantId,
    pub email: String,
    pub name: String,
}

/// One invoice line as a Stripe invoice item, attached to a given draft invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvoiceItem {
    pub tenant_id: TenantId,
    pub customer: String,
    /// The Stripe draft invoice to put the item on. Without it the item waits for the customer's next
    /// invoice, which is not how Tenantry bills.
    pub invoice: Option<String>,
    /// Negative for a credit.
    pub amount: Cents,
    pub currency: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInvoice {
    pub tenant_id: TenantId,
    pub customer: String,
    /// Ours, stored as `metadata[tenantry_invoice]` so webhooks lead back to it.
    pub number: InvoiceNumber,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A hosted Checkout page for one payment (the signup invoice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCheckoutSession {
    pub tenant_id: TenantId,
    pub amount: Cents,
    pub currency: String,
    /// What the customer sees on the page, e.g. "Tenantry Pro, first month".
    pub product_name: String,
    pub success_url: String,
    pub cancel_url: String,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    /// Ours, when the session pays one of our invoices.
    pub invoice_number: Option<InvoiceNumber>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    api_key: String,
    retry: RetryPolicy,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient").field("api_base", &self.api_base).field("retry", &self.retry).finish()
    }
}

impl StripeClient {
    /// `api_base` is `https://api.stripe.com` in production; tests point it at a fake server.
    pub fn new(api_key: impl Into<String>, api_base: impl Into<String>) -> Result<Self, StripeError> {
        let api_key = api_key.into().trim().to_owned();
        if api_key.is_empty() {
            return Err(StripeError::Config("the API key is empty".into()));
        }
        let api_base = api_base.into().trim().trim_end_matches('/').to_owned();
        if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            return Err(StripeError::Config(format!("api_base {api_base:?} is not an http(s) URL")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Stripe's own libraries wait up to 80 s for an answer.
            .timeout(Duration::from_secs(80))
            .build()
            .map_err(|e| StripeError::Config(e.to_string()))?;
        Ok(Self { http, api_base, api_key, retry: RetryPolicy::default() })
    }

    /// From `[billing.stripe]`, whose `api_key` the caller has already resolved (file or env).
    pub fn from_config(config: &StripeConfig) -> Result<Self, StripeError> {
        Self::new(config.api_key.clone(), config.api_base.clone())
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A customer per tenant, tagged with `metadata[tenant_id]`.
    pub async fn create_customer(&self, new: &NewCustomer, key: &IdempotencyKey) -> Result<Customer, StripeError> {
        let mut form = Form::new();
        form.set(&["email"], new.email.clone()).set(&["name"], new.name.clone());
        form.metadata(&tenant_metadata(&new.tenant_id, &BTreeMap::new()));
        self.post("/v1/customers", &form, key).await
    }

    pub async fn create_invoice_item(
        &self,
        new: &NewInvoiceItem,
        key: &IdempotencyKey,
    ) -> Result<InvoiceItem, StripeError> {
        let mut form = Form::new();
        form.set(&["customer"], new.customer.clone())
            .set(&["amount"], new.amount.0.to_string())
            .set(&["currency"], new.currency.to_ascii_lowercase())
            .set(&["description"], new.description.clone());
        if let Some(invoice) = &new.invoice {
            form.set(&["invoice"], invoice.clone());
        }
        form.metadata(&tenant_metadata(&new.tenant_id, &new.metadata));
        self.post("/v1/invoiceitems", &form, key).await
    }

    /// A draft invoice that Stripe will neither finalise nor charge on its own (`auto_advance=false`):
    /// Tenantry decides when. Pending items are excluded; items are attached by `invoice` id instead.
    pub async fn create_invoice(&self, new: &NewInvoice, key: &IdempotencyKey) -> Result<StripeInvoice, StripeError> {
        let mut metadata = new.metadata.clone();
        metadata.insert(METADATA_INVOICE.into(), new.number.to_string());
        let mut form = Form::new();
        form.set(&["customer"], new.customer.clone())
            .set(&["collection_method"], "charge_automatically")
            .set(&["auto_advance"], "false")
            .set(&["pending_invoice_items_behavior"], "exclude");
        if let Some(description) = &new.description {
            form.set(&["description"], description.clone());
        }
        form.metadata(&tenant_metadata(&new.tenant_id, &metadata));
        self.post("/v1/invoices", &form, key).await
    }

    /// Draft → open. Still `auto_advance=false`: payment is attempted by [`StripeClient::pay_invoice`].
    pub async fn finalize_invoice(&self, invoice_id: &str, key: &IdempotencyKey) -> Result<StripeInvoice, StripeError> {
        let mut form = Form::new();
        form.set(&["auto_advance"], "false");
        self.post(&format!("/v1/invoices/{}/finalize", path_id(invoice_id)?), &form, key).await
    }

    /// Charges the customer's default payment method. A decline is an `Api` error with status 402 and
    /// kind `CardError`; Stripe also sends `invoice.payment_failed`.
    pub async fn pay_invoice(&self, invoice_id: &str, key: &IdempotencyKey) -> Result<StripeInvoice, StripeError> {
        self.post(&format!("/v1/invoices/{}/pay", path_id(invoice_id)?), &Form::new(), key).await
    }

    /// Open (or uncollectible) → void: nothing is owed and Stripe stops collecting it.
    pub async fn void_invoice(&self, invoice_id: &str, key: &IdempotencyKey) -> Result<StripeInvoice, StripeError> {
        self.post(&format!("/v1/invoices/{}/void", path_id(invoice_id)?), &Form::new(), key).await
    }

    /// Open → uncollectible: written off as bad debt; it can still be paid later.
    pub async fn mark_uncollectible(
        &self,
        invoice_id: &str,
        key: &IdempotencyKey,
    ) -> Result<StripeInvoice, StripeError> {
        self.post(&format!("/v1/invoices/{}/mark_uncollectible", path_id(invoice_id)?), &Form::new(), key).await
    }

    /// A Checkout Session in `payment` mode for one amount; send the customer to its `url`.
    /// `client_reference_id` and `metadata[tenant_id]` carry the tenant to `checkout.session.completed`.
    pub async fn create_checkout_session(
        &self,
        new: &NewCheckoutSession,
        key: &IdempotencyKey,
    ) -> Result<CheckoutSession, StripeError> {
        let mut metadata = new.metadata.clone();
        if let Some(number) = new.invoice_number {
            metadata.insert(METADATA_INVOICE.into(), number.to_string());
        }
        let item = |field: &'static str| -> [&'static str; 4] { ["line_items", "0", "price_data", field] };
        let mut form = Form::new();
        form.set(&["mode"], "payment")
            .set(&item("currency"), new.currency.to_ascii_lowercase())
            .set(&item("unit_amount"), new.amount.0.to_string())
            .set(&["line_items", "0", "price_data", "product_data", "name"], new.product_name.clone())
            .set(&["line_items", "0", "quantity"], "1")
            .set(&["success_url"], new.success_url.clone())
            .set(&["cancel_url"], new.cancel_url.clone())
            .set(&["client_reference_id"], new.tenant_id.as_str());
        if let Some(customer) = &new.customer {
            form.set(&["customer"], customer.clone());
        } else {
            if let Some(email) = &new.customer_email {
                // Stripe refuses both together.
                form.set(&["customer_email"], email.clone());
            }
            // A customer to charge the next invoices to.
            form.set(&["customer_creation"], "always");
        }
        // Keep the card for the invoices that follow, charged without the customer present.
        form.set(&["payment_intent_data", "setup_future_usage"], "off_session");
        let metadata = tenant_metadata(&new.tenant_id, &metadata);
        form.metadata(&metadata);
        // The payment intent's own events then name the tenant too.
        for (k, v) in &metadata {
            form.set(&["payment_intent_data", "metadata", k], v.clone());
        }
        self.post("/v1/checkout/sessions", &form, key).await
    }

    /// The PaymentIntent (to learn the payment method Checkout collected).
    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        self.send(&format!("/v1/payment_intents/{}", path_id(id)?), None).await
    }

    /// Makes `payment_method` the customer's default for invoices, so Tenantry can charge them off-session.
    pub async fn set_default_payment_method(
        &self,
        customer: &str,
        payment_method: &str,
        key: &IdempotencyKey,
    ) -> Result<Customer, StripeError> {
        let mut form = Form::new();
        form.set(&["invoice_settings", "default_payment_method"], payment_method.to_owned());
        self.post(&format!("/v1/customers/{}", path_id(customer)?), &form, key).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, form: &Form, key: &IdempotencyKey) -> Result<T, StripeError> {
        self.send(path, Some((form.encode(), key))).await
    }

    /// A POST (form body, idempotency key) or, without a body, a GET; retried on what Stripe says may succeed
    /// later, with the same key.
    async fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        post: Option<(String, &IdempotencyKey)>,
    ) -> Result<T, StripeError> {
        let url = format!("{}{path}", self.api_base);
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 0;
        loop {
            let outcome = self.attempt(&url, post.as_ref().map(|(body, key)| (body.as_str(), *key))).await;
            let retry = match &outcome {
                Attempt::Done { .. } => false,
                Attempt::Failed { error, should_retry } => should_retry.unwrap_or_else(|| error.is_retryable()),
            };
            if !retry || attempt >= self.retry.max_retries {
                return match outcome {
                    Attempt::Done { status, body } => serde_json::from_slice(&body)
                        .map_err(|e| StripeError::Decode { status, message: e.to_string() }),
                    Attempt::Failed { error, .. } => Err(error),
                };
            }
            if let Attempt::Failed { error, .. } = &outcome {
                tracing::warn!(path, attempt, error = %error, "stripe request failed; retrying with the same key");
            }
            tokio::time::sleep(backoff.min(self.retry.max_backoff)).await;
            backoff = backoff.saturating_mul(2);
            attempt += 1;
        }
    }

    async fn attempt(&self, url: &str, post: Option<(&str, &IdempotencyKey)>) -> Attempt {
        let request = match post {
            Some((body, key)) => self
                .http
                .post(url)
                .header("Idempotency-Key", key.as_str())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.to_owned()),
            None => self.http.get(url),
        };
        let sent = request.bearer_auth(&self.api_key).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Attempt::Failed { error: StripeError::Transport(e.to_string()), should_retry: None },
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => return Attempt::Failed { error: StripeError::Transport(e.to_string()), should_retry: None },
        };
        if status.is_success() {
            return Attempt::Done { status: status.as_u16(), body: bytes };
        }
        Attempt::Failed { error: api_error(status, &headers, &bytes), should_retry: should_retry(&headers) }
    }
}

enum Attempt {
    Done { status: u16, body: Vec<u8> },
    Failed { error: StripeError, should_retry: Option<bool> },
}

/// `Stripe-Should-Retry: true|false`, when present.
fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match headers.get("stripe-should-retry")?.to_str().ok()? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn api_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> StripeError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<String>,
        decline_code: Option<String>,
        message: Option<String>,
        param: Option<String>,
    }
    let request_id = headers.get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let error = match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => ApiError {
            status: status.as_u16(),
            kind: StripeErrorType::parse(error.kind.as_deref().unwrap_or("api_error")),
            code: error.code,
            decline_code: error.decline_code,
            message: error.message.unwrap_or_default(),
            param: error.param,
            request_id,
        },
        // Not Stripe's shape (a proxy's error page): keep the start of it for the log.
        Err(_) => ApiError {
            status: status.as_u16(),
            kind: StripeErrorType::ApiError,
            code: None,
            decline_code: None,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            param: None,
            request_id,
        },
    };
    StripeError::Api(Box::new(error))
}

/// `metadata` plus `tenant_id`, which always wins: matching events to tenants depends on it.
fn tenant_metadata(tenant_id: &TenantId, metadata: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut all = metadata.clone();
    all.insert(METADATA_TENANT_ID.into(), tenant_id.as_str().to_owned());
    all
}

/// An id that goes into a URL path: Stripe ids are `[A-Za-z0-9_]`, and nothing else may reach the path.
fn path_id(id: &str) -> Result<&str, StripeError> {
    let valid = !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(id)
    } else {
        Err(StripeError::InvalidRequest(format!("not a Stripe id: {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_paths_are_checked() {
        assert!(path_id("in_1Pgc6tB7WZ01zgkWu9fdqL6I").is_ok());
        for bad in ["", "in_1/../customers", "in_1?x=1", "in 1"] {
            assert!(path_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_are_header_safe() {
        assert!(IdempotencyKey::new("inv_1:finalize").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new("x".repeat(256)).is_err());
    }

    #[test]
    fn the_client_needs_a_key_and_an_http_base() {
        assert!(matches!(StripeClient::new("", "https://api.stripe.com"), Err(StripeError::Config(_))));
        assert!(matches!(StripeClient::new("sk_test_1", "api.stripe.com"), Err(StripeError::Config(_))));
        let client = StripeClient::new("sk_test_secret", "https://api.stripe.com/").expect("valid");
        assert!(!format!("{client:?}").contains("sk_test_secret"));
    }
}
