//! Builds the policy components from source (no .wasm is committed): compiles the policy crates for
//! `wasm32-unknown-unknown` with a nested cargo, then wraps each core module as a component. The result is
//! WASI-free: a policy imports nothing but fledge's own interfaces.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, core module file stem) of every component we build.
const POLICIES: &[(&str, &str)] = &[
    ("fledge-policy-default", "fledge_policy_default"),
    ("fledge-policy-sequential", "fledge_policy_sequential"),
    ("fledge-policy-relative-errors", "fledge_policy_relative_errors"),
    ("fledge-policy-hostile", "fledge_policy_hostile"),
    ("fledge-policy-scripted", "fledge_policy_scripted"),
    ("two-passes", "two_passes"),
];
const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for dir in [
        "wit",
        "policies",
        "examples/policies/relative-errors",
        "examples/policies/rust",
        "tests/policies",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let target_dir = root.join("target").join("policies");
    build_modules(&root, &target_dir);
    for (_, stem) in POLICIES {
        let module = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{stem}.wasm"));
        let component = componentize(&module);
        std::fs::write(out.join(format!("{stem}.wasm")), component).expect("write component to OUT_DIR");
    }
    println!("cargo:rustc-env=FLEDGE_POLICY_OUT_DIR={}", out.display());
}

fn build_modules(root: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(target_dir)
        // The outer build's flags are for the host, not for wasm.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        // Under `cargo clippy` the outer build wraps rustc; the components need a plain compile.
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    for (package, _) in POLICIES {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().expect("run cargo for the policy components");
    assert!(
        status.success(),
        "building the policy components failed; is the target installed? run: rustup target add {TARGET}"
    );
}

fn componentize(module: &Path) -> Vec<u8> {
    let bytes = std::fs::read(module).unwrap_or_else(|e| panic!("read {}: {e}", module.display()));
    wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|encoder| encoder.validate(true).encode())
        .unwrap_or_else(|e| panic!("wrap {} as a component: {e:#}", module.display()))
}
