//! PURE: decides a canary's next status and the cluster actions that get it there, from the validated
//! spec, the current status, what was observed in the cluster and the policy's judgements. No kube, no IO,
//! no clock: the controller passes `now` and a [`Judge`] that answers step, gate and analysis questions.
//! Tick order and phases follow Flagger (`flagger-behaviour.md` §2).

mod facts;
mod tick;

pub use facts::{Manual, Observed, PolicyBlocked, Workload};
pub use tick::{Action, CanaryId, EventKind, Judge, Judged, Split, State, Tick, rollout_of, tick};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
