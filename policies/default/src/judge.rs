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
pub fn analysis(checks: &[MetricCheck], hooks: &[WebhookOutcome]) -> AnalysisResult {
    let mut metrics: Vec<MetricVerdict> = checks.iter().map(check).collect();
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
    AnalysisResult { verdict, metrics }
}

fn check(c: &MetricCheck) -> MetricVerdict {
    let (verdict, message) = match (&c.error, c.value) {
        (Some(error), _) => (Verdict::Fail, format!("metric {} query failed: {error}", c.name)),
        (None, None) => (Verdict::Fail, format!("no values found for metric {}", c.name)),
        (None, Some(v)) if v.is_nan() => (
            Verdict::Fail,
            format!("no values found for metric {} (NaN)", c.name),
        ),
        (None, Some(v)) => match (c.range.min, c.range.max) {
            (Some(min), _) if v < min => (
                Verdict::Fail,
                format!("metric {} value {v} < threshold min {min}", c.name),
            ),
            (_, Some(max)) if v > max => (
                Verdict::Fail,
                format!("metric {} value {v} > threshold max {max}", c.name),
            ),
            _ => (Verdict::Pass, format!("metric {} value {v} within range", c.name)),
        },
    };
    MetricVerdict {
        name: c.name.clone(),
        verdict,
        message,
    }
}
