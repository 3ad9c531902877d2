//! The rollout keeps its promises when the cluster, the user or the spec fights back: traffic always has
//! somewhere healthy to go, a bad input gets a clear error, nothing reports success over an outage. Each test
//! samples the VirtualService and the Services' ready endpoints throughout, not only at the end.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use fledge::api::{Canary, Phase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

const LIMIT: Duration = Duration::from_secs(90);

/// Ready addresses behind a Service now.
async fn ready_endpoints(ns: &TestNamespace, service: &str) -> usize {
    let Ok(Some(ep)) = ns.api::<Endpoints>().get_opt(service).await else {
        return 0;
    };
    ep.subsets
        .unwrap_or_default()
        .iter()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum()
}

/// One look at where requests go: (primary weight, canary weight, ready primary endpoints, ready canary
/// endpoints, phase).
async fn sample(ns: &TestNamespace) -> (i64, i64, usize, usize, Option<Phase>) {
    let (p, c) = weights(ns).await.unwrap_or((100, 0));
    (
        p,
        c,
        ready_endpoints(ns, "podinfo-primary").await,
        ready_endpoints(ns, "podinfo-canary").await,
        phase(ns).await,
    )
}

async fn canary_message(ns: &TestNamespace, name: &str, type_: &str) -> Option<(String, String, String)> {
    let c = ns.api::<Canary>().get_opt(name).await.ok()??;
    c.status?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_name_too_long_for_its_derived_objects_is_refused_with_the_derived_name() {
    let ns = TestNamespace::create("inv-names").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);
    let long = format!("app-{}", "x".repeat(52));
    create_app(&ns, &long, "stefanprodan/podinfo:3.1.0").await;
    create_canary_for(&ns, &long, json!({"interval": "1s"}))
        .await
        .expect("the API accepts the name");
    let message = support::eventually("InvalidSpec", LIMIT, || async {
        match canary_message(&ns, &long, "Ready").await {
            Some((s, reason, message)) if s == "False" && reason == "InvalidSpec" => Ok(message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(message.contains(&format!("{long}-primary")), "{message}");
    assert!(message.contains("63"), "{message}");
    let primary = ns.api::<Deployment>().get_opt(&format!("{long}-primary")).await;
    assert!(primary.expect("get").is_none(), "nothing created");
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_target_deleted_mid_rollout_sends_all_traffic_to_the_primary_then_fails_at_the_deadline() {
    let (ns, controller) = progressing_podinfo(
        "inv-target",
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 100}),
        (60, 40),
    )
    .await;
    let patch = json!({"spec": {"progressDeadlineSeconds": 8}});
    ns.api::<Canary>()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("shorter deadline");
    let deleted = Instant::now();
    ns.api::<Deployment>()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete target");
    wait_weights(&ns, (100, 0)).await;
    assert!(
        deleted.elapsed() < Duration::from_secs(4),
        "routed away within {:?}",
        deleted.elapsed()
    );
    // From then on no request goes to the canary, and the primary serves, until the rollout fails.
    let failed_at = loop {
        let (p, c, primary, _, phase) = sample(&ns).await;
        assert_eq!((p, c), (100, 0), "weights while the target is gone");
        assert!(primary > 0, "the primary serves");
        if phase == Some(Phase::Failed) {
            break deleted.elapsed();
        }
        assert!(deleted.elapsed() < LIMIT, "no Failed; phase {phase:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        failed_at >= Duration::from_secs(8),
        "failed at the deadline, not before: {failed_at:?}"
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_primary_scaled_to_zero_mid_rollout_is_restored_and_never_reported_succeeded_while_down() {
    let (ns, controller) = progressing_podinfo(
        "inv-primary",
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}),
        (80, 20),
    )
    .await;
    let zero = json!({"spec": {"replicas": 0}});
    ns.api::<Deployment>()
        .patch_scale("podinfo-primary", &PatchParams::default(), &Patch::Merge(&zero))
        .await
        .expect("scale primary to 0");
    let started = Instant::now();
    let mut saw_restored = false;
    loop {
        let (_, _, primary, _, phase) = sample(&ns).await;
        let replicas = replicas(&ns, "podinfo-primary").await.map_or(0, |r| r.0);
        saw_restored |= replicas > 0;
        if phase == Some(Phase::Succeeded) {
            assert!(primary > 0, "Succeeded while the primary has no ready endpoints");
            break;
        }
        assert!(started.elapsed() < LIMIT, "no Succeeded; phase {phase:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(saw_restored, "the primary's replicas were put back");
    assert_eq!(replicas(&ns, "podinfo-primary").await.map(|r| r.0), Some(2));
    event_note(&ns, "has 0 replicas").await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn changing_the_target_of_a_canary_is_refused_by_the_api() {
    let (ns, controller) = initialized_podinfo("inv-retarget", json!({"interval": "1s"})).await;
    let patch = json!({"spec": {"targetRef": {"name": "other"}}});
    let refused = ns
        .api::<Canary>()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("targetRef is immutable");
    assert!(
        refused.to_string().contains("targetRef is immutable"),
        "{refused}"
    );
    // Other edits still go through.
    let patch = json!({"spec": {"analysis": {"interval": "1m30s"}}});
    ns.api::<Canary>()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("a Go duration, as Flagger takes it");
    support::eventually("1m30s accepted", LIMIT, || async {
        match canary_message(&ns, "podinfo", "Ready").await {
            Some((s, _, _)) if s == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    controller.abort();
}

#[test]
#[ignore = "runs the binary; run with make test"]
fn bad_controller_flags_exit_non_zero_with_a_clear_message() {
    for (flag, value, says) in [
        ("--policy-memory-mib", "0", "--policy-memory-mib"),
        ("--log-level", "bogus", "--log-level"),
        ("--min-interval", "soon", "1m30s"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fledge"))
            .args(["controller", flag, value])
            .output()
            .expect("run fledge");
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn an_apex_service_fledge_created_outlives_the_canary_and_selects_the_target() {
    let ns = TestNamespace::create("inv-apex").await;
    install_crds(&ns.client).await;
    create_app(&ns, "podinfo", "stefanprodan/podinfo:3.1.0").await;
    // As is common with Flagger: the user has no Service; fledge makes the apex.
    ns.api::<k8s_openapi::api::core::v1::Service>()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("no user Service");
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(&ns, json!({"interval": "1s"}))
        .await
        .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    ns.api::<Canary>()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete canary");
    support::eventually("canary gone", LIMIT, || async {
        match ns.api::<Canary>().get_opt("podinfo").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Garbage collection has had its chance; the name clients use still answers, from the target's pods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let apex = ns
        .api::<k8s_openapi::api::core::v1::Service>()
        .get_opt("podinfo")
        .await
        .expect("get")
        .expect("the apex Service survives the Canary");
    assert_eq!(apex.metadata.owner_references.unwrap_or_default().len(), 0);
    assert_eq!(
        selector(&ns, "podinfo").await,
        Some([("app".to_owned(), "podinfo".to_owned())].into())
    );
    support::eventually("apex serves", LIMIT, || async {
        match ready_endpoints(&ns, "podinfo").await {
            0 => Err("no endpoints".to_owned()),
            n => Ok(n),
        }
    })
    .await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_controller_on_a_cluster_without_its_crds_exits_non_zero_naming_them() {
    let empty = support::apiserver::EmptyApiServer::start("no-crds").await;
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args([
            "controller",
            "--listen",
            &format!("127.0.0.1:{}", support::prometheus::free_port()),
        ])
        .arg("--kubeconfig")
        .arg(&empty.kubeconfig)
        .output()
        .expect("run fledge");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failed fast: {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("canaries.fledge.dev"), "{stderr}");
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn sigterm_stops_a_running_controller_within_seconds() {
    let ns = TestNamespace::create("inv-sigterm").await;
    install_crds(&ns.client).await;
    let mut controller = ControllerProcess::spawn(&ns.name);
    support::eventually("controller serving", LIMIT, || async {
        api_requests(&controller.metrics_url).await.map(|_| ())
    })
    .await;
    let term = Command::new("kill")
        .args(["-TERM", &controller.pid().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let stopped = Instant::now();
    let code = loop {
        if let Some(status) = controller.try_wait() {
            break status.code();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, Some(0), "a clean stop");
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_virtual_service_edited_by_hand_is_restored_and_no_analysis_is_skipped() {
    let (ns, controller) = progressing_podinfo(
        "inv-drift",
        json!({"interval": "3s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}),
        (80, 20),
    )
    .await;
    // By hand: everything to the canary, as if the rollout were done.
    let vs_api = istio_api(&ns.client, &ns.name, "VirtualService");
    let mut vs = vs_api.get("podinfo").await.expect("virtual service");
    vs.data["spec"]["http"][0]["route"][0]["weight"] = json!(0);
    vs.data["spec"]["http"][0]["route"][1]["weight"] = json!(100);
    vs.metadata.managed_fields = None;
    vs_api
        .replace("podinfo", &Default::default(), &vs)
        .await
        .expect("edit by hand");
    // Every later sample: the canary never holds more than fledge's own steps gave it, and 40 and 60 are
    // analysed on the way.
    let mut seen = vec![(80, 20)];
    let started = Instant::now();
    loop {
        let (p, c, _, _, phase) = sample(&ns).await;
        if seen.last() != Some(&(p, c)) {
            seen.push((p, c));
        }
        if phase == Some(Phase::Succeeded) {
            break;
        }
        assert!(started.elapsed() < LIMIT, "no Succeeded; weights {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The hand edit may be seen for the moment before fledge notices it; after that only fledge's steps.
    let after_edit: Vec<_> = seen.iter().copied().filter(|w| *w != (0, 100)).collect();
    assert_eq!(
        after_edit,
        [(80, 20), (60, 40), (40, 60), (100, 0)],
        "weights {seen:?}"
    );
    event_note(&ns, "was edited to send 100% to the canary").await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_policy_config_the_policy_refuses_is_an_invalid_spec_before_any_traffic_moves() {
    let ns = TestNamespace::create("inv-config").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(
        &ns,
        json!({"interval": "1s", "policy": {"config": {"stepWeight": "abc"}}}),
    )
    .await
    .expect("the schema keeps a policy's config as written");
    let message = support::eventually("InvalidSpec", LIMIT, || async {
        match canary_message(&ns, "podinfo", "Ready").await {
            Some((s, reason, message)) if s == "False" && reason == "InvalidSpec" => Ok(message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        message.contains("analysis.policy.config") && message.contains("\"abc\""),
        "{message}"
    );
    assert!(
        ns.api::<Deployment>()
            .get_opt("podinfo-primary")
            .await
            .expect("get")
            .is_none(),
        "nothing created"
    );
    assert_eq!(
        replicas(&ns, "podinfo").await.map(|r| r.0),
        Some(2),
        "the app untouched"
    );
    // Fixed, it initialises.
    let patch = json!({"spec": {"analysis": {"policy": {"config": {"stepWeight": 50}}}}});
    ns.api::<Canary>()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("fix config");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_fifo_or_device_in_the_policy_dir_holds_only_its_canary_and_freezes_nothing() {
    let ns = TestNamespace::create("inv-fifo").await;
    install_crds(&ns.client).await;
    let dir = std::env::temp_dir().join(format!("fledge-policy-dir-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("policy dir");
    let made = Command::new("mkfifo")
        .arg(dir.join("fifo.wasm"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.wasm")).expect("symlink");
    let controller = start_controller_with_policy_dir(&ns.client, &ns.name, &dir);
    for (app, file) in [("fifo", "file:fifo.wasm"), ("zero", "file:zero.wasm")] {
        create_app(&ns, app, "stefanprodan/podinfo:3.1.0").await;
        create_canary_for(&ns, app, json!({"interval": "1s", "policy": {"component": file}}))
            .await
            .expect("create canary");
    }
    // A canary on the default goes through a whole rollout meanwhile: nothing is stuck reading those files.
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    create_canary(&ns, json!({"interval": "1s", "stepWeight": 50, "maxWeight": 50}))
        .await
        .expect("create canary");
    for app in ["fifo", "zero"] {
        support::eventually(&format!("{app} refused"), LIMIT, || async {
            match canary_message(&ns, app, "PolicyReady").await {
                Some((s, reason, _)) if s == "False" && reason == "FileUnreadable" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    controller.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_reconcile_held_past_its_deadline_fails_as_timeout_and_moves_no_traffic() {
    // A Prometheus that takes connections and never answers: each analysis query would hang 20 s.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let address = format!("http://{}", silent.local_addr().expect("address"));
    let ns = TestNamespace::create("deadline").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let metrics = fledge::telemetry::metrics::Metrics::new();
    let controller = start_controller_tuned(&ns.client, &ns.name, |o| {
        o.reconcile_deadline = Duration::from_secs(2);
        o.query_timeout = Duration::from_secs(20);
        o.metrics_server = Some(address);
        o.metrics = metrics.clone();
    });
    create_canary(
        &ns,
        json!({"interval": "1s", "threshold": 2, "stepWeight": 20, "metrics": [
            {"name": "request-success-rate", "interval": "1m", "thresholdRange": {"min": 99}}]}),
    )
    .await
    .expect("canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let timeouts = r#"fledge_reconcile_errors_total{category="timeout"}"#;
    support::eventually("a reconcile failed by its deadline", LIMIT, || async {
        let text = metrics.render();
        text.lines()
            .any(|l| l.starts_with(timeouts))
            .then_some(())
            .ok_or_else(|| {
                text.lines()
                    .filter(|l| l.contains("reconcile_errors"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    })
    .await;
    // Cut short before it could judge, a reconcile moves nothing: the rollout holds where it was (the
    // first step to 20 % needs no analysis).
    let held = weights(&ns).await;
    assert!(matches!(held, Some((100, 0) | (80, 20))), "{held:?}");
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let (p, c, primary, _, phase) = sample(&ns).await;
        assert_eq!(Some((p, c)), held, "no traffic moves while every analysis hangs");
        assert!(primary > 0, "the primary keeps serving");
        assert_eq!(phase, Some(Phase::Progressing));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(silent);
    controller.abort();
}
