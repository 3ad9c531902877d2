//! Steps by 20 up to maxWeight (rolling back at the threshold) and opens every gate, like the default; its
//! analysis answers what the config says: `"fail"` fails, `"trap"` panics, anything else passes. Lets the
//! controller's tests drive rollbacks and broken policies without Prometheus.

wit_bindgen::generate!({
    world: "policy",
    path: "../../../wit/v0.1.0",
    generate_all,
});

use exports::fledge::policy::{analysis, gate, step};
use fledge::policy::types::{
    AnalysisResult, GateDecision, GateKind, MetricCheck, MetricVerdict, Phase, PolicyError, Rollout,
    StepDecision, Verdict, WebhookOutcome,
};

struct Scripted;

impl step::Guest for Scripted {
    fn next(r: Rollout) -> Result<StepDecision, PolicyError> {
        if r.phase == Phase::Promoting {
            return Ok(StepDecision::SetWeight(0));
        }
        if r.failed_checks >= r.analysis.threshold.max(1) {
            return Ok(StepDecision::Rollback(format!(
                "failed checks threshold reached {}",
                r.failed_checks
            )));
        }
        if r.canary_weight >= r.analysis.max_weight.unwrap_or(100) {
            return Ok(StepDecision::Promote);
        }
        Ok(StepDecision::SetWeight((r.canary_weight + 20).min(100)))
    }
}

impl gate::Guest for Scripted {
    fn decide(_: Rollout, _: GateKind, _: Vec<WebhookOutcome>) -> Result<GateDecision, PolicyError> {
        Ok(GateDecision::Open)
    }
}

impl analysis::Guest for Scripted {
    fn judge(r: Rollout, _: Vec<MetricCheck>, _: Vec<WebhookOutcome>) -> Result<AnalysisResult, PolicyError> {
        let verdict = match r.config.trim_matches('"') {
            "fail" => Verdict::Fail,
            "trap" => panic!("scripted policy traps on purpose"),
            _ => Verdict::Pass,
        };
        let message = format!("scripted analysis: {verdict:?}");
        Ok(AnalysisResult {
            verdict,
            metrics: vec![MetricVerdict {
                name: "scripted".into(),
                verdict,
                message,
            }],
        })
    }
}

export!(Scripted);
