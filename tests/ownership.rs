//! One Canary per target and per service name: a second Canary that would take over what another manages is
//! refused with condition `Conflict` naming the holder, writes nothing, and deleting it leaves the holder's
//! objects alone. Every object fledge writes carries the two ownership labels.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fledge::api::{Canary, Phase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

const LIMIT: Duration = Duration::from_secs(90);

/// Creates Canary `name` for Deployment `target` with apex service name `service`.
async fn create_claimant(ns: &TestNamespace, name: &str, target: &str, service: &str) {
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "progressDeadlineSeconds": 60,
            "service": {"name": service, "port": 9898, "targetPort": 9898},
            "analysis": {"interval": "5s", "threshold": 2, "maxWeight": 60, "stepWeight": 20},
        }
    }))
    .expect("canary");
    ns.api::<Canary>()
        .create(&PostParams::default(), &canary)
        .await
        .expect("create canary");
}

/// Waits for `name`'s `Conflict` condition to be True; returns its message.
async fn conflict_message(ns: &TestNamespace, name: &str) -> String {
    support::eventually(&format!("{name} Conflict=True"), LIMIT, || async {
        let c = ns.api::<Canary>().get(name).await.map_err(|e| e.to_string())?;
        let status = c.status.clone().unwrap_or_default();
        let conflict = status.conditions.iter().find(|c| c.type_ == "Conflict");
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        match (conflict, ready) {
            (Some(c), Some(r)) if c.status == "True" && r.status == "False" && r.reason == "Conflict" => {
                Ok(c.message.clone())
            }
            _ => Err(format!("{:?}", status.conditions)),
        }
    })
    .await
}

/// The managed-by and canary labels of an object, as (managed-by, canary).
fn ownership(labels: &BTreeMap<String, String>) -> (Option<&str>, Option<&str>) {
    (
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        labels.get("fledge.dev/canary").map(String::as_str),
    )
}

/// Everything the Canary podinfo manages carries both ownership labels naming it.
async fn assert_labelled_for_podinfo(ns: &TestNamespace) {
    let expected = (Some("fledge"), Some("podinfo"));
    let primary = ns
        .api::<Deployment>()
        .get("podinfo-primary")
        .await
        .expect("primary");
    assert_eq!(
        ownership(primary.labels()),
        expected,
        "podinfo-primary Deployment"
    );
    for name in ["podinfo-primary", "podinfo-canary"] {
        let svc = ns.api::<Service>().get(name).await.expect("service");
        assert_eq!(ownership(svc.labels()), expected, "Service {name}");
    }
    let vs = istio_api(&ns.client, &ns.name, "VirtualService")
        .get("podinfo")
        .await
        .expect("virtualservice");
    assert_eq!(ownership(vs.labels()), expected, "VirtualService podinfo");
    for name in ["podinfo-primary", "podinfo-canary"] {
        let dr = istio_api(&ns.client, &ns.name, "DestinationRule")
            .get(name)
            .await
            .expect("destinationrule");
        assert_eq!(ownership(dr.labels()), expected, "DestinationRule {name}");
    }
}

/// podinfo's objects as the holder left them: (primary image, VS spec, DR uids, apex selector).
async fn holder_objects(
    ns: &TestNamespace,
) -> (
    Option<String>,
    serde_json::Value,
    Vec<String>,
    Option<BTreeMap<String, String>>,
) {
    let vs = istio_api(&ns.client, &ns.name, "VirtualService")
        .get("podinfo")
        .await
        .expect("virtualservice");
    let mut rules = Vec::new();
    for name in ["podinfo-primary", "podinfo-canary"] {
        let dr = istio_api(&ns.client, &ns.name, "DestinationRule")
            .get(name)
            .await
            .expect("destinationrule of the holder");
        rules.push(dr.uid().unwrap_or_default());
    }
    (
        image(ns, "podinfo-primary").await,
        vs.data["spec"].clone(),
        rules,
        selector(ns, "podinfo").await,
    )
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_second_canary_for_the_same_target_is_refused_naming_the_holder_and_its_deletion_touches_nothing() {
    let (ns, controller) = initialized_podinfo(
        "own-target",
        json!({"interval": "5s", "threshold": 2, "maxWeight": 60, "stepWeight": 20}),
    )
    .await;
    assert_labelled_for_podinfo(&ns).await;
    let before = holder_objects(&ns).await;

    create_claimant(&ns, "podinfo-b", "podinfo", "podinfo-b").await;
    let message = conflict_message(&ns, "podinfo-b").await;
    assert!(
        message.contains("target podinfo") && message.contains("canary podinfo"),
        "the condition names what is held and who holds it: {message}"
    );
    event_note(&ns, "is managed by canary podinfo").await;
    // It wrote nothing of its own.
    for name in ["podinfo-b-primary", "podinfo-b-canary", "podinfo-b"] {
        assert!(
            ns.api::<Service>().get_opt(name).await.expect("get").is_none(),
            "Service {name} must not exist"
        );
    }
    assert!(
        istio_api(&ns.client, &ns.name, "VirtualService")
            .get_opt("podinfo-b")
            .await
            .expect("get")
            .is_none(),
        "no VirtualService for the refused canary"
    );

    ns.api::<Canary>()
        .delete("podinfo-b", &DeleteParams::default())
        .await
        .expect("delete podinfo-b");
    support::eventually("podinfo-b gone", LIMIT, || async {
        match ns.api::<Canary>().get_opt("podinfo-b").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|c| c.map(|c| c.finalizers().to_vec())))),
        }
    })
    .await;
    // The holder is untouched and still works: same objects, same routing, and it still rolls out.
    assert_eq!(
        holder_objects(&ns).await,
        before,
        "the holder's objects after the refused canary left"
    );
    assert_eq!(phase(&ns).await, Some(Phase::Initialized));
    assert_eq!(
        replicas(&ns, "podinfo").await.map(|r| r.0),
        Some(0),
        "the target stays scaled down"
    );
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_weights(&ns, (80, 20)).await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_second_canary_for_the_same_service_name_is_refused_and_never_creates_a_primary() {
    let (ns, controller) = initialized_podinfo(
        "own-service",
        json!({"interval": "5s", "threshold": 2, "maxWeight": 60, "stepWeight": 20}),
    )
    .await;
    let before = holder_objects(&ns).await;
    create_app(&ns, "other", "stefanprodan/podinfo:3.1.0").await;

    create_claimant(&ns, "other", "other", "podinfo").await;
    let message = conflict_message(&ns, "other").await;
    assert!(
        message.contains("canary podinfo"),
        "the condition names the holder: {message}"
    );
    assert!(
        ns.api::<Deployment>()
            .get_opt("other-primary")
            .await
            .expect("get")
            .is_none(),
        "no primary for the refused canary"
    );
    assert_eq!(
        replicas(&ns, "other").await.map(|r| r.0),
        Some(2),
        "the refused canary's target keeps its replicas"
    );
    assert_eq!(
        selector(&ns, "other").await.and_then(|s| s.get("app").cloned()),
        Some("other".into())
    );
    // A few rechecks later, still nothing moved.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        holder_objects(&ns).await,
        before,
        "the holder's routing is unchanged"
    );
    assert_eq!(
        conflict_message(&ns, "other").await,
        message,
        "the refusal is stable"
    );
    controller.abort();
}
