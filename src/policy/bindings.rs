//! wasmtime bindings generated from `wit/` (world `policy`, which imports and exports every interface).
//! Exports are looked up one interface at a time, so a component may implement any subset of them.
#![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]

wasmtime::component::bindgen!({
    world: "policy",
    path: "wit",
});

pub use exports::fledge::policy::{analysis, gate, step};
pub use fledge::policy::{log, metrics, types};
