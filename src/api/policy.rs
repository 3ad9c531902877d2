//! The `Policy` and `ClusterPolicy` custom resources: a policy component a Canary can name, pinned by digest,
//! from an OCI registry, a ConfigMap or the controller's built-ins.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// A policy component for the Canaries of one namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "Policy",
    root = "PolicyResource",
    plural = "policies",
    namespaced,
    shortname = "fpol",
    status = "PolicyResourceStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.shortDigest"}"#,
    printcolumn = r#"{"name":"Exports","type":"string","jsonPath":".status.exportsSummary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Where the component comes from: exactly one of `oci`, `configMap`, `builtin`.
    pub source: PolicySource,
    /// Default configuration for the Canaries that use this policy; a Canary's own `config` keys win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_any")]
    pub config: Option<serde_json::Value>,
    /// Tighter bounds than the controller's own for every call of this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PolicyLimits>,
}

/// A policy component for the Canaries of every namespace (for platform teams).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "ClusterPolicy",
    plural = "clusterpolicies",
    shortname = "fcpol",
    status = "PolicyResourceStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.shortDigest"}"#,
    printcolumn = r#"{"name":"Exports","type":"string","jsonPath":".status.exportsSummary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPolicySpec {
    /// As a Policy's; a `configMap` or `pullSecret` must then name its namespace.
    pub source: PolicySource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_any")]
    pub config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PolicyLimits>,
}

impl From<ClusterPolicySpec> for PolicySpec {
    fn from(s: ClusterPolicySpec) -> Self {
        Self {
            source: s.source,
            config: s.config,
            limits: s.limits,
        }
    }
}

/// Exactly one source.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// A component built into the controller: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
}

/// A component pushed to an OCI registry as a Wasm artifact (one `application/wasm` layer).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciSource {
    /// `registry/repository[:tag]`, e.g. `ghcr.io/acme/policies/errors:v1`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `sha256:<hex>` of the component (the layer), as `fledge policy push` prints it. Required: a tag
    /// alone could change under a running rollout (a Policy without one is not Ready: `DigestRequired`).
    #[serde(default)]
    pub digest: String,
    /// A `kubernetes.io/dockerconfigjson` Secret, or one with `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<ObjectRef>,
    /// Plain HTTP (a registry without TLS).
    #[serde(default)]
    pub insecure: bool,
}

/// Component bytes in a ConfigMap's `binaryData` (at most 1 MiB, the API's own limit).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    pub name: String,
    /// Only for a ClusterPolicy; a Policy reads its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub key: String,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
}

/// A named object; `namespace` only for a ClusterPolicy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Per-policy bounds; values above the controller's `--policy-deadline` / `--policy-memory-mib` are
/// lowered to them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLimits {
    /// Wall-clock limit of one call, e.g. `50ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "memoryMiB")]
    #[schemars(range(min = 1))]
    pub memory_mib: Option<u32>,
}

/// What the controller made of the source.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResourceStatus {
    /// `sha256:<hex>` of the loaded component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The first 12 hex digits, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_digest: Option<String>,
    /// `fledge:policy@<version>` its exports were built against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_package: Option<String>,
    /// The judgements it implements: `step`, `gate`, `analysis`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    /// `exports` joined by commas, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports_summary: Option<String>,
    /// The host interfaces it imports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Fetch and compile time of the last load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Fetched`, `Compiled` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Which policy resource a Canary names.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum PolicyKind {
    #[default]
    Policy,
    ClusterPolicy,
}

/// `analysis.policy.policyRef`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResourceRef {
    pub name: String,
    /// `Policy` (the Canary's namespace, the default) or `ClusterPolicy`.
    #[serde(default)]
    pub kind: PolicyKind,
}
