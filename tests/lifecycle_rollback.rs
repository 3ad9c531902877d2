//! Rollbacks, restarts, config tracking and broken input on the real plane.

mod support;

use std::time::Duration;

use fledge::api::{Canary, Phase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

const LIMIT: Duration = Duration::from_secs(90);

fn scripted(verdict: &str) -> serde_json::Value {
    json!({"component": "file:fledge_policy_scripted.wasm", "config": verdict})
}

async fn status(ns: &TestNamespace) -> fledge::api::CanaryStatus {
    ns.api::<Canary>()
        .get("podinfo")
        .await
        .expect("canary")
        .status
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn failing_analysis_rolls_back_and_only_a_newer_revision_is_tried() {
    let ns = TestNamespace::create("rollback").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = start_controller(&ns.client, &ns.name);
    let analysis = json!({"interval": "1s", "threshold": 2, "stepWeight": 20, "maxWeight": 60, "policy": scripted("fail")});
    create_canary(&ns, analysis).await.expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;

    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let failed = wait_phase(&ns, Phase::Failed, LIMIT).await;
    let s = failed.status.expect("status");
    assert_eq!(s.failed_checks, 2);
    assert_eq!(weights(&ns).await, Some((100, 0)));
    support::eventually("target back at 0", LIMIT, || async {
        match replicas(&ns, "podinfo").await {
            Some((0, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.0")
    );

    // The same revision stays failed (give it several intervals).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status(&ns).await.phase, Some(Phase::Failed));
    assert_eq!(replicas(&ns, "podinfo").await.map(|r| r.0), Some(0));

    // A newer revision is tried; with a passing analysis it is promoted.
    let patch = json!({"spec": {"analysis": {"policy": scripted("pass")}}});
    ns.api::<Canary>()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch canary");
    set_image(&ns, "stefanprodan/podinfo:3.1.2").await;
    wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.2")
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_new_revision_mid_analysis_restarts_it_at_weight_zero() {
    let (ns, controller) = initialized_podinfo(
        "restart",
        json!({"interval": "3s", "threshold": 2, "stepWeight": 20, "maxWeight": 100}),
    )
    .await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_weights(&ns, (60, 40)).await;
    let before = status(&ns).await.last_applied_spec;
    set_image(&ns, "stefanprodan/podinfo:3.1.2").await;
    support::eventually("analysis restarted at 0", Duration::from_secs(10), || async {
        let s = status(&ns).await;
        match (weights(&ns).await, s.last_applied_spec != before) {
            (Some((100, 0)), true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.2")
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_config_map_change_starts_a_rollout_and_the_primary_uses_its_copy() {
    let ns = TestNamespace::create("config").await;
    install_crds(&ns.client).await;
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "podinfo-config"}, "data": {"color": "blue"}}))
            .expect("configmap");
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let volume = json!({"spec": {"template": {"spec": {
        "volumes": [{"name": "config", "configMap": {"name": "podinfo-config"}}]
    }}}});
    ns.api::<Deployment>()
        .patch("podinfo", &PatchParams::default(), &Patch::Strategic(&volume))
        .await
        .expect("mount");
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(
        &ns,
        json!({"interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50}),
    )
    .await
    .expect("create canary");
    let initialized = wait_phase(&ns, Phase::Initialized, LIMIT).await;
    let first = initialized.status.and_then(|s| s.last_promoted_spec);
    let primary = ns
        .api::<Deployment>()
        .get("podinfo-primary")
        .await
        .expect("primary");
    let volumes = primary
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.volumes)
        .unwrap_or_default();
    assert_eq!(
        volumes[0].config_map.as_ref().map(|c| c.name.as_str()),
        Some("podinfo-config-primary")
    );
    let copy = ns
        .api::<ConfigMap>()
        .get("podinfo-config-primary")
        .await
        .expect("primary copy");
    assert_eq!(
        copy.data.and_then(|d| d.get("color").cloned()).as_deref(),
        Some("blue")
    );

    let change = json!({"data": {"color": "green"}});
    ns.api::<ConfigMap>()
        .patch("podinfo-config", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect("edit");
    // A rollout of the new revision, promoted (its Progressing phase lasts a second or two: a loaded machine
    // can miss it between two reads, so the promoted revision is what is checked).
    support::eventually("the config change promoted", LIMIT, || async {
        let status = ns
            .api::<Canary>()
            .get("podinfo")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let promoted = status.last_promoted_spec.clone();
        if status.phase == Some(Phase::Succeeded) && promoted.is_some() && promoted != first {
            Ok(())
        } else {
            Err(format!("phase {:?}, promoted {promoted:?}", status.phase))
        }
    })
    .await;
    let copy = ns
        .api::<ConfigMap>()
        .get("podinfo-config-primary")
        .await
        .expect("primary copy");
    assert_eq!(
        copy.data.and_then(|d| d.get("color").cloned()).as_deref(),
        Some("green")
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn impossible_canaries_are_refused_by_the_schema() {
    let ns = TestNamespace::create("invalid").await;
    install_crds(&ns.client).await;
    for (analysis, why) in [
        (json!({"maxWeight": 150, "stepWeight": 20}), "maxWeight"),
        (json!({"stepWeight": 0}), "stepWeight 0 never moves traffic"),
    ] {
        let err = create_canary(&ns, analysis)
            .await
            .expect_err("schema must refuse");
        assert!(err.to_string().contains(why), "{err}");
    }
    let no_target = json!({"apiVersion": "fledge.dev/v1alpha1", "kind": "Canary", "metadata": {"name": "x"},
        "spec": {"service": {"port": 9898}}});
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<Canary>(&()),
    );
    let obj: kube::api::DynamicObject = serde_json::from_value(no_target).expect("object");
    let err = api
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("targetRef is required");
    assert!(err.to_string().contains("targetRef"), "{err}");
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_canary_whose_target_is_missing_gets_a_condition_and_fledge_changes_nothing() {
    let ns = TestNamespace::create("missing").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(&ns, json!({"interval": "1s", "stepWeight": 20}))
        .await
        .expect("create canary");
    support::eventually("TargetNotFound condition", LIMIT, || async {
        let s = status(&ns).await;
        match s.conditions.iter().find(|c| c.type_ == "Ready") {
            Some(c) if c.reason == "TargetNotFound" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        ns.api::<Deployment>()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        ns.api::<Service>()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert_eq!(weights(&ns).await, None);
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_trapping_policy_fails_checks_for_its_canary_only() {
    let ns = TestNamespace::create("trap").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(&ns, json!({"interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50, "policy": scripted("trap")}))
        .await
        .expect("create canary");
    // A second app with the default policy, in the same controller.
    create_app(&ns, "frontend", "stefanprodan/podinfo:3.1.0").await;
    create_canary_for(
        &ns,
        "frontend",
        json!({"interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50}),
    )
    .await
    .expect("create second canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    wait_phase_of(&ns, "frontend", Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    set_image_of(&ns, "frontend", "stefanprodan/podinfo:3.1.1").await;
    wait_phase_of(&ns, "frontend", Phase::Succeeded, LIMIT).await;
    assert_eq!(
        image(&ns, "frontend-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );
    let failed = wait_phase(&ns, Phase::Failed, LIMIT).await;
    let s = failed.status.expect("status");
    assert_eq!(s.failed_checks, 2, "each trap counted one failed check");
    let decision = s.policy.and_then(|p| p.last_decision).unwrap_or_default();
    assert_eq!(decision, "analysis error: trap");
    let events = ns
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&ListParams::default())
        .await
        .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PolicyError")),
        "no PolicyError event"
    );
    // The controller rolled back by itself: a trapping policy cannot be asked to.
    assert!(
        events.items.iter().any(|e| {
            e.message.as_deref().is_some_and(|m| {
                m.contains("failed checks threshold reached 2 (analysis policy failing: trap)")
            })
        }),
        "no rollback event"
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_canary_whose_pods_never_become_available_is_rolled_back_at_its_progress_deadline() {
    let (ns, controller) = initialized_podinfo(
        "deadline",
        json!({"interval": "1s", "threshold": 5, "stepWeight": 20, "maxWeight": 60}),
    )
    .await;
    let patch = json!({"spec": {"progressDeadlineSeconds": 8}});
    ns.api::<Canary>()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("shorten the deadline");

    // A revision no node can run: its pods stay Pending, the Deployment loses its minimum availability.
    let unschedulable = json!({"spec": {"template": {"spec": {
        "nodeSelector": {"fledge.dev/no-such-node": "true"},
        "containers": [{"name": "podinfod", "image": "stefanprodan/podinfo:3.1.1"}]
    }}}});
    ns.api::<Deployment>()
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Strategic(&unschedulable),
        )
        .await
        .expect("ship an unschedulable revision");
    let shipped = std::time::Instant::now();
    wait_phase(&ns, Phase::Progressing, LIMIT).await;
    let failed = wait_phase(&ns, Phase::Failed, LIMIT).await;
    let took = shipped.elapsed();
    assert!(
        took >= Duration::from_secs(8),
        "rolled back after {took:?}, before the 8 s deadline"
    );
    assert_eq!(
        failed.status.map(|s| s.failed_checks),
        Some(0),
        "not a failed check: a deadline"
    );
    event_note(&ns, "progress deadline exceeded canary deployment podinfo").await;
    // Traffic never left the primary, which still runs the old revision.
    assert_eq!(weights(&ns).await, Some((100, 0)));
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.0")
    );
    controller.abort();
}
