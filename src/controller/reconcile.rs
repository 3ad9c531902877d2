//! One reconcile of one Canary: observe → decide → act → record.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Api, Client, Resource, ResourceExt};
use thiserror::Error;

use super::Options;
use super::events::EventRecorder;
use super::judge::{JudgeIo, PolicyJudge};
use super::manual;
use super::ownership::{self, Conflict};
use super::paces::{Paces, only_the_tick_moved};
use super::policies::{Loaded, NotReady, PolicyStore};
use super::slots::Slots;
use super::status::{condition, cookies_of, set_condition, set_cookies, state_of, status_patch, with_state};
use super::written::Written;
use crate::analysis::{PolicyMetrics, Providers};
use crate::api::ManualRequest;
use crate::api::{
    Canary, CanaryStatus, Phase, PolicyStatus, SessionAffinity, ValidSpec, WebhookType, validate_with,
};
use crate::cluster::act::Actor;
use crate::cluster::index::Index;
use crate::cluster::observe::{Snapshot, observe};
use crate::cluster::teardown::{Teardown, abandon, teardown};
use crate::cluster::{ClusterError, FIELD_MANAGER, primary_name};
use crate::lifecycle::{Action, CanaryId, EventKind, PolicyBlocked, State, Tick, rollout_of, tick};
use crate::policy::{Policy, PolicyComponent, PolicyError};
use crate::router::affinity::{Cookies, Sticky, next_cookies};
use crate::webhooks::{Payload, Webhooks};

/// What every reconcile shares.
pub struct Context {
    client: Client,
    recorder: EventRecorder,
    options: Options,
    providers: Arc<Providers>,
    webhooks: Webhooks,
    /// Every Canary the controller watches (for the per-namespace count).
    canaries: kube::runtime::reflector::Store<Canary>,
    /// Policies, ClusterPolicies and `--policy-dir` files, resolved; the built-in default loaded once.
    policies: Arc<PolicyStore>,
    failures: Failures,
    /// The cluster as the watches last saw it.
    index: Index,
    /// Canary writes the cache may not show yet.
    written: Written,
    /// Each canary's last paced tick, to the nanosecond (halted ticks are not written).
    paces: Paces,
    resyncs: Resyncs,
    /// `--concurrency`, first due first served.
    slots: Slots,
}

/// Why the controller could not start.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("HTTP clients: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the built-in policy: {0}")]
    Policy(#[from] PolicyError),
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        policies: Arc<PolicyStore>,
        options: Options,
        instance: String,
        canaries: kube::runtime::reflector::Store<Canary>,
        index: Index,
    ) -> Result<Self, SetupError> {
        Ok(Self {
            slots: Slots::new(options.concurrency),
            recorder: EventRecorder::new(client.clone(), instance),
            providers: Arc::new(Providers::new(
                client.clone(),
                options.metrics_server.clone(),
                options.query_timeout,
            )),
            webhooks: Webhooks::new()?,
            canaries,
            policies,
            client,
            options,
            failures: Failures::default(),
            index,
            written: Written::default(),
            paces: Paces::default(),
            resyncs: Resyncs::default(),
        })
    }

    /// The canary's policy, pinned to the digest its rollout started with while one is in flight. The
    /// `metrics` import needs a configured Prometheus.
    async fn resolve_policy(
        &self,
        spec: &ValidSpec,
        namespace: &str,
        status: Option<&CanaryStatus>,
    ) -> Result<Loaded, NotReady> {
        let source = spec.policy.to_string();
        let pinned = status
            .filter(|s| s.phase.is_some_and(Phase::in_flight))
            .and_then(|s| s.policy.as_ref())
            .filter(|p| p.source == source)
            .map(|p| p.digest.as_str());
        let loaded = self.policies.resolve(&spec.policy, namespace, pinned).await?;
        if loaded.component.imports_metrics() && self.providers.address_for(spec).is_none() {
            return Err(NotReady {
                reason: "UngrantedImport",
                message: format!(
                    "{source} imports fledge:policy/metrics, granted only with a Prometheus: set spec.metricsServer or the controller's --metrics-server"
                ),
            });
        }
        Ok(loaded)
    }
}

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("canary has no namespace")]
    NoNamespace,
    #[error("policy task: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("reconcile took longer than its deadline of {}s; it resumes from what it wrote", .0.as_secs())]
    Deadline(Duration),
}

impl ReconcileError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Cluster(e) => e.category(),
            Self::Api(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Self::Api(_) => "api",
            Self::NoNamespace => "no_namespace",
            Self::Join(_) => "policy_task",
            Self::Deadline(_) => "timeout",
        }
    }
}

/// Backs off on errors: quick first, doubling per failure in a row, jittered so canaries failing together
/// do not retry together.
pub fn error_policy(canary: Arc<Canary>, err: &ReconcileError, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(canary = %canary.name_any(), category = err.category(), "reconcile failed: {err}");
    ctx.options.metrics.reconcile_error(err.category());
    if err.category() == "conflict" {
        // The Canary changed under a write guarded by its version: decide again from the newer one, soon.
        return Requeue::requeue(CONFLICT_RETRY.mul_f64(0.8 + 0.4 * jitter()));
    }
    let failures = ctx.failures.record(&canary);
    if refused(err) {
        // Said where the user looks, not only in the controller's log (repeats are counted on one event).
        let message = format!("reconcile failed ({}): {err}", err.category());
        tokio::spawn(async move {
            publish(&ctx, &canary, EventKind::Warning, "ReconcileFailed", message).await;
        });
    }
    Requeue::requeue(backoff(failures, jitter()))
}

/// A failure retrying will not heal: the API server refused what fledge sent (an invalid object, a denied
/// write), or fledge could not build it. Timeouts, conflicts and throttling heal by themselves.
fn refused(err: &ReconcileError) -> bool {
    let api = match err {
        ReconcileError::Cluster(ClusterError::Api(kube::Error::Api(e)))
        | ReconcileError::Api(kube::Error::Api(e)) => e,
        ReconcileError::Cluster(ClusterError::NoSelectorLabel { .. } | ClusterError::Encode { .. }) => {
            return true;
        }
        _ => return false,
    };
    (400..500).contains(&api.code) && !matches!(api.code, 409 | 429)
}

/// The wait after a write lost to a newer version of the Canary.
const CONFLICT_RETRY: Duration = Duration::from_secs(1);
/// The first retry's wait, doubled per failure in a row up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait after `failures` failures in a row (1-based), scaled by `jitter` in 0..1 to 80–120 %.
fn backoff(failures: u32, jitter: f64) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled
        .min(MAX_BACKOFF)
        .mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// A number in 0..1 that differs per call (std's randomly keyed hasher; no RNG crate needed for this).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map_or(0, |d| d.as_nanos()));
    #[allow(clippy::cast_precision_loss)]
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

/// Failures in a row per Canary, cleared by a reconcile that succeeds.
#[derive(Debug, Default)]
pub struct Failures(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Failures {
    fn key(canary: &Canary) -> String {
        format!("{}/{}", canary.namespace().unwrap_or_default(), canary.name_any())
    }

    fn record(&self, canary: &Canary) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(Self::key(canary)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn clear(&self, canary: &Canary) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&Self::key(canary));
    }
}

/// [`reconcile`] within its deadline: `--reconcile-deadline` plus what the canary's gate and rollback
/// webhooks may take by their own timeout and retries. A reconcile cut short resumes from what it wrote
/// (every write is idempotent); a policy call already running finishes within its own limit.
pub async fn bounded(cached: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    let hooks: Duration = validate_with(&cached.spec, ctx.options.min_interval)
        .map(|spec| {
            spec.webhooks
                .iter()
                .filter(|h| h.kind != WebhookType::Event)
                .map(Webhooks::budget)
                .sum()
        })
        .unwrap_or_default();
    let deadline = ctx.options.reconcile_deadline + hooks;
    // Waiting for the caches' first list is not the reconcile's work: at startup in a big cluster it can
    // take longer than the deadline.
    ctx.index.ready().await;
    // The deadline and the time measured start once a slot is ours.
    let asked = std::time::Instant::now();
    let _slot = ctx.slots.take().await;
    let started = std::time::Instant::now();
    ctx.options.metrics.reconcile_waited(started - asked);
    // Boxed, and made only once a slot is ours: a reconcile's state is tens of KB, and every due canary waits
    // here at once (at 1,000 canaries, kept inline in each waiting future it cost ~40 MiB of RSS).
    let work = Box::pin(reconcile(cached.clone(), ctx.clone()));
    let outcome = tokio::time::timeout(deadline, work)
        .await
        .unwrap_or(Err(ReconcileError::Deadline(deadline)));
    ctx.options.metrics.reconcile_took(started.elapsed());
    if outcome.is_ok() {
        ctx.failures.clear(&cached);
    }
    outcome
}

/// Go on with a phase's value, or return the requeue it stopped with.
macro_rules! go_on {
    ($phase:expr) => {
        match $phase {
            ControlFlow::Continue(value) => value,
            ControlFlow::Break(requeue) => return Ok(requeue),
        }
    };
}

/// One reconcile: admit the spec, choose the judge, look at the cluster, decide (the pure tick), act, record.
/// Each phase may stop the reconcile with a requeue (a refused spec, a conflict, an interval not yet up).
#[tracing::instrument(skip_all, fields(canary = %cached.name_any(), namespace = cached.namespace().unwrap_or_default()))]
pub async fn reconcile(cached: Arc<Canary>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    let namespace = cached.namespace().ok_or(ReconcileError::NoNamespace)?;
    ctx.index.ready().await;
    // The cache may lag our own last status write; a stale status would repeat a step.
    let mut canary = ctx.written.freshest(cached).as_ref().clone();
    let id = CanaryId {
        name: canary.name_any(),
        namespace: namespace.clone(),
    };
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &namespace);
    if canary.meta().deletion_timestamp.is_some() {
        return finish_deletion(&ctx, &api, &canary, &namespace).await;
    }
    if !canary.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = canary.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        canary = set_finalizers(&ctx, &api, &canary, finalizers).await?;
    }
    let admitted = go_on!(admit(&ctx, &canary).await?);
    let chosen = go_on!(choose_judge(&ctx, &canary, &id, admitted).await?);
    let looked = go_on!(look(&ctx, &canary, &chosen).await?);
    let mut decided = decide(&ctx, &canary, &id, &chosen, &looked).await?;
    let acted = act(&ctx, &canary, &chosen.spec, &looked.snapshot, &decided.tick).await?;
    // The tick's events go out beside its status write, not before it: one round trip less per tick.
    let (recorded, ()) = futures::join!(
        record(&ctx, &canary, &id, &chosen, &looked, &mut decided, &acted.cookies),
        announce(&ctx, &canary, &chosen.spec, &acted.events),
    );
    recorded?;
    if acted.resynced {
        ctx.resyncs.done(&canary);
    }
    // The next tick is an interval after this one was found due, not after it finished: a slow tick does not
    // push every later one back. An idle canary is still looked at once per resync.
    let took = Duration::try_from(Timestamp::now().duration_since(looked.at)).unwrap_or_default();
    Ok(Requeue::requeue(match decided.tick.requeue {
        Some(next) => next.saturating_sub(took),
        None => ctx.options.resync.mul_f64(0.8 + 0.4 * jitter()),
    }))
}

/// A spec fledge can act on, and the fields of it fledge ignores (told on the Ready condition).
struct Admitted {
    spec: ValidSpec,
    ignored: Option<String>,
}

/// Validates the spec and that the cluster serves what it needs; a refusal is recorded on the Canary.
async fn admit(ctx: &Context, canary: &Canary) -> Result<ControlFlow<Requeue, Admitted>, ReconcileError> {
    let spec = match validate_with(&canary.spec, ctx.options.min_interval) {
        Ok(spec) => spec,
        Err(e) => {
            return refuse(ctx, canary, "InvalidSpec", e.to_string())
                .await
                .map(ControlFlow::Break);
        }
    };
    if !ctx.index.istio_served() {
        return refuse(ctx, canary, "RouterNotInstalled", NO_ISTIO.to_owned())
            .await
            .map(ControlFlow::Break);
    }
    let ignored = crate::api::ignored_message(&spec.ignored);
    if let Some(why) = &ignored
        && canary.status.as_ref().and_then(|s| s.observed_generation) != canary.meta().generation
    {
        // Once per spec change, so the event does not grow with every tick.
        publish(ctx, canary, EventKind::Warning, "IgnoredFields", why.clone()).await;
    }
    Ok(ControlFlow::Continue(Admitted { spec, ignored }))
}

/// What judges the canary: its policy with the Policy's config beneath the Canary's own, or — when that
/// policy cannot judge (`blocked`) — the default standing in as the judge's type while the canary is held.
struct Chosen {
    spec: ValidSpec,
    ignored: Option<String>,
    loaded: Loaded,
    blocked: Option<NotReady>,
    policy_ready: Condition,
    policy: (Arc<PolicyComponent>, Arc<PolicyComponent>),
}

/// Resolves the canary's policy and checks its config once per change of spec or policy.
async fn choose_judge(
    ctx: &Context,
    canary: &Canary,
    id: &CanaryId,
    Admitted { spec, ignored }: Admitted,
) -> Result<ControlFlow<Requeue, Chosen>, ReconcileError> {
    let status = canary.status.as_ref();
    let generation = canary.meta().generation;
    // A policy that cannot judge holds the canary (the tick asks it nothing); the default stands in only
    // as the judge's type, and its webhooks still run on a rollback.
    let (loaded, blocked) = match ctx.resolve_policy(&spec, &id.namespace, status).await {
        Ok(loaded) => (loaded, None),
        Err(why) => {
            let default = ctx.policies.default_policy();
            let stand_in = Loaded {
                digest: format!("sha256:{}", default.digest()),
                component: default,
                config: None,
            };
            (stand_in, Some(why))
        }
    };
    let policy_ready = match &blocked {
        None => condition(
            "PolicyReady",
            "True",
            "Ready",
            &format!("{} {}", spec.policy, loaded.digest),
            generation,
        ),
        Some(why) => condition(
            "PolicyReady",
            "False",
            why.reason,
            &format!("{}: {}", spec.policy, why.message),
            generation,
        ),
    };
    if blocked.is_some()
        && previous_condition(status, "PolicyReady").map(|c| (&c.status, &c.message))
            != Some((&policy_ready.status, &policy_ready.message))
    {
        publish(
            ctx,
            canary,
            EventKind::Warning,
            "PolicyNotReady",
            policy_ready.message.clone(),
        )
        .await;
    }
    // The Policy's config lies beneath the Canary's own.
    let spec = ValidSpec {
        policy_config: merged_config(loaded.config.as_ref(), &spec.policy_config),
        ..spec
    };
    let policy = (loaded.component.clone(), ctx.policies.default_policy());
    // A config the policy refuses is a spec error, found when the spec or the policy changes: before any
    // traffic moves, not after a rollout's worth of failed checks.
    let changed = status.and_then(|s| s.observed_generation) != generation
        || status.and_then(|s| s.policy.as_ref()).map(|p| &p.digest) != Some(&loaded.digest);
    if blocked.is_none() && changed {
        let (component, rollout) = (policy.0.clone(), rollout_of(id, &spec, &state_of(status), 0));
        let answer = tokio::task::spawn_blocking(move || component.step(&rollout)).await?;
        if let Err(PolicyError::Refused {
            kind: "invalid-config",
            message,
        }) = answer
        {
            return refuse(
                ctx,
                canary,
                "InvalidSpec",
                format!("analysis.policy.config: {message}"),
            )
            .await
            .map(ControlFlow::Break);
        }
    }
    Ok(ControlFlow::Continue(Chosen {
        spec,
        ignored,
        loaded,
        blocked,
        policy_ready,
        policy,
    }))
}

/// The cluster as this tick sees it, the canary's state, and an operator's request on it, if any.
struct Looked {
    snapshot: Snapshot,
    state: State,
    request: Option<(String, Result<ManualRequest, String>)>,
    /// When the tick was found due: the interval runs from here to the next, however long this tick takes.
    at: Timestamp,
}

/// Observes the cluster from the caches. Stops when another Canary owns what this one would take, or when a
/// paced canary's interval is not up yet (an operator's request is taken at once).
async fn look(
    ctx: &Context,
    canary: &Canary,
    chosen: &Chosen,
) -> Result<ControlFlow<Requeue, Looked>, ReconcileError> {
    let (spec, status) = (&chosen.spec, canary.status.as_ref());
    let namespace = canary.namespace().unwrap_or_default();
    let mut snapshot = observe(
        &ctx.client,
        &ctx.index,
        &namespace,
        spec,
        &ctx.options.selector_labels,
    )
    .await?;
    if let Some(conflict) = ownership::conflict(canary, &snapshot.claims, &ctx.canaries.state()) {
        return stand_back(ctx, canary, &conflict).await.map(ControlFlow::Break);
    }
    snapshot.observed.policy_blocked = chosen.blocked.as_ref().map(|why| PolicyBlocked {
        why: format!("{}: {}: {}", spec.policy, why.reason, why.message),
        for_secs: false_for_secs(status, "PolicyReady", None),
    });
    if snapshot.target.is_none() {
        snapshot.observed.target_missing_secs = false_for_secs(status, "Ready", Some("TargetNotFound"));
    }
    // An operator's request is taken at once, not at the next interval.
    let request = manual::request_of(canary);
    if let Some((_, Err(why))) = &request {
        publish(ctx, canary, EventKind::Warning, "Manual", why.clone()).await;
    }
    snapshot.observed.manual = request
        .as_ref()
        .and_then(|(_, r)| r.as_ref().ok())
        .and_then(|r| manual::untaken(r, status.and_then(|s| s.last_manual.as_deref())));
    let state = state_of(status);
    let last_tick = ctx.paces.last_tick(&canary.uid().unwrap_or_default(), status);
    if snapshot.observed.manual.is_none()
        && let Some(wait) = not_due(spec, &state, last_tick, &snapshot)
    {
        if let Some((raw, _)) = &request {
            // Taken before (its removal failed), or not a request: it goes.
            manual::remove(&ctx.client, canary, raw).await?;
        }
        return Ok(ControlFlow::Break(Requeue::requeue(wait)));
    }
    if let Some(late) = late(state.phase, spec.interval, last_tick, Timestamp::now()) {
        ctx.options.metrics.tick_late(late);
    }
    Ok(ControlFlow::Continue(Looked {
        snapshot,
        state,
        request,
        at: Timestamp::now(),
    }))
}

/// The tick's decision and the judge that made it (what it called is recorded in the status).
struct Decided {
    tick: Tick,
    judge: PolicyJudge,
}

/// Runs the pure tick with the policy as judge. Policy calls, webhooks and queries block the thread, each
/// bounded by its timeout: the tick runs off the async workers.
async fn decide(
    ctx: &Context,
    canary: &Canary,
    id: &CanaryId,
    chosen: &Chosen,
    looked: &Looked,
) -> Result<Decided, ReconcileError> {
    let metrics = match ctx.providers.canary_provider(&chosen.spec) {
        Ok(p) => p.map(|p| {
            Arc::new(PolicyMetrics::new(
                p,
                tokio::runtime::Handle::current(),
                ctx.options.policy_queries,
            ))
        }),
        Err(e) => {
            publish(ctx, canary, EventKind::Warning, "MetricsProvider", e).await;
            None
        }
    };
    let (id, spec, state, observed) = (
        id.clone(),
        chosen.spec.clone(),
        looked.state.clone(),
        looked.snapshot.observed.clone(),
    );
    let io = JudgeIo {
        handle: tokio::runtime::Handle::current(),
        providers: ctx.providers.clone(),
        webhooks: ctx.webhooks.clone(),
        telemetry: ctx.options.metrics.clone(),
    };
    let mut judge = PolicyJudge::new(
        chosen.policy.clone(),
        spec.clone(),
        io,
        metrics,
        state.last_applied.clone().unwrap_or_default(),
    );
    let (tick, judge) = tokio::task::spawn_blocking(move || {
        let decided = tick(&id, &spec, &state, &observed, &mut judge);
        (decided, judge)
    })
    .await?;
    Ok(Decided { tick, judge })
}

/// What applying a tick's actions left to record and announce.
struct Acted {
    /// The session-affinity cookies routed with.
    cookies: Cookies,
    /// Whether every object was checked against the API, not the cache (`--resync`).
    resynced: bool,
    /// The tick's events, in order, for [`announce`].
    events: Vec<(EventKind, String, String)>,
}

/// Applies the tick's cluster actions in order; its events are kept for [`announce`].
async fn act(
    ctx: &Context,
    canary: &Canary,
    spec: &ValidSpec,
    snapshot: &Snapshot,
    decided: &Tick,
) -> Result<Acted, ReconcileError> {
    let namespace = canary.namespace().unwrap_or_default();
    let affinity = canary
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.session_affinity.as_ref())
        .filter(|_| spec.sticky);
    let cookies = cookies_after(canary, affinity, decided);
    let resynced = {
        let actor = Actor {
            client: &ctx.client,
            namespace: &namespace,
            spec,
            service: &canary.spec.service,
            snapshot,
            index: &ctx.index,
            resync: ctx.resyncs.due(canary, ctx.options.resync),
            owner: owner_reference(canary),
            autoscaler: canary.spec.autoscaler_ref.as_ref().map(|a| a.name.as_str()),
            analysis_match: canary.spec.analysis.as_ref().and_then(|a| a.match_.as_ref()),
            sticky: affinity.map(|settings| Sticky {
                settings,
                cookies: &cookies,
                interval_secs: spec.interval.as_secs(),
            }),
        };
        for action in &decided.actions {
            if !matches!(action, Action::Event { .. }) {
                actor.apply(action).await?;
            }
        }
        actor.resync
    };
    let events = decided
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::Event {
                kind,
                reason,
                message,
            } => Some((*kind, reason.to_string(), message.clone())),
            _ => None,
        })
        .collect();
    Ok(Acted {
        cookies,
        resynced,
        events,
    })
}

/// Publishes a tick's events in order (and forwards them to the Canary's event webhooks).
async fn announce(ctx: &Context, canary: &Canary, spec: &ValidSpec, events: &[(EventKind, String, String)]) {
    for (kind, reason, message) in events {
        publish(ctx, canary, *kind, reason, message.clone()).await;
        forward_event(ctx, spec, canary, *kind, message);
    }
}

/// Writes what the tick decided into the status (only if it changed), then lets a taken operator's request
/// go from the Canary.
async fn record(
    ctx: &Context,
    canary: &Canary,
    id: &CanaryId,
    chosen: &Chosen,
    looked: &Looked,
    decided: &mut Decided,
    cookies: &Cookies,
) -> Result<(), ReconcileError> {
    let (status, generation) = (canary.status.as_ref(), canary.meta().generation);
    let (spec, tick) = (&chosen.spec, &decided.tick);
    let mut next = with_state(status, &tick.state, generation);
    set_cookies(&mut next, cookies);
    // The tick time paces analysis in flight; an idle canary keeps its own, so a Deployment event that
    // changes nothing writes nothing.
    next.last_tick_time = match status.and_then(|s| s.last_tick_time.clone()) {
        Some(last) if !paced(tick.state.phase) => Some(last),
        _ => Some(Time(looked.at)),
    };
    // A blocked policy leaves the record of what judged the rollout so far (and its pin) alone.
    let digest = match (&chosen.blocked, status.and_then(|s| s.policy.as_ref())) {
        (Some(_), Some(old)) => old.digest.clone(),
        _ => chosen.loaded.digest.clone(),
    };
    next.policy = Some(PolicyStatus {
        source: spec.policy.to_string(),
        digest,
        last_decision: tick.decision.clone().or_else(|| {
            status
                .and_then(|s| s.policy.clone())
                .and_then(|p| p.last_decision)
        }),
        state: tick.state.policy_state.clone(),
        history: tick.state.history.clone(),
    });
    let called = decided.judge.take_webhook_calls();
    match decided.judge.record.take() {
        Some(mut record) => {
            record.webhooks = called;
            next.analysis = Some(record);
        }
        None if !called.is_empty() => {
            let mut record = next.analysis.take().unwrap_or_default();
            record.webhooks = called;
            next.analysis = Some(record);
        }
        None => {}
    }
    let ready = if looked.snapshot.target.is_some() {
        condition(
            "Ready",
            "True",
            "Reconciled",
            chosen.ignored.as_deref().unwrap_or_default(),
            generation,
        )
    } else {
        condition(
            "Ready",
            "False",
            "TargetNotFound",
            &format!("deployment {} not found", spec.target),
            generation,
        )
    };
    set_condition(&mut next, ready);
    set_condition(&mut next, chosen.policy_ready.clone());
    if previous_condition(status, "Conflict").is_some() {
        set_condition(
            &mut next,
            condition("Conflict", "False", "Resolved", "", generation),
        );
    }
    record_metrics(ctx, id, spec, status, &mut next);
    if let Some((_, Ok(taken))) = &looked.request {
        next.last_manual = Some(taken.id.clone());
    }
    let paced_tick = paced(tick.state.phase);
    // A halted canary's tick has only its time to say: kept in memory, not written (see `paces`).
    if !(paced_tick && only_the_tick_moved(status, &next)) {
        write_status(ctx, canary, next).await?;
    }
    if paced_tick {
        // To the nanosecond: the status keeps whole seconds.
        ctx.paces.ticked(&canary.uid().unwrap_or_default(), looked.at);
    }
    if let Some((raw, _)) = &looked.request {
        // Recorded as taken in the status just written: the request goes.
        manual::remove(&ctx.client, canary, raw).await?;
    }
    Ok(())
}

/// The session-affinity cookies after this tick: they follow the weight it routes (unchanged when it routes
/// nothing, or the Canary asks for no affinity). A rollout's cookie is derived from the Canary, the revision
/// and the rollout's start.
fn cookies_after(canary: &Canary, affinity: Option<&SessionAffinity>, decided: &Tick) -> Cookies {
    let status = canary.status.as_ref();
    let cookies = cookies_of(status);
    let routed = decided.actions.iter().rev().find_map(|a| match a {
        Action::Route(split) => Some(split.canary),
        _ => None,
    });
    let (Some(settings), Some(weight)) = (affinity, routed) else {
        return cookies;
    };
    let rollout = format!(
        "{}/{}/{:?}",
        canary.uid().unwrap_or_default(),
        decided.state.last_applied.as_deref().unwrap_or_default(),
        status.and_then(|s| s.rollout_start_time.as_ref()),
    );
    next_cookies(settings, &cookies, weight, &rollout)
}

/// When each Canary's objects were last checked against the API, not the cache.
#[derive(Debug, Default)]
pub struct Resyncs(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl Resyncs {
    /// Whether this Canary is due a full re-apply: never done by this process, or `every` ago.
    fn due(&self, canary: &Canary, every: Duration) -> bool {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&Failures::key(canary))
            .is_none_or(|at| at.elapsed() >= every.mul_f64(0.8))
    }

    fn forget(&self, canary: &Canary) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&Failures::key(canary));
    }

    fn done(&self, canary: &Canary) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(Failures::key(canary), std::time::Instant::now());
    }
}

/// Nothing is touched for an invalid spec: it is reported and waits for the user to change it.
/// Why a Canary is not acted on when the cluster has no Istio (checked once, when the watches start).
const NO_ISTIO: &str = "the cluster does not serve networking.istio.io VirtualService and DestinationRule: fledge routes canaries with Istio (provider istio or unset); install Istio's CRDs, then restart fledge";

/// A Canary fledge will not act on: `Ready=False` with `reason` and the event once; touches nothing else.
async fn refuse(
    ctx: &Context,
    canary: &Canary,
    reason: &str,
    why: String,
) -> Result<Requeue, ReconcileError> {
    let status = canary.status.as_ref();
    let generation = canary.meta().generation;
    let mut s = status.cloned().unwrap_or_default();
    let told = previous_condition(status, "Ready").is_some_and(|c| c.reason == reason && c.message == why);
    set_condition(&mut s, condition("Ready", "False", reason, &why, generation));
    s.observed_generation = generation;
    if !told {
        publish(ctx, canary, EventKind::Warning, reason, why).await;
    }
    write_status(ctx, canary, s).await?;
    Ok(Requeue::await_change())
}

/// How often a Canary standing back looks again whether the holder is gone.
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

/// Another Canary manages this one's target or service: say who, and touch nothing.
async fn stand_back(ctx: &Context, canary: &Canary, conflict: &Conflict) -> Result<Requeue, ReconcileError> {
    let status = canary.status.as_ref();
    let generation = canary.meta().generation;
    let why = conflict.to_string();
    let told = previous_condition(status, "Conflict").is_some_and(|c| c.status == "True" && c.message == why);
    let mut s = status.cloned().unwrap_or_default();
    set_condition(&mut s, condition("Conflict", "True", "Held", &why, generation));
    set_condition(&mut s, condition("Ready", "False", "Conflict", &why, generation));
    s.observed_generation = generation;
    if !told {
        publish(ctx, canary, EventKind::Warning, "Conflict", why).await;
    }
    write_status(ctx, canary, s).await?;
    Ok(Requeue::requeue(CONFLICT_RECHECK))
}

/// The Canary's condition of `type_`, as last written.
fn previous_condition<'a>(status: Option<&'a CanaryStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// How long the condition `type_` has been False (for `reason`, when given); 0 when it is not.
fn false_for_secs(status: Option<&CanaryStatus>, type_: &str, reason: Option<&str>) -> u64 {
    previous_condition(status, type_)
        .filter(|c| c.status == "False" && reason.is_none_or(|r| c.reason == r))
        .and_then(|c| {
            u64::try_from(
                Timestamp::now()
                    .duration_since(c.last_transition_time.0)
                    .as_secs(),
            )
            .ok()
        })
        .unwrap_or(0)
}

/// A Policy's config with the Canary's keys over it (objects merge one level deep; otherwise the Canary's
/// config wins whole).
fn merged_config(policy: Option<&serde_json::Value>, canary: &str) -> String {
    let Some(base) = policy else {
        return canary.to_owned();
    };
    let own: serde_json::Value = serde_json::from_str(canary).unwrap_or_default();
    match (base, own) {
        (serde_json::Value::Object(base), serde_json::Value::Object(own)) => {
            let mut merged = base.clone();
            merged.extend(own);
            serde_json::Value::Object(merged).to_string()
        }
        (base, serde_json::Value::Null) => base.to_string(),
        (_, own) if own.as_object().is_some_and(|o| o.is_empty()) => base.to_string(),
        (_, own) => own.to_string(),
    }
}

/// Exports the canary's state and, when a rollout starts or ends, its start time and duration.
fn record_metrics(
    ctx: &Context,
    id: &CanaryId,
    spec: &ValidSpec,
    old: Option<&CanaryStatus>,
    next: &mut CanaryStatus,
) {
    let metrics = &ctx.options.metrics;
    let in_flight = |p: Option<Phase>| {
        matches!(
            p,
            Some(Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising)
        )
    };
    let was = old.and_then(|s| s.phase);
    let restarted = old.and_then(|s| s.last_applied_spec.as_ref()) != next.last_applied_spec.as_ref();
    if in_flight(next.phase) && (!in_flight(was) || restarted) {
        next.rollout_start_time = Some(Time(Timestamp::now()));
    }
    if in_flight(was)
        && matches!(next.phase, Some(Phase::Succeeded | Phase::Failed))
        && let Some(start) = next.rollout_start_time.take()
    {
        let took = Timestamp::now().duration_since(start.0);
        metrics.rollout_finished(
            next.phase == Some(Phase::Succeeded),
            Duration::try_from(took).unwrap_or_default(),
        );
    }
    metrics.canary(
        &id.name,
        &id.namespace,
        &spec.target,
        next.phase,
        u32::try_from(next.canary_weight).unwrap_or(0),
    );
    if let Some(analysis) = &next.analysis
        && old.and_then(|s| s.analysis.as_ref()).map(|a| &a.time) != Some(&analysis.time)
    {
        for c in &analysis.checks {
            metrics.analysis_value(&id.name, &id.namespace, &c.name, c.value);
            if let Some(ms) = c.query_ms {
                metrics.query(Duration::from_millis(ms.into()));
            }
        }
        if let Some(ms) = analysis.duration_ms {
            metrics.analysis(Duration::from_millis(ms.into()));
        }
    }
    let in_namespace = ctx
        .canaries
        .state()
        .iter()
        .filter(|c| c.namespace().as_deref() == Some(id.namespace.as_str()))
        .count();
    metrics.canaries_in(&id.namespace, in_namespace);
}

/// Held on every Canary fledge manages, so deletion waits for the revert.
pub const FINALIZER: &str = "fledge.dev/finalizer";

/// How often to look again while a teardown waits for the target.
const TEARDOWN_POLL: Duration = Duration::from_secs(2);

/// Restores the app (unless `revertOnDeletion: false`), then releases the Canary to garbage collection.
async fn finish_deletion(
    ctx: &Context,
    api: &Api<Canary>,
    canary: &Canary,
    namespace: &str,
) -> Result<Requeue, ReconcileError> {
    if !canary.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Requeue::await_change());
    }
    // An invalid spec, or a Canary standing back for another, never created anything to restore.
    if let Ok(spec) = validate_with(&canary.spec, ctx.options.min_interval)
        && !ownership::stands_back(canary)
    {
        let owner = owner_reference(canary);
        match teardown(
            &ctx.client,
            namespace,
            &spec,
            &owner,
            &ctx.options.selector_labels,
        )
        .await?
        {
            Teardown::Waiting(why) if deleting_for(canary) >= ctx.options.teardown_deadline => {
                let left = abandon(&ctx.client, namespace, &spec, &owner, &primary_copies(canary)).await?;
                let message = format!(
                    "Teardown gave up after {}s: {why}; {} keeps serving Service {} and is no longer owned by the canary ({}): delete it once {} serves",
                    ctx.options.teardown_deadline.as_secs(),
                    primary_name(&spec.target),
                    spec.service,
                    left.join(", "),
                    spec.target,
                );
                publish(ctx, canary, EventKind::Warning, "TeardownDeadline", message).await;
            }
            Teardown::Waiting(why) => {
                tracing::info!("teardown: {why}");
                let mut s = canary.status.clone().unwrap_or_default();
                if s.phase != Some(Phase::Terminating) {
                    s.phase = Some(Phase::Terminating);
                    s.last_transition_time = Some(Time(Timestamp::now()));
                    write_status(ctx, canary, s).await?;
                }
                return Ok(Requeue::requeue(TEARDOWN_POLL));
            }
            Teardown::Done => {
                let message = format!(
                    "Terminated canary {}.{namespace}: target and routing restored",
                    canary.name_any()
                );
                publish(ctx, canary, EventKind::Normal, "Synced", message).await;
            }
        }
    }
    let remaining: Vec<String> = canary
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    ctx.resyncs.forget(canary);
    // Its record stays: a stale cached copy still carrying the finalizer must not run the teardown again.
    match set_finalizers(ctx, api, canary, remaining).await {
        Err(ReconcileError::Api(kube::Error::Api(e))) if e.code == 404 => {}
        other => {
            other?;
        }
    }
    ctx.options
        .metrics
        .forget(&canary.name_any(), namespace, &canary.spec.target_ref.name);
    Ok(Requeue::await_change())
}

/// How long the Canary has been deleted.
fn deleting_for(canary: &Canary) -> Duration {
    canary
        .meta()
        .deletion_timestamp
        .as_ref()
        .and_then(|t| Duration::try_from(Timestamp::now().duration_since(t.0)).ok())
        .unwrap_or_default()
}

/// What fledge copied for the primary (`kind/name`): its config copies and its autoscaler.
fn primary_copies(canary: &Canary) -> Vec<String> {
    let configs = canary
        .status
        .iter()
        .flat_map(|s| s.tracked_configs.keys())
        .map(|key| format!("{key}-primary"));
    let hpa = canary
        .spec
        .autoscaler_ref
        .iter()
        .map(|a| format!("horizontalpodautoscaler/{}", primary_name(&a.name)));
    configs.chain(hpa).collect()
}

/// Replaces the finalizer list, guarded by the resourceVersion we read.
async fn set_finalizers(
    ctx: &Context,
    api: &Api<Canary>,
    canary: &Canary,
    finalizers: Vec<String>,
) -> Result<Canary, ReconcileError> {
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": canary.resource_version()},
    });
    let updated = api
        .patch(&canary.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.written.record(canary, updated.clone());
    Ok(updated)
}

/// Phases that tick once per analysis interval.
fn paced(phase: Option<Phase>) -> bool {
    matches!(
        phase,
        Some(
            Phase::Progressing
                | Phase::WaitingPromotion
                | Phase::Promoting
                | Phase::Finalising
                | Phase::Waiting
        )
    )
}

/// While a rollout is in flight, analysis runs once per interval however many events arrive; a new revision
/// mid-analysis is acted on at once. Returns how long to wait when it is not yet time.
fn not_due(
    spec: &ValidSpec,
    state: &State,
    last_tick: Option<Timestamp>,
    snapshot: &Snapshot,
) -> Option<Duration> {
    if !paced(state.phase) {
        return None;
    }
    let restarted = matches!(state.phase, Some(Phase::Progressing | Phase::WaitingPromotion))
        && Some(&snapshot.observed.revision) != state.last_applied.as_ref();
    // A workload that vanished or lost its replicas cannot wait for the interval: traffic may be headed
    // where nothing serves.
    let obs = &snapshot.observed;
    let serving_lost = obs.target.is_none()
        || obs.primary.is_some_and(|p| p.replicas == 0)
        || obs.drifted_canary_weight.is_some();
    if restarted || serving_lost {
        return None;
    }
    let elapsed = Duration::try_from(Timestamp::now().duration_since(last_tick?)).unwrap_or_default();
    spec.interval
        .checked_sub(elapsed)
        .filter(|left| *left > Duration::from_millis(50))
}

/// How long after its interval was up a paced tick runs (`None` when it is not paced, or early: a new
/// revision or lost serving is acted on at once).
fn late(
    phase: Option<Phase>,
    interval: Duration,
    last: Option<Timestamp>,
    now: Timestamp,
) -> Option<Duration> {
    if !paced(phase) {
        return None;
    }
    let elapsed = Duration::try_from(now.duration_since(last?)).ok()?;
    elapsed.checked_sub(interval)
}

fn owner_reference(canary: &Canary) -> OwnerReference {
    // A Canary read from the API always has a name and uid.
    canary.controller_owner_ref(&()).unwrap_or_default()
}

/// Writes `new` over the canary's status when it changed: a merge patch of what changed, on the version it
/// was decided from.
async fn write_status(ctx: &Context, canary: &Canary, new: CanaryStatus) -> Result<(), ReconcileError> {
    let old = canary.status.as_ref();
    if old == Some(&new) {
        return Ok(());
    }
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    // Guarded by the version this status was decided on: a write over a newer one (another replica's, or a
    // Canary changed meanwhile) fails instead of undoing it, and the next reconcile decides again. So the
    // patch applies to exactly the status it was computed from.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": canary.resource_version()},
        "status": status_patch(old, &new),
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let updated = api
        .patch_status(&canary.name_any(), &params, &Patch::Merge(&patch))
        .await?;
    ctx.written.record(canary, updated);
    Ok(())
}

/// Sends an event to the canary's `event` webhooks (Flagger's payload with eventMessage, eventType and
/// timestamp), in the background: a slow receiver never holds up a rollout.
fn forward_event(ctx: &Context, spec: &ValidSpec, canary: &Canary, kind: EventKind, message: &str) {
    let hooks: Vec<_> = spec
        .webhooks
        .iter()
        .filter(|h| h.kind == WebhookType::Event)
        .cloned()
        .collect();
    if hooks.is_empty() {
        return;
    }
    let phase = canary
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(Phase::name)
        .unwrap_or_default();
    let payload = Payload {
        name: canary.name_any(),
        namespace: canary.namespace().unwrap_or_default(),
        phase,
        checksum: canary
            .status
            .as_ref()
            .and_then(|s| s.last_applied_spec.clone())
            .unwrap_or_default(),
        metadata: [
            ("eventMessage".to_owned(), message.to_owned()),
            (
                "eventType".to_owned(),
                match kind {
                    EventKind::Normal => "Normal",
                    EventKind::Warning => "Warning",
                }
                .to_owned(),
            ),
            (
                "timestamp".to_owned(),
                Timestamp::now().as_millisecond().to_string(),
            ),
        ]
        .into(),
    };
    let webhooks = ctx.webhooks.clone();
    tokio::spawn(async move {
        for hook in &hooks {
            let outcome = webhooks.call(hook, &payload).await;
            if !outcome.ok {
                tracing::warn!(webhook = hook.name, "event webhook failed: {}", outcome.message);
            }
        }
    });
}

/// Records an event on the Canary; a failure to record is logged, never fatal.
async fn publish(ctx: &Context, canary: &Canary, kind: EventKind, reason: &str, message: String) {
    tracing::info!(kind = ?kind, reason, "{message}");
    if let Err(e) = ctx.recorder.publish(canary, kind, reason, &message).await {
        tracing::warn!("cannot record event: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::{ReconcileError, backoff, jitter, late, merged_config, refused};
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn only_a_write_the_api_server_refuses_is_told_on_the_canary() {
        let answered = |code: u16| {
            let status: kube::core::Status = serde_json::from_value(json!({
                "status": "Failure", "message": "m", "reason": "Invalid", "code": code
            }))
            .expect("status");
            ReconcileError::Cluster(crate::cluster::ClusterError::Api(kube::Error::Api(Box::new(
                status,
            ))))
        };
        assert!(refused(&answered(422)), "an invalid object");
        assert!(refused(&answered(403)), "a denied write");
        assert!(!refused(&answered(409)), "a conflict is retried");
        assert!(!refused(&answered(429)), "throttling passes");
        assert!(!refused(&answered(503)), "a server error passes");
    }

    #[test]
    fn retries_back_off_from_5s_doubling_to_5_minutes_within_20_percent_jitter() {
        let secs = |failures, jitter| backoff(failures, jitter).as_secs_f64();
        assert!((secs(1, 0.5) - 5.0).abs() < 1e-9);
        assert!((secs(2, 0.5) - 10.0).abs() < 1e-9);
        assert!((secs(4, 0.5) - 40.0).abs() < 1e-9);
        assert!((secs(30, 0.5) - 300.0).abs() < 1e-9, "capped");
        assert!((secs(1, 0.0) - 4.0).abs() < 1e-9 && (secs(1, 1.0) - 6.0).abs() < 1e-9);
        assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(360));
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]), "jitter varies: {draws:?}");
    }

    #[test]
    fn a_paced_tick_is_late_by_the_time_past_its_interval_and_an_idle_canary_never_is() {
        use crate::api::Phase;
        let last: k8s_openapi::jiff::Timestamp = "2026-12-07T10:00:00Z".parse().expect("time");
        let at = |secs: i64| last + k8s_openapi::jiff::SignedDuration::from_secs(secs);
        let every = Duration::from_secs(10);
        let progressing = Some(Phase::Progressing);
        assert_eq!(
            late(progressing, every, Some(last), at(13)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(late(progressing, every, Some(last), at(10)), Some(Duration::ZERO));
        assert_eq!(
            late(progressing, every, Some(last), at(4)),
            None,
            "early: a new revision"
        );
        assert_eq!(late(progressing, every, None, at(13)), None, "no tick yet");
        assert_eq!(late(Some(Phase::Succeeded), every, Some(last), at(600)), None);
        assert_eq!(late(None, every, Some(last), at(600)), None);
    }

    #[test]
    fn a_canarys_own_config_keys_win_over_its_policys_defaults() {
        let policy = json!({"margin": 1.0, "window": "1m"});
        let merged: serde_json::Value =
            serde_json::from_str(&merged_config(Some(&policy), r#"{"window": "10s"}"#)).expect("json");
        assert_eq!(merged, json!({"margin": 1.0, "window": "10s"}));
        assert_eq!(merged_config(Some(&policy), "{}"), policy.to_string());
        assert_eq!(merged_config(None, r#""fail""#), r#""fail""#);
        // Not two objects: the Canary's config is taken whole.
        assert_eq!(merged_config(Some(&policy), r#""fail""#), r#""fail""#);
    }
}
