//! The policy contract as plain Rust values: what the controller hands a policy and what it gets back.
//! Mirrors `wit/types.wit`; the wasmtime bindings convert at the boundary (see `convert.rs`).

use serde::{Deserialize, Serialize};

/// The Canary's phase (also the CRD's `status.phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub enum Phase {
    Initializing,
    Initialized,
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
    Terminating,
    Terminated,
}

impl Phase {
    /// A rollout is under way: traffic may be on the canary, and its policy digest is pinned.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            Self::Progressing | Self::WaitingPromotion | Self::Promoting | Self::Finalising
        )
    }

    /// The phase as the status spells it (`Progressing`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// The Canary's `analysis` settings as written (no defaults applied).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisSettings {
    pub interval_seconds: u32,
    pub threshold: u32,
    pub max_weight: Option<u32>,
    pub step_weight: Option<u32>,
    pub step_weights: Vec<u32>,
    pub step_weight_promotion: Option<u32>,
    pub iterations: Option<u32>,
    pub has_match: bool,
}

/// One rollout at one analysis tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    #[serde(default)]
    pub canary_weight: u32,
    #[serde(default)]
    pub iterations: u32,
    #[serde(default)]
    pub failed_checks: u32,
    #[serde(default)]
    pub analysis: AnalysisSettings,
    /// The policy's own configuration as JSON text.
    #[serde(default = "empty_config")]
    pub config: String,
    /// Analysis intervals at the current weight, this one included (contract 0.2).
    #[serde(default)]
    pub intervals_at_weight: u32,
    #[serde(default)]
    pub seconds_in_phase: u32,
    /// The revision being rolled out (the canary's checksum).
    #[serde(default)]
    pub revision: String,
    /// The policy's state from its last answer in this rollout.
    #[serde(default)]
    pub state: Option<String>,
    /// The last analyses of this rollout, oldest first, at most [`MAX_HISTORY`].
    #[serde(default)]
    pub history: Vec<AnalysisRecord>,
}

/// Analyses a policy is shown in `rollout.history`.
pub const MAX_HISTORY: usize = 10;

/// Largest state a policy may keep (bytes of JSON text).
pub const MAX_STATE_BYTES: usize = 4096;

/// One check of a past analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckValue {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub verdict: Verdict,
}

/// One past analysis of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AnalysisRecord {
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub weight: u32,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckValue>,
}

/// A decision and the policy's new state: `None` keeps the previous state, `Some` replaces it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer<T> {
    #[serde(flatten)]
    pub decision: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl<T> Answer<T> {
    /// A decision that leaves the state alone (every 0.1.0 answer).
    pub fn stateless(decision: T) -> Self {
        Self {
            decision,
            state: None,
        }
    }
}

fn empty_config() -> String {
    "{}".to_owned()
}

/// The step world's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum StepDecision {
    SetWeight { weight: u32 },
    Iterate,
    Hold { reason: String },
    Promote,
    Rollback { reason: String },
}

/// Which gate is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateKind {
    ConfirmRollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
}

/// What one webhook answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookOutcome {
    pub name: String,
    pub ok: bool,
    #[serde(default)]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub message: String,
}

/// The gate world's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "gate", rename_all = "camelCase")]
pub enum GateDecision {
    Open,
    Closed { reason: String },
    Rollback { reason: String },
}

/// Inclusive bounds; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// One metric, already queried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricCheck {
    pub name: String,
    pub value: Option<f64>,
    #[serde(default)]
    pub range: ThresholdRange,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricVerdict {
    pub name: String,
    pub verdict: Verdict,
    pub message: String,
}

/// The analysis world's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisResult {
    pub verdict: Verdict,
    pub metrics: Vec<MetricVerdict>,
}

/// One sample of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub timestamp: f64,
    pub value: f64,
}

/// A labelled series, as the `metrics` import returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<Sample>,
}

/// The metrics provider a policy may query through the `metrics` import (Prometheus in the controller).
/// Called from the policy's thread: implementations block until the answer is there.
pub trait MetricsSource: Send + Sync {
    fn instant_query(&self, query: &str) -> Result<Vec<Series>, String>;
    fn range_query(&self, query: &str, window_seconds: u32, step_seconds: u32)
    -> Result<Vec<Series>, String>;
}
