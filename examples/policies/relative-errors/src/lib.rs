//! An analysis policy that judges the canary against the primary instead of an absolute threshold: it
//! queries Prometheus itself (the `metrics` import) for both workloads' 5xx rate and fails when the canary
//! is worse by more than `margin` percentage points. A canary at 4 % errors passes a "success rate ≥ 95 %"
//! check, but fails here when the primary serves at 0 %.
//!
//! It exports only `analysis` (world `analysis-policy`); fledge asks its default policy for steps and gates.
//!
//! Config (`analysis.policy.config`): `{"margin": 1.0, "window": "30s", "target": "podinfo"}` — `target`
//! defaults to the canary's name, the primary workload is `<target>-primary`.

wit_bindgen::generate!({
    world: "analysis-policy",
    path: "../../../wit",
    generate_all,
});

mod compare;

use exports::fledge::policy::analysis;
use fledge::policy::metrics;
use fledge::policy::types::{
    AnalysisResult, MetricCheck, MetricVerdict, PolicyError, Rollout, Verdict, WebhookOutcome,
};

struct RelativeErrors;

impl analysis::Guest for RelativeErrors {
    fn judge(
        rollout: Rollout,
        checks: Vec<MetricCheck>,
        hooks: Vec<WebhookOutcome>,
    ) -> Result<AnalysisResult, PolicyError> {
        let config = compare::Config::parse(&rollout.config).map_err(PolicyError::InvalidConfig)?;
        let target = config.target.clone().unwrap_or_else(|| rollout.name.clone());
        let rate = |workload: &str| -> Result<Option<f64>, String> {
            let query = compare::error_rate_query(&rollout.namespace, workload, &config.window);
            let series = metrics::instant_query(&query)?;
            Ok(series
                .last()
                .and_then(|s| s.samples.last())
                .map(|s| s.value)
                .filter(|v| !v.is_nan()))
        };
        let canary = rate(&target);
        let primary = rate(&format!("{target}-primary"));
        let mut verdicts = vec![compare::relative(&config, canary, primary)];
        // The canary's own checks and rollout webhooks still count, as in the default policy.
        verdicts.extend(checks.iter().map(compare::in_range));
        verdicts.extend(hooks.iter().map(|h| MetricVerdict {
            name: h.name.clone(),
            verdict: if h.ok { Verdict::Pass } else { Verdict::Fail },
            message: format!("webhook {} answered {:?}", h.name, h.status_code),
        }));
        let verdict = if verdicts.iter().any(|v| v.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if verdicts.iter().any(|v| v.verdict == Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        };
        Ok(AnalysisResult {
            verdict,
            metrics: verdicts,
            state: None,
        })
    }
}

export!(RelativeErrors);
