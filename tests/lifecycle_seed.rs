//! The seed story on the real plane: a Canary initialises podinfo, a new image walks the weights
//! 0 → 20 → 40 → 60, the primary takes the new spec, and the canary is promoted.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fledge::api::Phase;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

const LIMIT: Duration = Duration::from_secs(90);

fn app(value: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([("app".to_owned(), value.to_owned())]))
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn seed_story_initialises_walks_20_40_60_and_promotes() {
    let ns = TestNamespace::create("seed").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(
        &ns,
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}),
    )
    .await
    .expect("create canary");

    // Initialized: primary ready with the target's replicas, services, routing 100/0, target at 0.
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    assert_eq!(replicas(&ns, "podinfo-primary").await, Some((2, 2)));
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.0")
    );
    assert_eq!(selector(&ns, "podinfo").await, app("podinfo-primary"));
    assert_eq!(selector(&ns, "podinfo-primary").await, app("podinfo-primary"));
    assert_eq!(selector(&ns, "podinfo-canary").await, app("podinfo"));
    assert_eq!(weights(&ns).await, Some((100, 0)));
    support::eventually("target scaled to 0", LIMIT, || async {
        match replicas(&ns, "podinfo").await {
            Some((0, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Ship a new image and watch every intermediate state.
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let shipped = Instant::now();
    let mut seen_weights: Vec<(i64, i64)> = Vec::new();
    let mut target_scaled_up = None;
    let deadline = Instant::now() + LIMIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no promotion; weights seen {seen_weights:?}"
        );
        if let Some(w) = weights(&ns).await
            && seen_weights.last() != Some(&w)
        {
            seen_weights.push(w);
        }
        if target_scaled_up.is_none() && matches!(replicas(&ns, "podinfo").await, Some((2, _))) {
            target_scaled_up = Some(shipped.elapsed());
        }
        let canary = ns
            .api::<fledge::api::Canary>()
            .get("podinfo")
            .await
            .expect("canary");
        if canary.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scaled_up = target_scaled_up.expect("the target was scaled up for the new revision");
    tracing::info!("set image → target scaled up in {scaled_up:?}");
    assert_eq!(seen_weights, [(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)]);
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );
    assert_eq!(
        replicas(&ns, "podinfo").await.map(|r| r.0),
        Some(0),
        "target scaled to 0 after promotion"
    );
    assert_eq!(selector(&ns, "podinfo").await, app("podinfo-primary"));

    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events");
    let texts: Vec<String> = events.items.iter().filter_map(|e| e.message.clone()).collect();
    for expected in [
        format!("Initialization done! podinfo.{}", ns.name),
        format!("New revision detected! Scaling up podinfo.{}", ns.name),
        format!("Advance podinfo.{} canary weight 20", ns.name),
        format!(
            "Copying podinfo.{0} template spec to podinfo-primary.{0}",
            ns.name
        ),
        format!("Promotion completed! Scaling down podinfo.{}", ns.name),
    ] {
        assert!(
            texts.contains(&expected),
            "missing event {expected:?} in {texts:?}"
        );
    }
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn the_targets_autoscaler_is_copied_for_the_primary_and_its_edits_follow() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use kube::api::PostParams;

    let ns = TestNamespace::create("hpa").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "podinfo"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    }))
    .expect("hpa");
    ns.api::<HorizontalPodAutoscaler>()
        .create(&PostParams::default(), &hpa)
        .await
        .expect("create hpa");
    let controller = start_controller(&ns.client, &ns.name);
    let canary = json!({
        "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1s", "stepWeight": 20}
        }
    });
    let canary: fledge::api::Canary = serde_json::from_value(canary).expect("canary");
    ns.api::<fledge::api::Canary>()
        .create(&PostParams::default(), &canary)
        .await
        .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    let copy = ns
        .api::<HorizontalPodAutoscaler>()
        .get("podinfo-primary")
        .await
        .expect("primary hpa");
    let spec = copy.spec.expect("spec");
    assert_eq!(spec.scale_target_ref.name, "podinfo-primary");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 4));
    // An edit to the target's HPA reaches the copy on an idle canary (its watch wakes the canary).
    ns.api::<HorizontalPodAutoscaler>()
        .patch(
            "podinfo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"maxReplicas": 6}})),
        )
        .await
        .expect("edit the target's hpa");
    support::eventually("the copy follows the edit", LIMIT, || async {
        let copy = ns
            .api::<HorizontalPodAutoscaler>()
            .get("podinfo-primary")
            .await
            .map_err(|e| e.to_string())?;
        match copy.spec.map(|s| s.max_replicas) {
            Some(6) => Ok(()),
            other => Err(format!("maxReplicas {other:?}")),
        }
    })
    .await;
    controller.abort();
}

/// (primary, canary, mirrored) of the VirtualService `podinfo`.
async fn split(ns: &TestNamespace) -> Option<(i64, i64, bool)> {
    let vs = istio_api(&ns.client, &ns.name, "VirtualService")
        .get_opt("podinfo")
        .await
        .ok()??;
    let (primary, canary) = podinfo_weights(&vs)?;
    Some((primary, canary, vs.data["spec"]["http"][0]["mirror"].is_object()))
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn with_mirroring_one_interval_copies_traffic_to_the_canary_before_the_first_step() {
    let (ns, controller) = initialized_podinfo(
        "mirror",
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 60,
               "mirror": true, "mirrorWeight": 50}),
    )
    .await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let mut seen: Vec<(i64, i64, bool)> = Vec::new();
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(s) = split(&ns).await
            && seen.last() != Some(&s)
        {
            seen.push(s);
        }
        if phase(&ns).await == Some(Phase::Succeeded) {
            break;
        }
        assert!(Instant::now() < deadline, "no promotion; seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Istio's own CRD schema took the mirror; the walk is Flagger's: mirror first, then the steps.
    assert_eq!(
        seen,
        [
            (100, 0, false),
            (100, 0, true),
            (80, 20, false),
            (60, 40, false),
            (40, 60, false),
            (100, 0, false)
        ]
    );
    controller.abort();
}
