//! IO that applies the lifecycle's actions: the primary Deployment, Services, scaling, tracked configs.
//! Builders are pure (`workload`, `services`); `observe` reads the cluster, `act` writes it with server-side
//! apply under fledge's field manager, so every action is idempotent.

pub mod act;
pub mod hpa;
pub mod observe;
pub mod services;
pub mod teardown;
pub mod workload;

use thiserror::Error;

/// Field manager for every server-side apply fledge makes.
pub const FIELD_MANAGER: &str = "fledge";

/// Labels tried, in order, to find the target's selector label (Flagger's `-selector-labels`).
pub const SELECTOR_LABELS: &[&str] = &["app", "name", "app.kubernetes.io/name"];

/// [`SELECTOR_LABELS`] as the controller's setting (`--selector-labels`).
pub fn default_labels() -> Vec<String> {
    SELECTOR_LABELS.iter().map(|l| (*l).to_owned()).collect()
}

/// `<target>-primary`.
pub fn primary_name(target: &str) -> String {
    format!("{target}-primary")
}

/// A failure talking to the cluster or a target fledge cannot work with.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("deployment {deployment} has no selector label among {labels}")]
    NoSelectorLabel { deployment: String, labels: String },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl ClusterError {
    /// Bounded label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api(_) => "api",
            Self::NoSelectorLabel { .. } => "no_selector_label",
            Self::Encode { .. } => "encode",
        }
    }
}

/// The Canary owner reference the builders' unit tests use.
#[cfg(test)]
pub(crate) fn test_owner(uid: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "fledge.dev/v1alpha1".into(),
        kind: "Canary".into(),
        name: "podinfo".into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
