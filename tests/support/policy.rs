//! Policy test helpers: an engine, the built components, and a rollout to feed them.

use std::path::PathBuf;
use std::sync::Arc;

use fledge::policy::types::{AnalysisSettings, Phase, Rollout};
use fledge::policy::{BUILTIN_DEFAULT, Grants, Limits, PolicyComponent, PolicyEngine, builtin};

/// An engine with the production defaults (100 ms deadline, 64 MiB cap) and no disk cache.
pub fn engine() -> PolicyEngine {
    PolicyEngine::new(Limits::default(), None).expect("policy engine")
}

pub fn default_policy(engine: &PolicyEngine) -> Arc<PolicyComponent> {
    let bytes = builtin(BUILTIN_DEFAULT).expect("builtin:default is embedded");
    engine
        .load(BUILTIN_DEFAULT, bytes, Grants::ALL)
        .expect("load builtin:default")
}

/// A component build.rs produced for the tests (e.g. `fledge_policy_hostile`).
pub fn built_component(stem: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("FLEDGE_POLICY_OUT_DIR")).join(format!("{stem}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// podinfo.test, Progressing at weight 0, with `analysis`.
pub fn rollout(analysis: AnalysisSettings) -> Rollout {
    Rollout {
        name: "podinfo".into(),
        namespace: "test".into(),
        phase: Phase::Progressing,
        canary_weight: 0,
        iterations: 0,
        failed_checks: 0,
        analysis,
        config: "{}".into(),
        intervals_at_weight: 0,
        seconds_in_phase: 0,
        revision: "rev-1".into(),
        state: None,
        history: Vec::new(),
    }
}
