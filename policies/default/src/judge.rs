//! Flagger's gates and metric analysis: a gate opens when every webhook said yes; a metric passes when its
//! value lies inside its threshold range, bounds inclusive; no value is a failure.

use crate::fledge::policy::types::{
    AnalysisResult, GateDecision, GateKind, MetricCheck, MetricVerdict, Rollout, Verdict, WebhookOutcome,
};

/// Opens the gate when all of its webhooks succeeded (a gate without webhooks is open).
pub fn gate(rollout: &Rollout, kind: GateKind, hooks: &[WebhookOutcome]) -> GateDecision {
    match hooks.iter().find(|h| !h.ok) {
        None => GateDecision::Open,
        Some(hook) => {
            let what = match kind {
                GateKind::ConfirmRollout => "advancement waiting for approval",
                GateKind::ConfirmTrafficIncrease => "advancement waiting for traffic increase approval",
                GateKind::ConfirmPromotion => "advancement waiting for promotion approval",
            };
            GateDecision::Closed(format!(
                "Halt {}.{} {what} {}",
                rollout.name, rollout.namespace, hook.name
            ))
        }
    }
}

/// Judges every metric and rollout webhook; any failure fails the analysis.
pub fn analysis(rollout: &Rollout, checks: &[MetricCheck], hooks: &[WebhookOutcome]) -> AnalysisResult {
    let mut metrics: Vec<MetricVerdict> = checks.iter().map(|c| check(rollout, c)).collect();
    metrics.extend(hooks.iter().map(|h| MetricVerdict {
        name: h.name.clone(),
        verdict: if h.ok { Verdict::Pass } else { Verdict::Fail },
        message: if h.ok {
            format!("webhook {} succeeded", h.name)
        } else {
            format!("webhook {} failed: {}", h.name, h.message)
        },
    }));
    let verdict = if metrics.iter().any(|m| m.verdict == Verdict::Fail) {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    AnalysisResult {
        verdict,
        metrics,
        state: None,
    }
}

/// Flagger's built-in Istio checks, named as in a Canary's `analysis.metrics`.
const SUCCESS_RATE: &str = "request-success-rate";
const DURATION: &str = "request-duration";

/// A check's verdict, worded as Flagger's events are ("success rate 91.23% < 99%").
fn check(rollout: &Rollout, c: &MetricCheck) -> MetricVerdict {
    let builtin = c.name == SUCCESS_RATE || c.name == DURATION;
    let no_values = || {
        if builtin {
            format!(
                "no values found for istio metric {} probably {}.{} is not receiving traffic",
                c.name, rollout.name, rollout.namespace
            )
        } else {
            format!("no values found for custom metric: {}", c.name)
        }
    };
    let (verdict, message) = match (&c.error, c.value) {
        (Some(error), _) => (Verdict::Fail, format!("metric {} query failed: {error}", c.name)),
        (None, None) => (Verdict::Fail, no_values()),
        (None, Some(v)) if v.is_nan() => (Verdict::Fail, no_values()),
        (None, Some(v)) => match (c.range.min, c.range.max) {
            (Some(min), _) if v < min => (Verdict::Fail, below(&c.name, v, min)),
            (_, Some(max)) if v > max => (Verdict::Fail, above(&c.name, v, max)),
            _ => (Verdict::Pass, format!("{} {v:.2} within range", c.name)),
        },
    };
    MetricVerdict {
        name: c.name.clone(),
        verdict,
        message,
    }
}

fn below(name: &str, v: f64, min: f64) -> String {
    match name {
        SUCCESS_RATE => format!("success rate {v:.2}% < {min}%"),
        _ => format!("{name} {v:.2} < {min}"),
    }
}

fn above(name: &str, v: f64, max: f64) -> String {
    match name {
        DURATION => format!("request duration {v:.0}ms > {max}ms"),
        _ => format!("{name} {v:.2} > {max}"),
    }
}
