//! The controller's [`Judge`]: the canary's policy component. Metric checks and webhooks join here when
//! the Prometheus and webhook work lands; until then analysis sees no checks (Flagger: no metrics = pass).

use std::sync::Arc;

use crate::lifecycle::Judge;
use crate::policy::types::{GateDecision, GateKind, Rollout, StepDecision, Verdict};
use crate::policy::{Policy, PolicyComponent, PolicyError};

/// Asks one policy component.
#[derive(Debug)]
pub struct PolicyJudge {
    pub policy: Arc<PolicyComponent>,
}

impl Judge for PolicyJudge {
    fn step(&mut self, rollout: &Rollout) -> Result<StepDecision, PolicyError> {
        self.policy.step(rollout)
    }

    fn gate(&mut self, rollout: &Rollout, kind: GateKind) -> Result<GateDecision, PolicyError> {
        self.policy.gate(rollout, kind, &[])
    }

    fn analyse(&mut self, rollout: &Rollout) -> Result<(Verdict, String), PolicyError> {
        let result = self.policy.analyse(rollout, &[], &[], None)?;
        let failed: Vec<String> = result
            .metrics
            .iter()
            .filter(|m| m.verdict != Verdict::Pass)
            .map(|m| m.message.clone())
            .collect();
        Ok((result.verdict, failed.join("; ")))
    }
}
