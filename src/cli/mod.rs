//! Subcommands of the `fledge` binary that are more than wiring.

pub mod componentize;
pub mod lint;
pub mod policy;
pub mod record;
pub mod scenario;
pub mod templates;
