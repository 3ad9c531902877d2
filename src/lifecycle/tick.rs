//! One analysis tick: (spec, state, observed, judge) → next state + actions.

use std::time::Duration;

use crate::api::{ManualAction, Phase, ValidSpec, WebhookType};
use crate::policy::PolicyError;
use crate::policy::types::{
    AnalysisRecord, AnalysisSettings, Answer, CheckValue, GateDecision, GateKind, MAX_HISTORY, Rollout,
    StepDecision, Verdict, WebhookOutcome,
};

use super::facts::{Manual, Observed, PolicyBlocked};

/// Answers a tick's judgement calls; the controller backs it with the policy component (plus metrics and
/// webhooks), tests with a script. Each answer may carry the policy's new state.
pub trait Judge {
    fn step(&mut self, rollout: &Rollout) -> Result<Answer<StepDecision>, PolicyError>;
    fn gate(&mut self, rollout: &Rollout, kind: GateKind) -> Result<Answer<GateDecision>, PolicyError>;
    fn analyse(&mut self, rollout: &Rollout) -> Result<Answer<Judged>, PolicyError>;
    /// Calls the webhooks of `kind` (pre-rollout, rollback, post-rollout) and says how each answered;
    /// empty when the canary has none of that kind.
    fn hooks(&mut self, rollout: &Rollout, kind: WebhookType) -> Vec<WebhookOutcome>;
}

/// What an analysis found: the verdict, a one-line explanation of what failed, and each check's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    pub why: String,
    pub checks: Vec<CheckValue>,
}

impl Judged {
    /// A verdict with no checks behind it (webhooks only, or a test).
    pub fn verdict(verdict: Verdict, why: &str) -> Self {
        Self {
            verdict,
            why: why.to_owned(),
            checks: Vec::new(),
        }
    }
}

/// The part of a Canary's status the lifecycle owns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    pub phase: Option<Phase>,
    /// When `phase` was entered, in seconds since the Unix epoch.
    pub phase_since: Option<f64>,
    pub canary_weight: u32,
    pub iterations: u32,
    pub failed_checks: u32,
    /// Analysis intervals spent at the current weight.
    pub intervals_at_weight: u32,
    pub last_applied: Option<String>,
    pub last_promoted: Option<String>,
    pub tracked_configs: std::collections::BTreeMap<String, String>,
    /// The policy's own state (JSON text), reset when a new revision starts.
    pub policy_state: Option<String>,
    /// The last analyses of this rollout, oldest first, at most [`MAX_HISTORY`].
    pub history: Vec<AnalysisRecord>,
    /// The operator who paused the rollout: nothing moves, no analysis counts, until resumed.
    pub paused_by: Option<String>,
    /// The operator who opened the next gate; used by the first gate asked, cleared with a new rollout.
    pub gate_opened_by: Option<String>,
}

/// A Kubernetes event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// Where requests go: the weights (summing to 100) and the share copied to the canary, if mirroring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub primary: u32,
    pub canary: u32,
    pub mirror: Option<u32>,
}

impl Split {
    pub fn weights(primary: u32, canary: u32) -> Self {
        Self {
            primary,
            canary,
            mirror: None,
        }
    }
}

/// A cluster change for `cluster`/`router` to apply, idempotently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create `<target>-primary` (and `-primary` copies of tracked configs) if missing; never touches an
    /// existing primary's template.
    EnsurePrimary,
    /// Copy the target's template and tracked configs into the primary.
    PromotePrimary,
    /// Services `<svc>-primary`, `<svc>-canary`, and the apex `<svc>` selecting the primary's pods.
    EnsureServices,
    /// DestinationRules and the VirtualService with this split.
    Route(Split),
    /// Set the target's replicas.
    ScaleTarget { replicas: i32 },
    /// Set the primary's replicas (it was scaled to 0 by hand mid-rollout).
    ScalePrimary { replicas: i32 },
    /// Record a Kubernetes event on the Canary.
    Event {
        kind: EventKind,
        reason: &'static str,
        message: String,
    },
}

/// The outcome of one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub state: State,
    pub actions: Vec<Action>,
    /// When to look again without a cluster change; `None` when idle.
    pub requeue: Option<Duration>,
    /// The last policy decision, for the status.
    pub decision: Option<String>,
}

/// Identity of the canary, for event texts (`podinfo.test`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryId {
    pub name: String,
    pub namespace: String,
}

impl std::fmt::Display for CanaryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// How long to wait for the primary while initialising (its own watch usually wakes us first).
const INIT_POLL: Duration = Duration::from_secs(5);

/// Decides one tick.
pub fn tick(id: &CanaryId, spec: &ValidSpec, state: &State, obs: &Observed, judge: &mut dyn Judge) -> Tick {
    let mut t = Ticker {
        id,
        spec,
        obs,
        judge,
        out: Tick::idle(state.clone()),
    };
    t.run();
    if t.out.state.phase != state.phase {
        t.out.state.phase_since = Some(obs.now);
    }
    t.out
}

impl Tick {
    fn idle(state: State) -> Self {
        Self {
            state,
            actions: Vec::new(),
            requeue: None,
            decision: None,
        }
    }
}

/// How an interval's analysis ended for the tick.
enum Analysed {
    Pass,
    /// Failed: counted as a failed check.
    Failed,
    /// Inconclusive, or the policy could not answer: reported, nothing moves.
    Halt,
}

struct Ticker<'a> {
    id: &'a CanaryId,
    spec: &'a ValidSpec,
    obs: &'a Observed,
    judge: &'a mut dyn Judge,
    out: Tick,
}

impl Ticker<'_> {
    fn run(&mut self) {
        if let Some(manual) = self.obs.manual.clone()
            && self.take(&manual)
        {
            return;
        }
        if let Some(by) = self.out.state.paused_by.clone()
            && self.hold_paused(&by)
        {
            return;
        }
        if self.spec.suspend {
            self.event(
                EventKind::Normal,
                format!("Halt advancement {} canary is suspended", self.id),
            );
            return;
        }
        if self.obs.target.is_none() {
            return self.target_gone();
        }
        if let Some(shown) = self.obs.drifted_canary_weight {
            // Routing is re-asserted below from fledge's own record, never from what was read back.
            let recorded = self.obs.routed_canary_weight.unwrap_or_default();
            self.out.actions.push(Action::Event {
                kind: EventKind::Warning,
                reason: "RouteDrift",
                message: format!(
                    "VirtualService {} was edited to send {shown}% to the canary; fledge restores {recorded}%",
                    self.spec.service
                ),
            });
        }
        if let Some(blocked) = &self.obs.policy_blocked
            && self.hold_for_policy(blocked)
        {
            return;
        }
        match self.out.state.phase {
            None | Some(Phase::Initializing) => self.initialise(),
            Some(Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting) => self.idle(),
            Some(Phase::Progressing | Phase::WaitingPromotion) => self.progress(),
            Some(Phase::Promoting) => self.promote(),
            Some(Phase::Finalising) => self.finalising(),
            // Deletion is handled by the finalizer, not by ticks.
            Some(Phase::Terminating | Phase::Terminated) => {}
        }
    }

    /// Takes an operator's request; returns whether the tick is done (an abort).
    fn take(&mut self, manual: &Manual) -> bool {
        let by = &manual.by;
        let why = manual
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let phase = self.out.state.phase;
        let analysing = matches!(phase, Some(Phase::Progressing | Phase::WaitingPromotion));
        let id = self.id.to_string();
        let note = |t: &mut Self, text: String| {
            t.out.actions.push(Action::Event {
                kind: EventKind::Normal,
                reason: "Manual",
                message: text,
            });
        };
        match manual.action {
            ManualAction::Pause => {
                self.out.state.paused_by = Some(by.clone());
                note(self, format!("Paused {id} by {by}{why}"));
            }
            ManualAction::Resume => {
                self.out.state.paused_by = None;
                note(self, format!("Resumed {id} by {by}{why}"));
            }
            ManualAction::Abort if analysing => {
                note(self, format!("Abort of {id} requested by {by}{why}"));
                self.out.state.paused_by = None;
                self.rollback(&format!("aborted by {by}{why}"));
                return true;
            }
            ManualAction::Retry if phase == Some(Phase::Failed) => {
                note(self, format!("Retry of {id} requested by {by}{why}"));
                // Forgetting the failed revision makes it new again: the next idle tick rolls it out.
                self.out.state.last_applied = None;
            }
            ManualAction::Promote if analysing || phase == Some(Phase::Waiting) => {
                note(self, format!("Next gate of {id} opened by {by}{why}"));
                self.out.state.gate_opened_by = Some(by.clone());
            }
            ManualAction::PromoteFull if analysing => {
                note(self, format!("Promotion of {id} forced by {by}{why}"));
                self.out.state.paused_by = None;
                self.out.requeue = Some(self.spec.interval);
                self.ensure_routing(self.current_weight());
                self.promote_now();
                return true;
            }
            other => {
                let phase = phase.map_or_else(|| "new".to_owned(), |p| format!("{p:?}"));
                self.out.actions.push(Action::Event {
                    kind: EventKind::Warning,
                    reason: "Manual",
                    message: format!(
                        "{} of {id} by {by} ignored: nothing to {} while {phase}",
                        other.verb(),
                        other.verb()
                    ),
                });
            }
        }
        false
    }

    /// A paused rollout holds its routing as it is: no analysis, no step, no new rollout. Returns whether the
    /// tick is done; initialising, promotion and finalising go on (nothing is judged there).
    fn hold_paused(&mut self, by: &str) -> bool {
        let phase = self.out.state.phase;
        let held = match phase {
            Some(Phase::Progressing | Phase::WaitingPromotion) => {
                self.out.requeue = Some(self.spec.interval);
                // Held where the route is (fledge's record on it is the truth), and the status says so: a
                // step whose status write was refused after its route was written still routes its weight.
                let weight = self.current_weight();
                self.out.state.canary_weight = weight;
                self.ensure_routing(weight);
                true
            }
            Some(Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting) => {
                self.ensure_routing(0);
                self.new_revision()
            }
            _ => false,
        };
        if held {
            self.event(
                EventKind::Normal,
                format!("Halt advancement {} paused by {by}", self.id),
            );
        }
        held
    }

    /// Finalising ends in Succeeded only once the primary serves; until then the route is held as recorded
    /// (a hand edit is put back even while a zero-replica primary is scaled up again).
    fn finalising(&mut self) {
        if self.primary_serves() {
            return self.finalise();
        }
        self.out.requeue = Some(self.spec.interval);
        self.ensure_routing(self.current_weight());
        if self.primary_scaled_to_zero() {
            return;
        }
        self.event(
            EventKind::Warning,
            format!(
                "Halt advancement {}-primary.{} does not serve yet",
                self.spec.target, self.id.namespace
            ),
        );
    }

    /// The primary has replicas and has rolled out: it can take every request.
    fn primary_serves(&self) -> bool {
        self.obs.primary.is_some_and(|p| p.ready && p.replicas > 0)
    }

    /// A primary with no replicas serves nothing: mid-rollout its replicas are put back (the canary's count)
    /// and nothing advances — no analysis, no promotion, no "Succeeded" — until it serves again.
    fn primary_scaled_to_zero(&mut self) -> bool {
        if self.obs.primary.is_none_or(|p| p.replicas != 0) {
            return false;
        }
        let replicas = self.obs.target.map_or(1, |t| t.replicas).max(1);
        self.act(Action::ScalePrimary { replicas });
        self.event(
            EventKind::Warning,
            format!(
                "Halt advancement {}-primary.{} has 0 replicas: scaling it back to {replicas}",
                self.spec.target, self.id.namespace
            ),
        );
        true
    }

    /// The target Deployment is gone. Mid-rollout the canary cannot serve, so every request goes to the primary
    /// at once; the rollout fails at the progress deadline (a recreated target starts over). Otherwise nothing
    /// is touched.
    fn target_gone(&mut self) {
        let target = self.target_id();
        self.out.requeue = Some(self.spec.interval);
        let phase = self.out.state.phase;
        if !phase.is_some_and(Phase::in_flight) {
            return self.event(
                EventKind::Warning,
                format!("Halt advancement: deployment {target} not found"),
            );
        }
        if self.obs.primary.is_some() {
            self.route(0);
        }
        self.out.state.canary_weight = 0;
        if matches!(phase, Some(Phase::Promoting | Phase::Finalising)) {
            // The primary already runs the new template: once it serves, the promotion is done.
            if self.primary_serves() {
                return self.finalise();
            }
            return self.event(
                EventKind::Warning,
                format!("Halt advancement: deployment {target} not found, waiting for the primary"),
            );
        }
        let deadline = self.spec.progress_deadline.as_secs();
        if self.obs.target_missing_secs <= deadline {
            return self.event(
                EventKind::Warning,
                format!("Halt advancement: deployment {target} not found, all traffic routed to the primary"),
            );
        }
        self.event(
            EventKind::Warning,
            format!(
                "Rolling back {} deployment {target} not found for {}s, past the progress deadline of {deadline}s",
                self.id, self.obs.target_missing_secs
            ),
        );
        let s = &mut self.out.state;
        s.phase = Some(Phase::Failed);
        s.iterations = 0;
        self.out.requeue = None;
        self.event(EventKind::Warning, format!("Canary failed! {target} is gone"));
        self.post_rollout();
    }

    /// With no policy to judge, traffic stays where it is and no rollout starts; past the progress deadline
    /// a rollout in analysis is rolled back, so traffic never waits on a broken policy for ever. Returns
    /// whether the tick is done. Initialising and finalising need no judgement and go on.
    fn hold_for_policy(&mut self, blocked: &PolicyBlocked) -> bool {
        let halt = |t: &mut Self| {
            t.event(
                EventKind::Warning,
                format!("Halt advancement {} policy not ready: {}", t.id, blocked.why),
            );
        };
        match self.out.state.phase {
            None | Some(Phase::Initializing | Phase::Finalising | Phase::Terminating | Phase::Terminated) => {
                false
            }
            Some(Phase::Progressing | Phase::WaitingPromotion) => {
                self.out.requeue = Some(self.spec.interval);
                self.ensure_routing(self.current_weight());
                let deadline = self.spec.progress_deadline.as_secs();
                if blocked.for_secs > deadline {
                    self.rollback(&format!(
                        "policy not ready for {}s, past the progress deadline of {deadline}s: {}",
                        blocked.for_secs, blocked.why
                    ));
                } else {
                    halt(self);
                }
                true
            }
            Some(Phase::Promoting) => {
                self.out.requeue = Some(self.spec.interval);
                self.ensure_routing(self.current_weight());
                halt(self);
                true
            }
            Some(Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting) => {
                self.ensure_routing(0);
                if self.new_revision() {
                    self.out.requeue = Some(self.spec.interval);
                    halt(self);
                }
                true
            }
        }
    }

    fn initialise(&mut self) {
        self.act(Action::EnsurePrimary);
        let ready = self.obs.primary.is_some_and(|p| p.ready);
        if !ready {
            // The apex Service must not move to the primary before it can serve.
            self.out.state.phase = Some(Phase::Initializing);
            self.out.requeue = Some(INIT_POLL);
            return;
        }
        self.act(Action::EnsureServices);
        self.route(0);
        self.act(Action::ScaleTarget { replicas: 0 });
        let s = &mut self.out.state;
        s.phase = Some(Phase::Initialized);
        s.last_applied = Some(self.obs.revision.clone());
        s.last_promoted = Some(self.obs.revision.clone());
        s.tracked_configs = self.obs.tracked_configs.clone();
        self.event(EventKind::Normal, format!("Initialization done! {}", self.id));
    }

    fn new_revision(&self) -> bool {
        let s = &self.out.state;
        let r = Some(&self.obs.revision);
        r != s.last_applied.as_ref() && r != s.last_promoted.as_ref()
    }

    fn idle(&mut self) {
        self.ensure_routing(0);
        if !self.new_revision() {
            if self.out.state.phase == Some(Phase::Waiting) && self.primary_serves() {
                // The change that made us wait is gone.
                self.out.state.phase = Some(Phase::Succeeded);
            }
            return;
        }
        self.out.requeue = Some(self.spec.interval);
        if self.out.state.phase != Some(Phase::Waiting) {
            // What the policy remembered belongs to the previous rollout.
            self.forget_rollout();
        }
        if !self.gate_open(GateKind::ConfirmRollout) {
            self.out.state.phase = Some(Phase::Waiting);
            return;
        }
        self.event(
            EventKind::Normal,
            format!(
                "New revision detected! Scaling up {}.{}",
                self.spec.target, self.id.namespace
            ),
        );
        self.act(Action::ScaleTarget {
            replicas: self.scale_up_replicas(),
        });
        self.start_analysis();
        self.out.state.phase = Some(Phase::Progressing);
    }

    fn start_analysis(&mut self) {
        let s = &mut self.out.state;
        s.canary_weight = 0;
        s.iterations = 0;
        s.failed_checks = 0;
        s.intervals_at_weight = 0;
        s.last_applied = Some(self.obs.revision.clone());
        s.tracked_configs = self.obs.tracked_configs.clone();
    }

    fn progress(&mut self) {
        self.out.requeue = Some(self.spec.interval);
        let weight = self.current_weight();
        self.ensure_routing(weight);
        if Some(&self.obs.revision) != self.out.state.last_applied.as_ref() {
            self.event(
                EventKind::Normal,
                format!("New revision detected! Restarting analysis {}", self.id),
            );
            self.route(0);
            self.act(Action::ScaleTarget {
                replicas: self.scale_up_replicas(),
            });
            self.forget_rollout();
            self.start_analysis();
            self.out.state.phase = Some(Phase::Progressing);
            return;
        }
        let target = self.obs.target.unwrap_or_default();
        if !target.ready {
            if target.stalled || target.unavailable_secs > self.spec.progress_deadline.as_secs() {
                let reason = format!(
                    "progress deadline exceeded canary deployment {} not ready",
                    self.target_id()
                );
                return self.rollback(&reason);
            }
            // Not ready yet is not a failed check (Flagger: retriable).
            self.event(
                EventKind::Warning,
                format!(
                    "Halt advancement {} waiting for rollout to finish",
                    self.target_id()
                ),
            );
            return;
        }
        if self.primary_scaled_to_zero() {
            return;
        }
        if self.spec.skip_analysis {
            if !self.primary_serves() {
                return self.event(
                    EventKind::Warning,
                    format!(
                        "Halt advancement {}-primary.{} does not serve",
                        self.spec.target, self.id.namespace
                    ),
                );
            }
            self.promote_now();
            self.route(0);
            return self.finalise();
        }
        let rollout = self.rollout(weight);
        // A rollback webhook that answers yes aborts the rollout (flagger-loadtester's /rollback/check).
        let manual = self.judge.hooks(&rollout, WebhookType::Rollback);
        if manual.iter().any(|h| h.ok) {
            return self.rollback("manual webhook invoked");
        }
        // Judge first, then decide: the step sees this interval's analysis in its history and state.
        if weight > 0 || self.out.state.iterations > 0 || self.mirroring() {
            match self.analysis(weight) {
                Analysed::Pass => {}
                Analysed::Halt => return,
                Analysed::Failed => return self.step_after_failure(weight),
            }
        } else {
            self.event(
                EventKind::Normal,
                format!("Starting canary analysis for {}", self.target_id()),
            );
            // Pre-rollout hooks (load test setup, smoke tests) must pass before any traffic moves.
            let pre = self.judge.hooks(&rollout, WebhookType::PreRollout);
            if let Some(failed) = pre.iter().find(|h| !h.ok) {
                let why = format!(
                    "pre-rollout check {} failed: {}",
                    failed.name,
                    describe_hook(failed)
                );
                return self.failed_check(&why);
            }
        }
        let step = match self.judge.step(&self.rollout(weight)) {
            Ok(answer) => self.remember(answer),
            Err(e) => return self.policy_failed("step", &e),
        };
        self.out.decision = Some(describe(&step));
        if let StepDecision::Rollback { reason } = &step {
            return self.rollback(reason);
        }
        match step {
            StepDecision::SetWeight { weight: next } if next != weight => {
                if next > weight && !self.gate_open(GateKind::ConfirmTrafficIncrease) {
                    return;
                }
                if weight == 0 && self.spec.mirror.is_some() && !self.mirroring() {
                    // Flagger: one interval of mirrored requests before any user request reaches the canary.
                    return self.start_mirroring();
                }
                self.route(next);
                self.out.state.canary_weight = next;
                self.out.state.intervals_at_weight = 0;
                self.event(
                    EventKind::Normal,
                    format!("Advance {} canary weight {next}", self.id),
                );
            }
            StepDecision::Iterate => {
                if self.spec.mirror.is_some() && !self.mirroring() {
                    // Blue/green with mirroring: the canary sees a copy of the traffic for every iteration.
                    self.start_mirroring();
                }
                if self.spec.has_match && weight == 0 {
                    // A/B testing: requests matching `analysis.match` all go to the canary for the analysis.
                    self.route(100);
                    self.out.state.canary_weight = 100;
                    self.out.state.intervals_at_weight = 0;
                }
                let s = &mut self.out.state;
                s.iterations += 1;
                let (done, of) = (s.iterations, self.spec.iterations.unwrap_or_default());
                self.event(
                    EventKind::Normal,
                    format!("Advance {} canary iteration {done}/{of}", self.id),
                );
            }
            StepDecision::Promote => {
                if !self.gate_open(GateKind::ConfirmPromotion) {
                    self.out.state.phase = Some(Phase::WaitingPromotion);
                    return;
                }
                if self.spec.iterations.is_some() && !self.spec.has_match && weight < 100 {
                    return self.switch_to_canary();
                }
                self.promote_now();
            }
            StepDecision::SetWeight { .. } | StepDecision::Hold { .. } | StepDecision::Rollback { .. } => {}
        }
    }

    /// Runs this interval's analysis and records it in the history; a failed check is counted, a halt
    /// (inconclusive, or a policy error) reported.
    fn analysis(&mut self, weight: u32) -> Analysed {
        self.out.state.intervals_at_weight += 1;
        let judged = match self.judge.analyse(&self.rollout(weight)) {
            Ok(answer) => self.remember(answer),
            Err(e) => {
                self.policy_failed("analysis", &e);
                return Analysed::Halt;
            }
        };
        let history = &mut self.out.state.history;
        history.push(AnalysisRecord {
            time: self.obs.now,
            weight,
            verdict: judged.verdict,
            checks: judged.checks,
        });
        let over = history.len().saturating_sub(MAX_HISTORY);
        history.drain(..over);
        match judged.verdict {
            Verdict::Pass => Analysed::Pass,
            Verdict::Fail => {
                self.failed_check(&judged.why);
                Analysed::Failed
            }
            Verdict::Inconclusive => {
                self.event(
                    EventKind::Normal,
                    format!("Halt advancement {} inconclusive: {}", self.id, judged.why),
                );
                Analysed::Halt
            }
        }
    }

    /// After a failed check nothing advances, but the policy decides at once whether it was the last one
    /// (the default rolls back at the threshold): no interval of traffic is spent on a known-bad canary.
    fn step_after_failure(&mut self, weight: u32) {
        match self.judge.step(&self.rollout(weight)) {
            Ok(answer) => {
                let step = self.remember(answer);
                self.out.decision = Some(describe(&step));
                if let StepDecision::Rollback { reason } = step {
                    self.rollback(&reason);
                }
            }
            Err(e) => self.policy_failed("step", &e),
        }
    }

    /// Keeps the state a policy returned (none keeps the one it had) and hands back its decision.
    fn remember<T>(&mut self, answer: Answer<T>) -> T {
        if let Some(state) = answer.state {
            self.out.state.policy_state = Some(state);
        }
        answer.decision
    }

    /// A new revision starts with a policy that remembers nothing.
    fn forget_rollout(&mut self) {
        let s = &mut self.out.state;
        s.gate_opened_by = None;
        s.policy_state = None;
        s.history.clear();
        s.intervals_at_weight = 0;
    }

    /// Blue/green, as Flagger: once the iterations passed, every user moves to the new version in one switch
    /// and stays there while the primary is updated (the next passing analysis promotes), so no user sees
    /// old and new pods mixed behind the primary during its rollout.
    fn switch_to_canary(&mut self) {
        let note = if self.mirroring() {
            "Stop traffic mirroring and route all traffic to canary"
        } else {
            "Routing all traffic to canary"
        };
        self.route(100);
        self.out.state.canary_weight = 100;
        self.out.state.intervals_at_weight = 0;
        self.event(EventKind::Normal, format!("{note} {}", self.id));
    }

    fn promote_now(&mut self) {
        let primary = format!("{}-primary.{}", self.spec.target, self.id.namespace);
        self.event(
            EventKind::Normal,
            format!("Copying {} template spec to {primary}", self.target_id()),
        );
        self.act(Action::PromotePrimary);
        self.out.state.phase = Some(Phase::Promoting);
    }

    fn promote(&mut self) {
        self.out.requeue = Some(self.spec.interval);
        let weight = self.current_weight();
        self.ensure_routing(weight);
        if self.primary_scaled_to_zero() {
            return;
        }
        if !self.obs.primary.is_some_and(|p| p.ready) {
            let primary = format!("{}-primary.{}", self.spec.target, self.id.namespace);
            return self.event(
                EventKind::Normal,
                format!("Halt advancement {primary} waiting for rollout to finish"),
            );
        }
        let next = match self.judge.step(&self.rollout(weight)).map(|a| self.remember(a)) {
            // Promotion only moves traffic back to the primary: a policy cannot send more to the canary here.
            Ok(StepDecision::SetWeight { weight: next }) => next.min(weight),
            Ok(StepDecision::Promote) => 0,
            Ok(other) => {
                self.out.decision = Some(describe(&other));
                return;
            }
            // Mid-promotion the primary already runs the new spec: hold, never roll back here.
            Err(e) => return self.report_policy_error("step", &e),
        };
        self.out.decision = Some(describe(&StepDecision::SetWeight { weight: next }));
        self.route(next);
        self.out.state.canary_weight = next;
        if next == 0 {
            self.event(
                EventKind::Normal,
                format!("Routing all traffic to primary {}", self.id),
            );
            self.out.state.phase = Some(Phase::Finalising);
        }
    }

    fn finalise(&mut self) {
        self.route(0);
        self.act(Action::ScaleTarget { replicas: 0 });
        let s = &mut self.out.state;
        s.phase = Some(Phase::Succeeded);
        s.canary_weight = 0;
        s.last_promoted = s.last_applied.clone();
        self.out.requeue = None;
        self.event(
            EventKind::Normal,
            format!("Promotion completed! Scaling down {}", self.target_id()),
        );
        self.post_rollout();
    }

    /// Post-rollout hooks run after success and after failure; their failures are reported, never acted on.
    fn post_rollout(&mut self) {
        let rollout = self.rollout(self.out.state.canary_weight);
        for h in self.judge.hooks(&rollout, WebhookType::PostRollout) {
            if !h.ok {
                self.event(
                    EventKind::Warning,
                    format!(
                        "Post-rollout hook {} failed for {}: {}",
                        h.name,
                        self.id,
                        describe_hook(&h)
                    ),
                );
            }
        }
    }

    fn rollback(&mut self, reason: &str) {
        self.event(EventKind::Warning, format!("Rolling back {} {reason}", self.id));
        self.route(0);
        self.act(Action::ScaleTarget { replicas: 0 });
        let s = &mut self.out.state;
        s.phase = Some(Phase::Failed);
        s.canary_weight = 0;
        s.iterations = 0;
        // lastApplied keeps the failed revision, so it is not retried; a newer one is.
        self.out.requeue = None;
        self.event(
            EventKind::Warning,
            format!("Canary failed! Scaling down {}", self.target_id()),
        );
        self.post_rollout();
    }

    fn failed_check(&mut self, why: &str) {
        self.out.state.failed_checks += 1;
        self.event(EventKind::Warning, format!("Halt {} advancement {why}", self.id));
    }

    /// A policy error counts as a failed check of this canary (and only this one); at the threshold the
    /// controller rolls back by itself, since a broken policy cannot be asked to.
    fn policy_failed(&mut self, world: &str, e: &PolicyError) {
        self.out.state.failed_checks += 1;
        self.report_policy_error(world, e);
        let failed = self.out.state.failed_checks;
        if failed >= self.spec.threshold {
            self.rollback(&format!(
                "failed checks threshold reached {failed} ({world} policy failing: {})",
                e.category()
            ));
        }
    }

    fn report_policy_error(&mut self, world: &str, e: &PolicyError) {
        self.out.decision = Some(format!("{world} error: {}", e.category()));
        self.out.actions.push(Action::Event {
            kind: EventKind::Warning,
            reason: "PolicyError",
            message: format!("{world} policy failed for {} ({}): {e}", self.id, e.category()),
        });
    }

    /// Asks `kind`; closed (or a failing gate) records why and keeps the canary where it is.
    fn gate_open(&mut self, kind: GateKind) -> bool {
        if let Some(by) = self.out.state.gate_opened_by.take() {
            // `fledge promote`: this gate is open once, whatever its webhooks say.
            self.event(
                EventKind::Normal,
                format!("{kind:?} gate of {} opened by {by}", self.id),
            );
            return true;
        }
        let rollout = self.rollout(self.current_weight());
        match self.judge.gate(&rollout, kind).map(|a| self.remember(a)) {
            Ok(GateDecision::Open) => true,
            Ok(GateDecision::Closed { reason } | GateDecision::Rollback { reason }) => {
                self.event(EventKind::Normal, reason);
                false
            }
            Err(e) => {
                // Gates never count failed checks (Flagger): a broken gate only holds.
                self.report_policy_error("gate", &e);
                false
            }
        }
    }

    fn ensure_routing(&mut self, weight: u32) {
        self.act(Action::EnsurePrimary);
        self.act(Action::EnsureServices);
        // Re-asserting the route keeps a mirror that an analysis is using; any other move drops it.
        let analysing = matches!(
            self.out.state.phase,
            Some(Phase::Progressing | Phase::WaitingPromotion)
        );
        if analysing && weight == 0 && self.mirroring() {
            self.route_mirrored();
        } else {
            self.route(weight);
        }
    }

    fn route(&mut self, canary: u32) {
        self.route_with(canary, None);
    }

    /// All user traffic on the primary, a copy of `mirrorWeight` % of it to the canary.
    fn route_mirrored(&mut self) {
        self.route_with(0, self.spec.mirror);
    }

    fn route_with(&mut self, canary: u32, mirror: Option<u32>) {
        let canary = canary.min(100);
        self.out.actions.retain(|a| !matches!(a, Action::Route(_)));
        self.act(Action::Route(Split {
            primary: 100 - canary,
            canary,
            mirror,
        }));
    }

    fn start_mirroring(&mut self) {
        self.route_mirrored();
        self.event(EventKind::Normal, format!("Start traffic mirroring {}", self.id));
    }

    /// The canary asks for mirroring and the VirtualService mirrors now.
    fn mirroring(&self) -> bool {
        self.spec.mirror.is_some() && self.obs.routed_mirror
    }

    fn current_weight(&self) -> u32 {
        self.obs
            .routed_canary_weight
            .unwrap_or(self.out.state.canary_weight)
    }

    /// Replicas for the target when a rollout starts: the primary's, at least one.
    fn scale_up_replicas(&self) -> i32 {
        self.obs.primary.map_or(1, |p| p.replicas).max(1)
    }

    fn target_id(&self) -> String {
        format!("{}.{}", self.spec.target, self.id.namespace)
    }

    fn rollout(&self, weight: u32) -> Rollout {
        let mut rollout = rollout_of(self.id, self.spec, &self.out.state, weight);
        rollout.revision = self.obs.revision.clone();
        let since = self.out.state.phase_since.unwrap_or(self.obs.now);
        rollout.seconds_in_phase = seconds(self.obs.now - since);
        rollout
    }

    fn act(&mut self, action: Action) {
        if !self.out.actions.contains(&action) {
            self.out.actions.push(action);
        }
    }

    fn event(&mut self, kind: EventKind, message: String) {
        self.out.actions.push(Action::Event {
            kind,
            reason: "Synced",
            message,
        });
    }
}

/// What a policy is told about the rollout in `state` at `weight`.
pub fn rollout_of(id: &CanaryId, spec: &ValidSpec, state: &State, weight: u32) -> Rollout {
    Rollout {
        name: id.name.clone(),
        namespace: id.namespace.clone(),
        phase: state.phase.unwrap_or(Phase::Initializing),
        canary_weight: weight,
        iterations: state.iterations,
        failed_checks: state.failed_checks,
        analysis: AnalysisSettings {
            interval_seconds: u32::try_from(spec.interval.as_secs()).unwrap_or(u32::MAX),
            threshold: spec.threshold,
            max_weight: spec.max_weight,
            step_weight: spec.step_weight,
            step_weights: spec.step_weights.clone(),
            step_weight_promotion: spec.step_weight_promotion,
            iterations: spec.iterations,
            has_match: spec.has_match,
        },
        config: spec.policy_config.clone(),
        intervals_at_weight: state.intervals_at_weight,
        seconds_in_phase: 0,
        revision: state.last_applied.clone().unwrap_or_default(),
        state: state.policy_state.clone(),
        history: state.history.clone(),
    }
}

/// Whole seconds of a span, 0 when negative (clocks of two hosts).
fn seconds(span: f64) -> u32 {
    if span.is_finite() && span > 0.0 {
        // Saturates at u32::MAX (136 years).
        span.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// The HTTP status and answer of a webhook, for event texts.
fn describe_hook(h: &WebhookOutcome) -> String {
    match h.status_code {
        Some(code) if h.message.is_empty() => format!("HTTP {code}"),
        Some(code) => format!("HTTP {code} {}", h.message),
        None => h.message.clone(),
    }
}

/// A short, bounded description of a step decision for the status.
fn describe(step: &StepDecision) -> String {
    match step {
        StepDecision::SetWeight { weight } => format!("set-weight {weight}"),
        StepDecision::Iterate => "iterate".into(),
        StepDecision::Hold { reason } => format!("hold: {reason}"),
        StepDecision::Promote => "promote".into(),
        StepDecision::Rollback { reason } => format!("rollback: {reason}"),
    }
}
