//! Proves the local control plane is real: controller-manager, scheduler and KWOK act on what we create,
//! and Istio's CRDs accept and return VirtualServices.
//! Run by `make test` (these are `#[ignore]`d so a bare `cargo test` needs no cluster).

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TestNamespace, eventually};

const ROLLOUT_LIMIT: Duration = Duration::from_secs(60);

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "stefanprodan/podinfo:3.1.0"}]}
            }
        }
    }))
    .expect("deployment manifest")
}

async fn ready_pods(pods: &Api<Pod>, app: &str) -> Result<usize, String> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count())
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn deployment_becomes_available_with_ready_pods_and_scales_to_zero() {
    let ns = TestNamespace::create("plane").await;
    let deployments: Api<Deployment> = ns.api();
    let pods: Api<Pod> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment("podinfo", 2))
        .await
        .expect("create deployment");

    eventually(
        "deployment podinfo Available with 2 ready replicas",
        ROLLOUT_LIMIT,
        || async {
            let d = deployments.get("podinfo").await.map_err(|e| e.to_string())?;
            let status = d.status.unwrap_or_default();
            let available = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            match (available, status.ready_replicas, status.available_replicas) {
                (true, Some(2), Some(2)) => Ok(()),
                other => Err(format!("(available, ready, available replicas) = {other:?}")),
            }
        },
    )
    .await;
    // The pods really exist, were scheduled onto the KWOK node and are Ready.
    let scheduled = pods
        .list(&ListParams::default().labels("app=podinfo"))
        .await
        .expect("list pods");
    assert_eq!(scheduled.items.len(), 2);
    for pod in &scheduled.items {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert_eq!(
            node.as_deref(),
            Some("kwok-node-0"),
            "pod {:?} not bound to the KWOK node",
            pod.metadata.name
        );
    }
    assert_eq!(ready_pods(&pods, "podinfo").await, Ok(2));

    let scale = json!({"spec": {"replicas": 0}});
    deployments
        .patch_scale("podinfo", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scale to 0");
    eventually(
        "podinfo's pods removed after scaling to 0",
        ROLLOUT_LIMIT,
        || async {
            let left = pods
                .list(&ListParams::default().labels("app=podinfo"))
                .await
                .map_err(|e| e.to_string())?;
            match left.items.len() {
                0 => Ok(()),
                n => Err(format!("{n} pods left")),
            }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn virtual_service_is_stored_and_read_back_with_its_weights() {
    let ns = TestNamespace::create("plane").await;
    for version in ["v1beta1", "v1"] {
        let gvk = GroupVersionKind::gvk("networking.istio.io", version, "VirtualService");
        let vs_api: Api<DynamicObject> =
            Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
        let name = format!("podinfo-{version}");
        let manifest = json!({
            "apiVersion": format!("networking.istio.io/{version}"),
            "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {
                "hosts": ["podinfo"],
                "http": [{"route": [
                    {"destination": {"host": "podinfo-primary"}, "weight": 80},
                    {"destination": {"host": "podinfo-canary"}, "weight": 20}
                ]}]
            }
        });
        let vs: DynamicObject = serde_json::from_value(manifest).expect("virtual service manifest");
        vs_api
            .create(&PostParams::default(), &vs)
            .await
            .expect("create VirtualService");

        let back = vs_api.get(&name).await.expect("read VirtualService back");
        let route = &back.data["spec"]["http"][0]["route"];
        let weights: Vec<(&str, i64)> = route
            .as_array()
            .expect("route list")
            .iter()
            .map(|r| {
                (
                    r["destination"]["host"].as_str().unwrap_or(""),
                    r["weight"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(
            weights,
            [("podinfo-primary", 80), ("podinfo-canary", 20)],
            "{version}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn istio_schema_rejects_an_invalid_virtual_service() {
    // The CRDs carry Istio's real validation, so a malformed route fails here as it would on a mesh.
    let ns = TestNamespace::create("plane").await;
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let vs_api: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "bad"},
        "spec": {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}, "weight": "lots"}]}]}
    }))
    .expect("manifest");
    let err = vs_api
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("a string weight must be rejected");
    assert!(err.to_string().contains("weight"), "unexpected error: {err}");
}

/// Clients that check the server's version (Flagger among them) refuse the `v0.0.0-master` a module build
/// reports by default: the plane is stamped with the version it was built from.
#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn the_plane_reports_the_kubernetes_version_it_was_built_from() {
    let info = support::client()
        .await
        .apiserver_version()
        .await
        .expect("/version");
    let pinned = include_str!("controlplane/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .expect("K8S_VERSION pinned")
        .trim();
    assert_eq!(info.git_version, pinned, "{info:?}");
    assert_eq!(info.major, "1", "{info:?}");
    assert_eq!(
        format!("v1.{}.", info.minor),
        pinned[..pinned.rfind('.').expect("v1.x.y") + 1],
        "{info:?}"
    );
}
