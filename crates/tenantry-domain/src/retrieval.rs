//! Retrieval modes a plan may allow and a tenant may pick.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetrievalMode {
    /// Lexical BM25 over the tenant's chunks.
    Basic,
    /// Hybrid lexical + vector, fused by reciprocal rank and diversified across documents.
    Advanced,
    /// Multi-step: plan sub-questions, retrieve per step (hybrid), merge evidence covering every step.
    Agentic,
}

impl RetrievalMode {
    pub const ALL: [RetrievalMode; 3] = [Self::Basic, Self::Advanced, Self::Agentic];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Advanced => "advanced",
            Self::Agentic => "agentic",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == raw)
    }

    /// Whether this build can serve the mode. Modes that are not built yet are refused at config load
    /// rather than silently served by another mode.
    pub fn is_available(self) -> bool {
        matches!(self, Self::Basic | Self::Advanced | Self::Agentic)
    }
}
