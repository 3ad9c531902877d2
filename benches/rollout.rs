//! Rollout figures on the real plane with the real (release) `fledge controller` binary:
//! - time from `kubectl set image` to the target Deployment scaled up (5 rollouts: median, min, max);
//! - Kubernetes API requests fledge sends per canary per analysis interval while progressing, by verb and
//!   resource, from the controller's own `fledge_kube_requests_total` (watches are long-lived and excluded);
//! - time from deleting the Canary to the app restored and the Canary gone;
//! - controller RSS (now and peak), and its CPU seconds (from /proc) per rollout and per idle minute.
//!
//! Run with `make figures` (starts and stops the plane). Under `cargo test` it only says how to run it.

// A benchmark's report is its output.
#![allow(clippy::print_stderr, clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fledge::api::{Canary, Phase};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

const LIMIT: Duration = Duration::from_secs(120);
/// Analysis interval while counting requests: long enough that one interval is one step.
const COUNTED_INTERVAL: &str = "5s";
/// How long the controller is watched at rest.
const IDLE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("rollout figures need the local plane: run `make figures`");
        return;
    }
    let ns = TestNamespace::create("figures").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = ControllerProcess::spawn(&ns.name);
    create_canary(
        &ns,
        json!({"interval": "1s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    let idle_rss = support::rss_kib(controller.pid(), "VmRSS");
    // An initialized canary with nothing to do: what the controller costs at rest.
    let before = support::cpu_seconds(controller.pid());
    tokio::time::sleep(IDLE).await;
    let idle_cpu = support::cpu_seconds(controller.pid()) - before;

    let (scale_ups, costs) = set_image_to_scale_up(&ns, controller.pid(), &controller.metrics_url, 5).await;
    let per_interval = requests_per_interval(&ns, &controller.metrics_url).await;
    let rss = support::rss_kib(controller.pid(), "VmRSS");
    let peak = support::rss_kib(controller.pid(), "VmHWM");
    let teardown = delete_and_restore(&ns).await;

    println!("\nfledge rollout figures (release binary, local plane, one canary)");
    let mut sorted = scale_ups.clone();
    sorted.sort();
    println!(
        "set image → target scaled up: median {:?}, min {:?}, max {:?} over {} rollouts ({:?})",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        sorted.len(),
        scale_ups
    );
    let cpu: Vec<f64> = costs.iter().map(|c| c.cpu).collect();
    let mut cpu_sorted = cpu.clone();
    cpu_sorted.sort_by(f64::total_cmp);
    let mut requests: Vec<u64> = costs.iter().map(|c| c.requests).collect();
    println!(
        "API requests per rollout (watches excluded, set image → Succeeded, 3 steps to 60 %): {requests:?}"
    );
    requests.sort_unstable();
    println!("  median {} requests per rollout", requests[requests.len() / 2]);
    println!(
        "controller CPU per rollout (interval 1s, 3 steps to 60 %, set image → Succeeded): median {:.2} s, max {:.2} s ({cpu:?})",
        cpu_sorted[cpu_sorted.len() / 2],
        cpu_sorted[cpu_sorted.len() - 1],
    );
    println!(
        "controller CPU at rest (one initialized canary): {:.2} s per minute",
        idle_cpu * 60.0 / IDLE.as_secs_f64()
    );
    let (intervals, by_kind) = per_interval;
    let total: f64 = by_kind.values().sum::<u64>() as f64;
    println!(
        "API requests per canary per analysis interval while progressing: {:.1} (over {intervals} intervals of {COUNTED_INTERVAL})",
        total / intervals as f64
    );
    for ((verb, resource), n) in &by_kind {
        println!("  {verb:>6} {resource:<34} {:.1}", *n as f64 / intervals as f64);
    }
    println!("delete Canary mid-rollout → app restored and Canary gone: {teardown:?}");
    println!(
        "controller RSS: {} MiB initialized, {} MiB after the rollouts, peak {} MiB",
        idle_rss / 1024,
        rss / 1024,
        peak / 1024
    );
}

/// What one rollout cost the controller: CPU seconds and API requests (watches excluded), new image → Succeeded.
#[derive(Debug, Clone, Copy)]
struct Cost {
    cpu: f64,
    requests: u64,
}

/// Non-watch requests the controller behind `url` has sent so far.
async fn requests_so_far(url: &str) -> u64 {
    api_requests(url)
        .await
        .expect("scrape the controller")
        .iter()
        .filter(|(verb, _, _)| verb != "watch")
        .map(|(_, _, n)| n)
        .sum()
}

/// Ships `n` new images one after the other; for each, the time until `podinfo` has replicas again, and what
/// controller `pid` (metrics at `url`) spent from the new image to Succeeded.
async fn set_image_to_scale_up(
    ns: &TestNamespace,
    pid: u32,
    url: &str,
    n: usize,
) -> (Vec<Duration>, Vec<Cost>) {
    let (mut took, mut cost) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let shipped = format!("stefanprodan/podinfo:3.1.{i}");
        let cpu_before = support::cpu_seconds(pid);
        let requests_before = requests_so_far(url).await;
        let start = Instant::now();
        set_image(ns, &shipped).await;
        loop {
            if replicas(ns, "podinfo").await.is_some_and(|(spec, _)| spec > 0) {
                break;
            }
            assert!(start.elapsed() < LIMIT, "podinfo never scaled up for {shipped}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(start.elapsed());
        support::eventually("the rollout to end", LIMIT, || async {
            let primary = image(ns, "podinfo-primary").await;
            let phase = phase(ns).await;
            if primary.as_deref() == Some(shipped.as_str()) && phase == Some(Phase::Succeeded) {
                Ok(())
            } else {
                Err(format!("primary {primary:?}, phase {phase:?}"))
            }
        })
        .await;
        cost.push(Cost {
            cpu: support::cpu_seconds(pid) - cpu_before,
            requests: requests_so_far(url).await - requests_before,
        });
    }
    (took, cost)
}

/// A slow rollout (5 % steps every COUNTED_INTERVAL); counts requests between weight 10 and weight 60.
async fn requests_per_interval(ns: &TestNamespace, url: &str) -> (u64, BTreeMap<(String, String), u64>) {
    let patch =
        json!({"spec": {"analysis": {"interval": COUNTED_INTERVAL, "stepWeight": 5, "maxWeight": 100}}});
    ns.api::<Canary>()
        .patch("podinfo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("slow the canary down");
    set_image(ns, "stefanprodan/podinfo:3.2.0").await;
    let at = |weight: i64| async move {
        support::eventually(&format!("canary weight {weight}"), LIMIT, || async {
            match weights(ns).await {
                Some((_, w)) if w >= weight => Ok(w),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    };
    let from = at(10).await;
    let before = api_requests(url).await.expect("scrape");
    let to = at(60).await;
    let after = api_requests(url).await.expect("scrape");
    (
        u64::try_from((to - from) / 5).unwrap_or(1).max(1),
        request_delta(&before, &after),
    )
}

/// Deletes the Canary (mid-rollout, at 60 % or more); the time until it is gone (fledge restored the app and removed its finalizer).
async fn delete_and_restore(ns: &TestNamespace) -> Duration {
    let start = Instant::now();
    ns.api::<Canary>()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete canary");
    support::eventually("the canary to be gone", LIMIT, || async {
        match ns.api::<Canary>().get_opt("podinfo").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|c| c.map(|c| c.status)))),
        }
    })
    .await;
    let took = start.elapsed();
    assert_eq!(
        replicas(ns, "podinfo").await.map(|r| r.1),
        Some(2),
        "podinfo restored"
    );
    took
}
