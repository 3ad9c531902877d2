//! The `Canary` custom resource (group `fledge.dev`): Flagger's Canary spec, plus the policy that judges it.

mod canary;
mod schema;
mod validate;

pub use canary::*;
pub use validate::{MIN_INTERVAL, SpecError, ValidSpec, validate, validate_with};

use kube::CustomResourceExt;

/// The CRD manifests fledge installs, as one multi-document YAML (what `fledge crds` prints).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    // One document per CRD; Canary is the only one until MetricTemplate lands.
    Ok(format!("---\n{}", serde_yaml::to_string(&Canary::crd())?))
}
