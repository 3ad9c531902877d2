//! The contract is language-neutral: a step policy written in Python (componentize-py) loads and runs
//! in fledge's host like the Rust default does.

mod support;

use std::path::PathBuf;
use std::process::Command;

use fledge::policy::types::{AnalysisSettings, StepDecision};
use fledge::policy::{Grants, Policy};
use support::policy::{engine, rollout};

/// Builds examples/policies/contract-0.1/python-exponential into a component with the componentize-py that `make test` installs.
fn build_python_example() -> Vec<u8> {
    let tool = std::env::var("FLEDGE_COMPONENTIZE_PY")
        .expect("FLEDGE_COMPONENTIZE_PY must name componentize-py (make test installs it)");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("fledge-python-policy-{}.wasm", std::process::id()));
    let status = Command::new(tool)
        .current_dir(root.join("examples/policies/contract-0.1/python-exponential"))
        .args([
            "-d",
            "../../../../wit/v0.1.0",
            "-w",
            "step-policy",
            "componentize",
            "app",
            "--stub-wasi",
            "-o",
        ])
        .arg(&out)
        .status()
        .expect("run componentize-py");
    assert!(status.success(), "componentize-py failed");
    let bytes = std::fs::read(&out).expect("read python component");
    let _ = std::fs::remove_file(&out);
    bytes
}

#[test]
#[ignore = "needs componentize-py; run with make test"]
fn python_exponential_ramp_doubles_to_max_weight_then_promotes() {
    let engine = engine();
    let policy = engine
        .load("python-example", &build_python_example(), Grants::ALL)
        .expect("load python policy");
    assert!(
        policy.imports().iter().all(|i| i.starts_with("fledge:policy/")),
        "WASI-free: {:?}",
        policy.imports()
    );
    let mut r = rollout(AnalysisSettings {
        threshold: 2,
        max_weight: Some(20),
        ..Default::default()
    });
    let mut weights = Vec::new();
    loop {
        match policy.step(&r).expect("python step").decision {
            StepDecision::SetWeight { weight } => {
                weights.push(weight);
                r.canary_weight = weight;
            }
            StepDecision::Promote => break,
            other => panic!("unexpected {other:?} after {weights:?}"),
        }
        assert!(weights.len() < 20, "no promotion: {weights:?}");
    }
    assert_eq!(weights, [1, 2, 4, 8, 16, 20]);

    r.failed_checks = 2;
    assert!(matches!(
        policy.step(&r).expect("step").decision,
        StepDecision::Rollback { .. }
    ));
    r.config = r#"{"factor": 1}"#.into();
    assert_eq!(policy.step(&r).expect_err("bad config").category(), "refused");
}
