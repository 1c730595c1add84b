//! The states of a tenant's export archive and of an erasure, as stored and as the API shows them.

use serde::Serialize;
use utoipa::ToSchema;

/// Where an export archive is: `pending` while its job builds it, `ready` to download until it expires, then
/// `expired` (the archive deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    Pending,
    Ready,
    Expired,
}

impl ExportStatus {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Ready, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// An erasure: `running` from the request until its job has removed files and analytics and issued the
/// certificate, then `completed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureStatus {
    Running,
    Completed,
}

impl ErasureStatus {
    pub const ALL: [Self; 2] = [Self::Running, Self::Completed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_as_they_are_written() {
        for s in ExportStatus::ALL {
            assert_eq!(ExportStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).expect("json"), s.as_str());
        }
        for s in ErasureStatus::ALL {
            assert_eq!(ErasureStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).expect("json"), s.as_str());
        }
        assert_eq!(ExportStatus::parse("Ready"), None);
    }
}
