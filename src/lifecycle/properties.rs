//! Property tests of the lifecycle: for random sequences of what a controller may observe (workloads ready or
//! not, scaled to zero, deleted; weights drifted by hand; policies answering anything, failing or not ready),
//! the tick keeps the promises fledge makes about traffic and success.

use proptest::prelude::*;

use super::tests::Stateless;
use super::*;
use crate::api::{CanarySpec, Phase, ValidSpec, WebhookType, validate};
use crate::policy::PolicyError;
use crate::policy::types::{GateDecision, GateKind, Rollout, StepDecision, Verdict, WebhookOutcome};

/// What the policy answers in one tick.
#[derive(Debug, Clone)]
struct Answers {
    step: Result<StepDecision, ()>,
    gate: Result<bool, ()>,
    analysis: Result<Verdict, ()>,
}

impl Stateless for Answers {
    fn step(&mut self, _: &Rollout) -> Result<StepDecision, PolicyError> {
        self.step.clone().map_err(|()| refused())
    }
    fn gate(&mut self, _: &Rollout, _: GateKind) -> Result<GateDecision, PolicyError> {
        match self.gate {
            Ok(true) => Ok(GateDecision::Open),
            Ok(false) => Ok(GateDecision::Closed {
                reason: "closed".into(),
            }),
            Err(()) => Err(refused()),
        }
    }
    fn analyse(&mut self, _: &Rollout) -> Result<(Verdict, String), PolicyError> {
        self.analysis.map(|v| (v, String::new())).map_err(|()| refused())
    }
    fn hooks(&mut self, _: &Rollout, _: WebhookType) -> Vec<WebhookOutcome> {
        Vec::new()
    }
}

fn refused() -> PolicyError {
    PolicyError::Refused {
        kind: "invalid-config",
        message: "scripted failure".into(),
    }
}

/// One tick's world: what the cluster shows and what the policy says.
#[derive(Debug, Clone)]
struct World {
    target: Option<Workload>,
    primary: Option<Workload>,
    revision: &'static str,
    /// `Some`: someone edited the VirtualService's weights by hand to this.
    drift: Option<u32>,
    /// `Some`: fledge's record in the VirtualService is not what the status says (a crash between the two
    /// writes).
    record: Option<u32>,
    policy_blocked: Option<u64>,
    target_missing_secs: u64,
    answers: Answers,
}

fn workload() -> impl Strategy<Value = Workload> {
    (0..4i32, any::<bool>(), any::<bool>(), 0..1000u64).prop_map(
        |(replicas, ready, stalled, unavailable_secs)| Workload {
            replicas,
            ready,
            stalled,
            unavailable_secs,
        },
    )
}

fn step() -> impl Strategy<Value = Result<StepDecision, ()>> {
    prop_oneof![
        (0..=100u32).prop_map(|weight| Ok(StepDecision::SetWeight { weight })),
        Just(Ok(StepDecision::Iterate)),
        Just(Ok(StepDecision::Hold {
            reason: "hold".into()
        })),
        Just(Ok(StepDecision::Promote)),
        Just(Ok(StepDecision::Rollback { reason: "no".into() })),
        Just(Err(())),
    ]
}

fn verdict() -> impl Strategy<Value = Result<Verdict, ()>> {
    prop_oneof![
        Just(Ok(Verdict::Pass)),
        Just(Ok(Verdict::Fail)),
        Just(Ok(Verdict::Inconclusive)),
        Just(Err(())),
    ]
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::option::weighted(0.9, workload()),
        prop::option::weighted(0.9, workload()),
        prop_oneof![Just("r1"), Just("r2"), Just("r3")],
        (
            prop::option::weighted(0.1, 0..=100u32),
            prop::option::weighted(0.05, 0..=100u32),
        ),
        prop::option::weighted(0.1, 0..1000u64),
        0..1000u64,
        (
            step(),
            prop_oneof![Just(Ok(true)), Just(Ok(false)), Just(Err(()))],
            verdict(),
        ),
    )
        .prop_map(
            |(
                target,
                primary,
                revision,
                (drift, record),
                policy_blocked,
                target_missing_secs,
                (step, gate, analysis),
            )| World {
                target,
                primary,
                revision,
                drift,
                record,
                policy_blocked,
                target_missing_secs,
                answers: Answers { step, gate, analysis },
            },
        )
}

/// Canary releases, with and without analysis, blue/green iterations and mirroring.
fn spec() -> impl Strategy<Value = ValidSpec> {
    prop_oneof![
        Just(serde_json::json!({"interval": "15s", "threshold": 2, "stepWeight": 20, "maxWeight": 60})),
        Just(
            serde_json::json!({"interval": "15s", "threshold": 1, "stepWeights": [5, 50], "maxWeight": 100})
        ),
        Just(serde_json::json!({"interval": "15s", "threshold": 2, "iterations": 3})),
        Just(serde_json::json!({"interval": "15s", "threshold": 2, "stepWeight": 50, "mirror": true})),
    ]
    .prop_flat_map(|analysis| {
        (Just(analysis), any::<bool>()).prop_map(|(analysis, skip)| {
            let spec: CanarySpec = serde_json::from_value(serde_json::json!({
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "skipAnalysis": skip,
                "analysis": analysis,
            }))
            .expect("spec");
            validate(&spec).expect("valid")
        })
    })
}

fn serves(w: Option<Workload>) -> bool {
    w.is_some_and(|w| w.ready && w.replicas > 0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn traffic_and_success_keep_their_promises(spec in spec(), worlds in prop::collection::vec(world(), 1..16)) {
        let id = CanaryId { name: "podinfo".into(), namespace: "test".into() };
        let mut state = State::default();
        let mut routed: Option<u32> = None;
        for mut w in worlds {
            let obs = Observed {
                target: w.target,
                primary: w.primary,
                revision: w.revision.into(),
                routed_canary_weight: w.record.or(routed),
                drifted_canary_weight: w.drift.filter(|d| routed.is_some() && Some(*d) != w.record.or(routed)),
                policy_blocked: w.policy_blocked.map(|for_secs| PolicyBlocked { why: "not ready".into(), for_secs }),
                target_missing_secs: w.target_missing_secs,
                ..Observed::default()
            };
            let before = state.phase;
            let t = tick(&id, &spec, &state, &obs, &mut w.answers);
            for action in &t.actions {
                if let Action::Route(split) = action {
                    prop_assert_eq!(split.primary + split.canary, 100, "{:?}", split);
                    // Nothing is sent to a canary that is gone.
                    prop_assert!(obs.target.is_some() || split.canary == 0, "routed {:?} to a deleted target", split);
                    // Weight moves up only onto a canary that is rolled out.
                    let was = obs.routed_canary_weight.unwrap_or(state.canary_weight);
                    prop_assert!(
                        split.canary <= was || obs.target.is_some_and(|t| t.ready),
                        "weight {} → {} onto an unready canary {:?}; state {:?}; actions {:?}",
                        was, split.canary, obs.target, state, t.actions
                    );
                }
            }
            // A hand-edited route is put back from fledge's record, whatever the phase.
            let settled = !matches!(before, None | Some(Phase::Initializing));
            if obs.drifted_canary_weight.is_some() && obs.target.is_some() && settled {
                prop_assert!(
                    t.actions.iter().any(|a| matches!(a, Action::Route(_))),
                    "drift left in place: {:?}; state {:?}", t.actions, state
                );
            }
            if t.state.phase == Some(Phase::Succeeded) && before != Some(Phase::Succeeded) {
                prop_assert!(
                    serves(obs.primary),
                    "Succeeded while the primary does not serve: {:?}; state {:?}; actions {:?}",
                    obs.primary, state, t.actions
                );
            }
            if let Some(Action::Route(split)) = t.actions.iter().rev().find(|a| matches!(a, Action::Route(_))) {
                routed = Some(split.canary);
            }
            state = t.state;
        }
    }
}
