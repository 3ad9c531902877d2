//! The operator's command line, driven as a user runs it: the `fledge` binary itself.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `fledge <args>` with `stdin`; returns (exit code, stdout).
fn fledge(args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fledge");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("fledge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn lint_passes_the_podinfo_example_and_names_each_problem_of_a_bad_manifest_by_field_path() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/podinfo/");
    let (code, out) = fledge(&["lint", example], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 Canary(s), no problem"), "{out}");

    let bad = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/podinfo/canary.yaml"
    ))
    .expect("example")
    .replace("port: 9898", "port: \"9898\"\n    hostz: [a]");
    let (code, out) = fledge(&["lint", "-"], &bad);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("spec.service.port: must be integer, got a string"),
        "{out}"
    );
    assert!(out.contains("spec.service.hostz: unknown field"), "{out}");
}
