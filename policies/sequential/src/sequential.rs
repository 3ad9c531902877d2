//! The sequential judge's IO edge: its settings, the four queries of an interval, and the evidence it keeps.

use serde::Deserialize;

use crate::evidence::{Evidence, Finding, Interval};
use crate::fledge::policy::metrics;
use crate::fledge::policy::types::{MetricVerdict, PolicyError, Rollout, Verdict};

/// The name of the check this policy adds to every analysis.
pub const CHECK: &str = "sequential-error-rate";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    #[serde(default = "default_margin")]
    margin: f64,
    #[serde(default = "default_alpha")]
    alpha: f64,
    target: Option<String>,
    window: Option<String>,
}

fn default_margin() -> f64 {
    0.2
}

fn default_alpha() -> f64 {
    0.05
}

/// Validated settings.
#[derive(Debug)]
pub struct Settings {
    /// The null's rate ratio: the canary may err up to this many times as often as the primary.
    pub bound: f64,
    pub alpha: f64,
    pub target: String,
    pub window: String,
}

impl Settings {
    pub fn parse(rollout: &Rollout) -> Result<Self, PolicyError> {
        let text = if rollout.config.trim().is_empty() {
            "{}"
        } else {
            &rollout.config
        };
        let config: Config = serde_json::from_str(text)
            .map_err(|e| PolicyError::InvalidConfig(format!("sequential policy config: {e}")))?;
        if !(config.margin >= 0.0 && config.margin <= 10.0) {
            return Err(PolicyError::InvalidConfig("margin must be within 0..=10".into()));
        }
        if !(config.alpha > 0.0 && config.alpha < 0.5) {
            return Err(PolicyError::InvalidConfig("alpha must be within (0, 0.5)".into()));
        }
        let interval = rollout.analysis.interval_seconds.max(1);
        Ok(Self {
            bound: 1.0 + config.margin,
            alpha: config.alpha,
            target: config.target.unwrap_or_else(|| rollout.name.clone()),
            window: config.window.unwrap_or_else(|| format!("{interval}s")),
        })
    }
}

/// The evidence the policy left in its state (none yet: no evidence).
pub fn remembered(rollout: &Rollout) -> Evidence {
    rollout
        .state
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Requests (or, with `errors`, 5xx responses) `workload` served over the window, as Istio counts them.
pub fn count_query(namespace: &str, workload: &str, window: &str, errors: bool) -> String {
    let code = if errors { r#",response_code=~"5.*""# } else { "" };
    format!(
        r#"sum(increase(istio_requests_total{{reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{workload}"{code}}}[{window}]))"#
    )
}

fn count(query: &str) -> Result<f64, String> {
    let series = metrics::instant_query(query)?;
    // No series: nothing was served (or erred) in the window.
    Ok(series
        .iter()
        .filter_map(|s| s.samples.last())
        .map(|s| s.value)
        .filter(|v| v.is_finite())
        .sum())
}

/// This interval's counts added to the remembered evidence, and the check's verdict on it.
pub fn judge(rollout: &Rollout, settings: &Settings) -> (MetricVerdict, Evidence) {
    let mut evidence = remembered(rollout);
    let primary = format!("{}-primary", settings.target);
    let ns = rollout.namespace.as_str();
    let measured = (|| -> Result<Interval, String> {
        Ok(Interval {
            canary_errors: count(&count_query(ns, &settings.target, &settings.window, true))?,
            canary_requests: count(&count_query(ns, &settings.target, &settings.window, false))?,
            primary_errors: count(&count_query(ns, &primary, &settings.window, true))?,
            primary_requests: count(&count_query(ns, &primary, &settings.window, false))?,
        })
    })();
    let verdict = |verdict, message| MetricVerdict {
        name: CHECK.into(),
        verdict,
        message,
    };
    let interval = match measured {
        Ok(i) => i,
        // Without the counts nothing is known: a failed check, as Flagger treats a query it cannot run.
        Err(e) => {
            return (
                verdict(Verdict::Fail, format!("error counts query failed: {e}")),
                evidence,
            );
        }
    };
    evidence.add(settings.bound, interval);
    let said = describe_evidence(&evidence, settings);
    let checked = match evidence.finding(settings.alpha) {
        Finding::Worse => verdict(Verdict::Fail, said),
        Finding::NoWorse | Finding::Undecided => verdict(Verdict::Pass, said),
    };
    (checked, evidence)
}

fn describe_evidence(e: &Evidence, s: &Settings) -> String {
    let rate = |errors: f64, requests: f64| {
        if requests > 0.0 {
            100.0 * errors / requests
        } else {
            0.0
        }
    };
    format!(
        "canary {:.2}% vs primary {:.2}% errors over {} informative intervals; e-value worse than {:.2}x: {:.3}, no worse: {:.3} (decides at {:.0})",
        rate(e.canary_errors, e.canary_requests),
        rate(e.primary_errors, e.primary_requests),
        e.intervals,
        s.bound,
        e.e_worse(),
        e.e_no_worse(),
        1.0 / s.alpha
    )
}

/// Why the rollout is rolled back, for the event.
pub fn describe(rollout: &Rollout, s: &Settings) -> String {
    format!(
        "sequential test: the canary errs more than {:.2}x as often as the primary (alpha {}): {}",
        s.bound,
        s.alpha,
        describe_evidence(&remembered(rollout), s)
    )
}
