//! `fledge policy record <namespace>/<canary>`: the scenario of a real rollout, from the Canary's status
//! (`status.policy.history`: each analysis' weight, check values and verdict), so a new policy version can be
//! replayed with `fledge policy test` against rollouts that already happened.
//!
//! What each tick expects is what happened: the recorded verdict, and the move the controller made next — a
//! step up to the next recorded weight, a hold when the weight stayed, an iteration for blue/green, and at
//! the end promotion (Succeeded) or rollback (Failed). After a failed analysis nothing moved whatever the
//! policy said, so such a tick expects only its verdict.

use serde_json::{Value, json};

use crate::api::{Canary, Phase as CanaryPhase, ValidSpec};
use crate::lifecycle::{CanaryId, State, rollout_of};
use crate::policy::types::{AnalysisRecord, MAX_HISTORY, Verdict};

/// Why a rollout cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}: give <namespace>/<canary>")]
    Name(String),
    #[error("canary {0} has no analysis history yet (status.policy.history is empty)")]
    NoHistory(String),
    #[error("canary {name}: invalid spec: {why}")]
    InvalidSpec { name: String, why: String },
}

/// Splits `namespace/name`.
pub fn parse_name(text: &str) -> Result<(String, String), RecordError> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(RecordError::Name(text.to_owned())),
    }
}

/// Reads `namespace/name` from the cluster of the current kubeconfig and records its scenario.
pub async fn from_cluster(target: &str) -> anyhow::Result<String> {
    let (namespace, name) = parse_name(target)?;
    let client = kube::Client::try_default().await?;
    let canary = kube::Api::<Canary>::namespaced(client, &namespace)
        .get(&name)
        .await
        .map_err(|e| anyhow::anyhow!("canary {target}: {e}"))?;
    Ok(scenario(&canary)?)
}

/// The scenario (YAML) of `canary`'s current or last rollout.
pub fn scenario(canary: &Canary) -> Result<String, RecordError> {
    let name = format!(
        "{}/{}",
        canary.metadata.namespace.as_deref().unwrap_or_default(),
        canary.metadata.name.as_deref().unwrap_or_default()
    );
    let spec = crate::api::validate(&canary.spec).map_err(|e| RecordError::InvalidSpec {
        name: name.clone(),
        why: e.to_string(),
    })?;
    let status = canary.status.as_ref();
    let history: Vec<AnalysisRecord> = status
        .and_then(|s| s.policy.as_ref())
        .map(|p| p.history.clone())
        .unwrap_or_default();
    if history.is_empty() {
        return Err(RecordError::NoHistory(name));
    }
    let id = CanaryId {
        name: canary.metadata.name.clone().unwrap_or_default(),
        namespace: canary.metadata.namespace.clone().unwrap_or_default(),
    };
    let rollout = rollout_of(&id, &spec, &State::default(), 0);
    let ending = status.and_then(|s| s.phase);
    let mut doc = json!({
        "canary": {"name": id.name, "namespace": id.namespace},
        "analysis": serde_json::to_value(&rollout.analysis).unwrap_or(Value::Null),
        "ticks": ticks(&spec, &history, ending),
    });
    if let Ok(config) = serde_json::from_str::<Value>(&spec.policy_config)
        && config.as_object().is_some_and(|o| !o.is_empty())
    {
        doc["config"] = config;
    }
    let truncated = if history.len() >= MAX_HISTORY {
        format!(
            "\n# Only the last {MAX_HISTORY} analyses are kept: the rollout may have started before the first tick."
        )
    } else {
        String::new()
    };
    let body = serde_yaml::to_string(&doc).unwrap_or_default();
    Ok(format!(
        "# Recorded from canary {name} ({} analyses, phase {}) by `fledge policy record`.\n\
         # Replay a policy against it: fledge policy test <component> <this file>{truncated}\n{body}",
        history.len(),
        ending.map_or_else(|| "unknown".to_owned(), |p| format!("{p:?}")),
    ))
}

/// One tick per recorded analysis (and one at weight 0 before the first step, when the rollout began in
/// the history), each expecting what the controller did next.
fn ticks(spec: &ValidSpec, history: &[AnalysisRecord], ending: Option<CanaryPhase>) -> Vec<Value> {
    let iterating = spec.iterations.is_some_and(|n| n > 0);
    let t0 = history.first().map_or(0.0, |h| h.time) - spec.interval.as_secs_f64();
    let mut ticks = Vec::new();
    let first = &history[0];
    if !iterating && first.weight > 0 && history.len() < MAX_HISTORY {
        ticks.push(json!({"weight": 0, "time": 0.0, "expect": {"setWeight": first.weight}}));
    }
    for (i, rec) in history.iter().enumerate() {
        let mut expect = json!({"verdict": verdict_word(rec.verdict)});
        let next = history.get(i + 1);
        let step = match (rec.verdict, next) {
            (Verdict::Fail, None) if ending == Some(CanaryPhase::Failed) => Some(("rollback", json!(true))),
            (Verdict::Fail | Verdict::Inconclusive, _) => None,
            (Verdict::Pass, Some(n)) if n.weight != rec.weight => Some(("setWeight", json!(n.weight))),
            (Verdict::Pass, Some(_)) if iterating => Some(("iterate", json!(true))),
            (Verdict::Pass, Some(_)) => Some(("hold", json!(true))),
            (Verdict::Pass, None) => match ending {
                Some(CanaryPhase::Succeeded | CanaryPhase::Promoting | CanaryPhase::Finalising) => {
                    Some(("promote", json!(true)))
                }
                Some(CanaryPhase::Failed) => Some(("rollback", json!(true))),
                _ => None,
            },
        };
        if let Some((key, value)) = step {
            expect[key] = value;
        }
        let checks: Vec<Value> = rec
            .checks
            .iter()
            .map(|c| {
                let mut check = json!({"name": c.name});
                if let Some(v) = c.value {
                    check["value"] = json!(v);
                }
                if let Some(m) = spec.metrics.iter().find(|m| m.name == c.name) {
                    if let Some(min) = m.range.min {
                        check["min"] = json!(min);
                    }
                    if let Some(max) = m.range.max {
                        check["max"] = json!(max);
                    }
                }
                check
            })
            .collect();
        let mut tick = json!({
            "weight": rec.weight,
            "time": (rec.time - t0).max(0.0),
            "expect": expect,
        });
        if !checks.is_empty() {
            tick["checks"] = Value::Array(checks);
        }
        ticks.push(tick);
    }
    ticks
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::CheckValue;

    fn canary(history: &[(u32, Verdict)], phase: CanaryPhase) -> Canary {
        let mut c: Canary = serde_json::from_value(json!({
            "apiVersion": "fledge.dev/v1alpha1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 2, "stepWeight": 20, "maxWeight": 40,
                    "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]}
            }
        }))
        .expect("canary");
        let mut status = crate::api::CanaryStatus {
            phase: Some(phase),
            ..Default::default()
        };
        status.policy = Some(crate::api::PolicyStatus {
            history: history
                .iter()
                .enumerate()
                .map(|(i, (weight, verdict))| AnalysisRecord {
                    time: 1_000.0 + 60.0 * i as f64,
                    weight: *weight,
                    verdict: *verdict,
                    checks: vec![CheckValue {
                        name: "request-success-rate".into(),
                        value: Some(if *verdict == Verdict::Pass { 99.5 } else { 80.0 }),
                        verdict: *verdict,
                    }],
                })
                .collect(),
            ..Default::default()
        });
        c.status = Some(status);
        c
    }

    #[test]
    fn a_promoted_rollout_records_each_move_the_controller_made() {
        let c = canary(
            &[
                (20, Verdict::Pass),
                (20, Verdict::Fail),
                (20, Verdict::Pass),
                (40, Verdict::Pass),
            ],
            CanaryPhase::Succeeded,
        );
        let text = scenario(&c).expect("recorded");
        let parsed = crate::cli::scenario::parse(&text).expect("a valid scenario");
        assert_eq!(parsed.ticks.len(), 5);
        let expects: Vec<String> = parsed.ticks.iter().map(|t| format!("{:?}", t.expect)).collect();
        assert!(expects[0].contains("SetWeight(20)"), "{expects:?}");
        assert!(expects[1].contains("Hold"), "pass, weight stayed: {expects:?}");
        assert!(
            !expects[2].contains("step: Some"),
            "after a failure only the verdict: {expects:?}"
        );
        assert!(expects[3].contains("SetWeight(40)"), "{expects:?}");
        assert!(expects[4].contains("Promote"), "{expects:?}");
        assert_eq!(parsed.ticks[2].checks[0].min, Some(99.0), "bounds from the spec");
    }

    #[test]
    fn the_default_policy_replays_a_rollout_it_drove() {
        // What the default did: one pass at each weight, a rollback at the second failure.
        let c = canary(
            &[(20, Verdict::Pass), (40, Verdict::Fail), (40, Verdict::Fail)],
            CanaryPhase::Failed,
        );
        let parsed = crate::cli::scenario::parse(&scenario(&c).expect("recorded")).expect("scenario");
        let engine =
            crate::policy::PolicyEngine::new(crate::policy::Limits::default(), None).expect("engine");
        let default = engine
            .load(
                crate::policy::BUILTIN_DEFAULT,
                crate::policy::builtin(crate::policy::BUILTIN_DEFAULT).expect("builtin"),
                crate::policy::Grants::ALL,
            )
            .expect("load");
        let reports = crate::cli::scenario::run(default.as_ref(), default.as_ref(), &parsed);
        assert!(
            reports.iter().all(|r| r.ok),
            "{}",
            crate::cli::scenario::table(&reports)
        );
    }

    #[test]
    fn a_canary_without_history_or_a_bad_name_is_a_clear_error() {
        assert!(matches!(
            scenario(&canary(&[], CanaryPhase::Initialized)),
            Err(RecordError::NoHistory(_))
        ));
        assert!(parse_name("podinfo").is_err());
        assert_eq!(
            parse_name("test/podinfo").ok(),
            Some(("test".into(), "podinfo".into()))
        );
    }
}
