//! Tenantry's domain: identifiers, money, the model and plan catalogue, the tenant context, the
//! lifecycle state table, quota arithmetic, token counting and time. Pure: no I/O here.

pub mod clock;
pub mod config;
pub mod context;
pub mod error;
pub mod ids;
pub mod invoice;
pub mod lifecycle;
pub mod money;
pub mod quota;
pub mod records;
pub mod retrieval;
pub mod testing;
pub mod tokens;

pub use clock::{Clock, SystemClock, TestClock, Timestamp};
pub use config::{Catalog, Config, ModelSpec, Plan, ProviderKind};
pub use context::{Caller, TenantContext};
pub use error::ErrorCode;
pub use ids::{
    ApiKeyId, ChunkId, CreditId, DeliveryId, DocumentId, ErasureId, EventId, ExportId, InvoiceId, InvoiceItemId, JobId,
    NotificationId, RequestId, SessionId, TenantId, WebhookId,
};
pub use invoice::{InvoiceKind, InvoiceStatus};
pub use lifecycle::TenantState;
pub use money::{Cents, Micros};
pub use records::{ErasureStatus, ExportStatus};
pub use retrieval::RetrievalMode;
