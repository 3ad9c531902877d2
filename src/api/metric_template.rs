//! The `MetricTemplate` custom resource: a named PromQL query with its provider, as in Flagger.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reusable metric query for canary analysis.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "MetricTemplate",
    namespaced,
    shortname = "mt",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider.type"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateSpec {
    pub provider: MetricProvider,
    /// PromQL; `{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ service }}`, `{{ interval }}` and
    /// `{{ variables.<key> }}` are replaced before the query runs.
    pub query: String,
}

/// Where a template's query runs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    /// Only `prometheus` is supported.
    #[serde(rename = "type")]
    pub type_: String,
    /// Prometheus URL; the canary's `metricsServer` or the controller's `--metrics-server` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A Secret in the template's namespace with `token` (bearer) or `username` and `password` (basic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    pub name: String,
}
