//! Policy resource figures on the real plane with the real (release) `fledge controller` and a real registry:
//! - time from applying a Policy to `Ready=True`, for the default Rust component and the Python example
//!   (pulled from the registry): cold (empty compile cache), after a controller restart (compiled code on
//!   disk), and in memory (a second Policy of the same digest);
//! - controller RSS before and after 20 distinct Policies are loaded.
//!
//! Run with `make figures` (starts and stops the plane). Under `cargo test` it only says how to run it.

// A benchmark's report is its output.
#![allow(clippy::print_stderr, clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use fledge::api::PolicyResource;
use fledge::registry::{Auth, push, sha256};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::{ControllerProcess, install_crds};
use support::registry::OciRegistry;

const LIMIT: Duration = Duration::from_secs(120);
const DISTINCT: usize = 20;

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("policy store figures need the local plane: run `make figures`");
        return;
    }
    let python = std::fs::read(std::env::var("FLEDGE_PYTHON_POLICY").expect("FLEDGE_PYTHON_POLICY"))
        .expect("read the Python example component");
    let rust = fledge::policy::builtin(fledge::policy::BUILTIN_DEFAULT)
        .expect("builtin")
        .to_vec();
    let registry = OciRegistry::start("figures", false).await;
    let mut sources = Vec::new();
    for (name, bytes) in [("rust", &rust), ("python", &python)] {
        let reference = registry.reference(&format!("figures/{name}:v1"));
        let pushed = push(&reference, bytes.clone(), &json!({}), &Auth::Anonymous, true)
            .await
            .expect("push");
        sources.push((
            name,
            bytes.len(),
            json!({"oci": {"ref": reference, "digest": pushed.digest, "insecure": true}}),
        ));
    }

    let ns = TestNamespace::create("policy-figures").await;
    install_crds(&ns.client).await;
    let cache = std::env::temp_dir().join(format!("fledge-policy-figures-{}", std::process::id()));
    let env = [("FLEDGE_POLICY_CACHE", cache.to_str().expect("path"))];
    let mut controller = ControllerProcess::spawn_with(&ns.name, &[], &env);
    tokio::time::sleep(Duration::from_secs(2)).await;

    println!("\nfledge policy figures (release binary, local plane, real registry)");
    let mut rows = Vec::new();
    for (name, size, source) in &sources {
        let cold = apply_until_ready(&ns, &format!("{name}-cold"), source).await;
        let memory = apply_until_ready(&ns, &format!("{name}-memory"), source).await;
        rows.push((name, size, cold, memory));
    }
    // A restart keeps the compiled code on disk; the bytes are pulled again.
    for (name, _, _) in &sources {
        for suffix in ["cold", "memory"] {
            delete_policy(&ns, &format!("{name}-{suffix}")).await;
        }
    }
    controller.kill();
    let controller = ControllerProcess::spawn_with(&ns.name, &[], &env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ((name, size, cold, memory), (_, _, source)) in rows.iter().zip(&sources) {
        let disk = apply_until_ready(&ns, &format!("{name}-disk"), source).await;
        println!(
            "apply Policy → Ready, {name} ({size} bytes, from the registry): cold {cold:?}, compiled code on \
             disk {disk:?}, same digest in memory {memory:?}"
        );
    }

    let before = support::rss_kib(controller.pid(), "VmRSS");
    let base = support::policy::built_component("fledge_policy_scripted");
    for i in 0..DISTINCT {
        // The same code under a distinct digest: a custom section with the index.
        let bytes = with_custom_section(&base, &format!("n={i}"));
        let name = format!("distinct-{i}");
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name},
            "binaryData": {"policy.wasm": k8s_openapi::ByteString(bytes.clone())},
        }))
        .expect("configmap");
        ns.api::<ConfigMap>()
            .patch(&name, &PatchParams::apply("figures").force(), &Patch::Apply(&cm))
            .await
            .expect("configmap");
        let source = json!({"configMap": {"name": name, "key": "policy.wasm", "digest": sha256(&bytes)}});
        apply_until_ready(&ns, &name, &source).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = support::rss_kib(controller.pid(), "VmRSS");
    println!(
        "controller RSS: {} MiB with the two figures' Policies, {} MiB with {DISTINCT} more distinct Policies \
         ({:.1} MiB each)",
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / 1024.0 / DISTINCT as f64
    );
    drop(controller);
    let _ = std::fs::remove_dir_all(&cache);
}

/// Applies a Policy and returns the time until its status says `Ready=True`.
async fn apply_until_ready(ns: &TestNamespace, name: &str, source: &serde_json::Value) -> Duration {
    let policy = json!({"apiVersion": "fledge.dev/v1alpha1", "kind": "Policy", "metadata": {"name": name},
                        "spec": {"source": source}});
    let api = ns.api::<PolicyResource>();
    let started = Instant::now();
    api.patch(
        name,
        &PatchParams::apply("figures").force(),
        &Patch::Apply(&policy),
    )
    .await
    .expect("apply policy");
    loop {
        let ready = api.get(name).await.ok().and_then(|p| p.status).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            return started.elapsed();
        }
        assert!(started.elapsed() < LIMIT, "policy {name} not Ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn delete_policy(ns: &TestNamespace, name: &str) {
    let _ = ns
        .api::<PolicyResource>()
        .delete(name, &DeleteParams::default())
        .await;
}

/// `bytes` with a top-level custom section `fledge-figures` holding `payload` (short: one-byte sizes).
fn with_custom_section(bytes: &[u8], payload: &str) -> Vec<u8> {
    let name = b"fledge-figures";
    let body_len = 1 + name.len() + payload.len();
    assert!(body_len < 128 && name.len() < 128, "one-byte LEB128 sizes");
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(u8::try_from(body_len).expect("small"));
    out.push(u8::try_from(name.len()).expect("small"));
    out.extend_from_slice(name);
    out.extend_from_slice(payload.as_bytes());
    out
}
