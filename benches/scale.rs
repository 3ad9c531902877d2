//! `make scale`: fledge with N canaries on the real plane (KWOK pods), release binary, all namespaces watched.
//!
//! The cluster first gets noise no canary uses — 5,000 ConfigMaps and 5,000 Secrets of 4 KiB and 1,000
//! Deployments in other namespaces — because fledge watches Deployments, ConfigMaps and Secrets cluster-wide.
//! Then, for each N (`FLEDGE_SCALE_N`, default `100,300,1000`): N apps (2-replica Deployment + Service) and their
//! Canaries (interval 10 s, 20 % steps to 60 %), a fresh controller, all Initialized, 30 s at rest, a new image
//! on all at once, and every Canary watched to Succeeded. Printed per N: controller RSS at rest and peak, CPU
//! seconds, API requests per canary per interval by verb, time between weight steps per canary (median, p99,
//! max, observed on the VirtualServices), time until all Succeeded, reconcile errors.
//!
//! Under `cargo test` it only says how to run it.

// A benchmark's report is its output.
#![allow(clippy::print_stderr, clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fledge::api::{Canary, Phase};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

/// The analysis interval of every canary.
const INTERVAL: Duration = Duration::from_secs(10);
/// Canaries (and noise objects) per namespace.
const PER_NAMESPACE: usize = 100;
/// Requests the bench keeps in flight while creating objects.
const IN_FLIGHT: usize = 32;
/// How long the initialized controller is watched at rest.
const AT_REST: Duration = Duration::from_secs(30);
/// The most a run may take from new image to all Succeeded before it is reported as failed.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("scale figures need the local plane: run `make scale`");
        return;
    }
    let sizes: Vec<usize> = std::env::var("FLEDGE_SCALE_N")
        .unwrap_or_else(|_| "100,300,1000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("FLEDGE_SCALE_N: comma-separated counts"))
        .collect();
    let client = support::client().await;
    install_crds(&client).await;
    let started = Instant::now();
    let _noise = create_noise().await;
    println!(
        "noise created in {:?}: 5,000 ConfigMaps and 5,000 Secrets of 4 KiB, 1,000 Deployments",
        started.elapsed()
    );
    let mut reports = Vec::new();
    for n in sizes {
        reports.push(run(&client, n).await);
    }
    println!(
        "\nfledge at scale (release binary, local plane with KWOK, interval 10 s, 20 % steps to 60 %, noise present)"
    );
    println!(
        "{:>6} {:>9} {:>9} {:>8} {:>14} {:>12} {:>11} {:>9} {:>9} {:>9} {:>12} {:>7}",
        "N",
        "RSS rest",
        "RSS peak",
        "CPU s",
        "CPU ms/c·iv",
        "req/c·iv",
        "scale-up p99",
        "gap p50",
        "gap p99",
        "gap max",
        "all done",
        "errors"
    );
    for r in &reports {
        println!(
            "{:>6} {:>6} MiB {:>5} MiB {:>8.1} {:>14.2} {:>12.2} {:>10.2}s {:>8.2}s {:>8.2}s {:>8.2}s {:>11.0}s {:>7}",
            r.n,
            r.rss_rest_kib / 1024,
            r.rss_peak_kib / 1024,
            r.cpu_rollout,
            r.cpu_per_canary_interval() * 1000.0,
            r.requests_per_canary_interval(),
            r.reaction.quantile(0.99),
            r.gaps.quantile(0.5),
            r.gaps.quantile(0.99),
            r.gaps.quantile(1.0),
            r.all_succeeded.as_secs_f64(),
            r.reconcile_errors,
        );
    }
}

/// Namespaces `noise-0` … `noise-9`, each with 500 ConfigMaps, 500 Secrets (4 KiB of data each) and 100
/// one-replica Deployments with a realistic pod template. Deleted when dropped.
async fn create_noise() -> Vec<TestNamespace> {
    let mut namespaces = Vec::new();
    let payload = "x".repeat(4096);
    for i in 0..10 {
        let ns = TestNamespace::create(&format!("noise-{i}")).await;
        let (cms, secrets, deployments) = (ns.api::<ConfigMap>(), ns.api::<Secret>(), ns.api::<Deployment>());
        let jobs = (0..500).map(|k| {
            let (cms, secrets, payload) = (cms.clone(), secrets.clone(), payload.clone());
            async move {
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": format!("config-{k}")}, "data": {"app.conf": payload}}),
                )
                .expect("configmap");
                cms.create(&PostParams::default(), &cm)
                    .await
                    .expect("create noise configmap");
                let secret: Secret = serde_json::from_value(
                    json!({"metadata": {"name": format!("secret-{k}")}, "stringData": {"token": payload}}),
                )
                .expect("secret");
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .expect("create noise secret");
            }
        });
        stream::iter(jobs)
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
        let jobs = (0..100).map(|k| {
            let deployments = deployments.clone();
            async move {
                deployments
                    .create(&PostParams::default(), &noise_deployment(&format!("service-{k}")))
                    .await
                    .expect("create noise deployment");
            }
        });
        stream::iter(jobs)
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
        namespaces.push(ns);
    }
    namespaces
}

/// A Deployment shaped like a real service's: labels, env, resources, probes (about 2 KiB).
fn noise_deployment(name: &str) -> Deployment {
    let env: Vec<_> = (0..12)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("value-of-setting-{i}-for-{name}")}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name, "team": "noise", "tier": "backend"},
                     "annotations": {"owner": "platform@example.com"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "team": "noise"}},
                "spec": {"containers": [{
                    "name": "app", "image": format!("registry.example.com/{name}:1.0.0"),
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "env": env,
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                    "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}, "periodSeconds": 10}
                }]}
            }
        }
    }))
    .expect("noise deployment")
}

/// One canary: its namespace and name.
type Key = (String, String);
/// Each canary's weight changes as seen on its VirtualService: (when, canary weight).
type Steps = Arc<Mutex<HashMap<Key, Vec<(Instant, i64)>>>>;

/// What one run at N canaries measured.
struct Report {
    n: usize,
    initialized: Duration,
    /// Before any Canary: the noise and the N apps cached.
    rss_noise_kib: u64,
    rss_rest_kib: u64,
    rss_peak_kib: u64,
    cpu_rest_per_minute: f64,
    cpu_rollout: f64,
    /// Σ over canaries of (Succeeded − new image) / interval.
    canary_intervals: f64,
    /// Non-watch requests by (verb, resource), new image → all Succeeded.
    requests: BTreeMap<(String, String), u64>,
    gaps: Sample,
    /// New image → target scaled up, per canary.
    reaction: Sample,
    /// The controller's own histograms over the rollouts.
    timings: Timings,
    all_succeeded: Duration,
    not_succeeded: Vec<String>,
    reconcile_errors: u64,
}

impl Report {
    fn cpu_per_canary_interval(&self) -> f64 {
        self.cpu_rollout / self.canary_intervals.max(1.0)
    }

    /// Non-watch requests per canary per analysis interval, new image → Succeeded (promotion included).
    fn requests_per_canary_interval(&self) -> f64 {
        self.requests.values().sum::<u64>() as f64 / self.canary_intervals.max(1.0)
    }

    fn print(&self) {
        println!("\n== N = {} canaries", self.n);
        println!(
            "all Initialized {:.0} s after the first Canary was created",
            self.initialized.as_secs_f64()
        );
        println!(
            "controller RSS: {} MiB 15 s after start (before any Canary), {} MiB at rest (all initialized), peak {} MiB; CPU at rest {:.2} s per minute",
            self.rss_noise_kib / 1024,
            self.rss_rest_kib / 1024,
            self.rss_peak_kib / 1024,
            self.cpu_rest_per_minute
        );
        println!(
            "new image on all → all Succeeded: {:.1} s{}",
            self.all_succeeded.as_secs_f64(),
            if self.not_succeeded.is_empty() {
                String::new()
            } else {
                format!("; NOT Succeeded: {:?}", self.not_succeeded)
            }
        );
        println!(
            "controller CPU during the rollouts: {:.1} s, {:.2} ms per canary per interval ({:.0} canary-intervals)",
            self.cpu_rollout,
            self.cpu_per_canary_interval() * 1000.0,
            self.canary_intervals
        );
        println!(
            "new image → target scaled up, per canary: median {:.2} s, p99 {:.2} s, max {:.2} s",
            self.reaction.quantile(0.5),
            self.reaction.quantile(0.99),
            self.reaction.quantile(1.0),
        );
        println!(
            "time between weight steps per canary: median {:.2} s, p99 {:.2} s, max {:.2} s ({} gaps)",
            self.gaps.quantile(0.5),
            self.gaps.quantile(0.99),
            self.gaps.quantile(1.0),
            self.gaps.len()
        );
        let total: u64 = self.requests.values().sum();
        println!(
            "API requests (watches excluded), new image → Succeeded: {:.2} per canary per interval, {:.1} per canary per rollout; by verb, per canary per interval:",
            self.requests_per_canary_interval(),
            total as f64 / self.n as f64
        );
        for ((verb, resource), count) in &self.requests {
            println!(
                "  {verb:>6} {resource:<34} {:.3}",
                *count as f64 / self.canary_intervals.max(1.0)
            );
        }
        self.timings.print();
        println!("reconcile errors: {}", self.reconcile_errors);
    }
}

/// Where the controller's time went, from its histograms: the API's answers by verb, whole reconciles, and
/// how late paced ticks ran past their interval (the controller's queue and the API, not the canary).
#[derive(Default)]
struct Timings {
    api: Vec<(String, Histogram)>,
    reconcile: Histogram,
    queue: Histogram,
    lateness: Histogram,
}

const VERBS: [&str; 5] = ["get", "list", "create", "patch", "delete"];

impl Timings {
    async fn scraped(url: &str) -> Self {
        let text = support::fledge::scrape(url).await.unwrap_or_default();
        Self {
            api: VERBS
                .iter()
                .map(|verb| {
                    let labels = format!("verb=\"{verb}\"");
                    let h = Histogram::read(&text, "fledge_kube_request_duration_seconds", &labels);
                    ((*verb).to_owned(), h)
                })
                .collect(),
            reconcile: Histogram::read(&text, "fledge_reconcile_duration_seconds", ""),
            queue: Histogram::read(&text, "fledge_reconcile_queue_seconds", ""),
            lateness: Histogram::read(&text, "fledge_tick_lateness_seconds", ""),
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            api: self
                .api
                .iter()
                .zip(&before.api)
                .map(|((verb, now), (_, was))| (verb.clone(), now.since(was)))
                .collect(),
            reconcile: self.reconcile.since(&before.reconcile),
            queue: self.queue.since(&before.queue),
            lateness: self.lateness.since(&before.lateness),
        }
    }

    fn print(&self) {
        let line = |what: &str, h: &Histogram| {
            println!(
                "  {what:<28} {:>7} observed, mean {:.3} s, p50 ≤ {} s, p99 ≤ {} s",
                h.count,
                h.mean(),
                h.quantile(0.5),
                h.quantile(0.99)
            );
        };
        println!("controller timings over the rollouts (histogram bounds):");
        for (verb, h) in self.api.iter().filter(|(_, h)| h.count > 0) {
            line(&format!("API answer, {verb}"), h);
        }
        line("reconcile", &self.reconcile);
        line("reconcile waited for a slot", &self.queue);
        line("paced tick late by", &self.lateness);
    }
}

/// Durations in seconds, for quantiles.
#[derive(Default)]
struct Sample(Vec<f64>);

impl Sample {
    fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (nearest rank); 0 when empty.
    fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }
}

async fn run(client: &Client, n: usize) -> Report {
    println!("\n== N = {n}: creating {n} apps and Canaries");
    let key_ns = TestNamespace::create(&format!("scale{n}-fledge")).await;
    let namespaces: Vec<TestNamespace> = stream::iter(
        (0..n.div_ceil(PER_NAMESPACE))
            .map(|i| async move { TestNamespace::create(&format!("scale{n}-{i}")).await }),
    )
    .buffered(4)
    .collect()
    .await;
    let keys: Vec<(usize, String)> = (0..n).map(|k| (k / PER_NAMESPACE, format!("app-{k}"))).collect();
    stream::iter(
        keys.iter()
            .map(|(i, name)| create_app(&namespaces[*i], name, "stefanprodan/podinfo:3.1.0")),
    )
    .buffer_unordered(IN_FLIGHT)
    .collect::<Vec<()>>()
    .await;

    let log = std::env::temp_dir().join(format!("fledge-scale-{n}.log"));
    // Extra controller environment for experiments, e.g. FLEDGE_SCALE_CONTROLLER_ENV="MALLOC_ARENA_MAX=2".
    let extra = std::env::var("FLEDGE_SCALE_CONTROLLER_ENV").unwrap_or_default();
    let mut env: Vec<(&str, &str)> = vec![("RUST_LOG", "warn,fledge::controller=info")];
    env.extend(extra.split_whitespace().filter_map(|kv| kv.split_once('=')));
    let controller = ControllerProcess::spawn_cluster_wide(&key_ns.name, &[], &env, Some(&log));
    let errors_before = support::eventually(
        "the controller serving /metrics",
        Duration::from_secs(60),
        || async {
            api_requests(&controller.metrics_url).await?;
            Ok::<_, String>(reconcile_errors(&controller.metrics_url).await)
        },
    )
    .await;
    // The controller 15 s after its start, with the noise and the apps cached (or still listing), before any
    // Canary exists.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rss_noise_kib = support::rss_kib(controller.pid(), "VmRSS");
    let created = Instant::now();
    stream::iter(keys.iter().map(|(i, name)| async {
        create_scale_canary(&namespaces[*i], name).await;
    }))
    .buffer_unordered(IN_FLIGHT)
    .collect::<Vec<()>>()
    .await;
    let ours: Arc<HashSet<String>> = Arc::new(namespaces.iter().map(|ns| ns.name.clone()).collect());
    let canaries = Api::<Canary>::all(client.clone());
    until(&canaries, &ours, "every canary Initialized", |counts| {
        counts.get(&format!("{:?}", Some(Phase::Initialized))).copied() == Some(n)
    })
    .await;
    let initialized = created.elapsed();
    println!("all {n} Initialized after {initialized:?}");

    let cpu_before_rest = support::cpu_seconds(controller.pid());
    tokio::time::sleep(AT_REST).await;
    let cpu_rest_per_minute =
        (support::cpu_seconds(controller.pid()) - cpu_before_rest) * 60.0 / AT_REST.as_secs_f64();
    let rss_rest_kib = support::rss_kib(controller.pid(), "VmRSS");

    let steps: Steps = Arc::default();
    let succeeded = Arc::new(Mutex::new(HashMap::<Key, Instant>::new()));
    let scaled_up = Arc::new(Mutex::new(HashMap::<Key, Instant>::new()));
    let watching = [
        tokio::spawn(watch_weights(client.clone(), ours.clone(), steps.clone())),
        tokio::spawn(watch_succeeded(client.clone(), ours.clone(), succeeded.clone())),
        tokio::spawn(watch_scaled_up(client.clone(), ours.clone(), scaled_up.clone())),
    ];
    // Let both watches list before anything changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests_before = api_requests(&controller.metrics_url).await.expect("scrape");
    let timings_before = Timings::scraped(&controller.metrics_url).await;
    let cpu_before = support::cpu_seconds(controller.pid());
    let shipped_at = Arc::new(Mutex::new(HashMap::<Key, Instant>::new()));
    let first_shipped = Instant::now();
    let spaces = &namespaces;
    stream::iter(keys.iter().map(|(i, name)| {
        let shipped_at = shipped_at.clone();
        async move {
            let ns = &spaces[*i];
            set_image_of(ns, name, "stefanprodan/podinfo:3.2.0").await;
            shipped_at
                .lock()
                .expect("lock")
                .insert((ns.name.clone(), name.clone()), Instant::now());
        }
    }))
    .buffer_unordered(IN_FLIGHT)
    .collect::<Vec<()>>()
    .await;
    println!("new image set on all {n} in {:?}", first_shipped.elapsed());

    let done = Instant::now() + ROLLOUT_LIMIT;
    while succeeded.lock().expect("lock").len() < n && Instant::now() < done {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_succeeded = first_shipped.elapsed();
    let cpu_rollout = support::cpu_seconds(controller.pid()) - cpu_before;
    let requests_after = api_requests(&controller.metrics_url).await.expect("scrape");
    let timings = Timings::scraped(&controller.metrics_url)
        .await
        .since(&timings_before);
    let rss_peak_kib = support::rss_kib(controller.pid(), "VmHWM");
    let reconcile_errors = reconcile_errors(&controller.metrics_url).await - errors_before;
    for w in watching {
        w.abort();
    }

    let (shipped_at, succeeded) = (
        shipped_at.lock().expect("lock").clone(),
        succeeded.lock().expect("lock").clone(),
    );
    let canary_intervals: f64 = succeeded
        .iter()
        .filter_map(|(key, at)| {
            Some(at.duration_since(*shipped_at.get(key)?).as_secs_f64() / INTERVAL.as_secs_f64())
        })
        .sum();
    let not_succeeded: Vec<String> = shipped_at
        .keys()
        .filter(|k| !succeeded.contains_key(*k))
        .map(|(ns, name)| format!("{ns}/{name}"))
        .take(10)
        .collect();
    let mut reaction = Sample::default();
    for (key, at) in scaled_up.lock().expect("lock").iter() {
        if let Some(shipped) = shipped_at.get(key) {
            reaction
                .0
                .push(at.saturating_duration_since(*shipped).as_secs_f64());
        }
    }
    let mut gaps = Sample::default();
    for seen in steps.lock().expect("lock").values() {
        // The first time each rising weight was seen; gaps between consecutive ones (20→40, 40→60).
        let mut rising: Vec<(Instant, i64)> = Vec::new();
        for &(at, weight) in seen {
            if weight > rising.last().map_or(0, |(_, w)| *w) {
                rising.push((at, weight));
            }
        }
        gaps.0.extend(
            rising
                .windows(2)
                .map(|w| w[1].0.duration_since(w[0].0).as_secs_f64()),
        );
    }

    let report = Report {
        n,
        initialized,
        rss_noise_kib,
        rss_rest_kib,
        rss_peak_kib,
        cpu_rest_per_minute,
        cpu_rollout,
        canary_intervals,
        requests: request_delta(&requests_before, &requests_after),
        gaps,
        reaction,
        timings,
        all_succeeded,
        not_succeeded,
        reconcile_errors,
    };
    report.print();

    // Teardown: Canaries first (their finalizers need the controller), then the namespaces.
    let deleting = Instant::now();
    stream::iter(namespaces.iter().map(|ns| async move {
        let _ = ns
            .api::<Canary>()
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
    }))
    .buffer_unordered(4)
    .collect::<Vec<()>>()
    .await;
    until(&canaries, &ours, "every canary deleted", |counts| {
        counts.is_empty()
    })
    .await;
    println!(
        "all {n} Canaries deleted (app restored, finalizer removed) {:.0} s after the delete",
        deleting.elapsed().as_secs_f64()
    );
    drop(controller);
    report
}

/// A Canary for app `name` with the run's analysis (no metrics: the steps are what is measured) and Flagger's
/// default progress deadline (10 minutes: a busy plane may take minutes to start 2,000 pods).
async fn create_scale_canary(ns: &TestNamespace, name: &str) {
    let spec = json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "service": {"port": 9898, "targetPort": 9898},
        "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20, "maxWeight": 60},
    });
    create_canary_spec(ns, name, spec).await.expect("create canary");
}

/// Polls (every 2 s: a list of 1,000 Canaries is not free for the plane) until `done` holds for the phase
/// counts of the Canaries in `ours`; panics after 10 minutes.
async fn until(
    canaries: &Api<Canary>,
    ours: &HashSet<String>,
    what: &str,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let counts = phases(canaries, ours).await;
        if done(&counts) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not true after 10 minutes; last seen {counts:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Canaries in namespaces `ours`, counted by phase.
async fn phases(canaries: &Api<Canary>, ours: &HashSet<String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for c in canaries
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if c.namespace().is_some_and(|ns| ours.contains(&ns)) {
            *counts
                .entry(format!("{:?}", c.status.and_then(|s| s.phase)))
                .or_default() += 1;
        }
    }
    counts
}

/// Records every change of a canary weight in VirtualServices of namespaces `ours`.
async fn watch_weights(client: Client, ours: Arc<HashSet<String>>, steps: Steps) {
    let api = istio_api_all(&client, "VirtualService");
    let mut events = watcher::watcher(api, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Ok(Some(vs)) = events.try_next().await {
        let ns = vs.namespace().unwrap_or_default();
        if !ours.contains(&ns) {
            continue;
        }
        let Some((_, canary)) = route_weights(&vs, &vs.name_any()) else {
            continue;
        };
        let mut steps = steps.lock().expect("lock");
        let seen = steps.entry((ns, vs.name_any())).or_default();
        if seen.last().is_none_or(|(_, w)| *w != canary) {
            seen.push((Instant::now(), canary));
        }
    }
}

/// Records when each object of `api` in namespaces `ours` is first seen with `reached` true.
async fn first_seen<K>(
    api: Api<K>,
    ours: Arc<HashSet<String>>,
    reached: impl Fn(&K) -> bool,
    seen: Arc<Mutex<HashMap<Key, Instant>>>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut events = watcher::watcher(api, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Ok(Some(o)) = events.try_next().await {
        let ns = o.namespace().unwrap_or_default();
        if ours.contains(&ns) && reached(&o) {
            seen.lock()
                .expect("lock")
                .entry((ns, o.name_any()))
                .or_insert_with(Instant::now);
        }
    }
}

/// When each Canary is first seen Succeeded.
async fn watch_succeeded(
    client: Client,
    ours: Arc<HashSet<String>>,
    succeeded: Arc<Mutex<HashMap<Key, Instant>>>,
) {
    let done = |c: &Canary| c.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded);
    first_seen(Api::<Canary>::all(client), ours, done, succeeded).await;
}

/// When each target Deployment (not a `-primary`) is first seen with replicas: fledge scaled it up for the
/// new revision (they are all at 0 when this starts).
async fn watch_scaled_up(
    client: Client,
    ours: Arc<HashSet<String>>,
    scaled: Arc<Mutex<HashMap<Key, Instant>>>,
) {
    let up = |d: &Deployment| {
        !d.name_any().ends_with("-primary") && d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0
    };
    first_seen(Api::<Deployment>::all(client), ours, up, scaled).await;
}

/// `fledge_reconcile_errors_total`, all categories.
async fn reconcile_errors(url: &str) -> u64 {
    let text = reqwest::get(url)
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    text.lines()
        .filter(|l| l.starts_with("fledge_reconcile_errors_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// The VirtualService (or other Istio kind) API across all namespaces.
fn istio_api_all(client: &Client, kind: &str) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &fledge::router::istio::resource(kind))
}
