//! A step-only policy that misbehaves as its config says: `loop`, `bomb`, `trap`, `weight150`; anything
//! else answers a well-formed `set-weight(10)`. Exports only `step`, so asking it for a gate is a missing
//! export.

wit_bindgen::generate!({
    world: "step-policy",
    path: "../../../wit/v0.1.0",
    generate_all,
});

use exports::fledge::policy::step::Guest;
use fledge::policy::types::{PolicyError, Rollout, StepDecision};

struct Hostile;

impl Guest for Hostile {
    fn next(rollout: Rollout) -> Result<StepDecision, PolicyError> {
        match rollout.config.trim_matches('"') {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("hostile policy traps on purpose"),
            "weight150" => Ok(StepDecision::SetWeight(150)),
            _ => Ok(StepDecision::SetWeight(10)),
        }
    }
}

export!(Hostile);
