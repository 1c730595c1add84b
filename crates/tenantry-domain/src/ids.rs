//! Typed identifiers. Every id is a prefixed, time-ordered UUIDv7 so ids sort by creation and say what
//! they name (`ten_…`, `doc_…`). Parsing checks the prefix, so a document id can never be used as a tenant
//! id by accident.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Accepts only a well-formed id of this kind (prefix, then 32 lowercase hex digits).
            pub fn parse(raw: &str) -> Option<Self> {
                let rest = raw.strip_prefix($prefix)?.strip_prefix('_')?;
                let well_formed = rest.len() == 32
                    && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                well_formed.then(|| Self(raw.to_owned()))
            }

            /// Wraps a value read back from our own store, which only ever holds ids we generated.
            pub fn from_trusted(raw: String) -> Self {
                Self(raw)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A customer organisation.
    TenantId,
    "ten"
);
prefixed_id!(
    /// An uploaded document.
    DocumentId,
    "doc"
);
prefixed_id!(
    /// The public half of an API key (`tk_<key id>_<secret>`).
    ApiKeyId,
    "key"
);
prefixed_id!(
    /// One GDPR erasure of a tenant, and its deletion certificate.
    ErasureId,
    "era"
);
prefixed_id!(
    /// An invoice.
    InvoiceId,
    "inv"
);
prefixed_id!(
    /// An invoice item waiting for the tenant's next invoice (a plan change's proration), then billed on it.
    InvoiceItemId,
    "ii"
);
prefixed_id!(
    /// A data export archive.
    ExportId,
    "exp"
);
prefixed_id!(
    /// A job in the durable queue.
    JobId,
    "job"
);
prefixed_id!(
    /// A notification in the outbox.
    NotificationId,
    "ntf"
);
prefixed_id!(
    /// A recorded lifecycle or activation event, or a webhook event.
    EventId,
    "evt"
);
prefixed_id!(
    /// A signed-in session of the portal or the console.
    SessionId,
    "ses"
);
prefixed_id!(
    /// A grant of prepaid credit.
    CreditId,
    "crd"
);
prefixed_id!(
    /// A tenant's webhook endpoint.
    WebhookId,
    "whk"
);
prefixed_id!(
    /// One webhook event's delivery to one endpoint.
    DeliveryId,
    "dlv"
);

/// A chunk of a document: the document id plus the chunk's position in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkId(String);

impl ChunkId {
    pub fn new(document: &DocumentId, ordinal: u32) -> Self {
        Self(format!("{document}:{ordinal}"))
    }

    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one HTTP request: the caller's `X-Request-Id` when it is sane, else a generated one. It keys
/// the usage ledger, so a retried request with the same id is never billed twice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    pub const MAX_LEN: usize = 128;

    pub fn generate() -> Self {
        Self(format!("req_{}", uuid::Uuid::now_v7().simple()))
    }

    /// A caller-supplied id is kept if it is short printable ASCII without spaces.
    pub fn from_header(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty() && raw.len() <= Self::MAX_LEN && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_kinds() {
        let doc = DocumentId::generate();
        assert_eq!(DocumentId::parse(doc.as_str()), Some(doc.clone()));
        assert_eq!(TenantId::parse(doc.as_str()), None);
        assert_eq!(DocumentId::parse("doc_../../etc/passwd"), None);
        assert_eq!(DocumentId::parse("doc_"), None);
    }

    #[test]
    fn request_ids_from_headers_are_bounded() {
        assert!(RequestId::from_header("smoke-1").is_some());
        assert!(RequestId::from_header("has space").is_none());
        assert!(RequestId::from_header(&"x".repeat(129)).is_none());
        assert!(RequestId::from_header("").is_none());
    }
}
