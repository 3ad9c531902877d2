//! PURE: what `fledge get` prints — a table of Canaries, or one Canary as a tree (phase, weights as a bar,
//! the policy, the last analysis, the gates, the two Deployments, the last events). Plain text, the same on a
//! terminal and in a pipe; the watch view only clears the screen between two of them.

use std::fmt::Write as _;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;

use crate::api::{Canary, WebhookType};

/// The table of `fledge get` without a name.
pub fn table(canaries: &[Canary], with_namespace: bool) -> String {
    let mut rows = vec![{
        let mut head = vec!["NAME", "STATUS", "WEIGHT", "POLICY", "LAST TRANSITION"];
        if with_namespace {
            head.insert(0, "NAMESPACE");
        }
        head.into_iter().map(str::to_owned).collect::<Vec<_>>()
    }];
    for c in canaries {
        let status = c.status.clone().unwrap_or_default();
        let mut row = vec![
            c.metadata.name.clone().unwrap_or_default(),
            phase(c),
            status.canary_weight.to_string(),
            status
                .policy
                .as_ref()
                .map(|p| format!("{}@{}", p.source, short(&p.digest)))
                .unwrap_or_default(),
            status
                .last_transition_time
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        ];
        if with_namespace {
            row.insert(0, c.metadata.namespace.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("   ").trim_end());
    }
    out
}

/// The phase, with the operator's pause when there is one.
fn phase(c: &Canary) -> String {
    let status = c.status.as_ref();
    let phase = status
        .and_then(|s| s.phase)
        .map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}"));
    match status.and_then(|s| s.paused_by.as_deref()) {
        Some(by) => format!("{phase} (paused by {by})"),
        None => phase,
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Twenty cells, one per 5 %.
fn bar(canary_weight: i32) -> String {
    let filled = usize::try_from(canary_weight.clamp(0, 100) / 5).unwrap_or(0);
    format!("{}{}", "█".repeat(filled), "░".repeat(20 - filled))
}

/// One Canary as a tree.
pub fn tree(
    canary: &Canary,
    target: Option<&Deployment>,
    primary: Option<&Deployment>,
    events: &[Event],
) -> String {
    let status = canary.status.clone().unwrap_or_default();
    let name = canary.metadata.name.as_deref().unwrap_or_default();
    let namespace = canary.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = format!("Canary {name} (namespace {namespace})\n");
    let weight = status.canary_weight;
    let _ = writeln!(out, "├─ Status:   {}", phase(canary));
    let _ = writeln!(
        out,
        "├─ Weight:   {} {weight}% canary, {}% primary",
        bar(weight),
        100 - weight.clamp(0, 100)
    );
    if let Some(p) = &status.policy {
        let decision = p
            .last_decision
            .as_deref()
            .map(|d| format!(" (last decision: {d})"))
            .unwrap_or_default();
        let _ = writeln!(out, "├─ Policy:   {}@{}{decision}", p.source, short(&p.digest));
    }
    match &status.analysis {
        Some(a) => {
            let when = a
                .time
                .as_ref()
                .map(|t| format!(" at {}", t.0))
                .unwrap_or_default();
            let _ = writeln!(out, "├─ Analysis: {}{when}", a.verdict);
            for (i, c) in a.checks.iter().enumerate() {
                let last = i + 1 == a.checks.len();
                let value = c
                    .value
                    .map_or_else(|| "no value".to_owned(), |v| format!("{v:.3}"));
                let bounds = match (c.min, c.max) {
                    (Some(min), Some(max)) => format!("[{min}, {max}]"),
                    (Some(min), None) => format!("[min {min}]"),
                    (None, Some(max)) => format!("[max {max}]"),
                    (None, None) => String::new(),
                };
                let _ = writeln!(
                    out,
                    "│  {} {}  {value} {bounds}  {}",
                    if last { "└─" } else { "├─" },
                    c.name,
                    c.verdict
                );
            }
        }
        None => {
            let _ = writeln!(out, "├─ Analysis: none yet");
        }
    }
    let gates: Vec<(String, String)> = canary
        .spec
        .analysis
        .iter()
        .flat_map(|a| a.webhooks.iter())
        .filter(|w| {
            matches!(
                w.type_,
                Some(
                    WebhookType::ConfirmRollout
                        | WebhookType::ConfirmTrafficIncrease
                        | WebhookType::ConfirmPromotion
                )
            )
        })
        .map(|w| {
            let answer = status
                .analysis
                .iter()
                .flat_map(|a| a.webhooks.iter())
                .find(|h| h.name == w.name);
            let state = match answer {
                Some(h) if h.ok => "open".to_owned(),
                Some(h) => format!(
                    "closed{}",
                    h.status_code.map(|c| format!(" ({c})")).unwrap_or_default()
                ),
                None => "not asked yet".to_owned(),
            };
            let kind = w.type_.map(|t| format!("{t:?}")).unwrap_or_default();
            (format!("{} ({kind})", w.name), state)
        })
        .collect();
    if !gates.is_empty() {
        let _ = writeln!(out, "├─ Gates");
        for (i, (gate, state)) in gates.iter().enumerate() {
            let branch = if i + 1 == gates.len() { "└─" } else { "├─" };
            let _ = writeln!(out, "│  {branch} {gate}: {state}");
        }
    }
    let _ = writeln!(out, "├─ Deployments");
    let target_name = canary.spec.target_ref.name.clone();
    for (i, (name, d)) in [(format!("{target_name}-primary"), primary), (target_name, target)]
        .into_iter()
        .enumerate()
    {
        let branch = if i == 1 { "└─" } else { "├─" };
        let line = match d {
            None => "absent".to_owned(),
            Some(d) => {
                let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                let image = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(|p| p.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                format!("{ready}/{replicas} ready  {image}")
            }
        };
        let _ = writeln!(out, "│  {branch} {name}  {line}");
    }
    let mut recent: Vec<&Event> = events.iter().collect();
    recent.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
    });
    let recent: Vec<&Event> = recent.into_iter().rev().take(5).rev().collect();
    let _ = writeln!(out, "└─ Events");
    for (i, e) in recent.iter().enumerate() {
        let branch = if i + 1 == recent.len() { "└─" } else { "├─" };
        let when = e
            .event_time
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0.to_string()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "   {branch} {when}  {}",
            e.note.as_deref().unwrap_or_default()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(status: serde_json::Value) -> Canary {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"name": "podinfo"}, "service": {"port": 9898},
                "analysis": {"webhooks": [
                    {"name": "approve", "type": "confirm-promotion", "url": "http://gate"},
                    {"name": "load", "type": "rollout", "url": "http://load"}
                ]}
            },
            "status": status,
        }))
        .expect("canary")
    }

    #[test]
    fn the_tree_shows_phase_weight_bar_policy_checks_and_gates() {
        let c = canary(serde_json::json!({
            "phase": "WaitingPromotion", "canaryWeight": 40, "pausedBy": "alice",
            "policy": {"source": "builtin:default", "digest": "sha256:0123456789abcdef00", "lastDecision": "promote"},
            "analysis": {"verdict": "pass", "checks": [
                {"name": "request-success-rate", "value": 99.5, "min": 99.0, "verdict": "pass", "message": ""}
            ], "webhooks": [{"name": "approve", "ok": false, "statusCode": 403}]}
        }));
        let text = tree(&c, None, None, &[]);
        assert!(
            text.contains("├─ Status:   WaitingPromotion (paused by alice)"),
            "{text}"
        );
        assert!(
            text.contains("████████░░░░░░░░░░░░ 40% canary, 60% primary"),
            "{text}"
        );
        assert!(
            text.contains("builtin:default@0123456789ab (last decision: promote)"),
            "{text}"
        );
        assert!(
            text.contains("└─ request-success-rate  99.500 [min 99]  pass"),
            "{text}"
        );
        assert!(
            text.contains("approve (ConfirmPromotion): closed (403)"),
            "{text}"
        );
        assert!(!text.contains("load"), "a rollout hook is not a gate: {text}");
        assert!(text.contains("├─ podinfo-primary  absent"), "{text}");
    }

    #[test]
    fn the_table_lines_up_its_columns() {
        let text = table(&[canary(serde_json::json!({"phase": "Succeeded"}))], true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAMESPACE   NAME      STATUS"), "{text}");
        assert!(lines[1].starts_with("test        podinfo   Succeeded"), "{text}");
    }
}
