//! fledge: progressive delivery (canary releases) on Istio, with rollout judgement in WebAssembly components.
//!
//! Data flows one way: observe → decide → act → record. See `../shared/docs/design.md` for the map.

pub mod analysis;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod controller;
pub mod lifecycle;
pub mod policy;
pub mod prometheus;
pub mod registry;
pub mod router;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod webhooks;
