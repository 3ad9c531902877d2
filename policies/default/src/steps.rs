//! Flagger's traffic stepping: stepWeight / stepWeights / maxWeight / stepWeightPromotion, iterations for
//! blue/green and A/B, and rollback once failed checks reach the threshold.

use crate::config::{Config, DEFAULT_STEP_WEIGHT};
use crate::fledge::policy::types::{Phase, Rollout, StepDecision};

/// The next move for `rollout` this tick.
pub fn next(rollout: &Rollout, config: &Config) -> StepDecision {
    let plan = Plan::new(rollout, config);
    match rollout.phase {
        Phase::Promoting => StepDecision::SetWeight(plan.promotion_weight(rollout.canary_weight)),
        Phase::Progressing | Phase::WaitingPromotion => progress(rollout, &plan),
        other => StepDecision::Hold(format!("no traffic step in phase {other:?}")),
    }
}

fn progress(rollout: &Rollout, plan: &Plan) -> StepDecision {
    // Flagger treats a threshold of 0 as 1.
    let threshold = rollout.analysis.threshold.max(1);
    if rollout.failed_checks >= threshold {
        return StepDecision::Rollback(format!(
            "failed checks threshold reached {}",
            rollout.failed_checks
        ));
    }
    if let Some(iterations) = rollout.analysis.iterations.filter(|n| *n > 0) {
        // Blue/green and A/B testing: no shifting, a fixed number of passing analyses.
        return if rollout.iterations < iterations {
            StepDecision::Iterate
        } else {
            StepDecision::Promote
        };
    }
    if rollout.canary_weight >= plan.max_weight {
        return StepDecision::Promote;
    }
    match plan.next_weight(rollout.canary_weight) {
        Some(weight) => StepDecision::SetWeight(weight),
        None => StepDecision::Promote,
    }
}

/// The weights of one Canary, with the Canary's settings taking precedence over the policy config.
#[derive(Debug)]
struct Plan {
    step_weight: u32,
    step_weights: Vec<u32>,
    max_weight: u32,
    promotion_step: u32,
}

impl Plan {
    fn new(rollout: &Rollout, config: &Config) -> Self {
        let a = &rollout.analysis;
        let positive = |w: &u32| *w > 0;
        // Precedence: the Canary's stepWeight, its stepWeights, then the config's, then 20 % steps.
        let (step_weight, step_weights) = if let Some(w) = a.step_weight.filter(positive) {
            (w, Vec::new())
        } else if !a.step_weights.is_empty() {
            (0, a.step_weights.clone())
        } else if let Some(w) = config.step_weight.filter(positive) {
            (w, Vec::new())
        } else if !config.step_weights.is_empty() {
            (0, config.step_weights.clone())
        } else {
            (DEFAULT_STEP_WEIGHT, Vec::new())
        };
        // A walk ends at its last weight; otherwise maxWeight, else 100.
        let max_weight = match step_weights.last() {
            Some(last) => *last,
            None => a
                .max_weight
                .filter(positive)
                .or(config.max_weight.filter(positive))
                .unwrap_or(100),
        }
        .min(100);
        Self {
            step_weight,
            step_weights,
            max_weight,
            promotion_step: a
                .step_weight_promotion
                .or(config.step_weight_promotion)
                .unwrap_or(0),
        }
    }

    /// The weight after one step up from `current`, capped at 100; `None` when the walk has no step left.
    fn next_weight(&self, current: u32) -> Option<u32> {
        if self.step_weights.is_empty() {
            return Some(current.saturating_add(self.step_weight).min(100));
        }
        self.step_weights
            .iter()
            .copied()
            .find(|w| *w > current)
            .map(|w| w.min(100))
    }

    /// During promotion: all traffic back to the primary at once, or `stepWeightPromotion` at a time.
    fn promotion_weight(&self, current: u32) -> u32 {
        match self.promotion_step {
            0 => 0,
            step => current.saturating_sub(step),
        }
    }
}
