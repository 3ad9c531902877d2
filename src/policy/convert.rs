//! Conversions between the plain Rust contract (`types.rs`) and the generated bindings, and the checks
//! that an answer is one the controller may act on.

use super::bindings::{metrics as wit_metrics, types as wit};
use super::error::PolicyError;
use super::types::*;

impl From<&Rollout> for wit::Rollout {
    fn from(r: &Rollout) -> Self {
        let a = &r.analysis;
        Self {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            phase: r.phase.into(),
            canary_weight: r.canary_weight,
            iterations: r.iterations,
            failed_checks: r.failed_checks,
            analysis: wit::AnalysisSettings {
                interval_seconds: a.interval_seconds,
                threshold: a.threshold,
                max_weight: a.max_weight,
                step_weight: a.step_weight,
                step_weights: a.step_weights.clone(),
                step_weight_promotion: a.step_weight_promotion,
                iterations: a.iterations,
                has_match: a.has_match,
            },
            config: r.config.clone(),
        }
    }
}

impl From<Phase> for wit::Phase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Initializing => Self::Initializing,
            Phase::Initialized => Self::Initialized,
            Phase::Waiting => Self::Waiting,
            Phase::Progressing => Self::Progressing,
            Phase::WaitingPromotion => Self::WaitingPromotion,
            Phase::Promoting => Self::Promoting,
            Phase::Finalising => Self::Finalising,
            Phase::Succeeded => Self::Succeeded,
            Phase::Failed => Self::Failed,
            Phase::Terminating => Self::Terminating,
            Phase::Terminated => Self::Terminated,
        }
    }
}

impl From<GateKind> for wit::GateKind {
    fn from(k: GateKind) -> Self {
        match k {
            GateKind::ConfirmRollout => Self::ConfirmRollout,
            GateKind::ConfirmTrafficIncrease => Self::ConfirmTrafficIncrease,
            GateKind::ConfirmPromotion => Self::ConfirmPromotion,
        }
    }
}

impl From<&WebhookOutcome> for wit::WebhookOutcome {
    fn from(h: &WebhookOutcome) -> Self {
        Self {
            name: h.name.clone(),
            ok: h.ok,
            status_code: h.status_code,
            message: h.message.clone(),
        }
    }
}

impl From<&MetricCheck> for wit::MetricCheck {
    fn from(c: &MetricCheck) -> Self {
        Self {
            name: c.name.clone(),
            value: c.value,
            range: wit::ThresholdRange {
                min: c.range.min,
                max: c.range.max,
            },
            error: c.error.clone(),
        }
    }
}

impl From<Series> for wit_metrics::Series {
    fn from(s: Series) -> Self {
        Self {
            labels: s.labels,
            samples: s
                .samples
                .into_iter()
                .map(|p| wit_metrics::Sample {
                    timestamp: p.timestamp,
                    value: p.value,
                })
                .collect(),
        }
    }
}

/// The guest's own `policy-error`, as the host reports it.
pub fn refused(e: wit::PolicyError) -> PolicyError {
    let (kind, message) = match e {
        wit::PolicyError::InvalidConfig(m) => ("invalid-config", m),
        wit::PolicyError::Unsupported(m) => ("unsupported", m),
        wit::PolicyError::Internal(m) => ("internal", m),
    };
    PolicyError::Refused { kind, message }
}

fn check_weight(weight: u32, what: &str) -> Result<u32, PolicyError> {
    if weight > 100 {
        return Err(PolicyError::InvalidAnswer {
            message: format!("{what} {weight} is outside 0..=100"),
        });
    }
    Ok(weight)
}

/// Validates a step answer: weights must be percentages.
pub fn step_decision(d: wit::StepDecision) -> Result<StepDecision, PolicyError> {
    Ok(match d {
        wit::StepDecision::SetWeight(w) => StepDecision::SetWeight {
            weight: check_weight(w, "canary weight")?,
        },
        wit::StepDecision::Iterate => StepDecision::Iterate,
        wit::StepDecision::Hold(reason) => StepDecision::Hold { reason },
        wit::StepDecision::Promote => StepDecision::Promote,
        wit::StepDecision::Rollback(reason) => StepDecision::Rollback { reason },
    })
}

pub fn gate_decision(d: wit::GateDecision) -> GateDecision {
    match d {
        wit::GateDecision::Open => GateDecision::Open,
        wit::GateDecision::Closed(reason) => GateDecision::Closed { reason },
        wit::GateDecision::Rollback(reason) => GateDecision::Rollback { reason },
    }
}

fn verdict(v: wit::Verdict) -> Verdict {
    match v {
        wit::Verdict::Pass => Verdict::Pass,
        wit::Verdict::Fail => Verdict::Fail,
        wit::Verdict::Inconclusive => Verdict::Inconclusive,
    }
}

/// An analysis answer; its verdicts are the policy's to give (it may, say, ignore a flaky metric).
pub fn analysis_result(r: wit::AnalysisResult) -> AnalysisResult {
    AnalysisResult {
        verdict: verdict(r.verdict),
        metrics: r
            .metrics
            .into_iter()
            .map(|m| MetricVerdict {
                name: m.name,
                verdict: verdict(m.verdict),
                message: m.message,
            })
            .collect(),
    }
}
