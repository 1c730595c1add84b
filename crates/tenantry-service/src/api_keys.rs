//! A tenant's API keys: list (metadata only), create (the plaintext shown once), revoke (effective on the
//! next request: every request reads the key row).

use serde::Serialize;
use tenantry_domain::context::Scopes;
use tenantry_domain::{ApiKeyId, ErrorCode, TenantContext, Timestamp};
use tenantry_store::{ApiKeyRow, NewApiKey};
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::{ServiceError, ServiceResult, Services};

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    #[schema(value_type = String)]
    pub key_id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

impl From<ApiKeyRow> for KeyView {
    fn from(k: ApiKeyRow) -> Self {
        Self {
            key_id: k.id,
            name: k.name,
            scopes: k.scopes.split_whitespace().map(str::to_owned).collect(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The key itself. Shown only in this response; only a keyed hash is stored.
    pub api_key: String,
}

pub const MAX_KEY_NAME_CHARS: usize = 100;

impl Services {
    pub async fn list_keys(&self, ctx: &TenantContext) -> ServiceResult<Vec<KeyView>> {
        Ok(self.store().keys(&ctx.tenant_id).await?.into_iter().map(Into::into).collect())
    }

    pub async fn create_key(
        &self,
        ctx: &TenantContext,
        name: &str,
        scopes: Option<Vec<String>>,
    ) -> ServiceResult<CreatedKey> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_KEY_NAME_CHARS {
            return Err(ServiceError::validation(format!("name must be 1 to {MAX_KEY_NAME_CHARS} characters")));
        }
        ServiceError::unless_plain_text("name", name)?;
        let scopes = match scopes {
            None => Scopes::ALL,
            Some(list) => Scopes::parse_list(list.iter().map(String::as_str))
                .filter(|s| *s != Scopes::default())
                .ok_or_else(|| {
                    ServiceError::validation(format!(
                        "scopes must be a non-empty subset of {}",
                        Scopes::NAMES.join(", ")
                    ))
                })?,
        };
        let issued = self.keys().issue();
        let now = self.clock().now();
        let row = NewApiKey {
            id: issued.id,
            tenant_id: ctx.tenant_id.clone(),
            name: name.to_owned(),
            secret_hash: issued.secret_hash,
            scopes: scopes.names().join(" "),
            now,
        };
        let detail = serde_json::json!({"name": row.name, "scopes": row.scopes});
        let request_id = ctx.request_id.to_string();
        let audit = self.audit_entry(
            Actor::Tenant(ctx),
            Some(&ctx.tenant_id),
            "key.created",
            row.id.as_str(),
            detail,
            &request_id,
        );
        self.store().create_key(&row, Some(&audit)).await?;
        tracing::info!(key_id = %row.id, scopes = %row.scopes, "api key created");
        Ok(CreatedKey {
            key: KeyView {
                key_id: row.id,
                name: row.name,
                scopes: scopes.names().into_iter().map(str::to_owned).collect(),
                created_at: now,
                last_used_at: None,
                revoked_at: None,
            },
            api_key: issued.plaintext,
        })
    }

    /// Revokes one of the tenant's keys; another tenant's key id is a 404.
    pub async fn revoke_key(&self, ctx: &TenantContext, raw_id: &str) -> ServiceResult<()> {
        let id = ApiKeyId::parse(raw_id).ok_or_else(|| ServiceError::not_found("key"))?;
        let request_id = ctx.request_id.to_string();
        let audit = self.audit_entry(
            Actor::Tenant(ctx),
            Some(&ctx.tenant_id),
            "key.revoked",
            id.as_str(),
            serde_json::json!({}),
            &request_id,
        );
        let revoked = self.store().revoke_key(&ctx.tenant_id, &id, self.clock().now(), Some(&audit)).await.map_err(
            |e| match e {
                tenantry_store::StoreError::NotFound => ServiceError::not_found("key"),
                tenantry_store::StoreError::LastAdminKey => ServiceError::new(
                    ErrorCode::Conflict,
                    "this is the account's last key with the admin scope; create another admin key before revoking \
                     this one",
                ),
                other => other.into(),
            },
        )?;
        if revoked {
            tracing::info!(key_id = %id, "api key revoked");
        }
        Ok(())
    }
}
