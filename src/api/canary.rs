//! Canary spec and status. Field names and meanings follow Flagger's `flagger.app/v1beta1` Canary so a
//! Flagger manifest works after changing only its apiVersion; `analysis.policy` is fledge's addition.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// A progressive rollout of a Deployment behind Istio.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "Canary",
    namespaced,
    status = "CanaryStatus",
    shortname = "cn",
    category = "all",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".status.policy.source","priority":1}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend","priority":1}"#,
    printcolumn = r#"{"name":"FailedChecks","type":"integer","jsonPath":".status.failedChecks","priority":1}"#,
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.analysis.interval","priority":1}"#,
    printcolumn = r#"{"name":"Mirror","type":"boolean","jsonPath":".spec.analysis.mirror","priority":1}"#,
    printcolumn = r#"{"name":"StepWeight","type":"string","jsonPath":".spec.analysis.stepWeight","priority":1}"#,
    printcolumn = r#"{"name":"StepWeights","type":"string","jsonPath":".spec.analysis.stepWeights","priority":1}"#,
    printcolumn = r#"{"name":"MaxWeight","type":"string","jsonPath":".spec.analysis.maxWeight","priority":1}"#,
    printcolumn = r#"{"name":"LastTransitionTime","type":"string","jsonPath":".status.lastTransitionTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Mesh or ingress provider; fledge drives Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Prometheus address for this canary's metrics, overriding the controller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,
    /// The Deployment being rolled out. Immutable: retargeting would strand the first app at 0 replicas;
    /// delete the Canary (which restores it) and create another.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.name == oldSelf.name && self.kind == oldSelf.kind",
        "message": "targetRef is immutable: delete this Canary (fledge restores its target) and create one for the other Deployment"
    }]))]
    pub target_ref: TargetRef,
    /// A HorizontalPodAutoscaler of the target, copied for the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,
    /// Flagger's NGINX Ingress: accepted so a Flagger manifest applies, named in the `IgnoredFields` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<ObjectReference>,
    /// Flagger's APISIX route: accepted, ignored (fledge routes with Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<ObjectReference>,
    /// Flagger's Gloo upstream: accepted, ignored (fledge routes with Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<ObjectReference>,
    /// Seconds a rollout may make no progress before it is rolled back (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub progress_deadline_seconds: Option<i32>,
    /// Promote without analysis.
    #[serde(default)]
    pub skip_analysis: bool,
    /// Restore the target and the apex Service when the Canary is deleted (fledge: default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_on_deletion: Option<bool>,
    /// Pause the rollout where it is.
    #[serde(default)]
    pub suspend: bool,
    pub service: CanaryService,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<CanaryAnalysis>,
}

/// Reference to the workload being rolled out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default = "default_target_api_version")]
    pub api_version: String,
    #[serde(default = "default_target_kind")]
    pub kind: String,
    #[schemars(length(min = 1))]
    pub name: String,
}

fn default_target_api_version() -> String {
    "apps/v1".into()
}

fn default_target_kind() -> String {
    "Deployment".into()
}

/// Reference to the target's autoscaler.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_object")]
    pub primary_scaler_replicas: Option<serde_json::Value>,
    /// Flagger's KEDA ScaledObject queries for the primary: accepted, ignored (fledge copies HPAs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub primary_scaler_queries: BTreeMap<String, String>,
}

/// A reference to an object of another provider (Flagger's `ingressRef`, `routeRef`, `upstreamRef`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Label and annotation keys of the generated Services that another party manages: fledge neither adds,
/// removes nor changes them once the Service has them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct UnmanagedMetadata {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
}

/// Labels and annotations for a generated Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct CustomMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The Services and Istio routing fledge generates.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryService {
    /// Apex Service name (default: the target's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::int_or_string")]
    pub target_port: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// The Services' `trafficDistribution` (e.g. `PreferClose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    #[serde(default)]
    pub port_discovery: bool,
    /// Generate headless Services (`clusterIP: None`); applies to Services fledge creates.
    #[serde(default)]
    pub headless: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Flagger's Gateway API backend timeout: accepted, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Flagger's Gateway API parents: accepted, ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::preserve_object_list")]
    pub gateway_refs: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub delegation: bool,
    /// Istio DestinationRule trafficPolicy, copied to both DestinationRules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_object")]
    pub traffic_policy: Option<serde_json::Value>,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_object_list")]
    pub match_: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_object")]
    pub rewrite: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_object")]
    pub retries: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_object")]
    pub headers: Option<serde_json::Value>,
    /// Flagger's Gateway API mirror filters: accepted, ignored (Istio mirrors by `analysis.mirror`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::preserve_object_list")]
    pub mirror: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_object")]
    pub cors_policy: Option<serde_json::Value>,
    /// Flagger's App Mesh mesh name: accepted, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    /// Flagger's App Mesh backends: accepted, ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apex: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged_metadata: Option<UnmanagedMetadata>,
}

/// How a rollout is analysed and stepped.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!(has(self.stepWeight) && self.stepWeight == 0 && (!has(self.stepWeights) || size(self.stepWeights) == 0))"
).message("stepWeight 0 never moves traffic: set stepWeight > 0 or stepWeights"))]
pub struct CanaryAnalysis {
    /// Time between analysis runs, a Go duration as in Flagger: `1m`, `30s`, `1m30s` (default 60s, at least 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Failed checks before rollback (default 1... as Flagger: values <= 0 mean 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub step_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 0, max = 100)))]
    pub step_weights: Vec<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub step_weight_promotion: Option<i32>,
    /// Analysis runs for blue/green and A/B testing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub iterations: Option<i32>,
    #[serde(default)]
    pub mirror: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub mirror_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub primary_ready_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub canary_ready_threshold: Option<i32>,
    /// A/B testing: requests matching these go to the canary.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_object_list")]
    pub match_: Option<Vec<serde_json::Value>>,
    /// Keep a user on the canary once routed there (a cookie), as Flagger on Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<CanaryMetric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<CanaryWebhook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::preserve_object_list")]
    pub alerts: Vec<serde_json::Value>,
    /// fledge: the component that makes the step, gate and analysis decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
}

/// Flagger's session affinity: a response from the canary sets a cookie, and requests carrying it keep going
/// to the canary for the rest of the rollout.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// The canary cookie's name.
    #[serde(default)]
    pub cookie_name: String,
    /// Seconds the canary cookie lives (default 86400, a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
    /// A cookie set by the primary's responses too (living one analysis interval), so a user routed to the
    /// primary stays there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(Strict|Lax|None)$"))]
    pub same_site: Option<String>,
    #[serde(default)]
    pub http_only: bool,
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub partitioned: bool,
}

/// One metric check of the analysis.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    pub name: String,
    /// The query's range, e.g. `1m`, `1m30s` (a duration both Go and PromQL read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Deprecated in Flagger: a minimum (success rate) or maximum (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_variables: BTreeMap<String, String>,
}

/// Inclusive bounds for a metric.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Default, JsonSchema)]
pub struct ThresholdRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A MetricTemplate reference.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TemplateRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A Flagger-compatible webhook.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    pub name: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<WebhookType>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// At most 10 (a reconcile worker must not wait on one webhook for long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<i32>,
    #[serde(default, rename = "disableTLS")]
    pub disable_tls: bool,
    #[serde(default)]
    pub mute_alert: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// When a webhook runs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookType {
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

/// Which component judges this canary, and its configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    /// A `Policy` (this namespace) or `ClusterPolicy` holding the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<super::PolicyResourceRef>,
    /// Instead of `policyRef`: `builtin:default` (the default), or `file:<name>` from the controller's
    /// `--policy-dir`. Paths are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The policy's own configuration, passed to it as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_any")]
    pub config: Option<serde_json::Value>,
}

/// The annotation an operator's request is written to (`fledge promote|abort|retry|pause|resume`, JSON
/// [`ManualRequest`]); the controller acts on each request once, says so in an event and removes it.
pub const MANUAL_ANNOTATION: &str = "fledge.dev/manual";

/// An operator's request to a rollout.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManualRequest {
    pub action: ManualAction,
    /// Who asked (the API server's answer to a SelfSubjectReview), for the event.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unique per request: one is acted on once, also when its removal fails.
    pub id: String,
}

/// What an operator asks of a rollout.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ManualAction {
    /// Open the next gate (confirm-rollout, confirm-traffic-increase or confirm-promotion) once.
    Promote,
    /// Promote now, whatever the analysis would still do.
    PromoteFull,
    /// Roll back now.
    Abort,
    /// Roll out a failed revision again.
    Retry,
    /// Hold the rollout where it is: no step, no analysis counted.
    Pause,
    Resume,
}

impl ManualAction {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::PromoteFull => "promote --full",
            Self::Abort => "abort",
            Self::Retry => "retry",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

/// Where a rollout stands: the same phases the policy contract speaks of.
pub use crate::policy::types::Phase;

/// Observed state of a Canary, written by fledge only.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default)]
    pub failed_checks: i32,
    #[serde(default)]
    pub canary_weight: i32,
    #[serde(default)]
    pub iterations: i32,
    /// fledge: analysis intervals spent at the current weight.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub intervals_at_weight: i32,
    /// `configmap/<name>` or `secret/<name>` → content hash, of what the target references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracked_configs: BTreeMap<String, String>,
    /// Hash of the target's template (and tracked configs) being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,
    /// Hash of what the primary runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// fledge: when the rollout in flight started (a new revision was detected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_start_time: Option<Time>,
    /// fledge: when the last analysis tick that changed the status ran, so a restarted controller keeps the
    /// interval (a tick that changes nothing else, such as a halt, is not written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick_time: Option<Time>,
    /// fledge: the component judging this canary and its last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyStatus>,
    /// fledge: the operator who paused the rollout (`fledge pause`); none while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// fledge: the operator who opened the next gate (`fledge promote`), until it is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_opened_by: Option<String>,
    /// fledge: the id of the last operator request taken (see `fledge.dev/manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual: Option<String>,
    /// Session affinity (as Flagger): `<cookieName>=<value>` of the rollout in flight...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_cookie: Option<String>,
    /// ...the primary's cookie (`primaryCookieName`)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_session_affinity_cookie: Option<String>,
    /// ...and the last rollout's, which the VirtualService expires on the clients that still send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_session_affinity_cookie: Option<String>,
    /// fledge: the last analysis — each check's value, bounds and verdict, the webhooks' answers and the
    /// policy's own queries with their results (enough to replay the decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
}

/// What the last analysis measured and decided.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// Wall time of the analysis: webhooks, queries and the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<QueryRecord>,
}

/// One metric check.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub name: String,
    /// The measured value; absent when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    pub verdict: String,
    pub message: String,
    /// How long the query took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_ms: Option<u32>,
}

/// One webhook call.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One query a policy made through the `metrics` import, and what it got.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryRecord {
    pub query: String,
    /// Set for range queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_seconds: Option<u32>,
    /// The series as JSON (clipped when large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The policy behind a canary and what it last decided.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub source: String,
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    /// The policy's own state (JSON text, ≤ 4 KiB) from its last answer in this rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The last analyses of this rollout (≤ 10, oldest first), as the policy is shown them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::policy::types::AnalysisRecord>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}
