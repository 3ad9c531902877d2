//! The custom resources of group `fledge.dev`: `Canary` (Flagger's Canary spec, plus the policy that judges
//! it), `MetricTemplate`, and the
//! `Policy` / `ClusterPolicy` that hold policy components.

mod canary;
mod duration;
mod metric_template;
mod policy;
mod schema;
mod validate;

pub use canary::*;
pub use metric_template::*;
pub use policy::*;
pub use validate::{
    MIN_INTERVAL, MetricSource, MetricSpec, PolicySelector, SpecError, ValidSpec, WebhookSpec,
    ignored_message, parse_duration, problems, validate, validate_with,
};

use kube::CustomResourceExt;

/// The CRD manifests fledge installs, as one multi-document YAML (what `fledge crds` prints).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "---\n{}---\n{}---\n{}---\n{}",
        serde_yaml::to_string(&Canary::crd())?,
        serde_yaml::to_string(&MetricTemplate::crd())?,
        serde_yaml::to_string(&PolicyResource::crd())?,
        serde_yaml::to_string(&ClusterPolicy::crd())?
    ))
}
