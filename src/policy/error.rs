//! Everything that can go wrong loading or calling a policy component.

use thiserror::Error;

/// A policy failure. The controller reports it (event, condition, metric labelled by `category()`) and counts
/// it as a failed check for that canary only.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("cannot load policy {source_name}: {message}")]
    Load { source_name: String, message: String },
    #[error("policy {source_name} imports {import}, which is not granted (granted: {granted})")]
    ImportDenied {
        source_name: String,
        import: String,
        granted: String,
    },
    #[error("policy {source_name} does not export {export}")]
    MissingExport { source_name: String, export: String },
    #[error("policy trapped: {message}")]
    Trap { message: String },
    #[error("policy exceeded its deadline of {deadline_ms} ms")]
    Timeout { deadline_ms: u64 },
    #[error("policy exceeded its memory cap of {limit_bytes} bytes")]
    OutOfMemory { limit_bytes: usize },
    #[error("policy gave an invalid answer: {message}")]
    InvalidAnswer { message: String },
    /// The component ran and reported an error of its own (bad config, unsupported rollout).
    #[error("policy refused: {kind}: {message}")]
    Refused { kind: &'static str, message: String },
}

impl PolicyError {
    /// A bounded label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Load { .. } => "load",
            Self::ImportDenied { .. } => "import_denied",
            Self::MissingExport { .. } => "missing_export",
            Self::Trap { .. } => "trap",
            Self::Timeout { .. } => "timeout",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::InvalidAnswer { .. } => "invalid_answer",
            Self::Refused { .. } => "refused",
        }
    }
}
