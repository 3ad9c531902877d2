//! fledge keeps everything it needs in the cluster: a controller killed (SIGKILL) during initialisation,
//! after each weight step and during promotion, then restarted, finishes the rollout with the same weights,
//! never lowering one before promotion and never duplicating an object.

mod support;

use std::time::{Duration, Instant};

use fledge::api::Phase;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

async fn count<K>(api: Api<K>) -> usize
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(usize::MAX)
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_controller_killed_at_every_stage_resumes_without_regressing_or_duplicating() {
    let ns = TestNamespace::create("crash").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let mut controller = ControllerProcess::spawn(&ns.name);
    create_canary(
        &ns,
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}),
    )
    .await
    .expect("create canary");

    // During initialisation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    controller.kill();
    controller = ControllerProcess::spawn(&ns.name);
    wait_phase(&ns, Phase::Initialized, Duration::from_secs(90)).await;

    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let mut seen: Vec<(i64, i64)> = Vec::new();
    let mut kills = 1;
    let mut killed_in_promotion = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "no promotion after restarts; weights {seen:?}"
        );
        let current = phase(&ns).await;
        if current == Some(Phase::Succeeded) {
            break;
        }
        if let Some(w) = weights(&ns).await
            && seen.last() != Some(&w)
        {
            seen.push(w);
            // After each weight step: kill and restart.
            if w.1 > 0 && current == Some(Phase::Progressing) {
                controller.kill();
                kills += 1;
                controller = ControllerProcess::spawn(&ns.name);
            }
        }
        if current == Some(Phase::Promoting) && !killed_in_promotion {
            controller.kill();
            kills += 1;
            killed_in_promotion = true;
            controller = ControllerProcess::spawn(&ns.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller.kill();

    assert_eq!(seen.first(), Some(&(100, 0)));
    // The exact sequence: no weight lost, repeated or lowered before promotion, whatever the kills.
    assert_eq!(
        seen,
        [(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)],
        "weights after {kills} kills"
    );
    assert!(killed_in_promotion, "the promotion was not interrupted");
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );

    // Exactly one of each object.
    assert_eq!(
        count(ns.api::<Deployment>()).await,
        2,
        "podinfo and podinfo-primary"
    );
    assert_eq!(count(ns.api::<Service>()).await, 3, "apex, -primary, -canary");
    for kind in ["VirtualService", "DestinationRule"] {
        let api = istio_api(&ns.client, &ns.name, kind);
        let expected = if kind == "VirtualService" { 1 } else { 2 };
        assert_eq!(count(api).await, expected, "{kind}s");
    }
}
