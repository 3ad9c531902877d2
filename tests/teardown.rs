//! Deleting a Canary restores the app before the primary goes, and the apex Service never runs out of
//! ready endpoints meanwhile.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fledge::api::{Canary, Phase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

const LIMIT: Duration = Duration::from_secs(90);

/// Samples the apex Service's ready endpoints every 50 ms until stopped; counts samples and empty ones.
struct EndpointWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicUsize>,
    empty: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EndpointWatch {
    fn start(ns: &TestNamespace) -> Self {
        let slices: Api<EndpointSlice> = ns.api();
        let (stop, samples, empty) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, n, e) = (stop.clone(), samples.clone(), empty.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                if let Ok(list) = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=podinfo"))
                    .await
                {
                    let ready = list
                        .items
                        .iter()
                        .flat_map(|slice| slice.endpoints.iter())
                        .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                        .count();
                    n.fetch_add(1, Ordering::SeqCst);
                    if ready == 0 {
                        e.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self {
            stop,
            samples,
            empty,
            task,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        (
            self.samples.load(Ordering::SeqCst),
            self.empty.load(Ordering::SeqCst),
        )
    }
}

/// Deletes the Canary while sampling endpoints, then checks the app is as it was before fledge.
async fn delete_and_check_restored(ns: &TestNamespace) {
    let watch = EndpointWatch::start(ns);
    tokio::time::sleep(Duration::from_millis(200)).await;
    ns.api::<Canary>()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete canary");
    support::eventually("canary gone", LIMIT, || async {
        match ns.api::<Canary>().get_opt("podinfo").await {
            Ok(None) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.map(|c| c.and_then(|c| c.status).and_then(|s| s.phase))
            )),
        }
    })
    .await;
    support::eventually(
        "no fledge object left (primary, -primary/-canary Services, DestinationRules, config copies)",
        LIMIT,
        || async {
            let deployments = ns
                .api::<Deployment>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let services = ns
                .api::<Service>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "DestinationRule");
            let rules: Api<DynamicObject> =
                Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
            let rules = rules
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let config_maps = ns
                .api::<k8s_openapi::api::core::v1::ConfigMap>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = deployments
                .items
                .iter()
                .filter_map(|d| d.metadata.name.clone())
                .chain(services.items.iter().filter_map(|s| s.metadata.name.clone()))
                .chain(rules.items.iter().filter_map(|r| r.metadata.name.clone()))
                .chain(config_maps.items.iter().filter_map(|c| c.metadata.name.clone()))
                .collect();
            if names
                .iter()
                .any(|n| n.ends_with("-primary") || n.ends_with("-canary"))
            {
                Err(format!("{names:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    // Keep sampling a while after the primary's pods were deleted: that is when Flagger's apex goes empty.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (samples, empty) = watch.finish().await;
    assert!(samples >= 10, "too few endpoint samples: {samples}");
    assert_eq!(
        empty, 0,
        "the apex Service had no ready endpoint in {empty} of {samples} samples"
    );
    assert_eq!(
        replicas(ns, "podinfo").await,
        Some((2, 2)),
        "target back at the primary's replicas, ready"
    );
    assert_eq!(
        selector(ns, "podinfo").await,
        Some([("app".to_owned(), "podinfo".to_owned())].into())
    );
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn deleting_an_initialized_canary_restores_target_replicas_and_service_selector() {
    let (ns, controller) = initialized_podinfo(
        "del-init",
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}),
    )
    .await;
    delete_and_check_restored(&ns).await;
    assert_eq!(
        weights(&ns).await,
        None,
        "the VirtualService fledge created is gone"
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn deleting_a_canary_at_40_percent_restores_the_app_without_losing_endpoints() {
    let (ns, controller) = initialized_podinfo(
        "del-prog",
        json!({"interval": "3s", "threshold": 2, "stepWeight": 20, "maxWeight": 100}),
    )
    .await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_weights(&ns, (60, 40)).await;
    delete_and_check_restored(&ns).await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_virtual_service_that_existed_before_fledge_gets_its_spec_back() {
    let ns = TestNamespace::create("del-vs").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let vs_api: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let original = json!({"hosts": ["podinfo"], "http": [{"timeout": "7s", "route": [{"destination": {"host": "podinfo"}}]}]});
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "podinfo"}, "spec": original,
    }))
    .expect("vs");
    vs_api
        .create(&PostParams::default(), &vs)
        .await
        .expect("create user VirtualService");
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(&ns, json!({"interval": "2s", "threshold": 2, "stepWeight": 20}))
        .await
        .expect("canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    assert_eq!(
        weights(&ns).await,
        Some((100, 0)),
        "fledge routes through the user's VirtualService"
    );
    delete_and_check_restored(&ns).await;
    let back = vs_api
        .get("podinfo")
        .await
        .expect("the user's VirtualService survives");
    assert_eq!(back.data["spec"], original);
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn deleting_a_canary_while_promoting_restores_the_app_without_losing_endpoints() {
    let analysis = json!({"interval": "3s", "threshold": 2, "stepWeight": 50, "maxWeight": 50});
    let (ns, controller) = initialized_podinfo("del-promo", analysis).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_phase(&ns, Phase::Promoting, LIMIT).await;
    delete_and_check_restored(&ns).await;
    assert_eq!(
        image(&ns, "podinfo").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn deleting_a_failed_canary_restores_the_app_without_losing_endpoints() {
    let failing = "file:fledge_policy_scripted.wasm";
    let analysis = json!({"interval": "1s", "threshold": 2, "stepWeight": 20,
        "policy": {"component": failing, "config": "fail"}});
    let (ns, controller) = initialized_podinfo("del-failed", analysis).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_phase(&ns, Phase::Failed, LIMIT).await;
    delete_and_check_restored(&ns).await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_target_that_never_serves_again_leaves_the_primary_serving_after_the_teardown_deadline() {
    let ns = TestNamespace::create("del-deadline").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = start_controller_tuned(&ns.client, &ns.name, |o| {
        o.teardown_deadline = Duration::from_secs(8);
    });
    let canary = create_canary(&ns, json!({"interval": "2s", "threshold": 2, "stepWeight": 20}))
        .await
        .expect("canary");
    let uid = canary.metadata.uid.clone().expect("uid");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    make_target_unschedulable(&ns).await;
    wait_phase(&ns, Phase::Progressing, LIMIT).await;

    let watch = EndpointWatch::start(&ns);
    let deleted = std::time::Instant::now();
    ns.api::<Canary>()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete canary");
    support::eventually("canary released", LIMIT, || async {
        match ns.api::<Canary>().get_opt("podinfo").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|c| c.map(|c| c.metadata.finalizers)))),
        }
    })
    .await;
    let waited = deleted.elapsed();
    // The deadline counts from deletionTimestamp, which has whole seconds: up to 1 s before the delete.
    assert!(
        waited >= Duration::from_secs(7),
        "the teardown waited for its deadline first, not {waited:?}"
    );
    let note = event_note(&ns, "Teardown gave up after 8s").await;
    assert!(
        note.contains("podinfo-primary keeps serving Service podinfo")
            && note.contains("deployment/podinfo-primary"),
        "{note}"
    );
    // Garbage collection had its chance: what serves is still there, released from the Canary.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let primary = ns
        .api::<Deployment>()
        .get("podinfo-primary")
        .await
        .expect("the primary is left serving");
    assert!(
        primary
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|o| o.uid != uid),
        "the primary is no longer owned by the Canary"
    );
    assert_eq!(replicas(&ns, "podinfo-primary").await, Some((2, 2)));
    assert_eq!(
        selector(&ns, "podinfo").await,
        Some([("app".to_owned(), "podinfo-primary".to_owned())].into()),
        "the apex Service still selects the primary's pods"
    );
    assert_eq!(weights(&ns).await, None, "routing is back on the apex Service");
    let (samples, empty) = watch.finish().await;
    assert!(samples >= 10, "too few endpoint samples: {samples}");
    assert_eq!(empty, 0, "no ready endpoint in {empty} of {samples} samples");
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_namespace_whose_canary_target_never_serves_is_deleted_without_waiting_for_the_deadline() {
    let ns = TestNamespace::create("del-ns").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    // The default deadline (5 minutes): the namespace must not need it.
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(&ns, json!({"interval": "2s", "threshold": 2, "stepWeight": 20}))
        .await
        .expect("canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    make_target_unschedulable(&ns).await;
    wait_phase(&ns, Phase::Progressing, LIMIT).await;
    // Another controller's finalizer keeps the target visible while it is deleted: the teardown must see a
    // target on its way out as nothing to restore to.
    let hold = json!({"metadata": {"finalizers": ["example.com/hold"]}});
    let deployments = ns.api::<Deployment>();
    deployments
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&hold),
        )
        .await
        .expect("hold the target");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .expect("delete namespace");
    support::eventually("canary released while its target terminates", LIMIT, || async {
        match ns.api::<Canary>().get_opt("podinfo").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|c| c.map(|c| c.metadata.finalizers)))),
        }
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    deployments
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&release),
        )
        .await
        .expect("release the target");
    support::eventually("namespace gone", Duration::from_secs(120), || async {
        match namespaces.get_opt(&ns.name).await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|n| n.and_then(|n| n.status)))),
        }
    })
    .await;
    controller.abort();
}
