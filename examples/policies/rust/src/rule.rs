//! The rule: at each weight, count the analyses that passed in a row (in `state`); step up after `passes`
//! of them (config `{"passes": 2}`), promote once at `maxWeight`, roll back at the failed-check threshold.

use serde::{Deserialize, Serialize};

use crate::fledge::policy::types::{Phase, PolicyError, Rollout, StepAnswer, StepDecision, Verdict};

/// What the policy remembers between intervals: the weight it counts at and the passes seen there.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub weight: u32,
    pub passes: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "two")]
    passes: u32,
}

fn two() -> u32 {
    2
}

pub fn next(rollout: &Rollout) -> Result<StepAnswer, PolicyError> {
    let config: Config = serde_json::from_str(&rollout.config)
        .map_err(|e| PolicyError::InvalidConfig(format!("config: {e}")))?;
    if !(1..=10).contains(&config.passes) {
        return Err(PolicyError::InvalidConfig("passes must be 1..=10".into()));
    }
    let a = &rollout.analysis;
    if a.iterations.is_some_and(|n| n > 0) {
        return Err(PolicyError::Unsupported(
            "blue/green and A/B (analysis.iterations) are not stepped by weight".into(),
        ));
    }
    let keep = |decision, memory: &Memory| StepAnswer {
        decision,
        state: serde_json::to_string(memory).ok(),
    };
    match rollout.phase {
        // Promoting: fledge moves all traffic back to the primary.
        Phase::Promoting => {
            return Ok(StepAnswer {
                decision: StepDecision::Promote,
                state: None,
            });
        }
        Phase::Progressing | Phase::WaitingPromotion => {}
        other => {
            return Ok(StepAnswer {
                decision: StepDecision::Hold(format!("nothing to do in phase {other:?}")),
                state: None,
            });
        }
    }
    if rollout.failed_checks >= a.threshold.max(1) {
        return Ok(StepAnswer {
            decision: StepDecision::Rollback(format!(
                "failed checks threshold reached {}",
                rollout.failed_checks
            )),
            state: None,
        });
    }
    let weight = rollout.canary_weight;
    let max = a.max_weight.unwrap_or(100).min(100);
    let step = a.step_weight.unwrap_or(20).max(1);
    if weight == 0 {
        let first = step.min(max);
        return Ok(keep(
            StepDecision::SetWeight(first),
            &Memory {
                weight: first,
                passes: 0,
            },
        ));
    }
    // The analysis of this interval is the last entry of the history (fledge judges before it steps).
    let passed = rollout
        .history
        .last()
        .is_some_and(|h| h.weight == weight && h.verdict == Verdict::Pass);
    let before: Memory = rollout
        .state
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let passes = match (passed, before.weight == weight) {
        (true, true) => before.passes + 1,
        (true, false) => 1,
        (false, _) => 0,
    };
    let here = Memory { weight, passes };
    if passes < config.passes {
        let why = format!("{passes}/{} passing analyses at {weight}%", config.passes);
        return Ok(keep(StepDecision::Hold(why), &here));
    }
    if weight >= max {
        return Ok(keep(StepDecision::Promote, &here));
    }
    let next = (weight + step).min(max);
    Ok(keep(
        StepDecision::SetWeight(next),
        &Memory {
            weight: next,
            passes: 0,
        },
    ))
}
