//! Deleting a Canary without losing traffic (fledge reverts by default; Flagger loses traffic here):
//! scale the target back to the primary's replicas and wait until it serves, point the apex Service back at
//! the target's pods, restore or remove the VirtualService — and only then let the primary and the
//! generated objects go (the caller removes the finalizer; garbage collection deletes what the Canary owns).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::services::{ORIGINAL_SELECTOR, original_selector};
use super::workload::{pod_selector, reading, selector_label, serving_pods};
use super::{ClusterError, primary_name};
use crate::api::ValidSpec;
use crate::router::istio::{CANARY_WEIGHT, IstioRouter, ORIGINAL_CONFIGURATION};

/// Where a teardown stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// Everything is restored; the finalizer may go.
    Done,
    /// Waiting for the target to serve again.
    Waiting(String),
}

/// One step of the teardown; call again until it is `Done`.
pub async fn teardown(
    client: &Client,
    namespace: &str,
    spec: &ValidSpec,
    owner: &OwnerReference,
    selector_labels: &[String],
) -> Result<Teardown, ClusterError> {
    if !spec.revert_on_deletion {
        // Flagger's old behaviour, on request: leave everything to garbage collection.
        return Ok(Teardown::Done);
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    // A target that is gone or going (its namespace is deleted, say) has nothing to be restored to.
    let Some(target) = deployments
        .get_opt(&spec.target)
        .await?
        .filter(|t| t.metadata.deletion_timestamp.is_none())
    else {
        return Ok(Teardown::Done);
    };
    let label = selector_label(&target, selector_labels)?;
    let primary = deployments.get_opt(&primary_name(&spec.target)).await?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let wanted = primary.as_ref().map_or(1, |p| reading(p, now).replicas).max(1);
    let current = reading(&target, now);
    if current.replicas < wanted {
        let patch = json!({"spec": {"replicas": wanted}});
        deployments
            .patch_scale(&spec.target, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(Teardown::Waiting(format!(
            "scaling {} back to {wanted} replicas",
            spec.target
        )));
    }
    let serving = match pod_selector(&target) {
        Some(selector) => {
            let pods = Api::<Pod>::namespaced(client.clone(), namespace)
                .list(&ListParams::default().labels(&selector))
                .await?;
            serving_pods(&pods.items)
        }
        None => 0,
    };
    // Both: the Deployment status alone can still count pods of a scale-down that are going away.
    let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
    if !current.ready || serving < wanted {
        return Ok(Teardown::Waiting(format!(
            "waiting for {} to be ready ({serving}/{wanted} pods serving)",
            spec.target
        )));
    }

    // The endpoint controller must see it serve too, or the apex would switch to an empty endpoint set for a
    // moment: the `-canary` Service selects the target's pods, so its ready endpoints are what the apex gets.
    let canary_service = format!("{}-canary", spec.service);
    if let Some(seen) = ready_endpoints(client, namespace, &canary_service).await?
        && seen < wanted
    {
        return Ok(Teardown::Waiting(format!(
            "waiting for Service {canary_service} to list {}'s pods as ready ({seen}/{wanted})",
            spec.target
        )));
    }

    // The target serves: give the apex Service back to it. One fledge created stays too (clients use its
    // name), selecting the target and no longer owned by the Canary, so garbage collection leaves it.
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    if let Some(apex) = services.get_opt(&spec.service).await? {
        let original = original_selector(&apex, &label);
        let mut selector: serde_json::Map<String, Value> =
            original.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        if !original.contains_key(&label.0) {
            selector.insert(label.0.clone(), Value::Null);
        }
        let mut patch = json!({
            "metadata": {"annotations": {ORIGINAL_SELECTOR: null}},
            "spec": {"selector": selector},
        });
        let refs = apex.metadata.owner_references.as_deref();
        if owned(refs, owner) {
            let others: Vec<&OwnerReference> = refs
                .into_iter()
                .flatten()
                .filter(|o| o.uid != owner.uid)
                .collect();
            patch["metadata"]["ownerReferences"] = json!(others);
        }
        services
            .patch(&spec.service, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    restore_routing(client, namespace, spec, owner).await?;
    Ok(Teardown::Done)
}

/// Ready endpoints of a Service over its EndpointSlices; `None` when it has none (gone already).
async fn ready_endpoints(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<Option<usize>, ClusterError> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await?;
    if slices.items.is_empty() {
        return Ok(None);
    }
    let ready = slices
        .items
        .iter()
        .flat_map(|slice| slice.endpoints.iter())
        .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .count();
    Ok(Some(ready))
}

/// Routing: a VirtualService the user had gets its spec back; the one fledge made goes now, so the mesh
/// falls back to the apex Service before the primary's Service disappears.
async fn restore_routing(
    client: &Client,
    namespace: &str,
    spec: &ValidSpec,
    owner: &OwnerReference,
) -> Result<(), ClusterError> {
    let router = IstioRouter::new(client.clone(), namespace);
    if let Some(mut vs) = router.virtual_service(&spec.service).await? {
        if let Some(labels) = vs.metadata.labels.as_mut() {
            labels.remove(super::MANAGED_BY);
            labels.remove(super::CANARY_LABEL);
        }
        let original = vs.metadata.annotations.as_mut().and_then(|a| {
            a.remove(CANARY_WEIGHT);
            a.remove(ORIGINAL_CONFIGURATION)
        });
        match original.and_then(|text| serde_json::from_str::<Value>(&text).ok()) {
            Some(original_spec) => {
                vs.data["spec"] = original_spec;
                vs.metadata.managed_fields = None;
                router
                    .virtual_services()
                    .replace(&spec.service, &PostParams::default(), &vs)
                    .await?;
            }
            None if owned(vs.metadata.owner_references.as_deref(), owner) => {
                router
                    .virtual_services()
                    .delete(&spec.service, &DeleteParams::default())
                    .await?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Gives up waiting for the target (the teardown deadline passed): the primary keeps serving the apex
/// Service, and it, its config copies and its autoscaler copy are released from the Canary so garbage
/// collection leaves them. Routing goes back to the apex Service. Returns what was left, for the event.
pub async fn abandon(
    client: &Client,
    namespace: &str,
    spec: &ValidSpec,
    owner: &OwnerReference,
    copies: &[String],
) -> Result<Vec<String>, ClusterError> {
    let mut left = Vec::new();
    let primary = primary_name(&spec.target);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    if release(&deployments, &primary, owner).await? {
        left.push(format!("deployment/{primary}"));
    }
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    release(&services, &spec.service, owner).await?;
    for copy in copies {
        let released = match copy.split_once('/') {
            Some(("configmap", name)) => {
                release(
                    &Api::<ConfigMap>::namespaced(client.clone(), namespace),
                    name,
                    owner,
                )
                .await?
            }
            Some(("secret", name)) => {
                release(&Api::<Secret>::namespaced(client.clone(), namespace), name, owner).await?
            }
            Some(("horizontalpodautoscaler", name)) => {
                let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace);
                release(&hpas, name, owner).await?
            }
            _ => false,
        };
        if released {
            left.push(copy.clone());
        }
    }
    restore_routing(client, namespace, spec, owner).await?;
    Ok(left)
}

/// Drops `owner` from the object's owner references; false when the object is gone or was not owned.
async fn release<K>(api: &Api<K>, name: &str, owner: &OwnerReference) -> Result<bool, ClusterError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let refs = obj.meta().owner_references.as_deref();
    if !owned(refs, owner) {
        return Ok(false);
    }
    let others: Vec<&OwnerReference> = refs
        .into_iter()
        .flatten()
        .filter(|o| o.uid != owner.uid)
        .collect();
    let patch =
        json!({"metadata": {"ownerReferences": others, "resourceVersion": obj.meta().resource_version}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(true)
}

fn owned(refs: Option<&[OwnerReference]>, owner: &OwnerReference) -> bool {
    refs.into_iter().flatten().any(|o| o.uid == owner.uid)
}
