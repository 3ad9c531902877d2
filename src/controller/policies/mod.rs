//! Policies and ClusterPolicies: watched, fetched (bounded, verified by digest), compiled off the async
//! runtime, recorded in the [`PolicyStore`] and in their status — then the Canaries that use them are woken.
//! A Policy that fails affects only its own Canaries.

mod fetch;
pub mod store;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use store::{Entry, Loaded, NotReady, PolicyKey, PolicyStore};

use self::fetch::{Scope, fetch};
use super::status::{condition, upsert_condition};
use crate::api::{Canary, ClusterPolicy, PolicyKind, PolicyResource, PolicyResourceStatus, PolicySpec};
use crate::cluster::FIELD_MANAGER;
use crate::policy::{Grants, PolicyComponent, is_component};
use crate::registry::PullLimits;

/// A Policy or a ClusterPolicy, seen the same way.
pub trait PolicyObject:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static
{
    const KIND: PolicyKind;
    fn policy_spec(&self) -> PolicySpec;
    fn policy_status(&self) -> Option<&PolicyResourceStatus>;
    fn api(client: &Client, namespace: Option<&str>) -> Api<Self>;
}

impl PolicyObject for PolicyResource {
    const KIND: PolicyKind = PolicyKind::Policy;
    fn policy_spec(&self) -> PolicySpec {
        self.spec.clone()
    }
    fn policy_status(&self) -> Option<&PolicyResourceStatus> {
        self.status.as_ref()
    }
    fn api(client: &Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

impl PolicyObject for ClusterPolicy {
    const KIND: PolicyKind = PolicyKind::ClusterPolicy;
    fn policy_spec(&self) -> PolicySpec {
        self.spec.clone().into()
    }
    fn policy_status(&self) -> Option<&PolicyResourceStatus> {
        self.status.as_ref()
    }
    fn api(client: &Client, _: Option<&str>) -> Api<Self> {
        Api::all(client.clone())
    }
}

fn key_of<K: PolicyObject>(obj: &K) -> PolicyKey {
    PolicyKey {
        kind: K::KIND,
        namespace: obj.namespace(),
        name: obj.name_any(),
    }
}

/// What the policy reconcilers share.
pub struct PolicyContext {
    pub client: Client,
    pub store: Arc<PolicyStore>,
    pub limits: PullLimits,
    /// Every Canary, to find those a policy change concerns.
    pub canaries: Store<Canary>,
    /// Wakes the canary controller for a Canary.
    pub wake: futures::channel::mpsc::UnboundedSender<ObjectRef<Canary>>,
    /// fledge's own series (`fledge_policy_ready`).
    pub metrics: crate::telemetry::metrics::Metrics,
}

impl std::fmt::Debug for PolicyContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyContext").finish_non_exhaustive()
    }
}

/// A status write failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("policy status: {0}")]
pub struct PolicyStatusError(#[from] kube::Error);

impl PolicyStatusError {
    pub fn category(&self) -> &'static str {
        "policy_status"
    }
}

/// Runs the reconciler of one policy kind until `stop` resolves.
pub async fn run<K: PolicyObject>(
    ctx: Arc<PolicyContext>,
    namespace: Option<String>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api = K::api(&ctx.client, namespace.as_deref());
    let (reader, writer) = reflector::store::<K>();
    let forget = ctx.clone();
    let objects = watcher(api, crate::controller::watches::config())
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(obj)) = event {
                let key = key_of(obj);
                forget.store.remove(&key);
                forget.metrics.forget_policy(
                    kind_name(key.kind),
                    key.namespace.as_deref().unwrap_or_default(),
                    &key.name,
                );
                wake_users(&forget, &key);
            }
        })
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    // Metadata is enough to know a source ConfigMap changed; its bytes are read only by the reconcile.
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = match namespace.as_deref() {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let sources = reader.clone();
    let config_maps = watcher(config_maps, crate::controller::watches::config())
        .default_backoff()
        .touched_objects();
    Controller::for_stream(objects, reader)
        .watches_stream(config_maps, move |cm| policies_reading(&sources, &cm))
        .graceful_shutdown_on(stop)
        .run(reconcile::<K>, retry, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("policy reconcile: {e}");
            }
        })
        .await;
}

/// Policies whose source is this ConfigMap.
fn policies_reading<K: PolicyObject>(
    store: &Store<K>,
    cm: &PartialObjectMeta<ConfigMap>,
) -> Vec<ObjectRef<K>> {
    let (ns, name) = (cm.namespace(), cm.name_any());
    store
        .state()
        .iter()
        .filter(|p| {
            p.policy_spec()
                .source
                .config_map
                .is_some_and(|c| c.name == name && c.namespace.clone().or_else(|| p.namespace()) == ns)
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn retry<K: PolicyObject>(obj: Arc<K>, err: &PolicyStatusError, _: Arc<PolicyContext>) -> Requeue {
    tracing::warn!(policy = %obj.name_any(), category = err.category(), "policy reconcile failed: {err}");
    Requeue::requeue(Duration::from_secs(5))
}

/// How long a failure that may heal by itself (registry down, credentials being fixed) waits to retry.
const RETRY_TRANSIENT: Duration = Duration::from_secs(15);

/// Fetch → verify → compile → record one policy resource, then wake its Canaries if what it serves changed.
async fn reconcile<K: PolicyObject>(
    obj: Arc<K>,
    ctx: Arc<PolicyContext>,
) -> Result<Requeue, PolicyStatusError> {
    let key = key_of(obj.as_ref());
    let spec = obj.policy_spec();
    let generation = obj.meta().generation;
    let old = obj.policy_status().cloned().unwrap_or_default();
    let before = ctx.store.get(&key);
    // A registry pull is costly: an unchanged spec that already loaded is not fetched again. A ConfigMap is
    // one GET, and its content may be what changed.
    let unchanged = old.observed_generation == generation
        && spec.source.config_map.is_none()
        && matches!(&before, Some(Entry::Ready(l)) if Some(&l.digest) == old.digest.as_ref());
    if unchanged {
        return Ok(Requeue::await_change());
    }
    let started = Instant::now();
    let (entry, status) = load(&ctx, &key, &spec, old.clone(), generation).await;
    let load_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    let mut status = status;
    if matches!(entry, Entry::Ready(_)) {
        status.load_ms = Some(load_ms);
    }
    let requeue = match &entry {
        Entry::NotReady(why) if transient(why.reason) => Requeue::requeue(RETRY_TRANSIENT),
        _ => Requeue::await_change(),
    };
    match &entry {
        Entry::Ready(l) => tracing::info!(policy = %key, digest = l.digest, load_ms, "policy ready"),
        Entry::NotReady(why) => {
            tracing::warn!(policy = %key, reason = why.reason, "policy not ready: {}", why.message);
        }
    }
    ctx.metrics.policy_ready(
        kind_name(key.kind),
        key.namespace.as_deref().unwrap_or_default(),
        &key.name,
        matches!(entry, Entry::Ready(_)),
    );
    let changed = !same(before.as_ref(), &entry);
    ctx.store.set(key.clone(), entry);
    if changed {
        wake_users(&ctx, &key);
        ctx.store.evict_unused(&pinned_digests(&ctx.canaries));
    }
    if status != old {
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        K::api(&ctx.client, obj.namespace().as_deref())
            .patch_status(
                &obj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
    }
    Ok(requeue)
}

/// The `kind` label of a policy resource.
fn kind_name(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Policy => "Policy",
        PolicyKind::ClusterPolicy => "ClusterPolicy",
    }
}

fn transient(reason: &str) -> bool {
    matches!(
        reason,
        "RegistryUnreachable"
            | "Unauthorized"
            | "NotFound"
            | "FetchFailed"
            | "PullSecretNotFound"
            | "RegistryError"
    )
}

/// Whether two entries serve the same thing (a Canary need not be woken when nothing changed).
fn same(a: Option<&Entry>, b: &Entry) -> bool {
    match (a, b) {
        (Some(Entry::Ready(x)), Entry::Ready(y)) => x.digest == y.digest && x.config == y.config,
        (Some(Entry::NotReady(x)), Entry::NotReady(y)) => x == y,
        _ => false,
    }
}

/// Which step of a load failed: its condition says why, the later ones say they did not run.
enum Failed {
    Fetch(NotReady),
    Compile(NotReady),
}

/// Fetches and compiles; returns the store entry and the status to show. Each step's outcome is a condition.
async fn load(
    ctx: &PolicyContext,
    key: &PolicyKey,
    spec: &PolicySpec,
    mut status: PolicyResourceStatus,
    generation: Option<i64>,
) -> (Entry, PolicyResourceStatus) {
    status.observed_generation = generation;
    let mut mark = |type_: &str, ok: bool, reason: &str, message: &str| {
        set(&mut status, type_, ok, reason, message, generation);
    };
    let (entry, ready) = match fetch_and_compile(ctx, key, spec).await {
        Ok((loaded, report)) => {
            mark("Fetched", true, "Fetched", &report.fetched);
            mark("Compiled", true, "Compiled", &report.compiled);
            mark("Ready", true, "Ready", "");
            let component = &loaded.component;
            let worlds: Vec<String> = component.worlds().into_iter().map(str::to_owned).collect();
            status.digest = Some(loaded.digest.clone());
            status.short_digest = crate::registry::digest_hex(&loaded.digest)
                .ok()
                .map(|h| h[..12].to_owned());
            status.wit_package = component
                .package_version()
                .map(|v| format!("{}@{v}", crate::policy::PACKAGE));
            status.exports_summary = Some(worlds.join(","));
            status.exports = worlds;
            status.imports = component.imports().to_vec();
            status.size_bytes = Some(report.size);
            (Entry::Ready(loaded), true)
        }
        Err(Failed::Fetch(why)) => {
            mark("Fetched", false, why.reason, &why.message);
            mark("Compiled", false, "NotFetched", "nothing to compile");
            mark("Ready", false, why.reason, &why.message);
            (Entry::NotReady(why), false)
        }
        Err(Failed::Compile(why)) => {
            mark("Compiled", false, why.reason, &why.message);
            mark("Ready", false, why.reason, &why.message);
            (Entry::NotReady(why), false)
        }
    };
    if !ready {
        // What loaded before is no longer what the Policy serves: only the conditions speak now.
        status = PolicyResourceStatus {
            observed_generation: status.observed_generation,
            conditions: std::mem::take(&mut status.conditions),
            ..PolicyResourceStatus::default()
        };
    }
    (entry, status)
}

/// What a successful load says in its conditions.
struct Report {
    fetched: String,
    compiled: String,
    size: u64,
}

async fn fetch_and_compile(
    ctx: &PolicyContext,
    key: &PolicyKey,
    spec: &PolicySpec,
) -> Result<(Loaded, Report), Failed> {
    let scope = Scope {
        namespace: key.namespace.as_deref(),
    };
    let compile_failed =
        |reason: &'static str, message: String| Failed::Compile(NotReady { reason, message });
    // A registry blob is content-addressed: a digest already loaded is not pulled again.
    if let Some(oci) = &spec.source.oci
        && let Some(component) = ctx.store.in_memory(&oci.digest)
    {
        return finish(
            spec,
            component,
            format!("oci://{} (loaded before)", oci.reference),
            &oci.digest,
        )
        .map_err(Failed::Compile);
    }
    let fetched = fetch(&ctx.client, scope, &spec.source, ctx.limits)
        .await
        .map_err(Failed::Fetch)?;
    if !is_component(&fetched.bytes) {
        let message = format!("{} is not a WebAssembly component", fetched.from);
        return Err(compile_failed("NotAComponent", message));
    }
    let engine = ctx.store.engine().clone();
    let name = key.to_string();
    let bytes = Arc::new(fetched.bytes);
    let for_compile = bytes.clone();
    let component = tokio::task::spawn_blocking(move || engine.load(&name, &for_compile, Grants::ALL))
        .await
        .map_err(|e| compile_failed("CompileFailed", format!("compile task: {e}")))?
        .map_err(|e| compile_failed(store::compile_reason(&e), e.to_string()))?;
    ctx.store.keep_blob(&fetched.digest, &bytes);
    finish(spec, component, fetched.from, &fetched.digest).map_err(Failed::Compile)
}

/// A compiled component under the Policy's own limits, and what its conditions say.
fn finish(
    spec: &PolicySpec,
    component: Arc<PolicyComponent>,
    from: String,
    digest: &str,
) -> Result<(Loaded, Report), NotReady> {
    let (deadline, memory) = limits_of(spec)?;
    // Always from the engine's ceilings: a component loaded before may carry another Policy's limits.
    let component = Arc::new(component.with_limits(deadline, memory));
    let limits = component.limits();
    let size = component.size_bytes();
    let report = Report {
        fetched: format!("{size} bytes from {from}, digest verified"),
        compiled: format!(
            "deadline {} ms, memory {} MiB",
            limits.deadline.as_millis(),
            limits.memory_bytes >> 20
        ),
        size,
    };
    let loaded = Loaded {
        component,
        config: spec.config.clone(),
        digest: digest.to_owned(),
    };
    Ok((loaded, report))
}

fn set(
    status: &mut PolicyResourceStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let c: Condition = condition(
        type_,
        if ok { "True" } else { "False" },
        reason,
        message,
        generation,
    );
    upsert_condition(&mut status.conditions, c);
}

/// The Policy's own bounds, parsed.
fn limits_of(spec: &PolicySpec) -> Result<(Option<Duration>, Option<usize>), NotReady> {
    let Some(limits) = &spec.limits else {
        return Ok((None, None));
    };
    let deadline = limits
        .deadline
        .as_deref()
        .map(|d| {
            crate::api::parse_duration(d).ok_or_else(|| NotReady {
                reason: "InvalidLimits",
                message: format!("limits.deadline {d:?} is not a duration like 50ms or 1s"),
            })
        })
        .transpose()?;
    let memory = limits
        .memory_mib
        .map(|m| usize::try_from(m).unwrap_or(usize::MAX) << 20);
    Ok((deadline, memory))
}

/// Wakes every Canary that names this policy.
fn wake_users(ctx: &PolicyContext, key: &PolicyKey) {
    for canary in ctx.canaries.state() {
        let Some(r) = canary
            .spec
            .analysis
            .as_ref()
            .and_then(|a| a.policy.as_ref())
            .and_then(|p| p.policy_ref.as_ref())
        else {
            continue;
        };
        let same_namespace = key.namespace.is_none() || key.namespace == canary.namespace();
        if r.kind == key.kind && r.name == key.name && same_namespace {
            let _ = ctx.wake.unbounded_send(ObjectRef::from_obj(canary.as_ref()));
        }
    }
}

/// Digests rollouts in flight are pinned to: they stay loaded.
fn pinned_digests(canaries: &Store<Canary>) -> HashSet<String> {
    canaries
        .state()
        .iter()
        .filter_map(|c| c.status.as_ref())
        .filter(|s| s.phase.is_some_and(crate::api::Phase::in_flight))
        .filter_map(|s| s.policy.as_ref().map(|p| p.digest.clone()))
        .collect()
}
