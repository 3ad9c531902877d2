//! The controller: watches Canaries, their target Deployments and the configs those reference, and runs
//! one reconcile per change or per analysis interval — observe → decide → act → record.

pub mod checksum_key;
mod events;
mod judge;
pub mod leader;
mod manual;
mod ownership;
mod paces;
pub mod policies;
mod reconcile;
mod slots;
mod status;
mod templates;
mod watches;
mod written;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::{Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client};

pub use reconcile::{Context, ReconcileError};

use crate::api::Canary;
use crate::api::{ClusterPolicy, PolicyResource};
use crate::policy::PolicyEngine;
use crate::registry::PullLimits;

/// Canaries reconciled at once by default (`--concurrency`; why 48: `fledge controller --help`).
pub const DEFAULT_CONCURRENCY: u16 = 48;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Floor for `analysis.interval` (Flagger: 10 s). Lower only for tests and demos.
    pub min_interval: Duration,
    /// Namespace to watch; all when `None`.
    pub namespace: Option<String>,
    /// Labels tried, in order, to find the label that selects a target's pods (Flagger's three).
    pub selector_labels: Vec<String>,
    /// Prometheus for canaries that name none (`--metrics-server`).
    pub metrics_server: Option<String>,
    /// Timeout of one metric check query.
    pub query_timeout: Duration,
    /// Bounds on a policy's own queries through the `metrics` import.
    pub policy_queries: crate::analysis::QueryLimits,
    /// Canaries reconciled at once ([`DEFAULT_CONCURRENCY`] unless set).
    pub concurrency: u16,
    /// Act only while holding this Lease; `None` acts at once (a single replica).
    pub lease: Option<leader::LeaseConfig>,
    /// fledge's own series, exported on `/metrics`.
    pub metrics: crate::telemetry::metrics::Metrics,
    /// Components a Canary may name as `file:<name>` (`--policy-dir`); none when `None`.
    pub policy_dir: Option<std::path::PathBuf>,
    /// Where fetched component bytes are kept by digest, so a restart keeps pinned rollouts.
    pub policy_blob_dir: Option<std::path::PathBuf>,
    /// Size and time bounds of fetching one policy component.
    pub policy_fetch: PullLimits,
    /// Longest one reconcile may take, beyond the time its webhooks may take by their own settings.
    pub reconcile_deadline: Duration,
    /// Longest a deleted Canary waits for its target to serve again before it leaves the primary serving.
    pub teardown_deadline: Duration,
    /// How often a canary's objects are read from the API (not the cache) and re-applied where they drifted
    /// (`--resync`).
    pub resync: Duration,
    /// Until when this replica may write (leader election); the client stack obeys it.
    pub fence: leader::Fence,
    /// The namespace of the Secret keying Secret checksums (`checksum_key`), created there on first start;
    /// none hashes Secrets unkeyed (tests that run the controller in process).
    pub checksum_key_namespace: Option<String>,
}

/// `--reconcile-deadline`'s default.
pub const RECONCILE_DEADLINE: Duration = Duration::from_secs(30);
/// `--resync`'s default.
pub const RESYNC: Duration = Duration::from_secs(300);
/// `--teardown-deadline`'s default.
pub const TEARDOWN_DEADLINE: Duration = Duration::from_secs(300);

impl Default for Options {
    fn default() -> Self {
        Self {
            min_interval: crate::api::MIN_INTERVAL,
            namespace: None,
            selector_labels: crate::cluster::default_labels(),
            metrics_server: None,
            query_timeout: crate::prometheus::DEFAULT_TIMEOUT,
            policy_queries: crate::analysis::QueryLimits::default(),
            concurrency: DEFAULT_CONCURRENCY,
            lease: None,
            metrics: crate::telemetry::metrics::Metrics::new(),
            policy_dir: None,
            policy_blob_dir: None,
            policy_fetch: PullLimits::default(),
            reconcile_deadline: RECONCILE_DEADLINE,
            teardown_deadline: TEARDOWN_DEADLINE,
            resync: RESYNC,
            fence: leader::Fence::open(),
            checksum_key_namespace: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// SIGTERM or Ctrl-C: a clean stop.
    Signal,
    /// The Lease was lost: another replica acts now; this one must not.
    LeaseLost,
    /// The controller could not start (a missing CRD, a policy engine that cannot load the default).
    SetupFailed(String),
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the controller until the process is stopped (or, with leader election, loses its Lease).
pub async fn run(client: Client, engine: PolicyEngine, options: Options) -> Ended {
    if let Err(why) = crds_installed(&client).await {
        return Ended::SetupFailed(why);
    }
    if let Some(lease) = &options.lease {
        tokio::select! {
            () = leader::acquire(&client, lease, &options.fence) => {}
            () = shutdown_signal() => return Ended::Signal,
        }
    }
    let api = |client: &Client| -> Api<Canary> {
        match &options.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    };
    let (reader, writer) = reflector::store::<Canary>();
    // Raised once the store holds the listed Canaries (kube's `wait_until_ready` wakes only one waiter, and
    // kube's own controller is one): from then on the Deployment cache can tell which Deployments they name.
    let canaries_listed = Arc::new(AtomicBool::new(false));
    let listed = canaries_listed.clone();
    // Status writes do not change the generation: fledge never wakes itself with them.
    let canaries = watches::touched_once_stored(
        watcher(api(&client), watches::config())
            .default_backoff()
            .modify(watches::slim)
            .reflect(writer)
            .inspect(move |event| {
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    listed.store(true, Ordering::Release);
                }
            }),
        reader.clone(),
        (),
    )
    .predicate_filter(predicates::generation.combine(manual_request), Default::default());
    let policies = match policies::PolicyStore::new(
        engine,
        options.policy_dir.clone(),
        options.policy_blob_dir.clone(),
        options.policy_fetch.max_bytes,
    ) {
        Ok(store) => Arc::new(store),
        Err(e) => return Ended::SetupFailed(e.to_string()),
    };
    let controller = Controller::for_stream(canaries, reader.clone());
    // Read (or created) once this replica leads: a standby writes nothing.
    let secret_key = match &options.checksum_key_namespace {
        Some(namespace) => match checksum_key::load_or_create(&client, namespace).await {
            Ok(key) => Some(key),
            Err(why) => return Ended::SetupFailed(why),
        },
        None => None,
    };
    let (controller, index) = watches::wire(
        controller,
        &client,
        options.namespace.as_deref(),
        &reader,
        canaries_listed,
        secret_key,
    )
    .await;
    {
        // When the caches are filled, for an operator wondering why the first reconciles wait.
        let (index, started) = (index.clone(), std::time::Instant::now());
        tokio::spawn(async move {
            index.ready().await;
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "watch caches filled");
        });
    }
    let ctx = match Context::new(
        client.clone(),
        policies.clone(),
        options.clone(),
        reporter(),
        reader.clone(),
        index,
    ) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => return Ended::SetupFailed(e.to_string()),
    };
    // Policy reconcilers wake the Canaries that use a policy once it changed.
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let policy_ctx = Arc::new(policies::PolicyContext {
        client: client.clone(),
        store: policies,
        limits: options.policy_fetch,
        canaries: reader.clone(),
        wake,
        metrics: options.metrics.clone(),
    });
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Stop on a signal, or when the Lease is lost (the watcher runs as its own task; the controller only
    // needs to hear that it is time).
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watchdog = {
        let (client, lease, lost, fence) = (
            client.clone(),
            options.lease.clone(),
            lost.clone(),
            options.fence.clone(),
        );
        tokio::spawn(async move {
            let keep = async {
                match &lease {
                    Some(lease) => leader::keep(&client, lease, &fence).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = keep => lost.store(true, std::sync::atomic::Ordering::SeqCst),
                () = shutdown_signal() => {}
            }
            let _ = stop_tx.send(());
        })
    };
    let stop = futures::FutureExt::shared(async move {
        let _ = stop_rx.await;
    });
    let policy_tasks = [
        tokio::spawn(policies::run::<PolicyResource>(
            policy_ctx.clone(),
            options.namespace.clone(),
            stop.clone(),
        )),
        tokio::spawn(policies::run::<ClusterPolicy>(policy_ctx, None, stop.clone())),
        tokio::spawn(templates::run(
            client.clone(),
            options.namespace.clone(),
            stop.clone(),
        )),
    ];
    controller
        .reconcile_on(woken)
        // kube starts every due reconcile; `--concurrency` is enforced fairly by the reconciles' own slots.
        .with_config(kube::runtime::controller::Config::default().concurrency(0))
        .graceful_shutdown_on(stop)
        .run(reconcile::bounded, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile: {e}");
            }
        })
        .await;
    for task in policy_tasks {
        let _ = task.await;
    }
    watchdog.abort();
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Ended::LeaseLost;
    }
    if let Some(lease) = &options.lease {
        leader::release(&client, lease, &options.fence).await;
    }
    Ended::Signal
}

/// The operator's request on a Canary (`fledge.dev/manual`), hashed: a new one wakes the Canary, as a spec
/// change does (status writes and other annotations do not).
fn manual_request(canary: &Canary) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let request = canary
        .metadata
        .annotations
        .as_ref()?
        .get(crate::api::MANUAL_ANNOTATION)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    request.hash(&mut h);
    Some(h.finish())
}

/// fledge's resources, which it cannot run without.
const RESOURCES: [&str; 4] = ["canaries", "metrictemplates", "policies", "clusterpolicies"];

/// Fails with the CRDs that are missing (or the API's answer), so a controller without its CRDs stops with a
/// clear error instead of watching nothing.
async fn crds_installed(client: &Client) -> Result<(), String> {
    let missing = |names: &[&str]| {
        let crds: Vec<String> = names.iter().map(|n| format!("{n}.fledge.dev")).collect();
        format!(
            "CRD {} not installed (apply deploy/crds.yaml, or `fledge crds | kubectl apply --server-side -f -`)",
            crds.join(", ")
        )
    };
    let group = match kube::discovery::group(client, "fledge.dev").await {
        Ok(group) => group,
        Err(kube::Error::Api(e)) if e.code == 404 => return Err(missing(&RESOURCES)),
        Err(kube::Error::Discovery(
            kube::error::DiscoveryError::MissingApiGroup(_) | kube::error::DiscoveryError::EmptyApiGroup(_),
        )) => return Err(missing(&RESOURCES)),
        Err(e) => return Err(format!("cannot discover fledge.dev: {e}")),
    };
    let served: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.plural)
        .collect();
    let absent = absent(&served);
    if absent.is_empty() {
        Ok(())
    } else {
        Err(missing(&absent))
    }
}

/// fledge's resources missing from what the API serves.
fn absent(served: &[String]) -> Vec<&'static str> {
    RESOURCES
        .into_iter()
        .filter(|r| !served.iter().any(|s| s == r))
        .collect()
}

/// This controller instance, for events: the pod name in a cluster, else the host.
fn reporter() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "fledge".into())
}

#[cfg(test)]
mod tests {
    use super::absent;

    #[test]
    fn every_missing_crd_is_named() {
        let served = ["canaries".to_owned(), "metrictemplates".to_owned()];
        assert_eq!(absent(&served), ["policies", "clusterpolicies"]);
        let all = ["canaries", "metrictemplates", "policies", "clusterpolicies"].map(str::to_owned);
        assert!(absent(&all).is_empty());
    }
}
