//! The contract in JavaScript: examples/policies/contract-0.1/javascript-linear, built from source with jco's QuickJS backend,
//! imports nothing the host does not grant, and passes its scenario through the real host with
//! `fledge policy test`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use fledge::policy::Grants;
use support::policy::engine;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/policies/contract-0.1/javascript-linear")
}

/// Builds the example with the jco that `make test` installs; returns the component's path.
fn build_javascript_example() -> PathBuf {
    let jco = std::env::var("FLEDGE_JCO").expect("FLEDGE_JCO must name jco (make test installs it)");
    let out = std::env::temp_dir().join(format!("fledge-js-policy-{}.wasm", std::process::id()));
    let status = Command::new(jco)
        .current_dir(example())
        .args([
            "componentize",
            "step.js",
            "-w",
            "../../../../wit/v0.1.0",
            "-n",
            "step-policy",
        ])
        .args([
            "--backend",
            "quickjs",
            "--backend-qjs-stub-wasi",
            "--backend-qjs-disable-async",
            "-o",
        ])
        .arg(&out)
        .status()
        .expect("run jco componentize");
    assert!(status.success(), "jco componentize failed");
    out
}

#[test]
#[ignore = "needs jco; run with make test"]
fn a_javascript_policy_built_from_source_imports_only_what_the_host_grants_and_passes_its_scenario() {
    let path = build_javascript_example();
    let bytes = std::fs::read(&path).expect("component");
    let component = engine()
        .load("javascript-example", &bytes, Grants::default())
        .expect("loads with log only");
    assert!(
        component
            .imports()
            .iter()
            .all(|i| i.starts_with("fledge:policy/")),
        "WASI-free: {:?}",
        component.imports()
    );
    assert_eq!(component.worlds(), ["step"]);
    let out = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(["policy", "test"])
        .arg(&path)
        .arg(example().join("scenario.yaml"))
        .output()
        .expect("fledge policy test");
    let table = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("5 ticks, 0 failed"), "{table}");
}
