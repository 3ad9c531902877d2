//! Reads what a tick needs from the cluster: the target and primary Deployments, the configs the target
//! references (content-hashed), the apex Service and the VirtualService's weights.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::{Client, ResourceExt};

use super::index::{ConfigOrSecret, Index};
use super::workload::{reading_with, referenced_configs, revision, selector_label};
use super::{ClusterError, claimant, primary_name};
use crate::api::ValidSpec;
use crate::lifecycle::Observed;
use crate::router::istio::{canary_weight, mirrored, recorded_weight};

/// Annotations that opt a ConfigMap or Secret out of tracking (fledge's and Flagger's).
const TRACKING_OPT_OUT: &[&str] = &["fledge.dev/config-tracking", "flagger.app/config-tracking"];
/// Secret types worth tracking (Flagger's list); service-account tokens and the like are not.
const TRACKED_SECRET_TYPES: &[&str] = &[
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
];

/// The cluster as one tick sees it, plus what acting on it needs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub observed: Observed,
    pub target: Option<Deployment>,
    /// The target's selector label and value.
    pub label: Option<(String, String)>,
    /// Tracked configs that exist (`configmap/<n>`, `secret/<n>`).
    pub tracked: BTreeSet<String>,
    pub apex: Option<Service>,
    /// The VirtualService for the apex host as it was at the start of the tick (fledge's or the user's).
    pub virtual_service: Option<kube::api::DynamicObject>,
    /// Objects this canary would manage that carry a Canary's claim label: (`kind/name`, label value).
    pub claims: Vec<(String, String)>,
}

/// The claim labels of the primary and the VirtualService, as found.
fn claims_of(
    spec: &ValidSpec,
    primary: Option<&Deployment>,
    vs: Option<&kube::api::DynamicObject>,
) -> Vec<(String, String)> {
    let primary = primary
        .and_then(|d| claimant(d.metadata.labels.as_ref()))
        .map(|c| {
            let what = format!(
                "target {} (deployment/{})",
                spec.target,
                primary_name(&spec.target)
            );
            (what, c.to_owned())
        });
    let vs = vs.and_then(|v| claimant(v.metadata.labels.as_ref())).map(|c| {
        (
            format!("service {0} (virtualservice/{0})", spec.service),
            c.to_owned(),
        )
    });
    primary.into_iter().chain(vs).collect()
}

/// Reads the cluster for one canary, from the index; only a config whose resourceVersion changed is fetched.
pub async fn observe(
    client: &Client,
    index: &Index,
    namespace: &str,
    spec: &ValidSpec,
    selector_labels: &[String],
) -> Result<Snapshot, ClusterError> {
    let Some(target) = index.deployment_in_full(client, namespace, &spec.target).await? else {
        return Ok(without_target(index, namespace, spec));
    };
    let label = selector_label(&target, selector_labels)?;
    let refs = target
        .spec
        .as_ref()
        .map(|s| referenced_configs(&s.template))
        .unwrap_or_default();
    let configs = config_hashes(client, index, namespace, &refs).await?;
    let primary = index
        .deployment_in_full(client, namespace, &primary_name(&spec.target))
        .await?;
    let virtual_service = index.virtual_service(namespace, &spec.service);
    let (routed, drifted) = routed_weights(virtual_service.as_ref(), spec);
    let apex = index.service(namespace, &spec.service);
    let now = Timestamp::now();
    Ok(Snapshot {
        observed: Observed {
            target: Some(reading_with(&target, now, spec.canary_ready_percent)),
            primary: primary
                .as_ref()
                .map(|p| reading_with(p, now, spec.primary_ready_percent)),
            revision: revision(&target, &configs)?,
            tracked_configs: configs.clone(),
            routed_canary_weight: routed,
            drifted_canary_weight: drifted,
            routed_mirror: virtual_service
                .as_ref()
                .is_some_and(|vs| mirrored(vs, spec.sticky)),
            // The controller knows these, not the cluster read.
            policy_blocked: None,
            target_missing_secs: 0,
            now: unix_seconds(now),
            manual: None,
        },
        tracked: configs.into_keys().collect(),
        claims: claims_of(spec, primary.as_ref(), virtual_service.as_ref()),
        label: Some(label),
        target: Some(target),
        apex,
        virtual_service,
    })
}

/// The canary weight of record — what fledge wrote, from its annotation; the weights themselves for a route
/// written before fledge kept the record — and the weight shown when someone edited it by hand.
fn routed_weights(vs: Option<&kube::api::DynamicObject>, spec: &ValidSpec) -> (Option<u32>, Option<u32>) {
    let Some(vs) = vs else { return (None, None) };
    let shown = canary_weight(vs, &spec.service, spec.sticky);
    match (recorded_weight(vs), shown) {
        (Some(recorded), Some(shown)) if recorded != shown => (Some(recorded), Some(shown)),
        (Some(recorded), _) if shown.is_some() => (Some(recorded), None),
        _ => (shown, None),
    }
}

/// The target is gone: what still routes and serves (the primary, the VirtualService), so the tick can send
/// every request to the primary.
fn without_target(index: &Index, namespace: &str, spec: &ValidSpec) -> Snapshot {
    let primary = index.deployment(namespace, &primary_name(&spec.target));
    let virtual_service = index.virtual_service(namespace, &spec.service);
    let now = Timestamp::now();
    let (routed, drifted) = routed_weights(virtual_service.as_ref(), spec);
    Snapshot {
        observed: Observed {
            primary: primary
                .as_ref()
                .map(|p| reading_with(p, now, spec.primary_ready_percent)),
            routed_canary_weight: routed,
            drifted_canary_weight: drifted,
            routed_mirror: virtual_service
                .as_ref()
                .is_some_and(|vs| mirrored(vs, spec.sticky)),
            now: unix_seconds(now),
            ..Observed::default()
        },
        claims: claims_of(spec, primary.as_ref(), virtual_service.as_ref()),
        virtual_service,
        ..Snapshot::default()
    }
}

/// Content hashes of the referenced configs that exist and are tracked.
async fn config_hashes(
    client: &Client,
    index: &Index,
    namespace: &str,
    refs: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, ClusterError> {
    let mut hashes = BTreeMap::new();
    for r in refs {
        let Some((kind, name)) = r.split_once('/') else {
            continue;
        };
        let hash = index
            .config_hash(client, namespace, kind, name, |object| match object {
                ConfigOrSecret::ConfigMap(cm) => tracked(cm),
                ConfigOrSecret::Secret(s) => {
                    tracked(s) && TRACKED_SECRET_TYPES.contains(&s.type_.as_deref().unwrap_or("Opaque"))
                }
            })
            .await?;
        if let Some(hash) = hash {
            hashes.insert(r.clone(), hash);
        }
    }
    Ok(hashes)
}

fn tracked<K: ResourceExt>(obj: &K) -> bool {
    !TRACKING_OPT_OUT
        .iter()
        .any(|a| obj.annotations().get(*a).map(String::as_str) == Some("disabled"))
}

/// A timestamp as seconds since the Unix epoch (the lifecycle's clock).
pub fn unix_seconds(t: Timestamp) -> f64 {
    t.as_duration().as_secs_f64()
}
