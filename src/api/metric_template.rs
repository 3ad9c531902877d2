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
    /// Namespaces whose Canaries may use this template besides its own (`*`: every namespace). A Canary in
    /// another namespace naming a template that does not list it is refused: a template may carry
    /// credentials, and its queries run with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_namespaces: Vec<String>,
}

impl MetricTemplateSpec {
    /// Whether a Canary in `canary_ns` may use this template, kept in `template_ns`.
    pub fn usable_from(&self, template_ns: &str, canary_ns: &str) -> bool {
        template_ns == canary_ns || self.allowed_namespaces.iter().any(|n| n == "*" || n == canary_ns)
    }
}

/// Where a template's query runs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    /// Only `prometheus` is supported.
    #[serde(rename = "type")]
    pub type_: String,
    /// Prometheus URL; the canary's `metricsServer` or the controller's `--metrics-server` when unset. A
    /// template with a `secretRef` sends its credentials only here, or, unset, to the controller's
    /// `--metrics-server` — never to an address a Canary chose.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(allowed: &[&str]) -> MetricTemplateSpec {
        MetricTemplateSpec {
            provider: MetricProvider::default(),
            query: "vector(1)".into(),
            allowed_namespaces: allowed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_template_serves_its_own_namespace_and_only_the_ones_it_lists() {
        assert!(spec(&[]).usable_from("shared", "shared"));
        assert!(!spec(&[]).usable_from("shared", "team-a"));
        assert!(spec(&["team-a"]).usable_from("shared", "team-a"));
        assert!(!spec(&["team-a"]).usable_from("shared", "team-b"));
        assert!(spec(&["*"]).usable_from("shared", "team-b"));
    }
}
