//! A fledge step policy (world `fledge:policy/step-policy`, contract 0.2): traffic moves to the next weight
//! only after two analyses in a row passed at the current one. The count lives in the policy's own `state`,
//! which fledge keeps in the Canary's status between analysis intervals (and across controller restarts).
//! Analysis and gates are fledge's built-in default's, so the Canary's metrics judge each interval.
//!
//! The decision is plain Rust in `rule.rs` (tested natively with `cargo test`); this file only binds it to
//! the WIT export. Edit `rule.rs`.

wit_bindgen::generate!({
    world: "step-policy",
    path: "wit",
    generate_all,
});

pub mod rule;

use exports::fledge::policy::step;
use fledge::policy::log::{Level, log};
use fledge::policy::types::{PolicyError, Rollout, StepAnswer, StepDecision};

struct TwoPasses;

impl step::Guest for TwoPasses {
    fn next(rollout: Rollout) -> Result<StepAnswer, PolicyError> {
        let answer = rule::next(&rollout)?;
        if let StepDecision::SetWeight(next) = answer.decision {
            log(Level::Info, &format!("{} -> {next}%", rollout.canary_weight));
        }
        Ok(answer)
    }
}

export!(TwoPasses);
