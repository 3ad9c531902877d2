//! fledge's default policy: Flagger's Istio behaviour as a WebAssembly component exporting `step`, `gate`
//! and `analysis` (world `fledge:policy/policy`). The decisions live in pure modules; this file only binds
//! them to the WIT exports.

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
    generate_all,
});

mod config;
mod judge;
mod steps;

use exports::fledge::policy::{analysis, gate, step};
use fledge::policy::types::{
    AnalysisResult, GateAnswer, GateKind, MetricCheck, PolicyError, Rollout, StepAnswer, WebhookOutcome,
};

struct DefaultPolicy;

impl step::Guest for DefaultPolicy {
    fn next(rollout: Rollout) -> Result<StepAnswer, PolicyError> {
        let config = config::Config::parse(&rollout.config)?;
        Ok(StepAnswer {
            decision: steps::next(&rollout, &config),
            // Flagger's behaviour needs no memory beyond the rollout's own counters.
            state: None,
        })
    }
}

impl gate::Guest for DefaultPolicy {
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

impl analysis::Guest for DefaultPolicy {
    fn judge(
        rollout: Rollout,
        checks: Vec<MetricCheck>,
        hooks: Vec<WebhookOutcome>,
    ) -> Result<AnalysisResult, PolicyError> {
        config::Config::parse(&rollout.config)?;
        Ok(judge::analysis(&rollout, &checks, &hooks))
    }
}

export!(DefaultPolicy);
