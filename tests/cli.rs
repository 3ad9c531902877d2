//! The operator's command line, driven as a user runs it: the `fledge` binary itself, against the real plane
//! and a controller that takes its requests.

mod support;

use std::process::Command;
use std::time::Duration;

use fledge::api::{Canary, Phase};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;
use support::hooks::Hooks;

const LIMIT: Duration = Duration::from_secs(90);

/// Runs `fledge <args>` with `stdin`; returns (exit code, stdout).
fn fledge(args: &[&str], stdin: &str) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fledge"));
    command.args(args);
    let out = support::piped(command, stdin);
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

/// Runs `fledge <args> -n <ns>` off the async workers (the controller under test shares this runtime).
async fn run(ns: &TestNamespace, args: &[&str]) -> (i32, String) {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["-n".to_owned(), ns.name.clone()]);
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fledge(&refs, "")
    })
    .await
    .expect("fledge ran")
}

async fn canary(ns: &TestNamespace) -> Canary {
    ns.api::<Canary>().get("podinfo").await.expect("canary")
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn get_shows_the_status_and_promote_opens_a_closed_promotion_gate() {
    let ns = TestNamespace::create("cli-promote").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let hooks = Hooks::start().await;
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(
        &ns,
        json!({"interval": "1s", "stepWeight": 50, "maxWeight": 50, "webhooks": [
            {"name": "approve", "type": "confirm-promotion", "url": format!("{}/gate/check", hooks.url)}
        ]}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    let (code, out) = run(&ns, &["get", "podinfo", "-o", "json"]).await;
    assert_eq!(code, 0, "{out}");
    let shown: Canary = serde_json::from_str(&out).expect("get -o json prints the Canary");
    assert_eq!(shown.status, canary(&ns).await.status);
    // The same binary as a kubectl plugin (what `make install` links): `kubectl fledge …`.
    let plugins = std::env::temp_dir().join(format!("fledge-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    let link = plugins.join("kubectl-fledge");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fledge"), &link).expect("link the plugin");
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let via_kubectl = Command::new("kubectl")
        .args(["fledge", "get", "podinfo", "-o", "json", "-n", &ns.name])
        .env("PATH", path)
        .output()
        .expect("kubectl");
    assert!(
        via_kubectl.status.success(),
        "{}",
        String::from_utf8_lossy(&via_kubectl.stderr)
    );
    let shown: Canary = serde_json::from_slice(&via_kubectl.stdout).expect("kubectl fledge get -o json");
    assert_eq!(shown.metadata.name.as_deref(), Some("podinfo"));
    let (code, out) = run(&ns, &["status", "podinfo", "--timeout", "5s"]).await;
    assert_eq!((code, out.trim()), (0, "podinfo: Some(Initialized)"));

    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_phase(&ns, Phase::WaitingPromotion, LIMIT).await;
    let (code, out) = run(&ns, &["get", "podinfo"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("├─ Status:   WaitingPromotion"), "{out}");
    assert!(out.contains("approve (ConfirmPromotion): closed (403)"), "{out}");
    let (code, out) = run(&ns, &["status", "podinfo", "--timeout", "2s"]).await;
    assert_eq!(code, 2, "a rollout waiting on its gate times out: {out}");
    let (code, out) = run(&ns, &["promote", "podinfo", "--reason", "release train"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("requested by admin, taken by the controller"),
        "{out}"
    );
    let (code, out) = run(&ns, &["status", "podinfo", "--timeout", "60s"]).await;
    assert_eq!(code, 0, "{out}");
    event_note(&ns, "ConfirmPromotion gate of podinfo").await;
    let note = event_note(&ns, "opened by admin: release train").await;
    assert!(note.starts_with("Next gate of podinfo"), "{note}");
    assert!(
        !canary(&ns)
            .await
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(fledge::api::MANUAL_ANNOTATION),
        "the request is removed once taken"
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn pause_holds_the_weight_resume_goes_on_abort_rolls_back_and_retry_rolls_the_revision_out_again() {
    let ns = TestNamespace::create("cli-ops").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(&ns, json!({"interval": "1s", "stepWeight": 10, "maxWeight": 50}))
        .await
        .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    // Asked at once, before the controller may have seen the new image: it waits for that rollout.
    let (code, out) = run(&ns, &["status", "podinfo", "--timeout", "2s"]).await;
    assert_eq!(code, 2, "the rollout of the new image is not over in 2 s: {out}");
    support::eventually("a first step", LIMIT, || async {
        let w = canary(&ns).await.status.map(|s| s.canary_weight).unwrap_or(0);
        if w > 0 { Ok(w) } else { Err(format!("weight {w}")) }
    })
    .await;

    let (code, out) = run(&ns, &["pause", "podinfo"]).await;
    assert_eq!(code, 0, "{out}");
    let held = canary(&ns).await.status.expect("status");
    assert_eq!(held.paused_by.as_deref(), Some("admin"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = canary(&ns).await.status.expect("status");
    assert_eq!(
        later.canary_weight, held.canary_weight,
        "held across 4 intervals of 1 s"
    );
    assert_eq!(later.phase, Some(Phase::Progressing));
    assert_eq!(
        route_weights_of(&ns).await,
        Some((100 - i64::from(held.canary_weight), i64::from(held.canary_weight)))
    );
    let (code, _) = run(&ns, &["get", "podinfo"]).await;
    assert_eq!(code, 0);
    let (code, out) = run(&ns, &["resume", "podinfo"]).await;
    assert_eq!(code, 0, "{out}");
    support::eventually("a step after resume", LIMIT, || async {
        let w = canary(&ns).await.status.map(|s| s.canary_weight).unwrap_or(0);
        if w > held.canary_weight {
            Ok(w)
        } else {
            Err(format!("weight {w}"))
        }
    })
    .await;

    let (code, out) = run(&ns, &["abort", "podinfo", "--reason", "bad latency"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&ns, &["status", "podinfo", "--timeout", "30s"]).await;
    assert_eq!(code, 1, "an aborted rollout failed: {out}");
    assert_eq!(route_weights_of(&ns).await, Some((100, 0)));
    event_note(&ns, "aborted by admin: bad latency").await;
    let failed = canary(&ns).await.status.expect("status").last_applied_spec;

    let (code, out) = run(&ns, &["retry", "podinfo"]).await;
    assert_eq!(code, 0, "{out}");
    let done = wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    assert_eq!(
        done.status.expect("status").last_promoted_spec,
        failed,
        "the same revision, rolled out again"
    );
    event_note(&ns, "Retry of podinfo").await;
    controller.abort();
}

/// The podinfo VirtualService's (primary, canary) weights.
async fn route_weights_of(ns: &TestNamespace) -> Option<(i64, i64)> {
    let vs = istio_api(&ns.client, &ns.name, "VirtualService")
        .get("podinfo")
        .await
        .ok()?;
    podinfo_weights(&vs)
}

/// `fledge get -w` in a real terminal (a tmux pane): the view redraws in place through every step of a
/// rollout. The pane is captured as the rollout runs; each weight must show, in order, then the promotion.
#[tokio::test]
#[ignore = "needs the local control plane and tmux; run with make test"]
async fn get_watch_redraws_in_a_terminal_through_every_step_of_a_rollout() {
    let ns = TestNamespace::create("cli-watch").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(&ns, json!({"interval": "2s", "stepWeight": 20, "maxWeight": 60}))
        .await
        .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    let socket = format!("fledge-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .expect("tmux (scripts/setup.sh installs it)")
    };
    let command = format!(
        "KUBECONFIG={} {} get podinfo -w -n {}",
        std::env::var("KUBECONFIG").expect("KUBECONFIG"),
        env!("CARGO_BIN_EXE_fledge"),
        ns.name
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "120",
        "-y",
        "40",
        &command,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let capture =
        || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "watch"]).stdout).into_owned();
    support::eventually("the view drawn", LIMIT, || async {
        let pane = capture();
        if pane.contains("Initialized") {
            Ok(())
        } else {
            Err(pane)
        }
    })
    .await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + LIMIT;
    while std::time::Instant::now() < deadline {
        let pane = capture();
        let status = pane
            .lines()
            .find(|l| l.contains("Status:"))
            .unwrap_or_default()
            .to_owned();
        let weight = pane
            .lines()
            .find(|l| l.contains("Weight:"))
            .unwrap_or_default()
            .to_owned();
        let frame = format!("{} | {}", status.trim(), weight.trim());
        if seen.last() != Some(&frame) && !status.is_empty() {
            seen.push(frame);
        }
        if status.contains("Succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tmux(&["kill-server"]);
    controller.abort();
    let order: Vec<usize> = [
        "Initialized",
        " 20% canary",
        " 40% canary",
        " 60% canary",
        "Succeeded",
    ]
    .iter()
    .map(|wanted| {
        seen.iter()
            .position(|f| f.contains(wanted))
            .unwrap_or_else(|| panic!("{wanted:?} never shown; frames: {seen:#?}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order: {seen:#?}");
    // The frames, for the record (cargo test --nocapture shows them).
    println!("{}", seen.join("\n"));
}
