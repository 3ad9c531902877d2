//! Subcommands of the `fledge` binary that are more than wiring.

pub mod componentize;
pub mod lint;
pub mod operate;
pub mod policy;
pub mod record;
pub mod scenario;
pub mod templates;
pub mod view;
