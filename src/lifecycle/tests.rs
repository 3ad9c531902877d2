//! Table tests of the lifecycle: Flagger's semantics, case by case, with a scripted judge.

use std::collections::VecDeque;

use super::*;
use crate::api::{CanarySpec, Phase, ValidSpec, WebhookType, validate};
use crate::policy::PolicyError;
use crate::policy::types::{
    Answer, GateDecision, GateKind, Phase as PolicyPhase, Rollout, StepDecision, Verdict, WebhookOutcome,
};

/// A scripted judge whose answers keep no policy state (what a 0.1.0 component gives).
pub(super) trait Stateless {
    fn step(&mut self, rollout: &Rollout) -> Result<StepDecision, PolicyError>;
    fn gate(&mut self, rollout: &Rollout, kind: GateKind) -> Result<GateDecision, PolicyError>;
    fn analyse(&mut self, rollout: &Rollout) -> Result<(Verdict, String), PolicyError>;
    fn hooks(&mut self, rollout: &Rollout, kind: WebhookType) -> Vec<WebhookOutcome>;
}

impl<T: Stateless> Judge for T {
    fn step(&mut self, r: &Rollout) -> Result<Answer<StepDecision>, PolicyError> {
        Stateless::step(self, r).map(Answer::stateless)
    }
    fn gate(&mut self, r: &Rollout, kind: GateKind) -> Result<Answer<GateDecision>, PolicyError> {
        Stateless::gate(self, r, kind).map(Answer::stateless)
    }
    fn analyse(&mut self, r: &Rollout) -> Result<Answer<Judged>, PolicyError> {
        Stateless::analyse(self, r).map(|(v, why)| Answer::stateless(Judged::verdict(v, &why)))
    }
    fn hooks(&mut self, r: &Rollout, kind: WebhookType) -> Vec<WebhookOutcome> {
        Stateless::hooks(self, r, kind)
    }
}

/// Steps like the default policy (stepWeight 20 to maxWeight, threshold rollback); analysis and gates follow
/// the queues, passing/opening when they are empty.
#[derive(Default)]
struct Script {
    analyses: VecDeque<Result<Verdict, PolicyError>>,
    gates: VecDeque<GateDecision>,
    asked_gates: Vec<GateKind>,
    /// Webhook answers by kind (none configured when absent), and which kinds were called.
    hooks: Vec<(WebhookType, WebhookOutcome)>,
    asked_hooks: Vec<WebhookType>,
}

impl Stateless for Script {
    fn step(&mut self, r: &Rollout) -> Result<StepDecision, PolicyError> {
        if r.phase == PolicyPhase::Promoting {
            return Ok(StepDecision::SetWeight { weight: 0 });
        }
        if r.failed_checks >= r.analysis.threshold.max(1) {
            return Ok(StepDecision::Rollback {
                reason: format!("failed checks threshold reached {}", r.failed_checks),
            });
        }
        let max = r.analysis.max_weight.unwrap_or(100);
        if r.canary_weight >= max {
            return Ok(StepDecision::Promote);
        }
        Ok(StepDecision::SetWeight {
            weight: (r.canary_weight + r.analysis.step_weight.unwrap_or(20)).min(100),
        })
    }

    fn gate(&mut self, _: &Rollout, kind: GateKind) -> Result<GateDecision, PolicyError> {
        self.asked_gates.push(kind);
        Ok(self.gates.pop_front().unwrap_or(GateDecision::Open))
    }

    fn analyse(&mut self, _: &Rollout) -> Result<(Verdict, String), PolicyError> {
        self.analyses
            .pop_front()
            .unwrap_or(Ok(Verdict::Pass))
            .map(|v| (v, "request-success-rate 90 < 99".into()))
    }

    fn hooks(&mut self, _: &Rollout, kind: WebhookType) -> Vec<WebhookOutcome> {
        self.asked_hooks.push(kind);
        self.hooks
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }
}

fn hook(name: &str, ok: bool, status: u16) -> WebhookOutcome {
    WebhookOutcome {
        name: name.into(),
        ok,
        status_code: Some(status),
        message: String::new(),
    }
}

fn spec(analysis: serde_json::Value) -> ValidSpec {
    let spec: CanarySpec = serde_json::from_value(serde_json::json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": analysis,
    }))
    .expect("spec");
    validate(&spec).expect("valid")
}

fn seed_spec() -> ValidSpec {
    spec(serde_json::json!({"interval": "15s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}))
}

fn id() -> CanaryId {
    CanaryId {
        name: "podinfo".into(),
        namespace: "test".into(),
    }
}

fn ready(replicas: i32) -> Option<Workload> {
    Some(Workload {
        replicas,
        ready: true,
        stalled: false,
        unavailable_secs: 0,
    })
}

/// Target and primary both ready at 2 replicas, revision `rev`.
fn observed(rev: &str) -> Observed {
    Observed {
        target: ready(2),
        primary: ready(2),
        revision: rev.into(),
        ..Default::default()
    }
}

fn initialized(rev: &str) -> State {
    State {
        phase: Some(Phase::Initialized),
        last_applied: Some(rev.into()),
        last_promoted: Some(rev.into()),
        ..Default::default()
    }
}

fn events(t: &Tick) -> Vec<&str> {
    t.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

fn route(t: &Tick) -> Option<(u32, u32)> {
    t.actions.iter().find_map(|a| match a {
        Action::Route(s) => Some((s.primary, s.canary)),
        _ => None,
    })
}

/// Blue/green and A/B: iterate `.0` times, then promote.
struct Iterations(u32);
impl Stateless for Iterations {
    fn step(&mut self, r: &Rollout) -> Result<StepDecision, PolicyError> {
        Ok(match r.phase {
            PolicyPhase::Promoting => StepDecision::SetWeight { weight: 0 },
            _ if r.iterations < self.0 => StepDecision::Iterate,
            _ => StepDecision::Promote,
        })
    }
    fn gate(&mut self, _: &Rollout, _: GateKind) -> Result<GateDecision, PolicyError> {
        Ok(GateDecision::Open)
    }
    fn analyse(&mut self, _: &Rollout) -> Result<(Verdict, String), PolicyError> {
        Ok((Verdict::Pass, String::new()))
    }
    fn hooks(&mut self, _: &Rollout, _: WebhookType) -> Vec<WebhookOutcome> {
        Vec::new()
    }
}

/// The route a tick wrote, as (canary weight, mirror share).
fn routed(t: &Tick) -> Option<(u32, Option<u32>)> {
    t.actions.iter().find_map(|a| match a {
        Action::Route(s) => Some((s.canary, s.mirror)),
        _ => None,
    })
}

/// What the next tick observes after `t`'s route was applied.
fn after(t: &Tick, rev: &str) -> Observed {
    let mut obs = observed(rev);
    if let Some((canary, mirror)) = routed(t) {
        obs.routed_canary_weight = Some(canary);
        obs.routed_mirror = mirror.is_some();
    }
    obs
}

fn has(t: &Tick, action: &Action) -> bool {
    t.actions.contains(action)
}

#[test]
fn initialising_waits_for_a_ready_primary_before_moving_the_apex_service() {
    let mut obs = observed("r1");
    obs.primary = None;
    let t = tick(
        &id(),
        &seed_spec(),
        &State::default(),
        &obs,
        &mut Script::default(),
    );
    assert_eq!(t.state.phase, Some(Phase::Initializing));
    assert_eq!(t.actions, [Action::EnsurePrimary]);

    obs.primary = ready(2);
    let t = tick(&id(), &seed_spec(), &t.state, &obs, &mut Script::default());
    assert_eq!(t.state.phase, Some(Phase::Initialized));
    assert!(has(&t, &Action::EnsureServices));
    assert_eq!(route(&t), Some((100, 0)));
    assert!(has(&t, &Action::ScaleTarget { replicas: 0 }));
    assert_eq!(t.state.last_applied.as_deref(), Some("r1"));
    assert_eq!(t.state.last_promoted.as_deref(), Some("r1"));
    assert_eq!(events(&t), ["Initialization done! podinfo.test"]);
    assert_eq!(
        t.requeue, None,
        "an initialized canary waits for a change, not a timer"
    );
}

#[test]
fn seed_story_advances_20_40_60_then_promotes_and_finalises() {
    let spec = seed_spec();
    let mut judge = Script::default();
    // New revision: scale the target up to the primary's replicas.
    let t = tick(&id(), &spec, &initialized("r1"), &observed("r2"), &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Progressing));
    assert!(has(&t, &Action::ScaleTarget { replicas: 2 }));
    assert_eq!(events(&t), ["New revision detected! Scaling up podinfo.test"]);
    assert_eq!(t.requeue, Some(spec.interval));

    let mut state = t.state;
    let mut weights = Vec::new();
    let mut all_events = Vec::new();
    for _ in 0..10 {
        let t = tick(&id(), &spec, &state, &observed("r2"), &mut judge);
        all_events.extend(events(&t).into_iter().map(str::to_owned));
        weights.push(route(&t).expect("every progressing tick routes").1);
        state = t.state.clone();
        if state.phase == Some(Phase::Promoting) {
            assert!(has(&t, &Action::PromotePrimary));
            break;
        }
    }
    assert_eq!(weights, [20, 40, 60, 60]);
    assert_eq!(
        all_events,
        [
            "Starting canary analysis for podinfo.test",
            "Advance podinfo.test canary weight 20",
            "Advance podinfo.test canary weight 40",
            "Advance podinfo.test canary weight 60",
            "Copying podinfo.test template spec to podinfo-primary.test",
        ]
    );
    assert_eq!(
        judge
            .asked_gates
            .iter()
            .filter(|g| **g == GateKind::ConfirmPromotion)
            .count(),
        1
    );

    // Promoting: wait for the primary's rollout, then all traffic back to it.
    let mut obs = observed("r2");
    obs.primary = Some(Workload {
        replicas: 2,
        ready: false,
        stalled: false,
        unavailable_secs: 0,
    });
    let t = tick(&id(), &spec, &state, &obs, &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Promoting));
    assert_eq!(
        route(&t),
        Some((40, 60)),
        "traffic stays while the primary rolls out"
    );
    let t = tick(&id(), &spec, &t.state, &observed("r2"), &mut judge);
    assert_eq!(
        (t.state.phase, route(&t)),
        (Some(Phase::Finalising), Some((100, 0)))
    );
    let t = tick(&id(), &spec, &t.state, &observed("r2"), &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Succeeded));
    assert!(has(&t, &Action::ScaleTarget { replicas: 0 }));
    assert_eq!(t.state.last_promoted.as_deref(), Some("r2"));
    assert_eq!(events(&t), ["Promotion completed! Scaling down podinfo.test"]);

    // Nothing new: idle, routing kept at 100/0.
    let t = tick(&id(), &spec, &t.state, &observed("r2"), &mut judge);
    assert_eq!(
        (t.state.phase, route(&t), t.requeue),
        (Some(Phase::Succeeded), Some((100, 0)), None)
    );
}

fn progressing_at(weight: u32, rev: &str) -> State {
    State {
        phase: Some(Phase::Progressing),
        canary_weight: weight,
        last_applied: Some(rev.into()),
        last_promoted: Some("r1".into()),
        ..Default::default()
    }
}

#[test]
fn failed_checks_reaching_the_threshold_roll_back_and_the_same_revision_is_not_retried() {
    let spec = seed_spec();
    let mut judge = Script {
        analyses: VecDeque::from([Ok(Verdict::Fail), Ok(Verdict::Fail)]),
        ..Default::default()
    };
    let state = progressing_at(20, "r2");
    let t = tick(&id(), &spec, &state, &observed("r2"), &mut judge);
    assert_eq!(t.state.failed_checks, 1);
    assert_eq!(route(&t), Some((80, 20)), "a failed check does not move traffic");
    // The Nth failure rolls back in its own tick: the policy is asked right after the analysis (Flagger
    // waits one more interval, with traffic on a canary already known to be bad).
    let t = tick(&id(), &spec, &t.state, &observed("r2"), &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Failed));
    assert_eq!(route(&t), Some((100, 0)));
    assert!(has(&t, &Action::ScaleTarget { replicas: 0 }));
    assert_eq!(
        events(&t),
        [
            "Halt podinfo.test advancement request-success-rate 90 < 99",
            "Rolling back podinfo.test failed checks threshold reached 2",
            "Canary failed! Scaling down podinfo.test"
        ]
    );
    // Same revision: nothing happens.
    let again = tick(&id(), &spec, &t.state, &observed("r2"), &mut judge);
    assert_eq!(again.state.phase, Some(Phase::Failed));
    assert!(
        !again
            .actions
            .iter()
            .any(|a| matches!(a, Action::ScaleTarget { .. }))
    );
    // A newer revision is tried.
    let next = tick(&id(), &spec, &t.state, &observed("r3"), &mut judge);
    assert_eq!(next.state.phase, Some(Phase::Progressing));
    assert_eq!(next.state.failed_checks, 0);
}

#[test]
fn a_new_revision_mid_analysis_restarts_it_at_weight_0() {
    let t = tick(
        &id(),
        &seed_spec(),
        &progressing_at(40, "r2"),
        &observed("r3"),
        &mut Script::default(),
    );
    assert_eq!(t.state.phase, Some(Phase::Progressing));
    assert_eq!((t.state.canary_weight, route(&t)), (0, Some((100, 0))));
    assert_eq!(t.state.last_applied.as_deref(), Some("r3"));
    assert_eq!(
        events(&t),
        ["New revision detected! Restarting analysis podinfo.test"]
    );
}

#[test]
fn a_canary_that_is_not_ready_is_not_a_failed_check_until_its_deadline() {
    let spec = seed_spec();
    let mut obs = observed("r2");
    obs.target = Some(Workload {
        replicas: 2,
        ready: false,
        stalled: false,
        unavailable_secs: 0,
    });
    let t = tick(
        &id(),
        &spec,
        &progressing_at(20, "r2"),
        &obs,
        &mut Script::default(),
    );
    assert_eq!(
        (t.state.phase, t.state.failed_checks),
        (Some(Phase::Progressing), 0)
    );
    if let Some(target) = obs.target.as_mut() {
        target.unavailable_secs = 601;
    }
    let t = tick(
        &id(),
        &spec,
        &progressing_at(20, "r2"),
        &obs,
        &mut Script::default(),
    );
    assert_eq!(t.state.phase, Some(Phase::Failed));
    assert!(events(&t)[0].contains("progress deadline exceeded"));
}

#[test]
fn a_closed_confirm_rollout_gate_waits_without_scaling_up() {
    let mut judge = Script {
        gates: VecDeque::from([GateDecision::Closed {
            reason: "waiting for approval".into(),
        }]),
        ..Default::default()
    };
    let t = tick(
        &id(),
        &seed_spec(),
        &initialized("r1"),
        &observed("r2"),
        &mut judge,
    );
    assert_eq!(t.state.phase, Some(Phase::Waiting));
    assert!(!t.actions.iter().any(|a| matches!(a, Action::ScaleTarget { .. })));
    assert_eq!(events(&t), ["waiting for approval"]);
    let t = tick(&id(), &seed_spec(), &t.state, &observed("r2"), &mut judge);
    assert_eq!(
        t.state.phase,
        Some(Phase::Progressing),
        "the gate opened on the next tick"
    );
}

#[test]
fn a_closed_promotion_gate_holds_in_waiting_promotion() {
    let mut judge = Script {
        gates: VecDeque::from([GateDecision::Closed {
            reason: "not yet".into(),
        }]),
        ..Default::default()
    };
    let t = tick(
        &id(),
        &seed_spec(),
        &progressing_at(60, "r2"),
        &observed("r2"),
        &mut judge,
    );
    assert_eq!(t.state.phase, Some(Phase::WaitingPromotion));
    assert!(!has(&t, &Action::PromotePrimary));
    let t = tick(&id(), &seed_spec(), &t.state, &observed("r2"), &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Promoting));
}

#[test]
fn a_failing_policy_counts_a_failed_check_and_says_why() {
    let mut judge = Script {
        analyses: VecDeque::from([Err(PolicyError::Trap {
            message: "unreachable".into(),
        })]),
        ..Default::default()
    };
    let t = tick(
        &id(),
        &seed_spec(),
        &progressing_at(20, "r2"),
        &observed("r2"),
        &mut judge,
    );
    assert_eq!(t.state.failed_checks, 1);
    assert!(t.actions.iter().any(|a| matches!(
        a,
        Action::Event {
            kind: EventKind::Warning,
            reason: "PolicyError",
            ..
        }
    )));
    assert_eq!(t.decision.as_deref(), Some("analysis error: trap"));
}

#[test]
fn a_policy_that_keeps_failing_is_rolled_back_by_the_controller_at_the_threshold() {
    struct Broken;
    impl Stateless for Broken {
        fn step(&mut self, _: &Rollout) -> Result<StepDecision, PolicyError> {
            Err(PolicyError::Timeout { deadline_ms: 100 })
        }
        fn gate(&mut self, _: &Rollout, _: GateKind) -> Result<GateDecision, PolicyError> {
            Ok(GateDecision::Open)
        }
        fn analyse(&mut self, _: &Rollout) -> Result<(Verdict, String), PolicyError> {
            Ok((Verdict::Pass, String::new()))
        }
        fn hooks(&mut self, _: &Rollout, _: WebhookType) -> Vec<WebhookOutcome> {
            Vec::new()
        }
    }
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(20);
    let t = tick(&id(), &seed_spec(), &progressing_at(20, "r2"), &obs, &mut Broken);
    assert_eq!(
        t.state.phase,
        Some(Phase::Progressing),
        "one failure is below threshold 2"
    );
    let t = tick(&id(), &seed_spec(), &t.state, &obs, &mut Broken);
    assert_eq!(t.state.phase, Some(Phase::Failed));
    assert_eq!(route(&t), Some((100, 0)));
    assert!(
        events(&t)
            .iter()
            .any(|e| e.contains("failed checks threshold reached 2 (step policy failing: timeout)"))
    );
}

#[test]
fn a_suspended_canary_changes_nothing() {
    let mut spec = seed_spec();
    spec.suspend = true;
    let t = tick(
        &id(),
        &spec,
        &progressing_at(20, "r2"),
        &observed("r3"),
        &mut Script::default(),
    );
    assert!(t.actions.iter().all(|a| matches!(a, Action::Event { .. })));
    assert_eq!(t.state, progressing_at(20, "r2"));
}

#[test]
fn a_missing_target_changes_nothing() {
    let mut obs = observed("r1");
    obs.target = None;
    let t = tick(
        &id(),
        &seed_spec(),
        &State::default(),
        &obs,
        &mut Script::default(),
    );
    assert!(t.actions.iter().all(|a| matches!(
        a,
        Action::Event {
            kind: EventKind::Warning,
            ..
        }
    )));
    assert_eq!(t.state, State::default());
}

#[test]
fn skip_analysis_promotes_a_new_revision_straight_away() {
    let mut spec = seed_spec();
    spec.skip_analysis = true;
    let t = tick(
        &id(),
        &spec,
        &initialized("r1"),
        &observed("r2"),
        &mut Script::default(),
    );
    let t = tick(&id(), &spec, &t.state, &observed("r2"), &mut Script::default());
    assert_eq!(t.state.phase, Some(Phase::Succeeded));
    assert!(has(&t, &Action::PromotePrimary));
    assert_eq!(
        (route(&t), t.state.last_promoted.as_deref()),
        (Some((100, 0)), Some("r2"))
    );
}

#[test]
fn the_weight_in_the_virtual_service_is_the_source_of_truth() {
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(40);
    let t = tick(
        &id(),
        &seed_spec(),
        &progressing_at(20, "r2"),
        &obs,
        &mut Script::default(),
    );
    assert_eq!(t.state.canary_weight, 60);
}

#[test]
fn ab_testing_sends_matched_requests_to_the_canary_then_promotes_after_its_iterations() {
    let spec = spec(serde_json::json!({
        "interval": "10s", "threshold": 2, "iterations": 2,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}]
    }));
    assert!(spec.has_match);
    let mut judge = Iterations(2);
    let t = tick(
        &id(),
        &spec,
        &progressing_at(0, "r2"),
        &observed("r2"),
        &mut judge,
    );
    assert_eq!((route(&t), t.state.iterations), (Some((0, 100)), 1));
    let t = tick(&id(), &spec, &t.state, &observed("r2"), &mut judge);
    assert_eq!((route(&t), t.state.iterations), (Some((0, 100)), 2));
    let t = tick(&id(), &spec, &t.state, &observed("r2"), &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Promoting));
    assert!(has(&t, &Action::PromotePrimary));
}

#[test]
fn a_rollback_webhook_that_answers_yes_aborts_the_rollout() {
    let mut judge = Script {
        hooks: vec![(WebhookType::Rollback, hook("abort", true, 200))],
        ..Script::default()
    };
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(40);
    let state = State {
        phase: Some(Phase::Progressing),
        canary_weight: 40,
        last_applied: Some("r2".into()),
        last_promoted: Some("r1".into()),
        ..Default::default()
    };
    let t = tick(&id(), &seed_spec(), &state, &obs, &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Failed));
    assert_eq!(route(&t), Some((100, 0)));
    assert!(events(&t).contains(&"Rolling back podinfo.test manual webhook invoked"));
    assert!(judge.asked_hooks.contains(&WebhookType::PostRollout));
}

#[test]
fn a_rollback_webhook_that_answers_no_changes_nothing() {
    let mut judge = Script {
        hooks: vec![(WebhookType::Rollback, hook("abort", false, 403))],
        ..Script::default()
    };
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(20);
    let state = State {
        phase: Some(Phase::Progressing),
        canary_weight: 20,
        last_applied: Some("r2".into()),
        last_promoted: Some("r1".into()),
        ..Default::default()
    };
    let t = tick(&id(), &seed_spec(), &state, &obs, &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Progressing));
    assert_eq!(route(&t), Some((60, 40)));
}

#[test]
fn a_failing_pre_rollout_hook_is_a_failed_check_and_moves_no_traffic() {
    let mut judge = Script {
        hooks: vec![(WebhookType::PreRollout, hook("smoke", false, 500))],
        ..Script::default()
    };
    let state = State {
        phase: Some(Phase::Progressing),
        last_applied: Some("r2".into()),
        last_promoted: Some("r1".into()),
        ..Default::default()
    };
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(0);
    let t = tick(&id(), &seed_spec(), &state, &obs, &mut judge);
    assert_eq!(t.state.failed_checks, 1);
    assert_eq!(t.state.canary_weight, 0);
    assert_eq!(route(&t), Some((100, 0)));
    assert!(
        events(&t)
            .iter()
            .any(|e| e.starts_with("Halt podinfo.test advancement pre-rollout check smoke failed")),
        "{:?}",
        events(&t)
    );
}

#[test]
fn post_rollout_hooks_run_after_promotion_and_their_failure_is_only_reported() {
    let mut judge = Script {
        hooks: vec![(WebhookType::PostRollout, hook("notify", false, 204))],
        ..Script::default()
    };
    let state = State {
        phase: Some(Phase::Finalising),
        last_applied: Some("r2".into()),
        last_promoted: Some("r1".into()),
        ..Default::default()
    };
    let t = tick(&id(), &seed_spec(), &state, &observed("r2"), &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Succeeded));
    assert!(
        events(&t)
            .iter()
            .any(|e| e.starts_with("Post-rollout hook notify failed for podinfo.test: HTTP 204"))
    );
}

#[test]
fn mirroring_copies_traffic_to_the_canary_for_one_analysed_interval_before_the_first_step() {
    let spec = spec(serde_json::json!({
        "interval": "15s", "threshold": 2, "stepWeight": 20, "maxWeight": 60,
        "mirror": true, "mirrorWeight": 50
    }));
    assert_eq!(spec.mirror, Some(50));
    let mut judge = Script::default();
    let mut t = tick(&id(), &spec, &initialized("r1"), &observed("r2"), &mut judge);
    let mut seen = Vec::new();
    let mut notes = Vec::new();
    for _ in 0..10 {
        t = tick(&id(), &spec, &t.state.clone(), &after(&t, "r2"), &mut judge);
        seen.push(routed(&t).expect("every progressing tick routes"));
        notes.extend(events(&t).into_iter().map(str::to_owned));
        if t.state.phase == Some(Phase::Promoting) {
            break;
        }
    }
    assert_eq!(
        seen,
        [(0, Some(50)), (20, None), (40, None), (60, None), (60, None)]
    );
    assert_eq!(notes[1], "Start traffic mirroring podinfo.test");

    // The mirrored interval is analysed: a failure there counts and keeps the mirror, no step.
    let mut failing = Script {
        analyses: VecDeque::from([Ok(Verdict::Fail)]),
        ..Script::default()
    };
    let mut obs = observed("r2");
    (obs.routed_canary_weight, obs.routed_mirror) = (Some(0), true);
    let t = tick(&id(), &spec, &progressing_at(0, "r2"), &obs, &mut failing);
    assert_eq!((t.state.failed_checks, routed(&t)), (1, Some((0, Some(50)))));
}

#[test]
fn blue_green_with_mirroring_mirrors_every_iteration_and_promotion_drops_the_mirror() {
    let spec = spec(serde_json::json!({"interval": "10s", "threshold": 2, "iterations": 2, "mirror": true}));
    assert_eq!(spec.mirror, Some(100));
    let mut judge = Iterations(2);
    let t = tick(
        &id(),
        &spec,
        &progressing_at(0, "r2"),
        &observed("r2"),
        &mut judge,
    );
    assert_eq!((routed(&t), t.state.iterations), (Some((0, Some(100))), 1));
    assert!(events(&t).contains(&"Start traffic mirroring podinfo.test"));
    let t = tick(&id(), &spec, &t.state.clone(), &after(&t, "r2"), &mut judge);
    assert_eq!((routed(&t), t.state.iterations), (Some((0, Some(100))), 2));
    assert!(!events(&t).contains(&"Start traffic mirroring podinfo.test"));
    // Flagger's switch: the mirror stops and every user goes to the new version before the primary changes.
    let t = tick(&id(), &spec, &t.state.clone(), &after(&t, "r2"), &mut judge);
    assert_eq!(routed(&t), Some((100, None)));
    assert!(events(&t).contains(&"Stop traffic mirroring and route all traffic to canary podinfo.test"));
    let t = tick(&id(), &spec, &t.state.clone(), &after(&t, "r2"), &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Promoting));
    let t = tick(&id(), &spec, &t.state.clone(), &after(&t, "r2"), &mut judge);
    assert_eq!(
        routed(&t),
        Some((0, None)),
        "promotion routes back without the mirror"
    );
}

#[test]
fn blue_green_routes_every_user_to_the_canary_before_the_primary_is_updated_and_back_once_it_is() {
    let spec = spec(serde_json::json!({"interval": "10s", "threshold": 2, "iterations": 2}));
    let mut judge = Iterations(2);
    let mut t = tick(
        &id(),
        &spec,
        &progressing_at(0, "r2"),
        &observed("r2"),
        &mut judge,
    );
    for _ in 0..2 {
        assert_eq!(
            routed(&t).map(|(canary, _)| canary).unwrap_or(0),
            0,
            "iterations keep users on the primary"
        );
        t = tick(&id(), &spec, &t.state.clone(), &after(&t, "r2"), &mut judge);
    }
    assert_eq!((routed(&t), t.state.canary_weight), (Some((100, None)), 100));
    assert!(events(&t).contains(&"Routing all traffic to canary podinfo.test"));
    assert!(
        !has(&t, &Action::PromotePrimary),
        "the primary is updated only once users left it"
    );
    let t = tick(&id(), &spec, &t.state.clone(), &after(&t, "r2"), &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Promoting));
    assert!(has(&t, &Action::PromotePrimary));
    assert_eq!(
        routed(&t),
        Some((100, None)),
        "still on the canary while the primary rolls"
    );
    let t = tick(&id(), &spec, &t.state.clone(), &after(&t, "r2"), &mut judge);
    assert_eq!(
        (routed(&t), t.state.phase),
        (Some((0, None)), Some(Phase::Finalising))
    );
}

/// A judge that must not be asked anything: the policy behind it cannot judge.
struct Unreachable;
impl Stateless for Unreachable {
    fn step(&mut self, _: &Rollout) -> Result<StepDecision, PolicyError> {
        panic!("step asked while the policy is not ready")
    }
    fn gate(&mut self, _: &Rollout, _: GateKind) -> Result<GateDecision, PolicyError> {
        panic!("gate asked while the policy is not ready")
    }
    fn analyse(&mut self, _: &Rollout) -> Result<(Verdict, String), PolicyError> {
        panic!("analysis asked while the policy is not ready")
    }
    fn hooks(&mut self, _: &Rollout, _: WebhookType) -> Vec<WebhookOutcome> {
        Vec::new()
    }
}

fn blocked(rev: &str, weight: u32, for_secs: u64) -> Observed {
    Observed {
        routed_canary_weight: Some(weight),
        policy_blocked: Some(PolicyBlocked {
            why: "Policy/errors: DigestMismatch".into(),
            for_secs,
        }),
        ..observed(rev)
    }
}

#[test]
fn a_policy_that_is_not_ready_holds_the_rollout_at_its_weight_without_asking_it() {
    let state = progressing_at(40, "r2");
    let t = tick(
        &id(),
        &seed_spec(),
        &state,
        &blocked("r2", 40, 30),
        &mut Unreachable,
    );
    assert_eq!(t.state, state);
    assert_eq!(route(&t), Some((60, 40)));
    assert!(!t.actions.iter().any(|a| matches!(a, Action::ScaleTarget { .. })));
    assert!(
        events(&t)
            .iter()
            .any(|e| e.contains("policy not ready: Policy/errors")),
        "{t:?}"
    );
    assert_eq!(t.requeue, Some(seed_spec().interval));
}

#[test]
fn a_policy_not_ready_past_the_progress_deadline_rolls_the_rollout_back() {
    let spec = seed_spec();
    let past = spec.progress_deadline.as_secs() + 1;
    let t = tick(
        &id(),
        &spec,
        &progressing_at(40, "r2"),
        &blocked("r2", 40, past),
        &mut Unreachable,
    );
    assert_eq!(t.state.phase, Some(Phase::Failed));
    assert_eq!(route(&t), Some((100, 0)));
    assert!(has(&t, &Action::ScaleTarget { replicas: 0 }));
    assert!(
        events(&t)
            .iter()
            .any(|e| e.starts_with("Rolling back") && e.contains("policy not ready"))
    );
}

#[test]
fn a_new_revision_does_not_start_while_its_policy_is_not_ready() {
    let state = initialized("r1");
    let t = tick(
        &id(),
        &seed_spec(),
        &state,
        &blocked("r2", 0, 5),
        &mut Unreachable,
    );
    assert_eq!(t.state, state);
    assert_eq!(route(&t), Some((100, 0)));
    assert!(!t.actions.iter().any(|a| matches!(a, Action::ScaleTarget { .. })));
    assert!(events(&t).iter().any(|e| e.contains("policy not ready")));
}

#[test]
fn initialising_needs_no_policy() {
    let t = tick(
        &id(),
        &seed_spec(),
        &State::default(),
        &blocked("r1", 0, 5),
        &mut Unreachable,
    );
    assert_eq!(t.state.phase, Some(Phase::Initialized));
}

fn target_gone(for_secs: u64) -> Observed {
    Observed {
        target: None,
        routed_canary_weight: Some(40),
        target_missing_secs: for_secs,
        ..observed("r2")
    }
}

#[test]
fn a_target_deleted_mid_rollout_sends_every_request_to_the_primary_at_once() {
    let t = tick(
        &id(),
        &seed_spec(),
        &progressing_at(40, "r2"),
        &target_gone(3),
        &mut Unreachable,
    );
    assert_eq!(route(&t), Some((100, 0)));
    assert_eq!(t.state.canary_weight, 0);
    assert_eq!(t.state.phase, Some(Phase::Progressing));
    assert!(!t.actions.iter().any(|a| matches!(a, Action::ScaleTarget { .. })));
}

#[test]
fn a_target_gone_past_the_progress_deadline_fails_the_rollout() {
    let spec = seed_spec();
    let past = spec.progress_deadline.as_secs() + 1;
    let t = tick(
        &id(),
        &spec,
        &progressing_at(40, "r2"),
        &target_gone(past),
        &mut Unreachable,
    );
    assert_eq!(t.state.phase, Some(Phase::Failed));
    assert_eq!(route(&t), Some((100, 0)));
    assert!(
        events(&t)
            .iter()
            .any(|e| e.starts_with("Rolling back") && e.contains("not found"))
    );
}

#[test]
fn a_target_gone_while_promoting_finishes_once_the_primary_serves() {
    let state = State {
        phase: Some(Phase::Promoting),
        ..progressing_at(40, "r2")
    };
    let t = tick(&id(), &seed_spec(), &state, &target_gone(1), &mut Unreachable);
    assert_eq!(t.state.phase, Some(Phase::Succeeded));
    assert_eq!(route(&t), Some((100, 0)));
    let mut not_ready = target_gone(1);
    not_ready.primary = Some(Workload {
        ready: false,
        ..ready(2).expect("workload")
    });
    let t = tick(&id(), &seed_spec(), &state, &not_ready, &mut Unreachable);
    assert_eq!(
        t.state.phase,
        Some(Phase::Promoting),
        "no Succeeded while the primary does not serve"
    );
    assert_eq!(route(&t), Some((100, 0)));
}

#[test]
fn a_primary_scaled_to_zero_mid_rollout_is_scaled_back_and_nothing_advances() {
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(40);
    obs.primary = Some(Workload {
        replicas: 0,
        ..ready(0).expect("workload")
    });
    let state = progressing_at(40, "r2");
    let t = tick(&id(), &seed_spec(), &state, &obs, &mut Unreachable);
    assert!(has(&t, &Action::ScalePrimary { replicas: 2 }), "{:?}", t.actions);
    assert_eq!(t.state, state, "no analysis, no step");
    let promoting = State {
        phase: Some(Phase::Promoting),
        ..state
    };
    let t = tick(&id(), &seed_spec(), &promoting, &obs, &mut Unreachable);
    assert_eq!(
        t.state.phase,
        Some(Phase::Promoting),
        "never Succeeded on a primary with no pods"
    );
    assert!(has(&t, &Action::ScalePrimary { replicas: 2 }));
}

#[test]
fn a_hand_edited_route_is_put_back_to_fledges_weight_with_a_warning() {
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(20);
    obs.drifted_canary_weight = Some(100);
    let state = progressing_at(20, "r2");
    let t = tick(&id(), &seed_spec(), &state, &obs, &mut Script::default());
    // The analysis at 20 runs and steps to 40: the edit to 100 skipped nothing.
    assert_eq!(route(&t), Some((60, 40)));
    assert_eq!(t.state.phase, Some(Phase::Progressing));
    assert!(t.actions.iter().any(|a| matches!(
        a,
        Action::Event { kind: EventKind::Warning, reason: "RouteDrift", message } if message.contains("100%")
    )));
}

/// Keeps a call log in `state` and records what each call was shown.
#[derive(Default)]
struct Remembering {
    seen: Vec<Rollout>,
}

impl Remembering {
    fn append(r: &Rollout, call: &str) -> Option<String> {
        let mut calls: Vec<String> = r
            .state
            .as_deref()
            .map(|s| serde_json::from_str(s).expect("state is JSON"))
            .unwrap_or_default();
        calls.push(call.to_owned());
        Some(serde_json::to_string(&calls).expect("json"))
    }
}

impl Judge for Remembering {
    fn step(&mut self, r: &Rollout) -> Result<Answer<StepDecision>, PolicyError> {
        self.seen.push(r.clone());
        let decision = Stateless::step(&mut Script::default(), r)?;
        Ok(Answer {
            decision,
            state: Self::append(r, "step"),
        })
    }
    fn gate(&mut self, r: &Rollout, _: GateKind) -> Result<Answer<GateDecision>, PolicyError> {
        self.seen.push(r.clone());
        Ok(Answer {
            decision: GateDecision::Open,
            state: Self::append(r, "gate"),
        })
    }
    fn analyse(&mut self, r: &Rollout) -> Result<Answer<Judged>, PolicyError> {
        self.seen.push(r.clone());
        Ok(Answer {
            decision: Judged {
                verdict: Verdict::Pass,
                why: String::new(),
                checks: vec![crate::policy::types::CheckValue {
                    name: "request-success-rate".into(),
                    value: Some(99.5),
                    verdict: Verdict::Pass,
                }],
            },
            state: Self::append(r, "analysis"),
        })
    }
    fn hooks(&mut self, _: &Rollout, _: WebhookType) -> Vec<WebhookOutcome> {
        Vec::new()
    }
}

fn calls(state: &State) -> Vec<String> {
    serde_json::from_str(state.policy_state.as_deref().unwrap_or("[]")).expect("json")
}

#[test]
fn within_a_tick_the_step_sees_the_state_and_history_the_analysis_just_left() {
    let mut judge = Remembering::default();
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(20);
    obs.now = 1_000.0;
    let t = tick(&id(), &seed_spec(), &progressing_at(20, "r2"), &obs, &mut judge);
    assert_eq!(calls(&t.state), ["analysis", "step", "gate"]);
    let step = &judge.seen[1];
    assert_eq!(step.state.as_deref(), Some(r#"["analysis"]"#));
    assert_eq!(
        step.history.len(),
        1,
        "this interval's analysis is in the history"
    );
    assert_eq!(
        (
            step.history[0].time,
            step.history[0].weight,
            step.history[0].checks[0].value
        ),
        (1_000.0, 20, Some(99.5))
    );
    assert_eq!(step.intervals_at_weight, 1);
    assert_eq!(step.revision, "r2");
    // The weight moved: the count starts again for 40.
    assert_eq!(t.state.canary_weight, 40);
    assert_eq!(t.state.intervals_at_weight, 0);
}

#[test]
fn the_policy_state_is_kept_across_ticks_and_forgotten_when_a_new_revision_starts() {
    let mut judge = Remembering::default();
    let spec = seed_spec();
    let mut state = progressing_at(20, "r2");
    for _ in 0..2 {
        let mut obs = observed("r2");
        obs.routed_canary_weight = Some(state.canary_weight);
        state = tick(&id(), &spec, &state, &obs, &mut judge).state;
    }
    assert_eq!(calls(&state).len(), 6);
    assert_eq!(state.history.len(), 2);
    // r3 arrives mid-rollout: the analysis restarts with a policy that remembers nothing.
    let restarted = tick(&id(), &spec, &state, &observed("r3"), &mut judge).state;
    assert_eq!(restarted.policy_state, None);
    assert!(restarted.history.is_empty());
    // The same for a new revision after a finished rollout.
    let mut done = initialized("r1");
    done.policy_state = Some(r#"["old"]"#.into());
    done.history = state.history.clone();
    let t = tick(&id(), &spec, &done, &observed("r2"), &mut judge);
    assert_eq!(
        calls(&t.state),
        ["gate"],
        "the confirm-rollout gate starts the new memory"
    );
    assert!(t.state.history.is_empty());
}

#[test]
fn the_history_keeps_the_last_ten_analyses() {
    let mut judge = Iterations(30);
    let spec = spec(serde_json::json!({"interval": "1m", "threshold": 2, "iterations": 30}));
    let mut state = progressing_at(0, "r2");
    state.iterations = 1;
    for i in 0..12 {
        let mut obs = observed("r2");
        obs.now = f64::from(i) * 60.0;
        state = tick(&id(), &spec, &state, &obs, &mut judge).state;
    }
    assert_eq!(state.history.len(), 10);
    assert_eq!(state.history[0].time, 120.0, "the oldest two were dropped");
    assert_eq!(state.intervals_at_weight, 12, "iterations do not move the weight");
}

#[test]
fn seconds_in_phase_count_from_the_last_phase_change() {
    let mut judge = Remembering::default();
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(20);
    obs.now = 500.0;
    let mut state = progressing_at(20, "r2");
    state.phase_since = Some(200.0);
    let t = tick(&id(), &seed_spec(), &state, &obs, &mut judge);
    assert_eq!(judge.seen[0].seconds_in_phase, 300);
    assert_eq!(t.state.phase_since, Some(200.0), "still progressing");
    // Entering a new phase stamps the tick's clock.
    let mut promoting = initialized("r1");
    promoting.phase_since = Some(0.0);
    let t = tick(&id(), &seed_spec(), &promoting, &obs, &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Progressing));
    assert_eq!(t.state.phase_since, Some(500.0));
}

fn asked(action: crate::api::ManualAction, by: &str) -> Observed {
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(40);
    obs.manual = Some(Manual {
        action,
        by: by.into(),
        reason: Some("on call".into()),
    });
    obs
}

#[test]
fn a_paused_rollout_holds_its_weight_and_counts_no_analysis_until_resumed() {
    use crate::api::ManualAction::{Pause, Resume};
    let spec = seed_spec();
    let mut judge = Script::default();
    let t = tick(
        &id(),
        &spec,
        &progressing_at(40, "r2"),
        &asked(Pause, "alice"),
        &mut judge,
    );
    assert_eq!(t.state.paused_by.as_deref(), Some("alice"));
    assert!(
        events(&t).contains(&"Paused podinfo.test by alice: on call"),
        "{:?}",
        events(&t)
    );
    let mut state = t.state;
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(40);
    for _ in 0..3 {
        let t = tick(&id(), &spec, &state, &obs, &mut judge);
        assert_eq!(route(&t), Some((60, 40)), "the weight is held");
        assert!(events(&t).contains(&"Halt advancement podinfo.test paused by alice"));
        assert_eq!(
            (t.state.intervals_at_weight, t.state.canary_weight),
            (0, 40),
            "no analysis counted"
        );
        state = t.state;
    }
    let t = tick(&id(), &spec, &state, &asked(Resume, "bob"), &mut judge);
    assert_eq!(t.state.paused_by, None);
    assert_eq!(t.state.canary_weight, 60, "resumed, the rollout steps on");
}

#[test]
fn a_paused_rollout_shows_the_weight_its_route_holds_when_the_last_steps_status_was_lost() {
    use crate::api::ManualAction::Pause;
    // The step to 20 % wrote its route, then its status write was refused (the pause request had just
    // changed the Canary): the status still says 10 %.
    let mut obs = asked(Pause, "alice");
    obs.routed_canary_weight = Some(20);
    let t = tick(
        &id(),
        &seed_spec(),
        &progressing_at(10, "r2"),
        &obs,
        &mut Script::default(),
    );
    assert_eq!(t.state.paused_by.as_deref(), Some("alice"));
    assert_eq!(route(&t), Some((80, 20)), "the route is held where it is");
    assert_eq!(t.state.canary_weight, 20, "and the status says so");
}

#[test]
fn an_abort_rolls_back_at_once_naming_the_operator() {
    let t = tick(
        &id(),
        &seed_spec(),
        &progressing_at(40, "r2"),
        &asked(crate::api::ManualAction::Abort, "alice"),
        &mut Script::default(),
    );
    assert_eq!((t.state.phase, route(&t)), (Some(Phase::Failed), Some((100, 0))));
    assert!(
        events(&t).iter().any(|e| e.contains("aborted by alice: on call")),
        "{:?}",
        events(&t)
    );
}

#[test]
fn a_retry_rolls_the_failed_revision_out_again() {
    let failed = State {
        phase: Some(Phase::Failed),
        last_applied: Some("r2".into()),
        last_promoted: Some("r1".into()),
        ..Default::default()
    };
    let quiet = tick(
        &id(),
        &seed_spec(),
        &failed,
        &observed("r2"),
        &mut Script::default(),
    );
    assert_eq!(quiet.state.phase, Some(Phase::Failed), "not retried by itself");
    let t = tick(
        &id(),
        &seed_spec(),
        &failed,
        &asked(crate::api::ManualAction::Retry, "alice"),
        &mut Script::default(),
    );
    assert_eq!(t.state.phase, Some(Phase::Progressing));
    assert_eq!(t.state.last_applied.as_deref(), Some("r2"));
}

#[test]
fn promote_opens_a_closed_promotion_gate_once_and_promote_full_skips_the_analysis() {
    use crate::api::ManualAction::{Promote, PromoteFull};
    let spec = seed_spec();
    let closed = || Script {
        gates: VecDeque::from([GateDecision::Closed {
            reason: "closed".into(),
        }]),
        ..Script::default()
    };
    let mut waiting = progressing_at(60, "r2");
    waiting.phase = Some(Phase::WaitingPromotion);
    let mut obs = observed("r2");
    obs.routed_canary_weight = Some(60);
    let held = tick(&id(), &spec, &waiting, &obs, &mut closed());
    assert_eq!(held.state.phase, Some(Phase::WaitingPromotion));
    let mut judge = closed();
    let mut asked_promote = asked(Promote, "alice");
    asked_promote.routed_canary_weight = Some(60);
    let t = tick(&id(), &spec, &waiting, &asked_promote, &mut judge);
    assert_eq!(t.state.phase, Some(Phase::Promoting), "{:?}", events(&t));
    assert!(
        judge.asked_gates.is_empty(),
        "the operator opened it, its webhook is not asked"
    );
    assert_eq!(t.state.gate_opened_by, None, "used once");

    let t = tick(
        &id(),
        &spec,
        &progressing_at(20, "r2"),
        &asked(PromoteFull, "bob"),
        &mut closed(),
    );
    assert_eq!(t.state.phase, Some(Phase::Promoting));
    assert!(has(&t, &Action::PromotePrimary));
}

#[test]
fn a_request_that_fits_no_rollout_is_said_to_be_ignored() {
    let t = tick(
        &id(),
        &seed_spec(),
        &initialized("r2"),
        &asked(crate::api::ManualAction::Abort, "alice"),
        &mut Script::default(),
    );
    assert_eq!(t.state.phase, Some(Phase::Initialized));
    assert!(
        events(&t).contains(&"abort of podinfo.test by alice ignored: nothing to abort while Initialized"),
        "{:?}",
        events(&t)
    );
}
