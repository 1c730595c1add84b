//! Signup, the tenant's own view of itself, and configuration changes.

use serde::Serialize;
use tenantry_domain::context::Scopes;
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{Cents, ErrorCode, InvoiceId, RetrievalMode, TenantContext, TenantId, TenantState, Timestamp};
use tenantry_store::{ConfigChange, NewApiKey, NewTenant, StripeLink, TenantRow};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::{ServiceError, ServiceResult, Services};

pub struct SignupRequest {
    pub email: String,
    pub organization: String,
    pub plan: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignupResult {
    #[schema(value_type = String, example = "ten_0192f0c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub tenant_id: TenantId,
    pub state: TenantState,
    /// Shown once; only its hash is stored.
    pub api_key: String,
    pub checkout_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    pub organization: String,
    pub email: String,
    pub state: TenantState,
    pub plan: String,
    pub config: TenantConfig,
    pub config_version: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// `GET /v1/tenant` (and cancel, reactivate) only: the invoices still open, oldest first, with their
    /// lines — what is owed, shown even to a tenant that cannot read `GET /v1/invoices` yet (`pending_payment`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_invoices: Option<Vec<crate::billing::InvoiceView>>,
}

/// `PATCH /v1/tenant/config`'s answer: the new config at the top level (API.md: "200 with the new config"),
/// beside the whole tenant as `GET /v1/tenant` shows it, config included (what it answered until session 16).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigChanged {
    #[serde(flatten)]
    pub config: TenantConfig,
    #[serde(flatten)]
    pub tenant: TenantView,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TenantConfig {
    pub model: String,
    pub retrieval_mode: RetrievalMode,
    pub system_prompt: String,
    /// The spend cap: the most a period's overage may cost, in cents; `null`: no cap.
    pub overage_limit_cents: Option<i64>,
}

pub struct ConfigUpdate {
    pub model: Option<String>,
    pub retrieval_mode: Option<String>,
    pub system_prompt: Option<String>,
    /// `Some(None)` removes the cap.
    pub overage_limit_cents: Option<Option<i64>>,
}

/// The largest spend cap accepted: ten million in the plan's currency.
pub const MAX_OVERAGE_LIMIT_CENTS: i64 = 1_000_000_000;

pub const MAX_SYSTEM_PROMPT_CHARS: usize = 8_000;

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Services {
    /// Self-service signup. A plan with a trial or no price is provisioned before this returns; a paid plan
    /// waits in `pending_payment` for its first invoice to be paid.
    pub async fn signup(&self, req: SignupRequest) -> ServiceResult<SignupResult> {
        let email = req.email.trim().to_lowercase();
        if !valid_email(&email) {
            return Err(ServiceError::validation("email must be a valid email address"));
        }
        let organization = req.organization.trim().to_owned();
        if organization.is_empty() || organization.chars().count() > 200 {
            return Err(ServiceError::validation("organization must be 1 to 200 characters"));
        }
        ServiceError::unless_plain_text("organization", &organization)?;
        let plan = self
            .catalog()
            .plan(&req.plan)
            .ok_or_else(|| ServiceError::validation(format!("unknown plan {:?}", req.plan)))?
            .clone();

        let now = self.clock().now();
        let tenant_id = TenantId::generate();
        let needs_payment = plan.trial_days == 0 && plan.price.0 > 0;
        let state = if needs_payment { TenantState::PendingPayment } else { TenantState::Provisioning };
        // With Stripe, the Checkout Session comes first: if Stripe fails, nothing is stored.
        let invoice_id = InvoiceId::generate();
        let checkout = if needs_payment {
            if self.store().email_taken(&email).await? {
                return Err(ServiceError::new(ErrorCode::Conflict, "an account with this email already exists"));
            }
            let (_, lines) = self.signup_lines(&plan, now)?;
            let amount = Cents(lines.iter().map(|l| l.amount_cents.0).sum());
            let payment = crate::payments::SignupPayment {
                tenant_id: &tenant_id,
                email: &email,
                plan: &plan.name,
                amount,
                invoice_id: invoice_id.as_str(),
            };
            self.payments().signup_checkout(self, payment).await?
        } else {
            None
        };
        let issued = self.keys().issue();
        let tenant = NewTenant {
            id: tenant_id.clone(),
            email,
            organization,
            plan: plan.name.clone(),
            state,
            model: plan.default_model.clone(),
            retrieval_mode: plan.default_retrieval_mode,
            system_prompt: String::new(),
            // Fixed now, so a plan change during the trial neither ends nor lengthens it.
            trial_ends_at: (plan.trial_days > 0)
                .then(|| now.plus_seconds(i64::from(plan.trial_days) * crate::billing::DAY_SECS)),
            now,
        };
        let key = NewApiKey {
            id: issued.id,
            tenant_id: tenant_id.clone(),
            name: "default".into(),
            secret_hash: issued.secret_hash,
            scopes: Scopes::ALL.names().join(" "),
            now,
        };
        let detail = serde_json::json!({"plan": plan.name, "state": state.as_str(), "first_key": key.id.as_str()});
        let audit =
            self.audit_entry(Actor::System, Some(&tenant_id), "tenant.signed_up", tenant_id.as_str(), detail, "");
        self.store().create_tenant(&tenant, &key, Some(&audit)).await.map_err(|e| match e {
            tenantry_store::StoreError::Conflict(_) => {
                ServiceError::new(ErrorCode::Conflict, "an account with this email already exists")
            }
            other => other.into(),
        })?;
        tracing::info!(tenant_id = %tenant_id, plan = %plan.name, "tenant signed up");

        self.milestone(&tenant_id, "signed_up").await;

        let state = if needs_payment {
            let row = self.tenant_row(&tenant_id).await?;
            self.signup_invoice(&row, Some(invoice_id.clone())).await?;
            if let Some(session) = &checkout {
                let link = StripeLink {
                    object_id: session.id.clone(),
                    kind: "checkout_session".into(),
                    tenant_id: tenant_id.clone(),
                    invoice_id: Some(invoice_id.as_str().to_owned()),
                    url: None,
                };
                self.store().link_stripe_object(&link, now).await?;
            }
            state
        } else {
            self.provision(&tenant_id).await?
        };
        let checkout_url = checkout.and_then(|c| c.url);
        Ok(SignupResult { tenant_id, state, api_key: issued.plaintext, checkout_url })
    }

    /// Moves the tenant out of `provisioning`: to `trialing` on a plan with a trial
    /// that was not paid for up front (its end scheduled: `Services::end_trial`), else `active`; the first
    /// period's close is scheduled in the same transaction. Idempotent: a tenant already past provisioning is left as it is.
    pub(crate) async fn provision(&self, tenant_id: &TenantId) -> ServiceResult<TenantState> {
        let tenant = self.tenant_row(tenant_id).await?;
        if tenant.state != TenantState::Provisioning {
            return Ok(tenant.state);
        }
        let paid_up_front =
            self.store().invoices(tenant_id).await?.iter().any(|i| i.kind == tenantry_domain::InvoiceKind::Signup);
        let trial = !paid_up_front && self.catalog().plan(&tenant.plan).is_some_and(|p| p.trial_days > 0);
        let event = if trial { LifecycleEvent::ProvisionedTrial } else { LifecycleEvent::ProvisionedActive };
        let close = self.period_close_job(&tenant);
        let hours = i64::from(self.config().lifecycle.nudge_no_document_hours);
        let nudge =
            crate::jobs::Job::Nudge { tenant_id: tenant_id.clone(), nudge: crate::lifecycle::Nudge::NoDocument }
                .at(self.clock().now().plus_seconds(hours * 3_600));
        let review_at = self.clock().now().plus_seconds(7 * 86_400);
        let review = crate::jobs::Job::UsageReview { tenant_id: tenant_id.clone(), at_ms: review_at.0 }.at(review_at);
        let mut jobs = vec![close, nudge, review];
        if trial {
            jobs.push(self.trial_end_job(&tenant));
        }
        let row = self.transition_from(&tenant, event, crate::audit::Actor::System, &jobs).await?;
        self.milestone(tenant_id, "provisioned").await;
        Ok(row.state)
    }

    /// The tenant as `GET /v1/tenant` shows it: profile, state, plan, configuration and open invoices.
    pub async fn tenant_view(&self, ctx: &TenantContext) -> ServiceResult<TenantView> {
        let row = self.tenant_row(&ctx.tenant_id).await?;
        let open = self.payable(&ctx.tenant_id, self.store().open_invoices(&ctx.tenant_id).await?).await?;
        Ok(TenantView { open_invoices: Some(open), ..view(row) })
    }

    /// Changes model, retrieval mode or system prompt. Anything the plan does not allow is refused, and
    /// nothing is changed.
    pub async fn update_config(&self, ctx: &TenantContext, update: ConfigUpdate) -> ServiceResult<TenantView> {
        if let Some(m) = &update.model {
            if self.catalog().model(m).is_none() || !ctx.plan.allows_model(m) {
                return Err(ServiceError::validation(format!(
                    "model {m:?} is not available on plan {} (allowed: {})",
                    ctx.plan.name,
                    ctx.plan.models.join(", ")
                )));
            }
        }
        let mode = match &update.retrieval_mode {
            None => None,
            Some(raw) => {
                let allowed = || ctx.plan.retrieval_modes.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
                let mode = RetrievalMode::parse(raw).filter(|m| ctx.plan.allows_mode(*m)).ok_or_else(|| {
                    ServiceError::validation(format!(
                        "retrieval mode {raw:?} is not available on plan {} (allowed: {})",
                        ctx.plan.name,
                        allowed()
                    ))
                })?;
                Some(mode)
            }
        };
        if let Some(p) = &update.system_prompt {
            if p.chars().count() > MAX_SYSTEM_PROMPT_CHARS {
                return Err(ServiceError::validation(format!(
                    "system_prompt must be at most {MAX_SYSTEM_PROMPT_CHARS} characters"
                )));
            }
            ServiceError::unless_plain_text("system_prompt", p)?;
        }
        if let Some(Some(cap)) = update.overage_limit_cents {
            if !(0..=MAX_OVERAGE_LIMIT_CENTS).contains(&cap) {
                return Err(ServiceError::validation(format!(
                    "overage_limit_cents must be between 0 and {MAX_OVERAGE_LIMIT_CENTS}, or null for no cap"
                )));
            }
        }
        let detail = serde_json::json!({
            "model": update.model,
            "retrieval_mode": mode.map(|m| m.as_str()),
            "system_prompt_changed": update.system_prompt.is_some(),
            "overage_limit_cents": update.overage_limit_cents,
        });
        let change = ConfigChange {
            model: update.model,
            retrieval_mode: mode,
            system_prompt: update.system_prompt,
            overage_limit_cents: update.overage_limit_cents,
        };
        let row = self.store().update_config(&ctx.tenant_id, &change, self.clock().now()).await?;
        tracing::info!(config_version = row.config_version, "tenant config changed");
        let request_id = ctx.request_id.to_string();
        self.audit(
            Actor::Tenant(ctx),
            Some(&ctx.tenant_id),
            "config.updated",
            ctx.tenant_id.as_str(),
            detail,
            &request_id,
        )
        .await;
        Ok(view(row))
    }
}

pub(crate) fn view(row: TenantRow) -> TenantView {
    TenantView {
        tenant_id: row.id,
        organization: row.organization,
        email: row.email,
        state: row.state,
        plan: row.plan,
        config: TenantConfig {
            model: row.model,
            retrieval_mode: row.retrieval_mode,
            system_prompt: row.system_prompt,
            overage_limit_cents: row.overage_limit_cents,
        },
        config_version: row.config_version,
        created_at: row.created_at,
        open_invoices: None,
    }
}
