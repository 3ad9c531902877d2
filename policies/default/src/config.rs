//! The policy's own configuration (`analysis.policy.config`). Canary `analysis` fields win over it, so a
//! Flagger Canary behaves as in Flagger; the config fills what the Canary leaves unset.

use serde::Deserialize;

use crate::fledge::policy::types::PolicyError;

/// Used when neither the Canary nor the config sets a step.
pub const DEFAULT_STEP_WEIGHT: u32 = 20;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub step_weight: Option<u32>,
    pub max_weight: Option<u32>,
    #[serde(default)]
    pub step_weights: Vec<u32>,
    pub step_weight_promotion: Option<u32>,
}

impl Config {
    /// Parses the JSON text the host passes; empty text means defaults.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_json::from_str(text)
            .map_err(|e| PolicyError::InvalidConfig(format!("default policy config: {e}")))?;
        for (field, value) in [
            ("stepWeight", config.step_weight),
            ("maxWeight", config.max_weight),
        ] {
            if value.is_some_and(|v| v > 100) {
                return Err(PolicyError::InvalidConfig(format!("{field} must be at most 100")));
            }
        }
        if config.step_weights.iter().any(|w| *w > 100) {
            return Err(PolicyError::InvalidConfig(
                "stepWeights must be at most 100".into(),
            ));
        }
        Ok(config)
    }
}
