//! Tenants: creation with their first key, reads, config changes and lifecycle transitions (each guarded by
//! an optimistic version check).

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tenantry_domain::lifecycle::LifecycleEvent;
use tenantry_domain::{ApiKeyId, EventId, RetrievalMode, TenantId, TenantState, Timestamp};

use crate::audit::{append_audit_in, NewAuditEntry};
use crate::invoices::{insert_pending_item_in, NewPendingItem};
use crate::jobs::{enqueue_in, NewJob};
use crate::keys::{insert_key, ApiKeyRow, NewApiKey};
use crate::webhooks::{emit_in, NewEvent};
use crate::{conflict_on_unique, parsed, Result, Store, StoreError};

#[derive(Clone, Debug)]
pub struct NewTenant {
    pub id: TenantId,
    pub email: String,
    pub organization: String,
    pub plan: String,
    pub state: TenantState,
    pub model: String,
    pub retrieval_mode: RetrievalMode,
    pub system_prompt: String,
    /// When its trial ends (`None` without one).
    pub trial_ends_at: Option<Timestamp>,
    pub now: Timestamp,
}

#[derive(Clone, Debug)]
pub struct TenantRow {
    pub id: TenantId,
    pub email: String,
    pub organization: String,
    pub plan: String,
    pub state: TenantState,
    pub state_version: i64,
    pub model: String,
    pub retrieval_mode: RetrievalMode,
    pub system_prompt: String,
    pub config_version: i64,
    pub billing_anchor: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// A plan change waiting for background work; the tenant is still on `plan` meanwhile.
    pub pending_plan: Option<String>,
    /// When its trial ends, fixed at signup; `None` without a trial, or for a tenant from before it was
    /// stored (`migrations/0015_trial_end.sql`).
    pub trial_ends_at: Option<Timestamp>,
    /// The spend cap: the most the period's overage may cost, in cents; `None`: no cap.
    pub overage_limit_cents: Option<i64>,
}

/// What `search_tenants` looks for: `text` in the organisation or email (case-insensitive) or as the exact
/// tenant id, and a state and plan; one page of it.
#[derive(Clone, Debug)]
pub struct TenantSearch<'a> {
    pub text: Option<&'a str>,
    pub state: Option<TenantState>,
    pub plan: Option<&'a str>,
    pub order: TenantOrder,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TenantOrder {
    #[default]
    Oldest,
    Newest,
    Organization,
    State,
    Plan,
}

/// `raw` matched literally by `LIKE … ESCAPE '\\'`.
fn escape_like(raw: &str) -> String {
    raw.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A change to a tenant's configuration; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct ConfigChange {
    pub model: Option<String>,
    pub retrieval_mode: Option<RetrievalMode>,
    pub system_prompt: Option<String>,
    /// `Some(None)` removes the spend cap.
    pub overage_limit_cents: Option<Option<i64>>,
}

/// A plan change, computed from the tenant row as read at `config_version` and `state_version`.
#[derive(Clone, Debug)]
pub struct PlanChange {
    pub plan: String,
    /// The model and retrieval mode after the change: the tenant's own when the new plan allows them, else
    /// the new plan's defaults.
    pub model: String,
    pub retrieval_mode: RetrievalMode,
    /// The invoice items the change leaves for the next invoice (its proration).
    pub items: Vec<NewPendingItem>,
    pub expected_config_version: i64,
    pub expected_state_version: i64,
    /// The job kind that closes a billing period. While such a job of the tenant is due, running or waiting
    /// for a retry, the change is refused (`Concurrent`): the close would bill the next period's base price
    /// at a plan the tenant was not on when the period ended.
    pub period_close_kind: String,
    /// The audit entry recording the change: written with it, or not at all.
    pub audit: Option<NewAuditEntry>,
}

const TENANT_COLUMNS: &str = "id, email, organization, plan, state, state_version, model, retrieval_mode, \
     system_prompt, config_version, billing_anchor, created_at, updated_at, pending_plan, trial_ends_at, \
     overage_limit_cents";

fn tenant_from_row(row: &AnyRow) -> Result<TenantRow> {
    Ok(TenantRow {
        id: TenantId::from_trusted(row.try_get("id")?),
        email: row.try_get("email")?,
        organization: row.try_get("organization")?,
        plan: row.try_get("plan")?,
        state: parsed(row, "state", TenantState::parse)?,
        state_version: row.try_get("state_version")?,
        model: row.try_get("model")?,
        retrieval_mode: parsed(row, "retrieval_mode", RetrievalMode::parse)?,
        system_prompt: row.try_get("system_prompt")?,
        config_version: row.try_get("config_version")?,
        billing_anchor: Timestamp(row.try_get("billing_anchor")?),
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        pending_plan: row.try_get("pending_plan")?,
        trial_ends_at: row.try_get::<Option<i64>, _>("trial_ends_at")?.map(Timestamp),
        overage_limit_cents: row.try_get("overage_limit_cents")?,
    })
}

/// The tenant's state inside `tx`, its row locked until `tx` ends on PostgreSQL (SQLite's write transaction
/// already holds the whole database), so writes of one tenant that must see each other are serialised; `None`
/// for an unknown tenant.
pub(crate) async fn lock_tenant_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: crate::Backend,
    tenant: &TenantId,
) -> Result<Option<String>> {
    let sql = match backend {
        crate::Backend::Postgres => "SELECT state FROM tenants WHERE id = $1 FOR UPDATE",
        crate::Backend::Sqlite => "SELECT state FROM tenants WHERE id = $1",
    };
    let row = sqlx::query(sql).bind(tenant.as_str()).fetch_optional(&mut **tx).await?;
    Ok(row.map(|r| r.try_get("state")).transpose()?)
}

impl Store {
    /// Creates the tenant, its first API key and the audit entry recording the signup in one transaction. A
    /// taken email is `Conflict("email")`.
    pub async fn create_tenant(&self, t: &NewTenant, key: &NewApiKey, audit: Option<&NewAuditEntry>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO tenants (id, email, organization, plan, state, model, retrieval_mode, \
             system_prompt, billing_anchor, created_at, updated_at, trial_ends_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(t.id.as_str())
        .bind(&t.email)
        .bind(&t.organization)
        .bind(&t.plan)
        .bind(t.state.as_str())
        .bind(&t.model)
        .bind(t.retrieval_mode.as_str())
        .bind(&t.system_prompt)
        .bind(t.now.0)
        .bind(t.now.0)
        .bind(t.now.0)
        .bind(t.trial_ends_at.map(|at| at.0))
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, "email"))?;
        insert_key(&mut tx, key).await?;
        if let Some(entry) = audit {
            append_audit_in(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A key and its tenant: the gateway's only read per request, one round trip, or on the embedded store
    /// none while neither row has changed since it was last read (`keycache`).
    pub async fn key_with_tenant(&self, key: &ApiKeyId) -> Result<Option<(ApiKeyRow, TenantRow)>> {
        self.ownership.key_with_tenant(self, key).await
    }

    pub(crate) async fn read_key_with_tenant(&self, key: &ApiKeyId) -> Result<Option<(ApiKeyRow, TenantRow)>> {
        let sql = format!(
            "SELECT k.id AS key_id, k.name AS key_name, k.secret_hash, k.scopes, k.created_at AS key_created_at, \
             k.last_used_at, k.revoked_at, {} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1",
            TENANT_COLUMNS.split(", ").map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ")
        );
        let Some(row) = sqlx::query(&sql).bind(key.as_str()).fetch_optional(&self.read).await? else {
            return Ok(None);
        };
        let tenant = tenant_from_row(&row)?;
        let key = ApiKeyRow {
            id: ApiKeyId::from_trusted(row.try_get("key_id")?),
            tenant_id: tenant.id.clone(),
            name: row.try_get("key_name")?,
            secret_hash: row.try_get("secret_hash")?,
            scopes: row.try_get("scopes")?,
            created_at: Timestamp(row.try_get("key_created_at")?),
            last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(Timestamp),
            revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
        };
        Ok(Some((key, tenant)))
    }

    /// Whether an account already uses this email.
    pub async fn email_taken(&self, email: &str) -> Result<bool> {
        let row = sqlx::query("SELECT id FROM tenants WHERE email = $1").bind(email).fetch_optional(&self.read).await?;
        Ok(row.is_some())
    }

    /// Moves a trialing tenant's trial end to `ends_at` and its queued trial-end job (`job_key`) with it, in
    /// one transaction with the audit entry. `Concurrent` when the tenant is no longer trialing at
    /// `expected_state_version` or its trial-end job is no longer waiting (it is ending now).
    pub async fn extend_trial(
        &self,
        id: &TenantId,
        expected_state_version: i64,
        ends_at: Timestamp,
        job_key: &str,
        now: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE tenants SET trial_ends_at = $1, updated_at = $2 \
             WHERE id = $3 AND state = 'trialing' AND state_version = $4",
        )
        .bind(ends_at.0)
        .bind(now.0)
        .bind(id.as_str())
        .bind(expected_state_version)
        .execute(&mut *tx)
        .await?;
        let job = sqlx::query("UPDATE jobs SET run_at = $1 WHERE idempotency_key = $2 AND state = 'queued'")
            .bind(ends_at.0)
            .bind(job_key)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 || job.rows_affected() != 1 {
            return Err(StoreError::Concurrent);
        }
        if let Some(entry) = audit {
            append_audit_in(&mut tx, entry).await?;
        }
        tx.commit().await?;
        self.tenants_changed();
        Ok(())
    }

    /// How many documents the tenant has and how many of its API keys are not revoked.
    pub async fn tenant_counts(&self, id: &TenantId) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM documents WHERE tenant_id = $1) AS documents, \
             (SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL) AS keys",
        )
        .bind(id.as_str())
        .fetch_one(&self.read)
        .await?;
        Ok((row.try_get("documents")?, row.try_get("keys")?))
    }

    /// The tenant whose (lowercased) email this is.
    pub async fn tenant_by_email(&self, email: &str) -> Result<Option<TenantRow>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE email = $1");
        let row = sqlx::query(&sql).bind(email).fetch_optional(&self.read).await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    pub async fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.as_str()).fetch_optional(&self.read).await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    pub async fn tenants(&self, state: Option<TenantState>) -> Result<Vec<TenantRow>> {
        let rows = match state {
            Some(s) => {
                let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE state = $1 ORDER BY created_at");
                sqlx::query(&sql).bind(s.as_str()).fetch_all(&self.read).await?
            }
            None => {
                let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at");
                sqlx::query(&sql).fetch_all(&self.read).await?
            }
        };
        rows.iter().map(tenant_from_row).collect()
    }

    /// One page of the tenants matching `search`, in its order, and how many match in all.
    pub async fn search_tenants(&self, search: &TenantSearch<'_>) -> Result<(Vec<TenantRow>, i64)> {
        let mut clauses: Vec<String> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        if let Some(text) = search.text.map(str::trim).filter(|t| !t.is_empty()) {
            let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
            let n = texts.len() + 1;
            clauses.push(format!(
                "(LOWER(organization) LIKE ${n} ESCAPE '\\' OR LOWER(email) LIKE ${} ESCAPE '\\' OR id = ${})",
                n + 1,
                n + 2
            ));
            texts.extend([pattern.clone(), pattern, text.to_owned()]);
        }
        if let Some(state) = search.state {
            texts.push(state.as_str().to_owned());
            clauses.push(format!("state = ${}", texts.len()));
        }
        if let Some(plan) = search.plan {
            texts.push(plan.to_owned());
            clauses.push(format!("plan = ${}", texts.len()));
        }
        let filter = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        let order = match search.order {
            TenantOrder::Newest => "created_at DESC, id",
            TenantOrder::Oldest => "created_at, id",
            TenantOrder::Organization => "LOWER(organization), id",
            TenantOrder::State => "state, created_at, id",
            TenantOrder::Plan => "plan, created_at, id",
        };
        let page = format!(
            "SELECT {TENANT_COLUMNS} FROM tenants{filter} ORDER BY {order} LIMIT ${} OFFSET ${}",
            texts.len() + 1,
            texts.len() + 2
        );
        let count = format!("SELECT COUNT(*) AS n FROM tenants{filter}");
        let mut page_query = sqlx::query(&page);
        let mut count_query = sqlx::query(&count);
        for text in &texts {
            page_query = page_query.bind(text.as_str());
            count_query = count_query.bind(text.as_str());
        }
        let rows = page_query.bind(search.limit).bind(search.offset).fetch_all(&self.read).await?;
        let total: i64 = count_query.fetch_one(&self.read).await?.try_get("n")?;
        Ok((rows.iter().map(tenant_from_row).collect::<Result<_>>()?, total))
    }

    /// Applies `change` and bumps the config version; returns the new row.
    pub async fn update_config(&self, id: &TenantId, change: &ConfigChange, now: Timestamp) -> Result<TenantRow> {
        let sql = format!(
            "UPDATE tenants SET model = COALESCE($1, model), \
             retrieval_mode = COALESCE($2, retrieval_mode), \
             system_prompt = COALESCE($3, system_prompt), \
             overage_limit_cents = CASE WHEN $4 = 1 THEN $5 ELSE overage_limit_cents END, \
             config_version = config_version + 1, updated_at = $6 \
             WHERE id = $7 RETURNING {TENANT_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(change.model.clone())
            .bind(change.retrieval_mode.map(|m| m.as_str().to_owned()))
            .bind(change.system_prompt.clone())
            .bind(i64::from(change.overage_limit_cents.is_some()))
            .bind(change.overage_limit_cents.flatten())
            .bind(now.0)
            .bind(id.as_str())
            .fetch_optional(&self.write)
            .await?
            .ok_or(StoreError::NotFound)?;
        self.tenants_changed();
        tenant_from_row(&row)
    }

    /// Moves the tenant to another plan, with the model and retrieval mode that plan allows, bumps the config
    /// version, stores the change's pending invoice items and appends its audit entry, all in one transaction.
    /// Only applies if neither the config nor the lifecycle state changed since the caller read them and no
    /// period close is in progress (see [`PlanChange::period_close_kind`]); otherwise `Concurrent` and nothing
    /// is written.
    pub async fn change_plan(&self, id: &TenantId, change: &PlanChange, now: Timestamp) -> Result<TenantRow> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE tenants SET plan = $1, model = $2, retrieval_mode = $3, pending_plan = NULL, \
             config_version = config_version + 1, updated_at = $4 \
             WHERE id = $5 AND config_version = $6 AND state_version = $7 \
             AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.tenant_id = $5 AND jobs.kind = $8 \
             AND (jobs.state = 'running' OR (jobs.state = 'queued' AND (jobs.run_at <= $4 OR jobs.attempts > 0)))) \
             RETURNING {TENANT_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&change.plan)
            .bind(&change.model)
            .bind(change.retrieval_mode.as_str())
            .bind(now.0)
            .bind(id.as_str())
            .bind(change.expected_config_version)
            .bind(change.expected_state_version)
            .bind(&change.period_close_kind)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::Concurrent)?;
        let row = tenant_from_row(&row)?;
        for item in &change.items {
            insert_pending_item_in(&mut tx, id, item, now).await?;
        }
        if let Some(entry) = &change.audit {
            append_audit_in(&mut tx, entry).await?;
        }
        tx.commit().await?;
        self.tenants_changed();
        Ok(row)
    }

    /// Marks a plan change as waiting for background work, enqueues that work and appends the audit entry, in
    /// one transaction; only if the config did not change since the caller read it and no other change is
    /// waiting (else `Concurrent`).
    pub async fn begin_plan_change(
        &self,
        id: &TenantId,
        plan: &str,
        expected_config_version: i64,
        job: &NewJob,
        audit: Option<&NewAuditEntry>,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE tenants SET pending_plan = $1, updated_at = $2 \
             WHERE id = $3 AND config_version = $4 AND pending_plan IS NULL",
        )
        .bind(plan)
        .bind(now.0)
        .bind(id.as_str())
        .bind(expected_config_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Concurrent);
        }
        enqueue_in(&mut tx, job, now).await?;
        if let Some(entry) = audit {
            append_audit_in(&mut tx, entry).await?;
        }
        tx.commit().await?;
        self.tenants_changed();
        Ok(())
    }

    /// Gives up a waiting plan change (its work failed for good, or the tenant left a served state).
    pub async fn abandon_plan_change(&self, id: &TenantId, now: Timestamp) -> Result<()> {
        sqlx::query("UPDATE tenants SET pending_plan = NULL, updated_at = $1 WHERE id = $2")
            .bind(now.0)
            .bind(id.as_str())
            .execute(&self.write)
            .await?;
        self.tenants_changed();
        Ok(())
    }

    /// Moves the tenant through the lifecycle table, records the transition as an event, enqueues the
    /// jobs the new state sets in motion and appends its audit entry, all in one transaction. The update
    /// only applies if the state is still the one the caller read (`expected_version`); otherwise
    /// `Concurrent`, and nothing is written.
    pub async fn transition(
        &self,
        id: &TenantId,
        expected_version: i64,
        from: TenantState,
        event: LifecycleEvent,
        now: Timestamp,
        effects: &TransitionEffects<'_>,
    ) -> Result<TenantState> {
        let mut tx = self.begin_write().await?;
        let to = transition_in(&mut tx, id, expected_version, from, event, now).await?;
        for job in effects.jobs {
            enqueue_in(&mut tx, job, now).await?;
        }
        if let Some(entry) = effects.audit {
            append_audit_in(&mut tx, entry).await?;
        }
        for event in effects.events {
            emit_in(&mut tx, event, now).await?;
        }
        tx.commit().await?;
        self.tenants_changed();
        Ok(to)
    }

    /// Records an activation milestone (`provisioned`, `first_document`, …) the first time it happens;
    /// `false` if the tenant already had it.
    pub async fn record_milestone(&self, id: &TenantId, milestone: &str, now: Timestamp) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO tenant_events (id, tenant_id, event, from_state, to_state, created_at) \
             VALUES ($1, $2, $3, NULL, NULL, $4) ON CONFLICT DO NOTHING",
        )
        .bind(EventId::generate().as_str())
        .bind(id.as_str())
        .bind(milestone)
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The tenant's lifecycle transitions and milestones, oldest first.
    pub async fn tenant_events(&self, id: &TenantId) -> Result<Vec<TenantEvent>> {
        let rows = sqlx::query(
            "SELECT event, from_state, to_state, created_at FROM tenant_events WHERE tenant_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(id.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TenantEvent {
                    event: r.try_get("event")?,
                    from_state: r.try_get("from_state")?,
                    to_state: r.try_get("to_state")?,
                    at: Timestamp(r.try_get("created_at")?),
                })
            })
            .collect()
    }
}

/// What else happens in a lifecycle transition's transaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransitionEffects<'a> {
    /// Jobs the new state sets in motion.
    pub jobs: &'a [NewJob],
    /// The audit entry recording the transition: written with it, or not at all.
    pub audit: Option<&'a NewAuditEntry>,
    /// Webhook events the change causes besides the transition's own (`emit_in`).
    pub events: &'a [NewEvent<'a>],
}

/// A lifecycle transition (`from_state`/`to_state` set) or an activation milestone (both `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantEvent {
    pub event: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub at: Timestamp,
}

/// Applies `event` to the tenant inside `tx` if it is still in `from` at `expected_version` (else
/// `Concurrent`), and records the transition as an event. Returns the new state.
pub(crate) async fn transition_in(
    tx: &mut Transaction<'static, Any>,
    id: &TenantId,
    expected_version: i64,
    from: TenantState,
    event: LifecycleEvent,
    now: Timestamp,
) -> Result<TenantState> {
    let to = from.on(event).ok_or(StoreError::Conflict("transition"))?;
    let done = sqlx::query(
        "UPDATE tenants SET state = $1, state_version = state_version + 1, updated_at = $2 \
         WHERE id = $3 AND state = $4 AND state_version = $5",
    )
    .bind(to.as_str())
    .bind(now.0)
    .bind(id.as_str())
    .bind(from.as_str())
    .bind(expected_version)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Concurrent);
    }
    record_transition_in(tx, id, event, from, to, now).await?;
    Ok(to)
}

/// The `tenant_events` row of a transition, inside `tx`.
pub(crate) async fn record_transition_in(
    tx: &mut Transaction<'static, Any>,
    id: &TenantId,
    event: LifecycleEvent,
    from: TenantState,
    to: TenantState,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_events (id, tenant_id, event, from_state, to_state, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(EventId::generate().as_str())
    .bind(id.as_str())
    .bind(event.as_str())
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(now.0)
    .execute(&mut **tx)
    .await?;
    let change = NewEvent {
        tenant_id: id,
        kind: "tenant.state_changed",
        data: serde_json::json!({"from": from.as_str(), "to": to.as_str(), "event": event.as_str()}),
        dedupe_key: None,
    };
    emit_in(tx, &change, now).await?;
    Ok(())
}
