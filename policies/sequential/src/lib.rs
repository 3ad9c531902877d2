//! `builtin:sequential`: judges the canary by an anytime-valid sequential test of its error rate against
//! the primary's (see `evidence.rs`), asking Prometheus itself each interval through the `metrics` import and
//! keeping the evidence in the policy's `state`. It rolls back as soon as the evidence says the canary errs
//! more than `1 + margin` times as often as the primary (at error rate `alpha`), and promotes early once it
//! says the canary does not — instead of waiting for a fixed number of failed checks or of steps.
//!
//! Everything else is the default policy's own source, compiled in: Flagger's stepping, gates, and the
//! Canary's `analysis.metrics` checks (which still count).
//!
//! Config (`analysis.policy.config`): `{"margin": 0.2, "alpha": 0.05, "target": "<workload>", "window": "<interval>s"}`.

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
    generate_all,
});

// One implementation of Flagger's stepping, gates and checks: the default policy's modules.
// Only the default's defaults are used: this policy's own config is about evidence, not steps.
#[allow(dead_code)]
#[path = "../../default/src/config.rs"]
mod config;
#[path = "../../default/src/judge.rs"]
mod judge;
#[path = "../../default/src/steps.rs"]
mod steps;

pub mod evidence;
mod sequential;

use exports::fledge::policy::{analysis, gate, step};
use fledge::policy::types::{
    AnalysisResult, GateAnswer, GateKind, MetricCheck, Phase, PolicyError, Rollout, StepAnswer, StepDecision,
    Verdict, WebhookOutcome,
};

struct Sequential;

impl step::Guest for Sequential {
    fn next(rollout: Rollout) -> Result<StepAnswer, PolicyError> {
        let settings = sequential::Settings::parse(&rollout)?;
        let analysing = matches!(rollout.phase, Phase::Progressing | Phase::WaitingPromotion);
        let decision = match sequential::remembered(&rollout).finding(settings.alpha) {
            evidence::Finding::Worse if analysing => {
                StepDecision::Rollback(sequential::describe(&rollout, &settings))
            }
            evidence::Finding::NoWorse if analysing && rollout.canary_weight > 0 => StepDecision::Promote,
            // The Canary's analysis settings drive the steps; this policy's config is about evidence.
            _ => steps::next(&rollout, &config::Config::default()),
        };
        Ok(StepAnswer {
            decision,
            state: None,
        })
    }
}

impl gate::Guest for Sequential {
    fn decide(
        rollout: Rollout,
        kind: GateKind,
        hooks: Vec<WebhookOutcome>,
    ) -> Result<GateAnswer, PolicyError> {
        Ok(GateAnswer {
            decision: judge::gate(&rollout, kind, &hooks),
            state: None,
        })
    }
}

impl analysis::Guest for Sequential {
    fn judge(
        rollout: Rollout,
        checks: Vec<MetricCheck>,
        hooks: Vec<WebhookOutcome>,
    ) -> Result<AnalysisResult, PolicyError> {
        let settings = sequential::Settings::parse(&rollout)?;
        let mut result = judge::analysis(&rollout, &checks, &hooks);
        let (verdict, evidence) = sequential::judge(&rollout, &settings);
        result.metrics.push(verdict);
        result.verdict = worst(&result.metrics);
        result.state = serde_json::to_string(&evidence).ok();
        Ok(result)
    }
}

fn worst(metrics: &[fledge::policy::types::MetricVerdict]) -> Verdict {
    if metrics.iter().any(|m| m.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if metrics.iter().any(|m| m.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

export!(Sequential);
