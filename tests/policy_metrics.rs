//! A policy that queries Prometheus itself through the `metrics` import: its decisions replay from a
//! recording, and time spent waiting on a query is not charged to its deadline.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fledge::cli::policy::{EvalInput, World, eval};
use fledge::policy::types::*;
use fledge::policy::{Grants, Policy};
use fledge::registry::Auth;
use serde_json::json;
use support::policy::{built_component, engine, rollout};

const COMPONENT: &str = "fledge_policy_relative_errors";

fn component_path() -> String {
    format!("{}/{COMPONENT}.wasm", env!("FLEDGE_POLICY_OUT_DIR"))
}

/// The example's query for `workload` (its contract: 5xx share over `window`, in percent).
fn error_rate(workload: &str) -> String {
    let sel = format!(
        r#"reporter="destination",destination_workload_namespace="test",destination_workload="{workload}""#
    );
    format!(
        r#"sum(rate(istio_requests_total{{{sel},response_code=~"5.*"}}[30s])) / sum(rate(istio_requests_total{{{sel}}}[30s])) * 100"#
    )
}

fn recorded(query: String, value: f64) -> serde_json::Value {
    let series = json!([{"labels": [], "samples": [{"timestamp": 1.0, "value": value}]}]);
    json!({"query": query, "result": series.to_string()})
}

fn replay(canary: f64, primary: f64) -> serde_json::Value {
    let input: EvalInput = serde_json::from_value(json!({
        "rollout": {"name": "podinfo", "namespace": "test", "phase": "Progressing", "canaryWeight": 20,
            "analysis": {"threshold": 2, "stepWeight": 20}, "config": "{\"margin\": 1.0}"},
        "queries": [recorded(error_rate("podinfo"), canary), recorded(error_rate("podinfo-primary"), primary)],
    }))
    .expect("input");
    eval(
        &component_path(),
        &Auth::Anonymous,
        false,
        World::Analysis,
        &input,
    )
    .expect("eval")
}

#[test]
fn a_recorded_decision_replays_to_the_same_verdict() {
    assert_eq!(replay(4.0, 0.0)["verdict"], "fail");
    assert_eq!(replay(0.5, 0.0)["verdict"], "pass");
}

#[test]
fn a_query_missing_from_the_recording_fails_rather_than_asking_prometheus() {
    let input: EvalInput = serde_json::from_value(json!({
        "rollout": {"name": "podinfo", "namespace": "test", "phase": "Progressing", "canaryWeight": 20}
    }))
    .expect("input");
    let out = eval(
        &component_path(),
        &Auth::Anonymous,
        false,
        World::Analysis,
        &input,
    )
    .expect("eval");
    assert_eq!(out["verdict"], "fail");
    assert!(
        out["metrics"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("query not in the recording")),
        "{out}"
    );
}

/// Answers every query after `delay`, with a fixed error rate.
struct Slow {
    delay: Duration,
}

impl MetricsSource for Slow {
    fn instant_query(&self, _: &str) -> Result<Vec<Series>, String> {
        std::thread::sleep(self.delay);
        Ok(vec![Series {
            labels: Vec::new(),
            samples: vec![Sample {
                timestamp: 1.0,
                value: 0.0,
            }],
        }])
    }

    fn range_query(&self, q: &str, _: u32, _: u32) -> Result<Vec<Series>, String> {
        self.instant_query(q)
    }
}

#[test]
fn waiting_on_slow_queries_is_not_charged_to_the_policy_deadline() {
    let engine = engine();
    let policy = engine
        .load(COMPONENT, &built_component(COMPONENT), Grants::ALL)
        .expect("load");
    // Two queries of 150 ms each: 300 ms of waiting against a 100 ms deadline.
    let source: Arc<dyn MetricsSource> = Arc::new(Slow {
        delay: Duration::from_millis(150),
    });
    let result = policy
        .analyse(&rollout(AnalysisSettings::default()), &[], &[], Some(source))
        .expect("not timed out")
        .decision;
    assert_eq!(result.verdict, Verdict::Pass, "{result:?}");
}
