//! `fledge policy test` as an author runs it: the shipped scenario passes with the real binary and host, and a
//! wrong expectation makes it exit non-zero with the tick that failed.

use std::path::PathBuf;
use std::process::Command;

fn scenario() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/policies/scenarios/default.yaml")
}

fn policy_test(scenario: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(["policy", "test", "builtin:default"])
        .arg(scenario)
        .output()
        .expect("run fledge policy test");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_default_policy_passes_its_shipped_scenario() {
    let (code, table) = policy_test(&scenario());
    assert_eq!(code, Some(0), "{table}");
    assert!(table.contains("7 ticks, 0 failed"), "{table}");
}

#[test]
fn a_wrong_expectation_exits_non_zero_and_names_the_tick() {
    let text = std::fs::read_to_string(scenario()).expect("scenario");
    let wrong = text.replace(
        "expect: {verdict: pass, setWeight: 60}",
        "expect: {verdict: pass, setWeight: 50}",
    );
    assert_ne!(wrong, text, "the scenario changed");
    let path = std::env::temp_dir().join(format!("fledge-wrong-scenario-{}.yaml", std::process::id()));
    std::fs::write(&path, wrong).expect("write");
    let (code, table) = policy_test(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("1 failed"), "{table}");
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("3 "))
        .expect("tick 3");
    assert!(
        line.contains("setWeight 60") && line.contains("setWeight 50") && line.ends_with('✗'),
        "{line}"
    );
}
