//! What the controller costs the API server: an idle canary sends nothing when its Deployments change
//! without a new revision, re-reads its objects once per `--resync` (writing none that holds), a halted one
//! ticks without writing its status, and a hand edit to its routing is repaired at once because the watches
//! that fill the cache also wake it.

mod support;

use std::time::Duration;

use fledge::api::Phase;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

const LIMIT: Duration = Duration::from_secs(90);

/// Changes the Deployment `name`'s metadata, not its template: an event for fledge, no new revision.
async fn touch(ns: &TestNamespace, name: &str, n: usize) {
    let patch = json!({"metadata": {"annotations": {"example.com/touched": n.to_string()}}});
    ns.api::<Deployment>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate deployment");
}

/// podinfo initialised by a spawned controller with `flags`; returns it once its first writes settled.
async fn idle_canary(prefix: &str, flags: &[&str]) -> (TestNamespace, ControllerProcess) {
    let ns = TestNamespace::create(prefix).await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = ControllerProcess::spawn_with(&ns.name, flags, &[]);
    create_canary(&ns, json!({"interval": "1s", "threshold": 2, "stepWeight": 20}))
        .await
        .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    (ns, controller)
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn an_idle_canary_sends_no_request_when_its_deployments_change_without_a_new_revision() {
    let (ns, controller) = idle_canary("writes-idle", &[]).await;
    let before = api_requests(&controller.metrics_url).await.expect("scrape");
    for n in 0..5 {
        touch(&ns, "podinfo", n).await;
        touch(&ns, "podinfo-primary", n).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = api_requests(&controller.metrics_url).await.expect("scrape");
    let sent = request_delta(&before, &after);
    assert!(sent.is_empty(), "an idle canary sent {sent:?}");
    assert_eq!(phase(&ns).await, Some(Phase::Initialized));
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_canary_halted_waiting_for_its_rollout_ticks_every_interval_without_writing_its_status() {
    let (ns, controller) = idle_canary("writes-halt", &[]).await;
    make_target_unschedulable(&ns).await;
    event_note(&ns, "waiting for rollout to finish").await;
    // The first halted tick's status write (the event goes out beside it) has landed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = || async {
        let text = scrape(&controller.metrics_url).await.expect("scrape");
        Histogram::read(&text, "fledge_tick_lateness_seconds", "").count
    };
    let (before, ticked) = (
        api_requests(&controller.metrics_url).await.expect("scrape"),
        ticks().await,
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (after, ticked) = (
        api_requests(&controller.metrics_url).await.expect("scrape"),
        ticks().await - ticked,
    );
    let sent = request_delta(&before, &after);
    // Interval 1 s: ~6 halted ticks, each with nothing new to record.
    assert!(ticked >= 4, "{ticked} ticks in 6 s");
    assert!(
        !sent.contains_key(&("patch".to_owned(), "canaries/status".to_owned())),
        "a halted canary wrote its status: {sent:?}"
    );
    assert_eq!(phase(&ns).await, Some(Phase::Progressing));
    drop(controller);
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn an_idle_canary_re_reads_its_objects_once_per_resync_and_rewrites_none_that_holds() {
    let (ns, controller) = idle_canary("writes-resync", &["--resync", "3s"]).await;
    let before = api_requests(&controller.metrics_url).await.expect("scrape");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = api_requests(&controller.metrics_url).await.expect("scrape");
    let sent = request_delta(&before, &after);
    let count = |verb: &str, resource: &str| {
        sent.get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    // 10 s at a 3 s (±20 %) resync: two to four reads of 3 Services, 2 DestinationRules, 1 VirtualService,
    // from the API (not the cache)...
    assert!(
        (6..=12).contains(&count("get", "services")),
        "services read {} times: {sent:?}",
        count("get", "services")
    );
    assert!((4..=8).contains(&count("get", "destinationrules")), "{sent:?}");
    assert!((2..=4).contains(&count("get", "virtualservices")), "{sent:?}");
    // ...and no write: every object still holds what fledge applied.
    assert!(
        sent.keys().all(|(verb, _)| verb == "get"),
        "an idle canary with nothing drifted wrote: {sent:?}"
    );
    drop(ns);
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_hand_edit_to_an_idle_canarys_routing_is_repaired_at_once() {
    let (ns, controller) = initialized_podinfo(
        "writes-drift",
        json!({"interval": "5s", "threshold": 2, "stepWeight": 20}),
    )
    .await;
    let vs = istio_api(&ns.client, &ns.name, "VirtualService");
    let edit = json!([
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 50},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 50},
    ]);
    vs.patch(
        "podinfo",
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(edit).expect("patch")),
    )
    .await
    .expect("edit the VirtualService by hand");
    wait_weights(&ns, (100, 0)).await;

    let elsewhere = json!({"spec": {"selector": {"app": "elsewhere"}}});
    ns.api::<Service>()
        .patch(
            "podinfo-canary",
            &PatchParams::default(),
            &Patch::Merge(&elsewhere),
        )
        .await
        .expect("edit the canary Service by hand");
    support::eventually("podinfo-canary selects podinfo again", LIMIT, || async {
        match selector(&ns, "podinfo-canary").await {
            Some(s) if s.get("app").map(String::as_str) == Some("podinfo") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    istio_api(&ns.client, &ns.name, "DestinationRule")
        .delete("podinfo-primary", &DeleteParams::default())
        .await
        .expect("delete a DestinationRule by hand");
    support::eventually("DestinationRule podinfo-primary back", LIMIT, || async {
        match istio_api(&ns.client, &ns.name, "DestinationRule")
            .get_opt("podinfo-primary")
            .await
        {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(phase(&ns).await, Some(Phase::Initialized));
    controller.abort();
}
