//! Conversions between the plain Rust contract (`types.rs`) and the generated bindings of each contract
//! version, and the checks that an answer is one the controller may act on. The shapes both versions share
//! are converted by one macro; what 0.2 added is written out below it.

use super::error::PolicyError;
use super::types::*;

/// The conversions of every type that is the same in each contract version.
macro_rules! shared {
    ($version:ident) => {
        pub mod $version {
            use super::super::bindings::$version::{metrics as wit_metrics, types as wit};
            use super::super::error::PolicyError;
            use super::super::types::*;

            pub(crate) fn settings(a: &AnalysisSettings) -> wit::AnalysisSettings {
                wit::AnalysisSettings {
                    interval_seconds: a.interval_seconds,
                    threshold: a.threshold,
                    max_weight: a.max_weight,
                    step_weight: a.step_weight,
                    step_weights: a.step_weights.clone(),
                    step_weight_promotion: a.step_weight_promotion,
                    iterations: a.iterations,
                    has_match: a.has_match,
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
            pub(crate) fn refused(e: wit::PolicyError) -> PolicyError {
                let (kind, message) = match e {
                    wit::PolicyError::InvalidConfig(m) => ("invalid-config", m),
                    wit::PolicyError::Unsupported(m) => ("unsupported", m),
                    wit::PolicyError::Internal(m) => ("internal", m),
                };
                PolicyError::Refused { kind, message }
            }

            /// Validates a step answer: weights must be percentages.
            pub(crate) fn step_decision(d: wit::StepDecision) -> Result<StepDecision, PolicyError> {
                Ok(match d {
                    wit::StepDecision::SetWeight(w) => StepDecision::SetWeight {
                        weight: super::check_weight(w, "canary weight")?,
                    },
                    wit::StepDecision::Iterate => StepDecision::Iterate,
                    wit::StepDecision::Hold(reason) => StepDecision::Hold { reason },
                    wit::StepDecision::Promote => StepDecision::Promote,
                    wit::StepDecision::Rollback(reason) => StepDecision::Rollback { reason },
                })
            }

            pub(crate) fn gate_decision(d: wit::GateDecision) -> GateDecision {
                match d {
                    wit::GateDecision::Open => GateDecision::Open,
                    wit::GateDecision::Closed(reason) => GateDecision::Closed { reason },
                    wit::GateDecision::Rollback(reason) => GateDecision::Rollback { reason },
                }
            }

            pub(crate) fn verdict(v: wit::Verdict) -> Verdict {
                match v {
                    wit::Verdict::Pass => Verdict::Pass,
                    wit::Verdict::Fail => Verdict::Fail,
                    wit::Verdict::Inconclusive => Verdict::Inconclusive,
                }
            }

            /// The per-metric verdicts are the policy's to give (it may, say, ignore a flaky metric).
            pub(crate) fn metric_verdicts(metrics: Vec<wit::MetricVerdict>) -> Vec<MetricVerdict> {
                metrics
                    .into_iter()
                    .map(|m| MetricVerdict {
                        name: m.name,
                        verdict: verdict(m.verdict),
                        message: m.message,
                    })
                    .collect()
            }
        }
    };
}

shared!(v0_1);
shared!(v0_2);

fn check_weight(weight: u32, what: &str) -> Result<u32, PolicyError> {
    if weight > 100 {
        return Err(PolicyError::InvalidAnswer {
            message: format!("{what} {weight} is outside 0..=100"),
        });
    }
    Ok(weight)
}

/// A state a policy returned, if the host may keep it: JSON text of at most [`MAX_STATE_BYTES`].
pub fn checked_state(state: Option<String>) -> Result<Option<String>, PolicyError> {
    let Some(text) = state else { return Ok(None) };
    if text.len() > MAX_STATE_BYTES {
        return Err(PolicyError::InvalidAnswer {
            message: format!(
                "state is {} bytes, over the {MAX_STATE_BYTES}-byte cap: keep counters and summaries, not samples",
                text.len()
            ),
        });
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
        return Err(PolicyError::InvalidAnswer {
            message: format!("state is not JSON: {e}"),
        });
    }
    Ok(Some(text))
}

mod v0_1_only {
    use super::super::bindings::v0_1::types as wit;
    use super::super::types::*;

    impl From<&Rollout> for wit::Rollout {
        fn from(r: &Rollout) -> Self {
            Self {
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                phase: r.phase.into(),
                canary_weight: r.canary_weight,
                iterations: r.iterations,
                failed_checks: r.failed_checks,
                analysis: super::v0_1::settings(&r.analysis),
                config: r.config.clone(),
            }
        }
    }
}

/// What 0.2 added: the rollout's memory (state, history, time at weight) and answers that carry state.
pub mod v0_2_only {
    use super::super::bindings::v0_2::types as wit;
    use super::super::error::PolicyError;
    use super::super::types::*;
    use super::v0_2::{gate_decision, metric_verdicts, step_decision, verdict};

    impl From<Verdict> for wit::Verdict {
        fn from(v: Verdict) -> Self {
            match v {
                Verdict::Pass => Self::Pass,
                Verdict::Fail => Self::Fail,
                Verdict::Inconclusive => Self::Inconclusive,
            }
        }
    }

    impl From<&Rollout> for wit::Rollout {
        fn from(r: &Rollout) -> Self {
            Self {
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                phase: r.phase.into(),
                canary_weight: r.canary_weight,
                iterations: r.iterations,
                failed_checks: r.failed_checks,
                analysis: super::v0_2::settings(&r.analysis),
                config: r.config.clone(),
                intervals_at_weight: r.intervals_at_weight,
                seconds_in_phase: r.seconds_in_phase,
                revision: r.revision.clone(),
                state: r.state.clone(),
                history: r
                    .history
                    .iter()
                    .map(|h| wit::AnalysisRecord {
                        time: h.time,
                        weight: h.weight,
                        verdict: h.verdict.into(),
                        checks: h
                            .checks
                            .iter()
                            .map(|c| wit::CheckValue {
                                name: c.name.clone(),
                                value: c.value,
                                verdict: c.verdict.into(),
                            })
                            .collect(),
                    })
                    .collect(),
            }
        }
    }

    pub(crate) fn step_answer(a: wit::StepAnswer) -> Result<Answer<StepDecision>, PolicyError> {
        Ok(Answer {
            decision: step_decision(a.decision)?,
            state: super::checked_state(a.state)?,
        })
    }

    pub(crate) fn gate_answer(a: wit::GateAnswer) -> Result<Answer<GateDecision>, PolicyError> {
        Ok(Answer {
            decision: gate_decision(a.decision),
            state: super::checked_state(a.state)?,
        })
    }

    pub(crate) fn analysis_answer(r: wit::AnalysisResult) -> Result<Answer<AnalysisResult>, PolicyError> {
        Ok(Answer {
            decision: AnalysisResult {
                verdict: verdict(r.verdict),
                metrics: metric_verdicts(r.metrics),
            },
            state: super::checked_state(r.state)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_over_four_kib_is_an_invalid_answer() {
        let big = format!("\"{}\"", "x".repeat(MAX_STATE_BYTES));
        assert!(matches!(
            checked_state(Some(big)),
            Err(PolicyError::InvalidAnswer { .. })
        ));
        let fits = format!("\"{}\"", "x".repeat(MAX_STATE_BYTES - 2));
        assert_eq!(checked_state(Some(fits.clone())).ok(), Some(Some(fits)));
    }

    #[test]
    fn a_state_that_is_not_json_is_an_invalid_answer() {
        assert!(matches!(
            checked_state(Some("passes=2".into())),
            Err(PolicyError::InvalidAnswer { .. })
        ));
        assert_eq!(checked_state(None).ok(), Some(None));
    }
}
