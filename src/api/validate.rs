//! Checks a Canary spec beyond what the schema can say and applies Flagger's defaults. Pure: an invalid
//! spec becomes a status condition and fledge changes nothing in the cluster for it.

use std::time::Duration;

use thiserror::Error;

use std::collections::BTreeMap;

use super::canary::{CanaryAnalysis, CanaryMetric, CanarySpec, CanaryWebhook, WebhookType};
use crate::api::PolicyKind;
use crate::policy::BUILTIN_DEFAULT;
use crate::policy::types::ThresholdRange;

/// Flagger's floor for the analysis interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// Why a Canary spec cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("targetRef.kind {0} is not supported (only Deployment)")]
    UnsupportedTarget(String),
    #[error("provider {0} is not supported: fledge routes traffic with Istio (provider istio or unset)")]
    UnsupportedProvider(String),
    #[error("analysis.interval {0:?} is not a duration like 30s, 1m30s or 1h")]
    BadInterval(String),
    #[error("{field} is {value}, outside 0..=100")]
    WeightOutOfRange { field: &'static str, value: i32 },
    #[error("analysis.stepWeight 0 with no stepWeights never moves traffic")]
    StepWeightZero,
    #[error("analysis.stepWeights must increase strictly, got {0:?}")]
    StepWeightsNotIncreasing(Vec<i32>),
    #[error("{field} must not be negative, got {value}")]
    Negative { field: &'static str, value: i32 },
    #[error("metric {name}: {why}")]
    BadMetric { name: String, why: String },
    #[error("webhook {name}: {why}")]
    BadWebhook { name: String, why: String },
    #[error("analysis.policy: {0}")]
    BadPolicy(String),
    #[error(
        "{field} {name:?} is too long: fledge derives {derived:?} ({len} characters), and Kubernetes allows {MAX_NAME} for a Service name or label value"
    )]
    NameTooLong {
        field: &'static str,
        name: String,
        derived: String,
        len: usize,
    },
}

/// Kubernetes' limit on a Service name (a DNS label) and on a label value.
pub const MAX_NAME: usize = 63;

impl SpecError {
    /// Bounded label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnsupportedTarget(_) => "unsupported_target",
            Self::UnsupportedProvider(_) => "unsupported_provider",
            Self::BadInterval(_) => "bad_interval",
            Self::WeightOutOfRange { .. } => "weight_out_of_range",
            Self::StepWeightZero => "step_weight_zero",
            Self::StepWeightsNotIncreasing(_) => "step_weights_not_increasing",
            Self::Negative { .. } => "negative_value",
            Self::BadMetric { .. } => "bad_metric",
            Self::BadWebhook { .. } => "bad_webhook",
            Self::BadPolicy(_) => "bad_policy",
            Self::NameTooLong { .. } => "name_too_long",
        }
    }
}

/// A Canary spec that passed validation, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec {
    pub target: String,
    /// Apex Service name.
    pub service: String,
    pub port: i32,
    pub port_name: String,
    pub interval: Duration,
    pub progress_deadline: Duration,
    /// Failed checks before rollback; Flagger treats <= 0 as 1.
    pub threshold: u32,
    pub max_weight: Option<u32>,
    pub step_weight: Option<u32>,
    pub step_weights: Vec<u32>,
    pub step_weight_promotion: Option<u32>,
    pub iterations: Option<u32>,
    pub has_match: bool,
    /// Session affinity shapes the routes: cookie routes come before the weighted one (not with A/B testing).
    pub sticky: bool,
    pub skip_analysis: bool,
    pub suspend: bool,
    /// fledge reverts by default (Flagger does not).
    pub revert_on_deletion: bool,
    /// Which component judges the canary.
    pub policy: PolicySelector,
    /// The Canary's own policy config as JSON text ("{}" when unset); a Policy's config lies beneath it.
    pub policy_config: String,
    /// Prometheus for this canary (`spec.metricsServer`); the controller's default when `None`.
    pub metrics_server: Option<String>,
    pub metrics: Vec<MetricSpec>,
    pub webhooks: Vec<WebhookSpec>,
    /// Traffic mirroring (`analysis.mirror`): the share of requests copied to the canary (`mirrorWeight`,
    /// default 100) while the analysis runs without user traffic on it.
    pub mirror: Option<u32>,
    /// Share of the primary's / canary's updated replicas that must be available (Flagger's thresholds).
    pub primary_ready_percent: u32,
    pub canary_ready_percent: u32,
    /// Flagger fields this Canary sets that fledge accepts but does not act on (reported, never silent).
    pub ignored: Vec<&'static str>,
}

/// One metric check, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    /// The PromQL range the query is rendered with (`1m`).
    pub interval: String,
    pub range: ThresholdRange,
    pub source: MetricSource,
}

/// Where a metric's query comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    /// Flagger's built-in Istio checks, selected by name.
    SuccessRate,
    Duration,
    /// An inline query (deprecated in Flagger, still accepted).
    Query(String),
    Template {
        name: String,
        namespace: Option<String>,
        variables: BTreeMap<String, String>,
    },
}

/// One webhook, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSpec {
    pub name: String,
    pub kind: WebhookType,
    pub url: String,
    pub timeout: Duration,
    pub retries: u32,
    /// Skip TLS verification (`disableTLS`).
    pub insecure: bool,
    pub metadata: BTreeMap<String, String>,
}

/// Flagger's webhook timeout.
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on one webhook's time, so a few bad Canaries cannot hold every reconcile worker: at most
/// `(retries + 1) × timeout` = 11 minutes even at the limits.
const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_WEBHOOK_RETRIES: u32 = 10;
const DEFAULT_METRIC_INTERVAL: &str = "1m";

fn metric(m: &CanaryMetric) -> Result<MetricSpec, SpecError> {
    let bad = |why: String| SpecError::BadMetric {
        name: m.name.clone(),
        why,
    };
    let interval = m
        .interval
        .clone()
        .unwrap_or_else(|| DEFAULT_METRIC_INTERVAL.into());
    if parse_duration(&interval).is_none() {
        return Err(bad(format!(
            "interval {interval:?} is not a duration like 30s, 1m30s or 1h"
        )));
    }
    let source = match (&m.template_ref, &m.query) {
        (Some(t), _) => MetricSource::Template {
            name: t.name.clone(),
            namespace: t.namespace.clone(),
            variables: m.template_variables.clone(),
        },
        (None, Some(q)) if !q.trim().is_empty() => MetricSource::Query(q.clone()),
        _ => match m.name.as_str() {
            "request-success-rate" => MetricSource::SuccessRate,
            "request-duration" => MetricSource::Duration,
            _ => {
                return Err(bad(
                    "has no templateRef or query and is not a built-in (request-success-rate, request-duration)"
                        .into(),
                ));
            }
        },
    };
    // The deprecated single threshold is a floor for the success rate and a ceiling for everything else.
    let range = match (m.threshold_range, m.threshold) {
        (Some(r), _) => ThresholdRange {
            min: r.min,
            max: r.max,
        },
        (None, Some(t)) if source == MetricSource::SuccessRate => ThresholdRange {
            min: Some(t),
            max: None,
        },
        (None, Some(t)) => ThresholdRange {
            min: None,
            max: Some(t),
        },
        (None, None) => ThresholdRange::default(),
    };
    if let (Some(min), Some(max)) = (range.min, range.max)
        && min > max
    {
        return Err(bad(format!("thresholdRange min {min} is above max {max}")));
    }
    Ok(MetricSpec {
        name: m.name.clone(),
        interval,
        range,
        source,
    })
}

fn webhook(w: &CanaryWebhook) -> Result<WebhookSpec, SpecError> {
    let bad = |why: String| SpecError::BadWebhook {
        name: w.name.clone(),
        why,
    };
    if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
        return Err(bad(format!("url {:?} is not an http(s) URL", w.url)));
    }
    let timeout = match &w.timeout {
        None => DEFAULT_WEBHOOK_TIMEOUT,
        Some(t) => {
            parse_duration(t).ok_or_else(|| bad(format!("timeout {t:?} is not a duration like 10s")))?
        }
    };
    if timeout > MAX_WEBHOOK_TIMEOUT {
        return Err(bad(format!(
            "timeout {timeout:?} is over the limit of {MAX_WEBHOOK_TIMEOUT:?}"
        )));
    }
    let retries = match w.retries {
        None => 0,
        Some(r) => u32::try_from(r).map_err(|_| bad(format!("retries must not be negative, got {r}")))?,
    };
    if retries > MAX_WEBHOOK_RETRIES {
        return Err(bad(format!(
            "retries {retries} is over the limit of {MAX_WEBHOOK_RETRIES}"
        )));
    }
    Ok(WebhookSpec {
        name: w.name.clone(),
        kind: w.type_.unwrap_or(WebhookType::Rollout),
        url: w.url.clone(),
        timeout,
        retries,
        insecure: w.disable_tls,
        metadata: w.metadata.clone(),
    })
}

/// Validates `spec` and applies defaults, with Flagger's 10 s floor on the interval.
pub fn validate(spec: &CanarySpec) -> Result<ValidSpec, SpecError> {
    validate_with(spec, MIN_INTERVAL)
}

/// Like [`validate`], with another floor for the interval (tests and demos run faster than production).
/// A spec that breaks several rules is refused with the first.
pub fn validate_with(spec: &CanarySpec, min_interval: Duration) -> Result<ValidSpec, SpecError> {
    validate_all(spec, min_interval).map_err(|mut all| all.swap_remove(0))
}

/// Every rule `spec` breaks, in the order [`validate`] checks them (it names the first): for `fledge lint`.
pub fn problems(spec: &CanarySpec) -> Vec<SpecError> {
    validate_all(spec, MIN_INTERVAL).err().unwrap_or_default()
}

/// The problems found so far; a check that fails adds its error and lets validation go on.
#[derive(Default)]
struct Found(Vec<SpecError>);

impl Found {
    fn add(&mut self, e: SpecError) {
        self.0.push(e);
    }

    fn ok<T>(&mut self, checked: Result<T, SpecError>) -> Option<T> {
        checked.map_err(|e| self.add(e)).ok()
    }

    /// An optional number's value, when it is set and valid.
    fn value(&mut self, checked: Result<Option<u32>, SpecError>) -> Option<u32> {
        self.ok(checked).flatten()
    }
}

fn validate_all(spec: &CanarySpec, min_interval: Duration) -> Result<ValidSpec, Vec<SpecError>> {
    let mut found = Found::default();
    if spec.target_ref.kind != "Deployment" {
        found.add(SpecError::UnsupportedTarget(spec.target_ref.kind.clone()));
    }
    if let Some(provider) = spec
        .provider
        .as_deref()
        .filter(|p| !p.eq_ignore_ascii_case("istio"))
    {
        found.add(SpecError::UnsupportedProvider(provider.to_owned()));
    }
    let service = spec
        .service
        .name
        .clone()
        .unwrap_or_else(|| spec.target_ref.name.clone());
    // `<target>-primary` labels the primary's pods; `<service>-primary` and `-canary` are Services.
    found.ok(derived_fits("targetRef.name", &spec.target_ref.name));
    found.ok(derived_fits("service.name", &service));
    let empty = CanaryAnalysis::default();
    let analysis = spec.analysis.as_ref().unwrap_or(&empty);
    let percent = |field: &'static str, v: Option<i32>| -> Result<Option<u32>, SpecError> {
        v.map(|value| {
            u32::try_from(value)
                .ok()
                .filter(|w| *w <= 100)
                .ok_or(SpecError::WeightOutOfRange { field, value })
        })
        .transpose()
    };
    let max_weight = found.value(percent("analysis.maxWeight", analysis.max_weight));
    let step_weight = found.value(percent("analysis.stepWeight", analysis.step_weight));
    let step_weight_promotion = found.value(percent(
        "analysis.stepWeightPromotion",
        analysis.step_weight_promotion,
    ));
    let step_weights: Vec<u32> = analysis
        .step_weights
        .iter()
        .filter_map(|w| found.value(percent("analysis.stepWeights", Some(*w))))
        .collect();
    // The order is judged only on weights that are all in range.
    if step_weights.len() == analysis.step_weights.len()
        && step_weights.windows(2).any(|pair| pair[0] >= pair[1])
    {
        found.add(SpecError::StepWeightsNotIncreasing(analysis.step_weights.clone()));
    }
    if step_weight == Some(0) && analysis.step_weights.is_empty() {
        found.add(SpecError::StepWeightZero);
    }
    let non_negative = |field: &'static str, v: Option<i32>| -> Result<Option<u32>, SpecError> {
        v.map(|value| u32::try_from(value).map_err(|_| SpecError::Negative { field, value }))
            .transpose()
    };
    let iterations = found.value(non_negative("analysis.iterations", analysis.iterations));
    let deadline = found.value(non_negative(
        "progressDeadlineSeconds",
        spec.progress_deadline_seconds,
    ));
    let interval = match &analysis.interval {
        None => Some(DEFAULT_INTERVAL),
        Some(text) => found.ok(parse_interval(text)
            .map(|i| i.max(min_interval))
            .ok_or_else(|| SpecError::BadInterval(text.clone()))),
    };
    let policy = analysis.policy.clone().unwrap_or_default();
    let selector = found.ok(policy_selector(&policy));
    let metrics = analysis
        .metrics
        .iter()
        .filter_map(|m| found.ok(metric(m)))
        .collect();
    let webhooks = analysis
        .webhooks
        .iter()
        .filter_map(|w| found.ok(webhook(w)))
        .collect();
    let has_match = has_match(analysis);
    let mirror = (analysis.mirror && !has_match).then(|| {
        // Flagger: a mirrorWeight of 0 (or none) mirrors every request.
        found
            .value(percent("analysis.mirrorWeight", analysis.mirror_weight))
            .filter(|w| *w > 0)
            .unwrap_or(100)
    });
    let primary_ready_percent = found
        .value(percent(
            "analysis.primaryReadyThreshold",
            analysis.primary_ready_threshold,
        ))
        .unwrap_or(100);
    let canary_ready_percent = found
        .value(percent(
            "analysis.canaryReadyThreshold",
            analysis.canary_ready_threshold,
        ))
        .unwrap_or(100);
    let (Some(interval), Some(policy_selected), true) = (interval, selector, found.0.is_empty()) else {
        return Err(found.0);
    };
    Ok(ValidSpec {
        target: spec.target_ref.name.clone(),
        service,
        port: spec.service.port,
        port_name: spec.service.port_name.clone().unwrap_or_else(|| "http".into()),
        interval,
        progress_deadline: deadline.map_or(DEFAULT_PROGRESS_DEADLINE, |s| Duration::from_secs(s.into())),
        threshold: analysis
            .threshold
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(1),
        max_weight,
        step_weight,
        step_weights,
        step_weight_promotion,
        iterations: iterations.filter(|n| *n > 0),
        has_match,
        sticky: analysis.session_affinity.is_some() && !has_match,
        skip_analysis: spec.skip_analysis || spec.analysis.is_none(),
        suspend: spec.suspend,
        revert_on_deletion: spec.revert_on_deletion.unwrap_or(true),
        policy: policy_selected,
        policy_config: policy.config.map_or_else(|| "{}".to_owned(), |c| c.to_string()),
        metrics_server: spec.metrics_server.clone().filter(|s| !s.is_empty()),
        metrics,
        webhooks,
        mirror,
        primary_ready_percent,
        canary_ready_percent,
        ignored: ignored(spec, analysis),
    })
}

/// The longest name fledge derives from `name` (`<name>-primary`) must be a valid Service name and label value.
fn derived_fits(field: &'static str, name: &str) -> Result<(), SpecError> {
    let derived = format!("{name}-primary");
    if derived.len() <= MAX_NAME {
        return Ok(());
    }
    Err(SpecError::NameTooLong {
        field,
        name: name.to_owned(),
        len: derived.len(),
        derived,
    })
}

/// Where a canary's policy comes from, validated: never a path the controller would read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicySelector {
    /// `builtin:<name>`, compiled into the controller.
    Builtin(String),
    /// `file:<name>` inside the controller's `--policy-dir`.
    File(String),
    /// A `Policy` in the Canary's namespace or a `ClusterPolicy`.
    Resource { kind: PolicyKind, name: String },
}

impl std::fmt::Display for PolicySelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(name) => write!(f, "builtin:{name}"),
            Self::File(name) => write!(f, "file:{name}"),
            Self::Resource { kind, name } => write!(f, "{kind:?}/{name}"),
        }
    }
}

/// The longest `file:` name: a file name, not a path.
const MAX_FILE_NAME: usize = 253;

fn policy_selector(policy: &crate::api::PolicyRef) -> Result<PolicySelector, SpecError> {
    let bad = |why: String| SpecError::BadPolicy(why);
    match (&policy.policy_ref, policy.component.as_deref()) {
        (Some(_), Some(_)) => Err(bad("set policyRef or component, not both".into())),
        (Some(r), None) if r.name.is_empty() => Err(bad("policyRef.name is empty".into())),
        (Some(r), None) => Ok(PolicySelector::Resource {
            kind: r.kind,
            name: r.name.clone(),
        }),
        (None, None) => Ok(PolicySelector::Builtin(builtin_name(BUILTIN_DEFAULT).to_owned())),
        (None, Some(c)) => {
            if let Some(name) = c.strip_prefix("builtin:") {
                if crate::policy::builtin(c).is_none() {
                    return Err(bad(format!(
                        "{c:?} is not a built-in policy (known: {})",
                        crate::policy::builtin_names()
                    )));
                }
                return Ok(PolicySelector::Builtin(name.to_owned()));
            }
            if let Some(name) = c.strip_prefix("file:") {
                let plain = !name.is_empty()
                    && name.len() <= MAX_FILE_NAME
                    && name != "."
                    && name != ".."
                    && !name.contains(['/', '\\', '\0']);
                if !plain {
                    return Err(bad(format!(
                        "{c:?}: file: names one file in the controller's --policy-dir, without / or .."
                    )));
                }
                return Ok(PolicySelector::File(name.to_owned()));
            }
            Err(bad(format!(
                "component {c:?} is refused: a Canary cannot name a path on the controller; \
                 use policyRef to a Policy or ClusterPolicy (or builtin:default)"
            )))
        }
    }
}

fn builtin_name(reference: &str) -> &str {
    reference.strip_prefix("builtin:").unwrap_or(reference)
}

fn has_match(analysis: &CanaryAnalysis) -> bool {
    analysis.match_.as_ref().is_some_and(|m| !m.is_empty())
}

/// Flagger fields set in `spec` that fledge accepts and does not act on: other providers' fields, and the
/// few Istio features not implemented yet.
fn ignored(spec: &CanarySpec, analysis: &CanaryAnalysis) -> Vec<&'static str> {
    let svc = &spec.service;
    [
        // Istio cannot mirror an A/B test's matched route (nor does Flagger).
        ("analysis.mirror", analysis.mirror && has_match(analysis)),
        // Flagger's A/B routes replace the cookie routes.
        (
            "analysis.sessionAffinity",
            analysis.session_affinity.is_some() && has_match(analysis),
        ),
        ("analysis.alerts", !analysis.alerts.is_empty()),
        ("ingressRef", spec.ingress_ref.is_some()),
        ("routeRef", spec.route_ref.is_some()),
        ("upstreamRef", spec.upstream_ref.is_some()),
        (
            "autoscalerRef.primaryScalerQueries",
            spec.autoscaler_ref
                .as_ref()
                .is_some_and(|a| !a.primary_scaler_queries.is_empty()),
        ),
        ("service.backendTimeout", svc.backend_timeout.is_some()),
        ("service.gatewayRefs", !svc.gateway_refs.is_empty()),
        ("service.mirror", !svc.mirror.is_empty()),
        ("service.meshName", svc.mesh_name.is_some()),
        ("service.backends", !svc.backends.is_empty()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect()
}

/// Why fledge does not act on an ignored field.
fn why_ignored(field: &str) -> &'static str {
    match field {
        "analysis.mirror" => "Istio cannot mirror an A/B test's matched route",
        "analysis.sessionAffinity" => "A/B testing routes by its own match",
        "ingressRef" => "NGINX only",
        "routeRef" => "APISIX only",
        "upstreamRef" => "Gloo only",
        "autoscalerRef.primaryScalerQueries" => "KEDA only",
        "service.backendTimeout" | "service.gatewayRefs" | "service.mirror" => "Gateway API only",
        "service.meshName" | "service.backends" => "App Mesh only",
        _ => "not implemented",
    }
}

/// The `IgnoredFields` message: each field with why (`fledge ignores analysis.alerts (not implemented)`).
pub fn ignored_message(fields: &[&str]) -> Option<String> {
    (!fields.is_empty()).then(|| {
        let items: Vec<String> = fields
            .iter()
            .map(|f| format!("{f} ({})", why_ignored(f)))
            .collect();
        format!("fledge ignores {}", items.join(", "))
    })
}

/// `30s` → 30 s, `2m` → 120 s.
fn parse_interval(text: &str) -> Option<Duration> {
    parse_duration(text)
}

/// A Go duration, as Flagger's fields take them: `30s`, `1m30s`, `1h`, `500ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    super::duration::parse_go_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(analysis: serde_json::Value) -> CanarySpec {
        serde_json::from_value(serde_json::json!({
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": analysis,
        }))
        .expect("spec")
    }

    #[test]
    fn names_whose_derived_objects_exceed_kubernetes_limits_are_refused_with_the_derived_name() {
        let mut s = spec(serde_json::json!({}));
        s.target_ref.name = "a".repeat(55);
        assert!(validate(&s).is_ok(), "55 + -primary = 63 fits");
        s.target_ref.name = "a".repeat(56);
        let err = validate(&s).expect_err("64 does not");
        assert_eq!(err.category(), "name_too_long");
        assert!(
            err.to_string().contains(&format!("{}-primary", "a".repeat(56))),
            "{err}"
        );
        assert!(err.to_string().contains("64 characters"), "{err}");
        let mut s = spec(serde_json::json!({}));
        s.service.name = Some("s".repeat(60));
        assert!(
            validate(&s)
                .expect_err("service")
                .to_string()
                .contains("service.name")
        );
    }

    #[test]
    fn a_canary_cannot_name_a_path_on_the_controller() {
        for path in [
            "/dev/zero",
            "/etc/passwd",
            "../../etc/passwd",
            "policy.wasm",
            "file:../x",
            "file:a/b",
            "file:",
        ] {
            let s = spec(serde_json::json!({"policy": {"component": path}}));
            let err = validate(&s).expect_err(path);
            assert_eq!(err.category(), "bad_policy", "{path}: {err}");
        }
    }

    #[test]
    fn policy_is_a_builtin_a_policy_dir_file_or_a_policy_resource() {
        let pick = |policy: serde_json::Value| {
            validate(&spec(serde_json::json!({"policy": policy}))).map(|v| v.policy)
        };
        assert_eq!(
            pick(serde_json::json!({})),
            Ok(PolicySelector::Builtin("default".into()))
        );
        assert_eq!(
            pick(serde_json::json!({"component": "builtin:sequential"})),
            Ok(PolicySelector::Builtin("sequential".into()))
        );
        assert_eq!(
            pick(serde_json::json!({"component": "file:errors.wasm"})),
            Ok(PolicySelector::File("errors.wasm".into()))
        );
        assert_eq!(
            pick(serde_json::json!({"policyRef": {"name": "errors"}})),
            Ok(PolicySelector::Resource {
                kind: PolicyKind::Policy,
                name: "errors".into()
            })
        );
        assert_eq!(
            pick(serde_json::json!({"policyRef": {"name": "errors", "kind": "ClusterPolicy"}})),
            Ok(PolicySelector::Resource {
                kind: PolicyKind::ClusterPolicy,
                name: "errors".into()
            })
        );
        assert!(
            pick(serde_json::json!({"policyRef": {"name": "x"}, "component": "builtin:default"})).is_err()
        );
        assert!(pick(serde_json::json!({"component": "builtin:nope"})).is_err());
    }

    #[test]
    fn only_the_istio_provider_is_accepted() {
        let mut s = spec(serde_json::json!({}));
        for ok in [None, Some("istio"), Some("Istio")] {
            s.provider = ok.map(str::to_owned);
            assert!(validate(&s).is_ok(), "{ok:?}");
        }
        s.provider = Some("nginx".into());
        assert_eq!(validate(&s), Err(SpecError::UnsupportedProvider("nginx".into())));
    }

    #[test]
    fn flagger_fields_fledge_does_not_implement_are_listed_not_silently_dropped() {
        assert!(
            validate(&spec(serde_json::json!({})))
                .expect("valid")
                .ignored
                .is_empty()
        );
        let mut s = spec(serde_json::json!({
            "match": [{"headers": {"x-canary": {"exact": "insider"}}}],
            "iterations": 10,
            "mirror": true,
            "alerts": [{"name": "on-call", "severity": "error", "providerRef": {"name": "slack"}}],
            "primaryReadyThreshold": 100,
            "canaryReadyThreshold": 50,
        }));
        s.service.port_discovery = true;
        assert_eq!(
            validate(&s).expect("valid").ignored,
            vec!["analysis.mirror", "analysis.alerts"]
        );
    }

    #[test]
    fn other_providers_fields_are_accepted_and_named_with_the_provider_they_belong_to() {
        let mut s: CanarySpec = serde_json::from_value(serde_json::json!({
            "targetRef": {"name": "podinfo"},
            "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
            "autoscalerRef": {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "podinfo",
                              "primaryScalerQueries": {"q": "sum(rate(x[1m]))"}},
            "service": {"port": 9898, "meshName": "global", "backends": ["backend"],
                        "gatewayRefs": [{"name": "gw"}], "backendTimeout": "5s"},
            "analysis": {"alerts": [{"name": "on-call"}]},
        }))
        .expect("Flagger's fields parse");
        let ignored = validate(&s).expect("valid").ignored;
        assert_eq!(
            ignored,
            [
                "analysis.alerts",
                "ingressRef",
                "autoscalerRef.primaryScalerQueries",
                "service.backendTimeout",
                "service.gatewayRefs",
                "service.meshName",
                "service.backends"
            ]
        );
        assert_eq!(
            ignored_message(&ignored[..2]).as_deref(),
            Some("fledge ignores analysis.alerts (not implemented), ingressRef (NGINX only)")
        );
        s.analysis = None;
        s.ingress_ref = None;
        s.autoscaler_ref = None;
        s.service = serde_json::from_value(serde_json::json!({"port": 9898})).expect("service");
        assert_eq!(ignored_message(&validate(&s).expect("valid").ignored), None);
    }

    #[test]
    fn flagger_defaults_apply_to_a_minimal_canary() {
        let v = validate(&spec(serde_json::json!({"stepWeight": 20, "maxWeight": 60}))).expect("valid");
        assert_eq!(v.service, "podinfo");
        assert_eq!(v.port_name, "http");
        assert_eq!(v.interval, Duration::from_secs(60));
        assert_eq!(v.threshold, 1);
        assert_eq!(v.progress_deadline, Duration::from_secs(600));
        assert!(
            v.revert_on_deletion,
            "fledge reverts on deletion unless told not to"
        );
        assert_eq!(v.policy, PolicySelector::Builtin("default".into()));
        assert_eq!(v.policy_config, "{}");
        assert!(!v.skip_analysis);
    }

    #[test]
    fn intervals_below_ten_seconds_are_raised_to_ten() {
        assert_eq!(
            validate(&spec(serde_json::json!({"interval": "2s"})))
                .expect("valid")
                .interval
                .as_secs(),
            10
        );
        assert_eq!(
            validate(&spec(serde_json::json!({"interval": "2m"})))
                .expect("valid")
                .interval
                .as_secs(),
            120
        );
        assert_eq!(
            validate(&spec(serde_json::json!({"interval": "1m30s"})))
                .expect("a Go duration, as Flagger takes it")
                .interval
                .as_secs(),
            90
        );
        assert_eq!(
            validate(&spec(serde_json::json!({"interval": "soon"}))),
            Err(SpecError::BadInterval("soon".into()))
        );
    }

    #[test]
    fn impossible_weights_are_refused() {
        assert_eq!(
            validate(&spec(serde_json::json!({"maxWeight": 150}))),
            Err(SpecError::WeightOutOfRange {
                field: "analysis.maxWeight",
                value: 150
            })
        );
        assert_eq!(
            validate(&spec(serde_json::json!({"stepWeight": 0}))),
            Err(SpecError::StepWeightZero)
        );
        assert_eq!(
            validate(&spec(serde_json::json!({"stepWeights": [10, 5]}))),
            Err(SpecError::StepWeightsNotIncreasing(vec![10, 5]))
        );
    }

    #[test]
    fn builtin_metrics_are_chosen_by_name_and_the_old_threshold_keeps_its_direction() {
        let v = validate(&spec(serde_json::json!({"metrics": [
            {"name": "request-success-rate", "threshold": 99, "interval": "1m"},
            {"name": "request-duration", "threshold": 500},
            {"name": "errors", "query": "sum(x)", "thresholdRange": {"max": 5}},
            {"name": "p50", "templateRef": {"name": "latency"}, "templateVariables": {"q": "0.5"}},
        ]})))
        .expect("valid");
        assert_eq!(v.metrics[0].source, MetricSource::SuccessRate);
        assert_eq!(
            v.metrics[0].range,
            ThresholdRange {
                min: Some(99.0),
                max: None
            }
        );
        assert_eq!(v.metrics[1].source, MetricSource::Duration);
        assert_eq!(
            v.metrics[1].range,
            ThresholdRange {
                min: None,
                max: Some(500.0)
            }
        );
        assert_eq!(v.metrics[1].interval, "1m");
        assert_eq!(v.metrics[2].source, MetricSource::Query("sum(x)".into()));
        assert!(
            matches!(&v.metrics[3].source, MetricSource::Template { name, variables, .. }
            if name == "latency" && variables["q"] == "0.5")
        );
    }

    #[test]
    fn metrics_without_a_query_or_with_an_empty_range_are_refused() {
        let unknown = validate(&spec(serde_json::json!({"metrics": [{"name": "mystery"}]})));
        assert!(matches!(unknown, Err(SpecError::BadMetric { ref name, .. }) if name == "mystery"));
        let inverted = validate(&spec(serde_json::json!({"metrics": [
            {"name": "request-duration", "thresholdRange": {"min": 10, "max": 1}}]})));
        assert!(matches!(inverted, Err(SpecError::BadMetric { .. })));
    }

    #[test]
    fn a_webhook_may_wait_at_most_60s_and_retry_at_most_10_times() {
        let hook = |extra: serde_json::Value| {
            let mut w = serde_json::json!({"name": "gate", "url": "http://loadtester/"});
            w.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            validate(&spec(serde_json::json!({"webhooks": [w]})))
        };
        let at_limits = hook(serde_json::json!({"timeout": "60s", "retries": 10})).expect("at the limits");
        assert_eq!(at_limits.webhooks[0].timeout, Duration::from_secs(60));
        assert_eq!(at_limits.webhooks[0].retries, 10);
        for over in [
            serde_json::json!({"timeout": "61s"}),
            serde_json::json!({"timeout": "5m"}),
            serde_json::json!({"retries": 11}),
        ] {
            let refused = hook(over.clone());
            assert!(
                matches!(refused, Err(SpecError::BadWebhook { ref name, ref why }) if name == "gate" && why.contains("over the limit")),
                "{over}: {refused:?}"
            );
        }
    }

    #[test]
    fn webhooks_default_to_rollout_with_flaggers_timeout() {
        let v = validate(&spec(serde_json::json!({"webhooks": [
            {"name": "load", "url": "http://loadtester/"},
            {"name": "gate", "type": "confirm-promotion", "url": "http://loadtester/gate/check", "timeout": "1500ms", "retries": 2},
        ]})))
        .expect("valid");
        assert_eq!(v.webhooks[0].kind, WebhookType::Rollout);
        assert_eq!(v.webhooks[0].timeout, Duration::from_secs(10));
        assert_eq!(v.webhooks[1].timeout, Duration::from_millis(1500));
        assert_eq!(v.webhooks[1].retries, 2);
        let bad = validate(&spec(
            serde_json::json!({"webhooks": [{"name": "x", "url": "loadtester/"}]}),
        ));
        assert!(matches!(bad, Err(SpecError::BadWebhook { .. })));
    }

    #[test]
    fn a_canary_without_analysis_skips_it() {
        let mut s = spec(serde_json::json!({}));
        s.analysis = None;
        assert!(validate(&s).expect("valid").skip_analysis);
    }

    #[test]
    fn threshold_zero_means_one_as_in_flagger() {
        assert_eq!(
            validate(&spec(serde_json::json!({"threshold": 0})))
                .expect("valid")
                .threshold,
            1
        );
        assert_eq!(
            validate(&spec(serde_json::json!({"threshold": 5})))
                .expect("valid")
                .threshold,
            5
        );
    }
}
