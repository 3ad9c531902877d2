//! The authoring kit as a newcomer uses it: `fledge policy new --lang <lang>` writes the template that lives
//! in `examples/policies/<lang>/` (byte for byte), the template builds from that directory with its language's
//! toolchain, `fledge policy inspect` shows a WASI-free 0.2 step component, and its scenario passes through
//! `fledge policy test` — which exits non-zero when an expectation is wrong.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fledge(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(args)
        .output()
        .expect("run fledge");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run the toolchain");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `fledge policy new --lang <lang>` into a fresh directory; every file equals the repo's template.
fn new_template(lang: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fledge-template-{lang}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, listing) = fledge(&["policy", "new", "--lang", lang, dir.to_str().expect("path")]);
    assert_eq!(code, Some(0), "{listing}");
    let source = repo().join("examples/policies").join(lang);
    for written in listing.lines().map(Path::new) {
        let name = written.strip_prefix(&dir).expect("inside the new directory");
        assert_eq!(
            std::fs::read(written).expect("written"),
            std::fs::read(source.join(name)).expect("in the repo"),
            "{lang}: {} differs from examples/policies/{lang}",
            name.display()
        );
    }
    assert!(listing.lines().count() >= 6, "{listing}");
    dir
}

/// Builds the template in `dir` as its README says; returns the component.
fn build(lang: &str, dir: &Path) -> PathBuf {
    let out = dir.join("two-passes.wasm");
    match lang {
        "rust" => {
            // A standalone crate, as an author has it; the crates come from cargo's local cache.
            run(Command::new(env!("CARGO"))
                .current_dir(dir)
                .args([
                    "build",
                    "--release",
                    "--offline",
                    "--target",
                    "wasm32-unknown-unknown",
                ])
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET"));
            let module = dir.join("target/wasm32-unknown-unknown/release/two_passes.wasm");
            let (code, printed) = fledge(&[
                "policy",
                "componentize",
                module.to_str().expect("path"),
                "-o",
                out.to_str().expect("path"),
            ]);
            assert_eq!(code, Some(0), "{printed}");
        }
        "python" => {
            let tool = std::env::var("FLEDGE_COMPONENTIZE_PY")
                .expect("FLEDGE_COMPONENTIZE_PY must name componentize-py (make test installs it)");
            run(Command::new(tool)
                .current_dir(dir)
                .args([
                    "-d",
                    "wit",
                    "-w",
                    "step-policy",
                    "componentize",
                    "app",
                    "--stub-wasi",
                    "-o",
                ])
                .arg(&out));
        }
        "javascript" => {
            let jco = std::env::var("FLEDGE_JCO").expect("FLEDGE_JCO must name jco (make test installs it)");
            // The flags of package.json's build script.
            run(Command::new(jco).current_dir(dir).args([
                "componentize",
                "step.js",
                "-w",
                "wit",
                "-n",
                "step-policy",
                "--backend",
                "quickjs",
                "--backend-qjs-stub-wasi",
                "--backend-qjs-disable-async",
                "-o",
                out.to_str().expect("path"),
            ]));
        }
        "go" => {
            // The template's own unit test first, natively, as an author runs it.
            let go = || {
                let mut cmd = Command::new("go");
                cmd.current_dir(dir).env("GOTOOLCHAIN", "local");
                cmd
            };
            run(go().args(["test", "."]));
            let core = dir.join("two-passes.core.wasm");
            run(go()
                .env("GOOS", "wasip1")
                .env("GOARCH", "wasm")
                .args(["build", "-buildmode=c-shared", "-o"])
                .arg(&core)
                .arg("."));
            let (code, printed) = fledge(&[
                "policy",
                "componentize",
                core.to_str().expect("path"),
                "--world",
                "step-policy",
                "-o",
                out.to_str().expect("path"),
            ]);
            assert_eq!(code, Some(0), "{printed}");
        }
        other => panic!("no template for {other}"),
    }
    out
}

fn template_passes_its_scenario(lang: &str) {
    let dir = new_template(lang);
    let component = build(lang, &dir);

    let (code, printed) = fledge(&["policy", "inspect", component.to_str().expect("path")]);
    assert_eq!(code, Some(0), "{printed}");
    let inspected: serde_json::Value = serde_json::from_str(&printed).expect("inspect json");
    assert_eq!(inspected["packageVersion"], "0.2.0", "{lang}");
    assert_eq!(inspected["worlds"], serde_json::json!(["step"]), "{lang}");
    let imports: Vec<&str> = inspected["imports"]
        .as_array()
        .expect("imports")
        .iter()
        .filter_map(|i| i.as_str())
        .collect();
    assert!(
        imports
            .iter()
            .all(|i| ["fledge:policy/log@0.2.0", "fledge:policy/types@0.2.0"].contains(i)),
        "{lang} imports only what the host grants, no WASI: {imports:?}"
    );

    let scenario = dir.join("scenario.yaml");
    let (code, table) = fledge(&[
        "policy",
        "test",
        component.to_str().expect("path"),
        scenario.to_str().expect("path"),
    ]);
    assert_eq!(code, Some(0), "{lang}:\n{table}");
    assert!(table.contains("9 ticks, 0 failed"), "{lang}:\n{table}");

    // A deliberately wrong expectation: the second pass at 20 % steps to 40, not 60.
    let text = std::fs::read_to_string(&scenario).expect("scenario");
    let wrong = text.replace(
        "expect: {verdict: pass, setWeight: 40, state: {weight: 40, passes: 0}}",
        "expect: {verdict: pass, setWeight: 60, state: {weight: 40, passes: 0}}",
    );
    assert_ne!(wrong, text, "the scenario changed");
    std::fs::write(&scenario, wrong).expect("write");
    let (code, table) = fledge(&[
        "policy",
        "test",
        component.to_str().expect("path"),
        scenario.to_str().expect("path"),
    ]);
    assert_eq!(code, Some(1), "{lang}:\n{table}");
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with("3 "))
        .expect("tick 3");
    assert!(line.ends_with('✗') && line.contains("setWeight 40"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "builds a standalone crate from cargo's cache; run with make test"]
fn the_rust_template_from_policy_new_builds_standalone_and_passes_its_scenario() {
    template_passes_its_scenario("rust");
}

#[test]
#[ignore = "needs componentize-py; run with make test"]
fn the_python_template_from_policy_new_builds_and_passes_its_scenario() {
    template_passes_its_scenario("python");
}

#[test]
#[ignore = "builds with the Go toolchain; run with make test"]
fn the_go_template_from_policy_new_builds_and_passes_its_scenario() {
    template_passes_its_scenario("go");
}

#[test]
#[ignore = "needs jco; run with make test"]
fn the_javascript_template_from_policy_new_builds_and_passes_its_scenario() {
    template_passes_its_scenario("javascript");
}
