//! The contract's two promises across versions: a component built against `fledge:policy@0.1.0` (the
//! default policy as every earlier controller shipped it, kept as bytes in `tests/fixtures/policies/`) is
//! still served unchanged, and a 0.2 component's `state` lives in the Canary's status, where a controller
//! killed mid-rollout cannot lose it.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fledge::api::{Canary, Phase};
use fledge::policy::Policy;
use fledge::policy::types::{
    AnalysisSettings, MetricCheck, StepDecision, ThresholdRange, Verdict, WebhookOutcome,
};
use fledge::policy::{Grants, PolicyComponent};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;
use support::policy::{default_policy, engine, rollout};

const LIMIT: Duration = Duration::from_secs(90);

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies")
}

fn default_v0_1(engine: &fledge::policy::PolicyEngine) -> std::sync::Arc<PolicyComponent> {
    let bytes = std::fs::read(fixtures().join("default-v0.1.0.wasm")).expect("the 0.1.0 fixture");
    engine
        .load("default-v0.1.0", &bytes, Grants::ALL)
        .expect("a 0.1.0 component loads")
}

#[test]
fn a_0_1_component_answers_as_it_always_did_and_keeps_no_state() {
    let engine = engine();
    let (old, new) = (default_v0_1(&engine), default_policy(&engine));
    assert_eq!(old.package_version(), Some("0.1.0"));
    assert_eq!(old.worlds(), ["step", "gate", "analysis"]);
    assert_eq!(new.package_version(), Some("0.2.0"));

    // Every step decision over a walk of weights and failed checks is the same from both builds.
    let mut r = rollout(AnalysisSettings {
        threshold: 2,
        step_weight: Some(20),
        max_weight: Some(60),
        ..Default::default()
    });
    r.state = Some(r#"{"ignored": "by 0.1"}"#.into());
    for failed in 0..3 {
        for weight in (0..=60).step_by(10) {
            r.canary_weight = weight;
            r.failed_checks = failed;
            let (a, b) = (old.step(&r).expect("0.1 step"), new.step(&r).expect("0.2 step"));
            assert_eq!(a.decision, b.decision, "weight {weight}, failed {failed}");
            assert_eq!(a.state, None, "a 0.1 answer carries no state");
        }
    }
    r.canary_weight = 20;
    r.failed_checks = 0;
    assert_eq!(
        old.step(&r).expect("step").decision,
        StepDecision::SetWeight { weight: 40 }
    );
    let checks = |value| {
        vec![MetricCheck {
            name: "request-success-rate".into(),
            value,
            range: ThresholdRange {
                min: Some(99.0),
                max: None,
            },
            error: None,
        }]
    };
    let hooks = [WebhookOutcome {
        name: "load-test".into(),
        ok: true,
        status_code: Some(200),
        message: String::new(),
    }];
    for value in [Some(99.5), Some(98.0), None] {
        let a = old
            .analyse(&r, &checks(value), &hooks, None)
            .expect("0.1 analysis");
        let b = new
            .analyse(&r, &checks(value), &hooks, None)
            .expect("0.2 analysis");
        assert_eq!(a.decision, b.decision, "{value:?}");
        assert_eq!(a.state, None);
    }
    let judged = old.analyse(&r, &checks(Some(98.0)), &[], None).expect("analysis");
    assert_eq!(judged.decision.verdict, Verdict::Fail);
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn the_0_1_default_built_once_still_drives_a_canary_to_succeeded() {
    let ns = TestNamespace::create("contract-v01").await;
    install_crds(&ns.client).await;
    let controller = start_controller_with_policy_dir(&ns.client, &ns.name, &fixtures());
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    create_canary(
        &ns,
        json!({"interval": "1s", "threshold": 2, "stepWeight": 20, "maxWeight": 40,
               "policy": {"component": "file:default-v0.1.0.wasm"}}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let done = wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    let policy = done.status.and_then(|s| s.policy).expect("status.policy");
    assert_eq!(policy.source, "file:default-v0.1.0.wasm");
    assert_eq!(policy.state, None, "a 0.1 component keeps no state");
    assert_eq!(
        policy.history.iter().map(|h| h.weight).collect::<Vec<_>>(),
        [20, 40],
        "the host records the history for every contract version"
    );
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );
    controller.abort();
}

/// The policy's state in the Canary's status, parsed.
async fn policy_state(ns: &TestNamespace) -> Option<serde_json::Value> {
    let canary = ns.api::<Canary>().get("podinfo").await.ok()?;
    let state = canary.status?.policy?.state?;
    serde_json::from_str(&state).ok()
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_policy_state_lives_in_the_status_and_a_sigkill_mid_rollout_loses_none_of_it() {
    let ns = TestNamespace::create("contract-state").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let mut controller = ControllerProcess::spawn(&ns.name);
    // The Rust template: two passing analyses in a row at each weight, counted in its state.
    create_canary(
        &ns,
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 40,
               "policy": {"component": "file:two_passes.wasm"}}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;

    // One pass counted at 20 %: the controller dies before the second.
    let halfway = json!({"weight": 20, "passes": 1});
    let deadline = Instant::now() + LIMIT;
    while policy_state(&ns).await.as_ref() != Some(&halfway) {
        assert!(
            Instant::now() < deadline,
            "state now {:?}",
            policy_state(&ns).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller.kill();
    assert_eq!(weights(&ns).await, Some((80, 20)));
    // More than an interval without a controller.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        policy_state(&ns).await,
        Some(halfway),
        "the state is in the cluster"
    );
    let _controller = ControllerProcess::spawn(&ns.name);

    let done = wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    let policy = done.status.and_then(|s| s.policy).expect("status.policy");
    // With the count kept, one more pass at 20 % was enough: two analyses at each weight, not three.
    assert_eq!(
        policy
            .history
            .iter()
            .map(|h| (h.weight, h.verdict))
            .collect::<Vec<_>>(),
        [
            (20, Verdict::Pass),
            (20, Verdict::Pass),
            (40, Verdict::Pass),
            (40, Verdict::Pass)
        ]
    );
    assert_eq!(
        policy.state.as_deref().and_then(|s| serde_json::from_str(s).ok()),
        Some(json!({"weight": 40, "passes": 2}))
    );
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );

    // The rollout as a scenario: the policy that drove it replays it; the default, which steps after one
    // pass, does not — what an author checks before shipping a new policy version.
    let recorded = std::env::temp_dir().join(format!("fledge-recorded-{}.yaml", std::process::id()));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fledge"))
            .args(args)
            .output()
            .expect("run fledge");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let file = recorded.to_str().expect("path");
    let (code, printed) = run(&["policy", "record", &format!("{}/podinfo", ns.name), "-o", file]);
    assert_eq!(code, Some(0), "{printed}");
    let template = PathBuf::from(policy_dir()).join("two_passes.wasm");
    let (code, table) = run(&["policy", "test", template.to_str().expect("path"), file]);
    assert_eq!(
        code,
        Some(0),
        "{table}\n{}",
        std::fs::read_to_string(&recorded).unwrap_or_default()
    );
    assert!(table.contains("5 ticks, 0 failed"), "{table}");
    let (code, table) = run(&["policy", "test", "builtin:default", file]);
    assert_eq!(code, Some(1), "{table}");
    let _ = std::fs::remove_file(&recorded);
}
