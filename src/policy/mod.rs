//! The policy runtime: runs the WebAssembly components that make a rollout's three judgement calls
//! (step, gate, analysis) under a deadline and a memory cap. The only module that touches wasmtime; the
//! rest of the crate uses the [`Policy`] trait and the plain types in [`types`].

mod bindings;
mod builtin;
mod component;
mod convert;
mod engine;
mod error;
mod host;
mod ticker;
pub mod types;

pub use builtin::{BUILTIN_DEFAULT, BUILTIN_SEQUENTIAL, BUILTINS, builtin, builtin_names, read_source};
pub use component::{Grants, PACKAGE, Policy, PolicyComponent, VERSIONS, digest, is_component};
pub use engine::{Limits, PolicyEngine};
pub use error::PolicyError;
