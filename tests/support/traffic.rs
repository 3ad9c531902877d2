//! A traffic simulator standing in for Istio's sidecars: it "serves" a request rate split between the
//! primary and canary workloads by the live VirtualService weights, and exposes what Istio would report —
//! `istio_requests_total` and `istio_request_duration_milliseconds_bucket` with reporter="destination" —
//! for Prometheus to scrape. Knobs set the canary's error rate and latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;

use super::fledge::weights_in;

/// Histogram bucket bounds (ms), Istio's defaults.
const BUCKETS: &[f64] = &[
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
];

/// What the simulated workloads do.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    pub requests_per_second: f64,
    /// Share of the canary's requests answered 500 (0.0..=1.0).
    pub canary_error_rate: f64,
    pub canary_latency_ms: f64,
    pub primary_error_rate: f64,
    pub primary_latency_ms: f64,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            requests_per_second: 100.0,
            canary_error_rate: 0.0,
            canary_latency_ms: 4.0,
            primary_error_rate: 0.0,
            primary_latency_ms: 4.0,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Workload {
    ok: f64,
    errors: f64,
    /// Cumulative counts per bucket bound (same order as BUCKETS), then +Inf.
    buckets: Vec<f64>,
    sum: f64,
}

#[derive(Debug)]
struct State {
    knobs: Knobs,
    namespace: String,
    /// workload → counters; both workloads exist from the start.
    workloads: BTreeMap<String, Workload>,
}

/// A running simulator; dropping it stops it.
pub struct Traffic {
    /// `127.0.0.1:port` for Prometheus' scrape config.
    pub target: String,
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// Simulates traffic to `target` (`podinfo` and `podinfo-primary`) in `namespace`.
    pub async fn start(client: Client, namespace: &str, target: &str, knobs: Knobs) -> Self {
        let state = Arc::new(Mutex::new(State {
            knobs,
            namespace: namespace.to_owned(),
            workloads: [target.to_owned(), format!("{target}-primary")]
                .into_iter()
                .map(|w| {
                    (
                        w,
                        Workload {
                            buckets: vec![0.0; BUCKETS.len() + 1],
                            ..Workload::default()
                        },
                    )
                })
                .collect(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let for_http = state.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let state = for_http.clone();
                async move { exposition(&state.lock().expect("state")) }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let for_sim = state.clone();
        let (target_name, ns) = (target.to_owned(), namespace.to_owned());
        let sim = tokio::spawn(async move {
            let mut last = Instant::now();
            let mut split = (100.0, 0.0);
            let mut since_read = Duration::MAX;
            loop {
                if since_read >= Duration::from_millis(200) {
                    // Before fledge routes, the apex Service sends everything to the target's own pods.
                    split = match weights_in(&client, &ns).await {
                        Some((p, c)) => (p as f64, c as f64),
                        None => (0.0, 100.0),
                    };
                    since_read = Duration::ZERO;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let dt = last.elapsed();
                last = Instant::now();
                since_read = since_read.saturating_add(dt);
                let mut s = for_sim.lock().expect("state");
                let k = s.knobs;
                let total = k.requests_per_second * dt.as_secs_f64();
                let primary = format!("{target_name}-primary");
                serve(
                    s.workloads.get_mut(&primary).expect("primary"),
                    total * split.0 / 100.0,
                    k.primary_error_rate,
                    k.primary_latency_ms,
                );
                serve(
                    s.workloads.get_mut(&target_name).expect("canary"),
                    total * split.1 / 100.0,
                    k.canary_error_rate,
                    k.canary_latency_ms,
                );
            }
        });
        Self {
            target: addr.to_string(),
            state,
            tasks: vec![server, sim],
        }
    }

    /// Changes what the workloads do from now on.
    pub fn set(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut self.state.lock().expect("state").knobs);
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn serve(w: &mut Workload, requests: f64, error_rate: f64, latency_ms: f64) {
    if requests <= 0.0 {
        return;
    }
    w.errors += requests * error_rate;
    w.ok += requests * (1.0 - error_rate);
    for (i, le) in BUCKETS.iter().enumerate() {
        if latency_ms <= *le {
            w.buckets[i] += requests;
        }
    }
    w.buckets[BUCKETS.len()] += requests;
    w.sum += requests * latency_ms;
}

/// Prometheus' text format of every series.
fn exposition(s: &State) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE istio_requests_total counter");
    for (name, w) in &s.workloads {
        for (code, value) in [("200", w.ok), ("500", w.errors)] {
            let _ = writeln!(
                out,
                "istio_requests_total{{{},response_code=\"{code}\"}} {value}",
                labels(&s.namespace, name)
            );
        }
    }
    let _ = writeln!(out, "# TYPE istio_request_duration_milliseconds histogram");
    for (name, w) in &s.workloads {
        let l = labels(&s.namespace, name);
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_bucket{{{l},le=\"{le}\"}} {}",
                w.buckets[i]
            );
        }
        let inf = w.buckets[BUCKETS.len()];
        let _ = writeln!(
            out,
            "istio_request_duration_milliseconds_bucket{{{l},le=\"+Inf\"}} {inf}"
        );
        let _ = writeln!(out, "istio_request_duration_milliseconds_sum{{{l}}} {}", w.sum);
        let _ = writeln!(out, "istio_request_duration_milliseconds_count{{{l}}} {inf}");
    }
    out
}

fn labels(namespace: &str, workload: &str) -> String {
    format!(
        "reporter=\"destination\",destination_workload=\"{workload}\",destination_workload_namespace=\"{namespace}\""
    )
}
