//! Notifications through an outbox: a templated message is stored together with the job that delivers it, so
//! a crash can delay a message but never lose it, and a dedupe key makes asking twice harmless. Delivery
//! writes the message as an RFC 5322 file into the tenant's spool directory (`tenants/<id>/outbox/`, removed
//! with the tenant on erasure), written to a temporary name, synced and renamed, so a half-written message
//! is never visible. With `notifications.smtp_url` set, messages go over SMTP instead.

use std::path::PathBuf;

use tenantry_domain::{NotificationId, TenantId};
use tenantry_store::{NewNotification, NotificationRow, TenantRow};

use crate::jobs::Job;

/// The SMTP transport, when `notifications.smtp_url` is set.
pub(crate) type Smtp = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;

/// Builds the SMTP transport from `notifications.smtp_url` (`None` when empty: the spool is used).
pub(crate) fn smtp_transport(url: &str) -> Result<Option<Smtp>, String> {
    if url.trim().is_empty() {
        return Ok(None);
    }
    Smtp::from_url(url.trim()).map(|b| Some(b.build())).map_err(|e| format!("notifications.smtp_url: {e}"))
}

/// The bare address of a `Name <address>` or `address` mailbox.
fn address(mailbox: &str) -> &str {
    match (mailbox.find('<'), mailbox.rfind('>')) {
        (Some(a), Some(b)) if a < b => mailbox[a + 1..b].trim(),
        _ => mailbox.trim(),
    }
}
use crate::{ServiceError, ServiceResult, Services};

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Template {
    /// No document yet, `nudge_no_document_hours` after provisioning.
    NoDocumentYet,
    /// No question yet, `nudge_no_query_hours` after the first document.
    NoQueryYet,
    /// Questions this week fell to less than half of last week's.
    UsageDropped {
        last_week: u64,
        this_week: u64,
    },
    PaymentFailed {
        invoice_number: String,
        total_cents: i64,
        currency: String,
    },
    SuspendedForNonPayment,
    Cancelled {
        retention_days: u32,
    },
    WinBackOffer {
        discount_percent: u32,
    },
    /// A one-time link that signs the tenant's admin in to the portal.
    SignInLink {
        url: String,
        minutes: u32,
    },
    /// A usage alert threshold was crossed.
    UsageThreshold {
        meter: String,
        percent: u32,
        used: i64,
        limit: i64,
    },
}

impl Template {
    pub fn name(&self) -> &'static str {
        match self {
            Self::NoDocumentYet => "nudge_no_document",
            Self::NoQueryYet => "nudge_no_query",
            Self::UsageDropped { .. } => "usage_dropped",
            Self::PaymentFailed { .. } => "payment_failed",
            Self::SuspendedForNonPayment => "suspended",
            Self::Cancelled { .. } => "cancelled",
            Self::WinBackOffer { .. } => "win_back_offer",
            Self::SignInLink { .. } => "sign_in_link",
            Self::UsageThreshold { .. } => "usage_threshold",
        }
    }

    fn render(&self, organization: &str) -> (String, String) {
        let (subject, text) = match self {
            Self::NoDocumentYet => (
                "Your Tenantry workspace is ready for its first document".to_owned(),
                "Upload a PDF, Markdown, HTML or text file (POST /v1/documents or the portal) and ask your first \
                 question about it."
                    .to_owned(),
            ),
            Self::NoQueryYet => (
                "Ask your first question".to_owned(),
                "Your documents are indexed. Ask a question (POST /v1/query or the portal) and get an answer with \
                 citations."
                    .to_owned(),
            ),
            Self::UsageDropped { last_week, this_week } => (
                "Is Tenantry still answering your questions?".to_owned(),
                format!(
                    "Your team asked {this_week} questions this week, down from {last_week} the week before. If \
                     answers are missing something, upload the documents they should come from, or reply and \
                     tell us."
                ),
            ),
            Self::PaymentFailed { invoice_number, total_cents, currency } => (
                format!("Payment failed for invoice {invoice_number}"),
                format!(
                    "We could not collect {}.{:02} {} for invoice {invoice_number}. We will retry; please update \
                     your payment method to keep your service running.",
                    total_cents / 100,
                    total_cents % 100,
                    currency.to_uppercase()
                ),
            ),
            Self::SuspendedForNonPayment => (
                "Your Tenantry service is suspended".to_owned(),
                "Your invoice is still unpaid after the grace period, so the service is suspended. Paying it \
                 reactivates the service at once; your data is kept."
                    .to_owned(),
            ),
            Self::Cancelled { retention_days } => (
                "Your Tenantry subscription is cancelled".to_owned(),
                format!(
                    "Your subscription is cancelled. Your data is kept for {retention_days} days, during which you \
                     can come back (POST /v1/tenant/reactivate); then it is erased."
                ),
            ),
            Self::WinBackOffer { discount_percent } => (
                format!("Come back with {discount_percent}% off"),
                format!(
                    "Your documents are still here. Reactivate now (POST /v1/tenant/reactivate) and your next \
                     invoice's base price is {discount_percent}% off."
                ),
            ),
            Self::SignInLink { url, minutes } => (
                "Your Tenantry sign-in link".to_owned(),
                format!(
                    "Open this link to sign in to the portal. It works once, within {minutes} minutes:\n\n{url}\n\n\
                     If you did not ask to sign in, ignore this message; nobody can sign in without the link."
                ),
            ),
            Self::UsageThreshold { meter, percent, used, limit } => (
                format!("You have used {percent}% of your {meter} quota"),
                format!(
                    "Your usage of {meter} this billing period reached {used} of the plan's {limit} ({percent}%). \
                     See GET /v1/quotas or the portal; a larger plan raises the limit at once."
                ),
            ),
        };
        (subject, format!("Hello {organization},\n\n{text}\n\n— Tenantry\n"))
    }
}

impl Services {
    /// Queues `template` for the tenant's email, once per `dedupe` key.
    pub(crate) async fn notify(&self, tenant: &TenantRow, template: Template, dedupe: &str) -> ServiceResult<()> {
        let id = NotificationId::generate().as_str().to_owned();
        let (subject, body) = template.render(&tenant.organization);
        let new = NewNotification {
            id: id.clone(),
            tenant_id: tenant.id.clone(),
            template: template.name().to_owned(),
            recipient: tenant.email.clone(),
            subject,
            body,
            dedupe_key: format!("{}:{dedupe}", tenant.id),
        };
        let deliver = Job::Deliver { tenant_id: tenant.id.clone(), notification_id: id }.at(self.clock().now());
        if self.store().queue_notification(&new, &deliver, self.clock().now()).await? {
            tracing::info!(tenant_id = %tenant.id, template = template.name(), "notification queued");
            self.wake_jobs();
        }
        Ok(())
    }

    fn outbox_dir(&self, tenant: &TenantId) -> PathBuf {
        self.inner.data_dir.join("tenants").join(tenant.as_str()).join("outbox")
    }

    /// The `Deliver` job: sends the message over SMTP when configured (a failure is retried by the job, and
    /// the message stays in the outbox until it goes), else writes it into the tenant's spool (idempotent:
    /// same file, same content).
    pub(crate) async fn deliver_notification(&self, id: &str) -> ServiceResult<()> {
        let Some(n) = self.store().notification(id).await? else { return Ok(()) };
        if n.delivered_at.is_some() {
            return Ok(());
        }
        let from = &self.config().notifications.from;
        let message = rfc5322(&n, from);
        if let Some(smtp) = &self.inner.smtp {
            use lettre::AsyncTransport;
            let parse = |a: &str| {
                a.parse::<lettre::Address>().map_err(|e| ServiceError::internal(format!("address {a:?}: {e}")))
            };
            let envelope = lettre::address::Envelope::new(Some(parse(address(from))?), vec![parse(&n.recipient)?])
                .map_err(ServiceError::internal)?;
            smtp.send_raw(&envelope, message.as_bytes()).await.map_err(|e| {
                tracing::warn!(error = %e, "smtp delivery failed");
                ServiceError::new(tenantry_domain::ErrorCode::UpstreamFailed, format!("the mail server failed: {e}"))
            })?;
            self.store().mark_delivered(id, self.clock().now()).await?;
            return Ok(());
        }
        let dir = self.outbox_dir(&n.tenant_id);
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{}.tmp", n.id));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(message.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(format!("{}.eml", n.id)))
        })
        .await
        .map_err(ServiceError::internal)?;
        written.map_err(ServiceError::internal)?;
        self.store().mark_delivered(id, self.clock().now()).await?;
        Ok(())
    }

    pub async fn notifications(&self, tenant: &TenantId) -> ServiceResult<Vec<NotificationRow>> {
        Ok(self.store().notifications(tenant).await?)
    }
}

fn rfc5322(n: &NotificationRow, from: &str) -> String {
    let date = n.created_at.to_datetime().format(&time::format_description::well_known::Rfc2822).unwrap_or_default();
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{}@tenantry>\r\nX-Tenantry-Tenant: {}\r\n\
         X-Tenantry-Template: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
        n.recipient,
        n.subject,
        n.id,
        n.tenant_id,
        n.template,
        n.body.replace('\n', "\r\n")
    )
}
