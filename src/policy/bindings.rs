//! wasmtime bindings generated from `wit/`, one module per contract version the host serves (world
//! `policy`, which imports and exports every interface). Exports are looked up one interface at a time, so a
//! component may implement any subset of them. Versions are separate types: `convert.rs` maps both onto the
//! plain types of `types.rs`.
#![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]

/// `fledge:policy@0.1.0`, frozen in `wit/v0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "wit/v0.1.0",
    });

    pub use exports::fledge::policy::{analysis, gate, step};
    pub use fledge::policy::{log, metrics, types};
}

/// `fledge:policy@0.2.0`, the current contract in `wit/`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "wit",
    });

    pub use exports::fledge::policy::{analysis, gate, step};
    pub use fledge::policy::{log, metrics, types};
}
