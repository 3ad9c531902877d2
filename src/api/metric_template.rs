//! The `MetricTemplate` custom resource: a named PromQL query with its provider, as in Flagger.

use std::collections::BTreeMap;

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
    status = "MetricTemplateStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
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

/// Providers whose queries fledge runs.
pub const SUPPORTED_PROVIDERS: [&str; 1] = ["prometheus"];

/// Whether fledge can run a template, as its `Ready` condition says.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// An HTTP field name: one or more token characters (RFC 9110).
fn header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP field value: visible ASCII, spaces and tabs (no line breaks to smuggle a header).
fn header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Why a template cannot run (the reason of its `Ready=False` condition and the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub reason: &'static str,
    pub message: String,
}

impl MetricTemplateSpec {
    /// Whether fledge can run this template: a supported provider, an http(s) address if one is given,
    /// headers HTTP can carry. Pure, so the status a template gets is decided the same everywhere.
    pub fn usable(&self) -> Result<(), Unusable> {
        let provider = &self.provider;
        if !SUPPORTED_PROVIDERS.contains(&provider.type_.as_str()) {
            return Err(Unusable {
                reason: "UnsupportedProvider",
                message: format!(
                    "provider type {:?} is not supported: fledge queries {} only",
                    provider.type_,
                    SUPPORTED_PROVIDERS.join(", ")
                ),
            });
        }
        if let Some(address) = provider.address.as_deref().filter(|a| !a.is_empty())
            && !(address.starts_with("http://") || address.starts_with("https://"))
        {
            return Err(Unusable {
                reason: "InvalidProvider",
                message: format!("provider.address {address:?} is not an http:// or https:// URL"),
            });
        }
        for (name, values) in &provider.headers {
            if !header_name(name) || !values.iter().all(|v| header_value(v)) {
                return Err(Unusable {
                    reason: "InvalidProvider",
                    message: format!("provider.headers.{name} is not a valid HTTP header"),
                });
            }
        }
        Ok(())
    }

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
    /// HTTP headers sent with every query (e.g. `X-Scope-OrgID` for Mimir or Cortex). Not secret: anyone who
    /// reads the template sees them; credentials belong in `secretRef`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Flagger's CloudWatch region: accepted, unused (fledge queries Prometheus only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
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
            provider: MetricProvider {
                type_: "prometheus".into(),
                ..MetricProvider::default()
            },
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

    #[test]
    fn only_a_prometheus_template_with_valid_headers_and_address_is_usable() {
        assert_eq!(spec(&[]).usable(), Ok(()));
        let mut datadog = spec(&[]);
        datadog.provider.type_ = "datadog".into();
        let why = datadog.usable().expect_err("datadog");
        assert_eq!(why.reason, "UnsupportedProvider");
        assert_eq!(
            why.message,
            "provider type \"datadog\" is not supported: fledge queries prometheus only"
        );
        let mut header = spec(&[]);
        header.provider.headers.insert("X Bad".into(), vec!["v".into()]);
        assert_eq!(header.usable().expect_err("header").reason, "InvalidProvider");
        let mut address = spec(&[]);
        address.provider.address = Some("prometheus:9090".into());
        assert!(
            address
                .usable()
                .expect_err("address")
                .message
                .contains("prometheus:9090")
        );
    }
}
