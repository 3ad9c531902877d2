//! fledge: progressive delivery (canary releases) on Istio, with rollout judgement in WebAssembly components.
//!
//! Data flows one way: observe → decide → act → record. See `../shared/docs/design.md` for the map.

pub mod cli;
pub mod policy;
pub mod telemetry;
