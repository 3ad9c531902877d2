//! Hostile and broken components are contained: each fails with its own typed error, the process lives on,
//! and the next call on a good component succeeds.

mod support;

use std::time::Instant;

use fledge::policy::types::{AnalysisSettings, StepDecision};
use fledge::policy::{Grants, Policy, PolicyEngine, PolicyError};
use support::policy::{built_component, default_policy, engine, rollout};

/// Runs the hostile step policy in `mode` and returns its error, then proves a good policy still works.
fn misbehave(engine: &PolicyEngine, mode: &str) -> PolicyError {
    let hostile = engine
        .load("hostile", &built_component("fledge_policy_hostile"), Grants::ALL)
        .expect("load hostile");
    let mut r = rollout(AnalysisSettings::default());
    r.config = mode.into();
    let err = hostile.step(&r).expect_err("hostile call must fail");
    let good = default_policy(engine)
        .step(&rollout(AnalysisSettings::default()))
        .expect("good policy after hostile");
    assert_eq!(good.decision, StepDecision::SetWeight { weight: 20 });
    err
}

#[test]
fn well_behaved_mode_of_the_hostile_component_answers() {
    let engine = engine();
    let hostile = engine
        .load("hostile", &built_component("fledge_policy_hostile"), Grants::ALL)
        .expect("load");
    assert_eq!(
        hostile
            .step(&rollout(AnalysisSettings::default()))
            .expect("step")
            .decision,
        StepDecision::SetWeight { weight: 10 }
    );
}

#[test]
fn endless_loop_times_out_within_twice_the_deadline() {
    let engine = engine();
    let deadline = engine.limits().deadline;
    let hostile = engine
        .load("hostile", &built_component("fledge_policy_hostile"), Grants::ALL)
        .expect("load");
    let mut r = rollout(AnalysisSettings::default());
    r.config = "loop".into();
    let started = Instant::now();
    let err = hostile.step(&r).expect_err("an endless loop must not answer");
    let took = started.elapsed();
    assert!(
        matches!(err, PolicyError::Timeout { deadline_ms: 100 }),
        "{err:?}"
    );
    assert_eq!(err.category(), "timeout");
    assert!(
        took >= deadline && took < deadline * 2,
        "timed out after {took:?}, deadline {deadline:?}"
    );
    // The same component still serves well-formed calls: every call gets a fresh Store.
    r.config = "{}".into();
    assert_eq!(
        hostile.step(&r).expect("next call").decision,
        StepDecision::SetWeight { weight: 10 }
    );
    misbehave(&engine, "loop");
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    let engine = engine();
    let err = misbehave(&engine, "bomb");
    assert!(
        matches!(err, PolicyError::OutOfMemory { limit_bytes } if limit_bytes == 64 << 20),
        "{err:?}"
    );
    assert_eq!(err.category(), "out_of_memory");
}

#[test]
fn a_panicking_policy_is_a_trap() {
    let engine = engine();
    let err = misbehave(&engine, "trap");
    assert!(matches!(err, PolicyError::Trap { .. }), "{err:?}");
    assert_eq!(err.category(), "trap");
}

#[test]
fn weight_150_is_an_invalid_answer() {
    let engine = engine();
    let err = misbehave(&engine, "weight150");
    assert!(
        matches!(&err, PolicyError::InvalidAnswer { message } if message.contains("150")),
        "{err:?}"
    );
    assert_eq!(err.category(), "invalid_answer");
}

#[test]
fn asking_a_step_only_component_for_a_gate_is_a_missing_export() {
    let engine = engine();
    let hostile = engine
        .load("hostile", &built_component("fledge_policy_hostile"), Grants::ALL)
        .expect("load");
    let r = rollout(AnalysisSettings::default());
    let err = hostile
        .gate(&r, fledge::policy::types::GateKind::ConfirmRollout, &[])
        .expect_err("no gate export");
    assert!(
        matches!(&err, PolicyError::MissingExport { export, .. } if export == "fledge:policy/gate"),
        "{err:?}"
    );
    assert_eq!(err.category(), "missing_export");
}

#[test]
fn a_component_exporting_no_policy_interface_fails_to_load() {
    let engine = engine();
    let err = engine
        .load("empty", b"(component)", Grants::ALL)
        .expect_err("nothing exported");
    assert_eq!(err.category(), "missing_export");
    assert!(err.to_string().contains("any of fledge:policy/step"), "{err}");
}

#[test]
fn bytes_that_are_not_a_component_fail_to_load() {
    let engine = engine();
    let err = engine
        .load("garbage", b"\0asm\x01\0\0\0garbage", Grants::ALL)
        .expect_err("not a component");
    assert_eq!(err.category(), "load");
}

#[test]
fn an_import_that_is_not_granted_is_refused_at_load() {
    let engine = engine();
    // Asks for the environment: no policy gets WASI.
    let wasi = br#"(component (import "wasi:cli/environment@0.2.0" (instance)))"#;
    let err = engine
        .load("wants-env", wasi, Grants::ALL)
        .expect_err("wasi is not granted");
    assert!(
        matches!(&err, PolicyError::ImportDenied { import, .. } if import == "wasi:cli/environment@0.2.0")
    );
    // The metrics capability is granted only where a provider is configured.
    let metrics = br#"(component (import "fledge:policy/metrics@0.1.0" (instance)))"#;
    let err = engine
        .load("wants-metrics", metrics, Grants { metrics: false })
        .expect_err("metrics not granted");
    assert_eq!(err.category(), "import_denied");
}

#[test]
fn a_policys_own_limits_tighten_the_engines_and_never_loosen_them() {
    let engine = engine();
    let hostile = engine
        .load("hostile", &built_component("fledge_policy_hostile"), Grants::ALL)
        .expect("load");
    let loose = hostile.with_limits(Some(std::time::Duration::from_secs(5)), Some(1 << 30));
    assert_eq!(
        loose.limits().deadline,
        engine.limits().deadline,
        "capped at the controller's deadline"
    );
    assert_eq!(
        loose.limits().memory_bytes,
        engine.limits().memory_bytes,
        "capped at the controller's memory"
    );

    let tight = hostile.with_limits(Some(std::time::Duration::from_millis(20)), None);
    let mut r = rollout(AnalysisSettings::default());
    r.config = "loop".into();
    let started = Instant::now();
    let err = tight.step(&r).expect_err("an endless loop must not answer");
    assert!(matches!(err, PolicyError::Timeout { deadline_ms: 20 }), "{err:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(80),
        "stopped at its own deadline"
    );
    // Limits come from the engine each time: re-limiting drops the earlier ones.
    assert_eq!(
        tight.with_limits(None, None).limits().deadline,
        engine.limits().deadline
    );
}
