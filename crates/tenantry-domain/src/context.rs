//! `TenantContext`: the one immutable snapshot of who is asking and under which terms, built by the gateway
//! once per request and passed by reference to every part. No part re-reads the tenant on its own and no part
//! takes a tenant id from a request body: namespaces, models, prompts and limits all come from here.

use std::sync::Arc;

use crate::config::{ModelSpec, Plan};
use crate::ids::{ApiKeyId, RequestId, SessionId, TenantId};
use crate::lifecycle::TenantState;
use crate::quota::BillingPeriod;
use crate::retrieval::RetrievalMode;

#[derive(Clone, Debug)]
pub struct TenantContext {
    pub tenant_id: TenantId,
    pub organization: String,
    pub state: TenantState,
    pub plan: Arc<Plan>,
    pub model: Arc<ModelSpec>,
    pub retrieval_mode: RetrievalMode,
    pub system_prompt: Arc<str>,
    /// Bumped by every change to plan, model, prompt or mode; the context is a snapshot of one version.
    pub config_version: i64,
    /// Whether new documents are embedded too: the plan (or a plan change waiting for its vector index)
    /// offers a mode that searches vectors.
    pub index_vectors: bool,
    pub period: BillingPeriod,
    /// The spend cap: the most the period's overage may cost, in cents; `None`: no cap.
    pub overage_limit_cents: Option<i64>,
    /// Who asks on the tenant's behalf: an API key or a signed-in session.
    pub caller: Caller,
    pub scopes: Scopes,
    /// The id the caller sees (`X-Request-Id`, theirs or ours). For tracing only: callers choose it.
    pub request_id: RequestId,
    /// A server-generated id unique to this request. Ledger rows are keyed by it, so no caller-chosen value
    /// can merge two requests' usage or collide with another tenant's.
    pub operation_id: RequestId,
}

impl TenantContext {
    /// The name of the tenant's search namespace. Derived from the authenticated tenant only.
    pub fn namespace(&self) -> &str {
        self.tenant_id.as_str()
    }
}

/// Who asks on a tenant's behalf; audit entries name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An API key.
    Key(ApiKeyId),
    /// A session of the portal, opened with the admin's password, a sign-in link or an API key.
    Session(SessionId),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(id) => id.fmt(f),
            Self::Session(id) => id.fmt(f),
        }
    }
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Scopes {
    pub query: bool,
    pub ingest: bool,
    pub admin: bool,
}

impl Scopes {
    pub const ALL: Scopes = Scopes { query: true, ingest: true, admin: true };
    pub const NAMES: [&'static str; 3] = ["query", "ingest", "admin"];

    pub fn parse_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Scopes> {
        let mut s = Scopes::default();
        for n in names {
            match n {
                "query" => s.query = true,
                "ingest" => s.ingest = true,
                "admin" => s.admin = true,
                _ => return None,
            }
        }
        Some(s)
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.query {
            v.push("query");
        }
        if self.ingest {
            v.push("ingest");
        }
        if self.admin {
            v.push("admin");
        }
        v
    }
}
