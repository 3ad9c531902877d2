//! The default policy component, run through the wasmtime host, reproduces Flagger's Istio semantics.

mod support;

use fledge::policy::Policy;
use fledge::policy::types::*;
use support::policy::{default_policy, engine, rollout};

/// Drives the step world like the controller would (weights fed back) until it stops setting weights.
fn walk(policy: &dyn Policy, mut r: Rollout) -> (Vec<u32>, StepDecision) {
    let mut weights = Vec::new();
    for _ in 0..200 {
        match policy.step(&r).expect("step").decision {
            StepDecision::SetWeight { weight } => {
                weights.push(weight);
                r.canary_weight = weight;
            }
            other => return (weights, other),
        }
    }
    panic!("no end after 200 steps: {weights:?}");
}

fn settings(step_weight: Option<u32>, max_weight: Option<u32>, step_weights: &[u32]) -> AnalysisSettings {
    AnalysisSettings {
        threshold: 5,
        step_weight,
        max_weight,
        step_weights: step_weights.to_vec(),
        ..Default::default()
    }
}

#[test]
fn seed_sequence_steps_by_20_to_max_weight_60_then_promotes() {
    let engine = engine();
    let policy = default_policy(&engine);
    let (weights, end) = walk(&*policy, rollout(settings(Some(20), Some(60), &[])));
    assert_eq!(weights, [20, 40, 60]);
    assert_eq!(end, StepDecision::Promote);
}

#[test]
fn step_weights_walk_1_5_10_50_then_promotes() {
    let engine = engine();
    let policy = default_policy(&engine);
    let (weights, end) = walk(&*policy, rollout(settings(None, None, &[1, 5, 10, 50])));
    assert_eq!(weights, [1, 5, 10, 50]);
    assert_eq!(end, StepDecision::Promote);
}

#[test]
fn max_weight_100_steps_to_100_then_promotes() {
    let engine = engine();
    let policy = default_policy(&engine);
    let (weights, end) = walk(&*policy, rollout(settings(Some(20), Some(100), &[])));
    assert_eq!(weights, [20, 40, 60, 80, 100]);
    assert_eq!(end, StepDecision::Promote);
}

#[test]
fn overshoots_a_max_weight_that_is_not_a_multiple_of_the_step_as_flagger_does() {
    let engine = engine();
    let policy = default_policy(&engine);
    let (weights, _) = walk(&*policy, rollout(settings(Some(20), Some(50), &[])));
    assert_eq!(weights, [20, 40, 60]);
}

#[test]
fn steps_by_20_when_neither_canary_nor_config_sets_a_step() {
    let engine = engine();
    let policy = default_policy(&engine);
    let (weights, end) = walk(&*policy, rollout(settings(None, None, &[])));
    assert_eq!(weights, [20, 40, 60, 80, 100]);
    assert_eq!(end, StepDecision::Promote);
}

#[test]
fn config_sets_the_step_when_the_canary_does_not() {
    let engine = engine();
    let policy = default_policy(&engine);
    let mut r = rollout(settings(None, Some(30), &[]));
    r.config = r#"{"stepWeight": 10}"#.into();
    assert_eq!(walk(&*policy, r).0, [10, 20, 30]);
}

#[test]
fn threshold_2_rolls_back_after_two_failed_analyses() {
    let engine = engine();
    let policy = default_policy(&engine);
    let failing = [MetricCheck {
        name: "request-success-rate".into(),
        value: Some(90.0),
        range: ThresholdRange {
            min: Some(99.0),
            max: None,
        },
        error: None,
    }];
    let mut r = rollout(AnalysisSettings {
        threshold: 2,
        step_weight: Some(20),
        ..Default::default()
    });
    r.canary_weight = 20;
    for expected_failed in 1..=2 {
        // Below the threshold the step keeps going.
        assert!(matches!(
            policy.step(&r).expect("step").decision,
            StepDecision::SetWeight { .. }
        ));
        let judged = policy
            .analyse(&r, &failing, &[], None)
            .expect("analysis")
            .decision;
        assert_eq!(judged.verdict, Verdict::Fail);
        r.failed_checks += 1;
        assert_eq!(r.failed_checks, expected_failed);
    }
    match policy.step(&r).expect("step").decision {
        StepDecision::Rollback { reason } => assert!(reason.contains("threshold"), "{reason}"),
        other => panic!("expected rollback, got {other:?}"),
    }
}

fn success_rate(value: Option<f64>) -> MetricCheck {
    MetricCheck {
        name: "request-success-rate".into(),
        value,
        range: ThresholdRange {
            min: Some(99.0),
            max: None,
        },
        error: None,
    }
}

#[test]
fn success_rate_98_9_fails_a_minimum_of_99_and_99_passes() {
    let engine = engine();
    let policy = default_policy(&engine);
    let r = rollout(AnalysisSettings::default());
    let low = policy
        .analyse(&r, &[success_rate(Some(98.9))], &[], None)
        .expect("analysis")
        .decision;
    assert_eq!(low.verdict, Verdict::Fail);
    assert!(low.metrics[0].message.contains("98.9"), "{:?}", low.metrics);
    let edge = policy
        .analyse(&r, &[success_rate(Some(99.0))], &[], None)
        .expect("analysis")
        .decision;
    assert_eq!(edge.verdict, Verdict::Pass, "bounds are inclusive");
}

#[test]
fn maximum_bound_is_inclusive_too() {
    let engine = engine();
    let policy = default_policy(&engine);
    let r = rollout(AnalysisSettings::default());
    let latency = |v| MetricCheck {
        name: "request-duration".into(),
        value: Some(v),
        range: ThresholdRange {
            min: None,
            max: Some(500.0),
        },
        error: None,
    };
    assert_eq!(
        policy
            .analyse(&r, &[latency(500.0)], &[], None)
            .expect("analysis")
            .decision
            .verdict,
        Verdict::Pass
    );
    assert_eq!(
        policy
            .analyse(&r, &[latency(500.1)], &[], None)
            .expect("analysis")
            .decision
            .verdict,
        Verdict::Fail
    );
}

#[test]
fn no_data_fails_the_analysis() {
    let engine = engine();
    let policy = default_policy(&engine);
    let r = rollout(AnalysisSettings::default());
    for value in [None, Some(f64::NAN)] {
        let judged = policy
            .analyse(&r, &[success_rate(value)], &[], None)
            .expect("analysis")
            .decision;
        assert_eq!(judged.verdict, Verdict::Fail);
        assert!(
            judged.metrics[0].message.contains("no values"),
            "{:?}",
            judged.metrics
        );
    }
}

#[test]
fn a_query_error_fails_the_analysis_with_its_reason() {
    let engine = engine();
    let policy = default_policy(&engine);
    let mut check = success_rate(None);
    check.error = Some("prometheus unreachable".into());
    let judged = policy
        .analyse(&rollout(AnalysisSettings::default()), &[check], &[], None)
        .expect("analysis")
        .decision;
    assert_eq!(judged.verdict, Verdict::Fail);
    assert!(judged.metrics[0].message.contains("prometheus unreachable"));
}

#[test]
fn a_failed_rollout_webhook_fails_the_analysis() {
    let engine = engine();
    let policy = default_policy(&engine);
    let hook = WebhookOutcome {
        name: "load-test".into(),
        ok: false,
        status_code: Some(500),
        message: "boom".into(),
    };
    let judged = policy
        .analyse(
            &rollout(AnalysisSettings::default()),
            &[success_rate(Some(100.0))],
            &[hook],
            None,
        )
        .expect("analysis")
        .decision;
    assert_eq!(judged.verdict, Verdict::Fail);
}

#[test]
fn blue_green_iterates_then_promotes_without_shifting_traffic() {
    let engine = engine();
    let policy = default_policy(&engine);
    let mut r = rollout(AnalysisSettings {
        threshold: 2,
        iterations: Some(3),
        ..Default::default()
    });
    for done in 0..3 {
        r.iterations = done;
        assert_eq!(policy.step(&r).expect("step").decision, StepDecision::Iterate);
    }
    r.iterations = 3;
    assert_eq!(policy.step(&r).expect("step").decision, StepDecision::Promote);
}

#[test]
fn promotion_returns_traffic_at_once_or_by_step_weight_promotion() {
    let engine = engine();
    let policy = default_policy(&engine);
    let mut r = rollout(settings(Some(20), Some(60), &[]));
    r.phase = Phase::Promoting;
    r.canary_weight = 60;
    assert_eq!(
        policy.step(&r).expect("step").decision,
        StepDecision::SetWeight { weight: 0 }
    );
    r.analysis.step_weight_promotion = Some(25);
    let (weights, _) = {
        let mut seen = Vec::new();
        while r.canary_weight > 0 {
            let StepDecision::SetWeight { weight } = policy.step(&r).expect("step").decision else {
                panic!("not a weight")
            };
            seen.push(weight);
            r.canary_weight = weight;
        }
        (seen, ())
    };
    assert_eq!(weights, [35, 10, 0]);
}

#[test]
fn gates_open_when_every_webhook_approves_and_close_naming_the_one_that_did_not() {
    let engine = engine();
    let policy = default_policy(&engine);
    let r = rollout(AnalysisSettings::default());
    let yes = WebhookOutcome {
        name: "ok".into(),
        ok: true,
        status_code: Some(200),
        message: String::new(),
    };
    let no = WebhookOutcome {
        name: "gate".into(),
        ok: false,
        status_code: Some(403),
        message: String::new(),
    };
    assert_eq!(
        policy
            .gate(&r, GateKind::ConfirmRollout, &[])
            .expect("gate")
            .decision,
        GateDecision::Open
    );
    assert_eq!(
        policy
            .gate(&r, GateKind::ConfirmPromotion, std::slice::from_ref(&yes))
            .expect("gate")
            .decision,
        GateDecision::Open
    );
    match policy
        .gate(&r, GateKind::ConfirmRollout, &[yes, no])
        .expect("gate")
        .decision
    {
        GateDecision::Closed { reason } => {
            assert_eq!(reason, "Halt podinfo.test advancement waiting for approval gate");
        }
        other => panic!("expected closed, got {other:?}"),
    }
}

#[test]
fn an_invalid_config_is_refused_with_a_clear_error() {
    let engine = engine();
    let policy = default_policy(&engine);
    let mut r = rollout(AnalysisSettings::default());
    r.config = r#"{"stepWeight": 150}"#.into();
    let err = policy.step(&r).expect_err("stepWeight 150 is invalid");
    assert_eq!(err.category(), "refused");
    assert!(
        err.to_string().contains("stepWeight must be at most 100"),
        "{err}"
    );
    r.config = r#"{"stepweight": 10}"#.into();
    assert!(
        policy
            .step(&r)
            .expect_err("unknown field")
            .to_string()
            .contains("unknown field")
    );
}

#[test]
fn the_default_policy_imports_nothing_from_wasi() {
    let engine = engine();
    let policy = default_policy(&engine);
    assert!(
        policy.imports().iter().all(|i| i.starts_with("fledge:policy/")),
        "{:?}",
        policy.imports()
    );
    assert_eq!(policy.package_version(), Some("0.2.0"));
}
