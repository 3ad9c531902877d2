//! The watches that both fill the [`Index`] and wake the Canaries a change concerns: target and primary
//! Deployments, the three Services, the target's and primary's HorizontalPodAutoscalers, the VirtualService
//! and DestinationRules, and (metadata only) the ConfigMaps and Secrets a Canary tracks. One watch per kind;
//! managedFields and kubectl's last-applied copy are dropped before caching.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::Canary;
use crate::cluster::index::{Index, SUMMARY, Stores, pack};
use crate::cluster::versions::{VersionsWriter, versions};
use crate::router::istio::resource;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn dynamic_api(client: &Client, namespace: Option<&str>, resource: &ApiResource) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// Objects per page of a watch's (re-)list. kube's default, 500, parses 500 Deployments with their managedFields
/// at once per watch (several watches list at once after a start): at 2,000 Deployments that transient peak
/// was half the controller's heap, and the allocator keeps what a peak took. Smaller pages cost a few more
/// requests per list, and lists only happen at start and after a watch falls behind.
pub const LIST_PAGE: u32 = 50;

/// How every watch of the controller lists and watches.
pub fn config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// The controller's backoff for its merged trigger stream: none. Every watch backs off on its own
/// (`default_backoff`); kube's default here would pause *all* watches after any one failed, growing with
/// each failure — a short API outage left watches blind for long after the API came back (found by the
/// `/healthz` plane test, `tests/health.rs`).
#[derive(Debug, Clone, Copy)]
pub struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        Some(std::time::Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

/// What a cache keeps of an object: not its managedFields, nor kubectl's last-applied copy of the whole
/// object (on a ConfigMap or Secret that copy holds its data, which a metadata-only watch is meant to skip).
/// fledge reads neither; in a real cluster they are most of a cached object's bytes.
pub fn slim<K: ResourceExt>(o: &mut K) {
    o.managed_fields_mut().clear();
    if let Some(annotations) = o.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A watch of `api`, cached in `writer`, yielding every object it touched.
fn reflected<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    reflected_with(api, writer, slim)
}

/// [`reflected`], with `keep` deciding what the cache keeps of each object.
fn reflected_with<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    keep: impl FnMut(&mut K) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let store = writer.as_reader();
    touched_once_stored(
        watcher(api, config())
            .default_backoff()
            .modify(keep)
            .reflect(writer),
        store,
        Default::default(),
    )
}

/// A metadata-only watch of `api` whose resourceVersions `writer` keeps, yielding every object it touched
/// (what a list brought, once the map holds it).
fn versioned<K>(
    api: Api<PartialObjectMeta<K>>,
    mut writer: VersionsWriter,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    use futures::StreamExt;
    watcher(api, config())
        .default_backoff()
        .map(move |event| -> Box<dyn Iterator<Item = _> + Send> {
            match event {
                Ok(event) => Box::new(writer.apply(event).map(Ok)),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        })
        .flat_map(futures::stream::iter)
}

/// What the cache keeps of a Deployment: all of it (less [`slim`]) when a Canary names it as target or
/// `-primary`, or while the Canaries are not listed yet; otherwise a summary without its pod template, marked
/// [`SUMMARY`]. In a cluster of many Deployments few are canaries' (`make scale`: 1,000 noise Deployments cost
/// ~10 MB whole). A Deployment a Canary comes to name later is read whole from the API server until its next
/// change reaches the watch ([`crate::cluster::index::Index::deployment_in_full`]).
fn keep_of_deployment(
    canaries: Store<Canary>,
    canaries_listed: Arc<AtomicBool>,
) -> impl FnMut(&mut Deployment) {
    move |d| {
        slim(d);
        if !canaries_listed.load(Ordering::Acquire) || !canaries_for_deployment(&canaries, d).is_empty() {
            return;
        }
        if let Some(spec) = d.spec.as_mut() {
            spec.template = Default::default();
        }
        d.annotations_mut().insert(SUMMARY.to_owned(), "true".to_owned());
    }
}

/// Every object a watch touched, as kube's `touched_objects` — except that what a (re-)list brings is
/// released only at its end, read back from `store` once it swapped the list in. kube yields each listed
/// object at once while the store keeps the old list until `InitDone`, so a reconcile woken by a re-list read
/// the state from before it and acted on nothing; under load (a watch re-listed after falling behind) canaries
/// missed a new image until the next resync (`make scale`, 1,000 canaries). Only references are held while a
/// list runs (a list of 10,000 objects is not kept twice), and the objects are read back one at a time.
pub fn touched_once_stored<K, S>(
    events: S,
    store: Store<K>,
    dyntype: K::DynamicType,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    use futures::StreamExt;
    type Released<K> = Box<dyn Iterator<Item = Result<K, watcher::Error>> + Send>;
    events
        .scan(Vec::<ObjectRef<K>>::new(), move |listed, event| {
            let released: Released<K> = match event {
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Box::new(std::iter::empty())
                }
                Ok(watcher::Event::InitApply(o)) => {
                    listed.push(ObjectRef::from_obj_with(&o, dyntype.clone()));
                    Box::new(std::iter::empty())
                }
                Ok(watcher::Event::InitDone) => {
                    let store = store.clone();
                    Box::new(
                        std::mem::take(listed)
                            .into_iter()
                            .filter_map(move |r| store.get(&r).map(|o| Ok(o.as_ref().clone()))),
                    )
                }
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => Box::new(std::iter::once(Ok(o))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            futures::future::ready(Some(futures::stream::iter(released)))
        })
        .flatten()
}

/// Whether the cluster serves Istio's networking API (the VirtualService and DestinationRule kinds).
async fn istio_served(client: &Client) -> bool {
    let Ok(group) = kube::discovery::group(client, crate::router::istio::GROUP).await else {
        return false;
    };
    let served: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.plural)
        .collect();
    ["virtualservices", "destinationrules"]
        .iter()
        .all(|kind| served.iter().any(|s| s == kind))
}

/// Adds every watch to `controller` and returns it with the index those watches fill.
pub async fn wire(
    controller: Controller<Canary>,
    client: &Client,
    namespace: Option<&str>,
    canaries: &Store<Canary>,
    canaries_listed: Arc<AtomicBool>,
    secret_key: Option<std::sync::Arc<[u8]>>,
) -> (Controller<Canary>, Index) {
    let (deployments, deployments_in) = reflector::store::<Deployment>();
    let (services, services_in) = reflector::store::<Service>();
    let (autoscalers, autoscalers_in) = reflector::store::<HorizontalPodAutoscaler>();
    let (config_maps, config_maps_in) = versions();
    let (secrets, secrets_in) = versions();
    let controller = controller.trigger_backoff(EachWatchBacksOff);
    let mut controller = {
        let (for_deployments, for_services, for_autoscalers, for_configs, for_secrets) = (
            canaries.clone(),
            canaries.clone(),
            canaries.clone(),
            canaries.clone(),
            canaries.clone(),
        );
        controller
            .watches_stream(
                reflected_with(
                    api::<Deployment>(client, namespace),
                    deployments_in,
                    keep_of_deployment(canaries.clone(), canaries_listed),
                ),
                move |d| canaries_for_deployment(&for_deployments, &d),
            )
            .watches_stream(
                reflected(api::<Service>(client, namespace), services_in),
                move |s| canaries_routing(&for_services, &s.namespace(), &s.name_any()),
            )
            .watches_stream(
                reflected(api::<HorizontalPodAutoscaler>(client, namespace), autoscalers_in),
                move |h| canaries_scaled_by(&for_autoscalers, &h),
            )
            .watches_stream(
                versioned(
                    api::<PartialObjectMeta<ConfigMap>>(client, namespace),
                    config_maps_in,
                ),
                move |c| canaries_tracking(&for_configs, "configmap", &c),
            )
            .watches_stream(
                versioned(api::<PartialObjectMeta<Secret>>(client, namespace), secrets_in),
                move |s| canaries_tracking(&for_secrets, "secret", &s),
            )
    };
    let (mut virtual_services, mut destination_rules) = (None, None);
    if istio_served(client).await {
        for (kind, slot) in [
            ("VirtualService", &mut virtual_services),
            ("DestinationRule", &mut destination_rules),
        ] {
            let ar = resource(kind);
            let writer = Writer::new(ar.clone());
            let store = writer.as_reader();
            let for_routing = canaries.clone();
            let stream = touched_once_stored(
                watcher(dynamic_api(client, namespace, &ar), config())
                    .default_backoff()
                    .modify(|o| {
                        slim(o);
                        pack(o);
                    })
                    .reflect(writer),
                store.clone(),
                ar.clone(),
            );
            controller = controller.watches_stream_with(
                stream,
                move |o: DynamicObject| canaries_routing(&for_routing, &o.namespace(), &o.name_any()),
                ar.clone(),
            );
            *slot = Some((store, ar));
        }
    } else {
        tracing::warn!(
            "the cluster does not serve networking.istio.io VirtualService and DestinationRule; canaries cannot be routed"
        );
    }
    let stores = Stores {
        deployments,
        services,
        autoscalers,
        virtual_services,
        destination_rules,
        config_maps,
        secrets,
    };
    (controller, Index::new(stores, secret_key))
}

/// The Canaries in namespace `ns` for which `concerns` holds: what one watch event wakes.
fn canaries_where(
    store: &Store<Canary>,
    ns: &Option<String>,
    concerns: impl Fn(&Canary) -> bool,
) -> Vec<ObjectRef<Canary>> {
    store
        .state()
        .iter()
        .filter(|c| c.namespace() == *ns && concerns(c))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// `name` or, for a `<name>-primary`, `<name>`: both wake the Canary of `<name>` (compared without building
/// a `-primary` name per Canary per event).
fn is_or_primary_of(candidate: &str, name: &str) -> bool {
    candidate == name || name.strip_suffix("-primary") == Some(candidate)
}

/// Canaries whose target or primary is this Deployment: `kubectl set image` wakes its canary at once.
fn canaries_for_deployment(store: &Store<Canary>, d: &Deployment) -> Vec<ObjectRef<Canary>> {
    // A summary is a Deployment `keep_of_deployment` found no Canary for on this same event: no second scan.
    if crate::cluster::index::is_summary(d) {
        return Vec::new();
    }
    let name = d.name_any();
    canaries_where(store, &d.namespace(), |c| {
        is_or_primary_of(&c.spec.target_ref.name, &name)
    })
}

/// Canaries whose `autoscalerRef` is this HPA or its `-primary` copy: an edit to either is carried over.
fn canaries_scaled_by(store: &Store<Canary>, hpa: &HorizontalPodAutoscaler) -> Vec<ObjectRef<Canary>> {
    let name = hpa.name_any();
    canaries_where(store, &hpa.namespace(), |c| {
        c.spec
            .autoscaler_ref
            .as_ref()
            .is_some_and(|a| is_or_primary_of(&a.name, &name))
    })
}

/// Canaries whose apex, `-primary` or `-canary` Service, VirtualService or DestinationRule is named `name`:
/// a hand edit wakes the canary that repairs it.
fn canaries_routing(store: &Store<Canary>, ns: &Option<String>, name: &str) -> Vec<ObjectRef<Canary>> {
    let base = name
        .strip_suffix("-primary")
        .or_else(|| name.strip_suffix("-canary"));
    canaries_where(store, ns, |c| {
        let service = c.spec.service.name.as_deref().unwrap_or(&c.spec.target_ref.name);
        name == service || base == Some(service)
    })
}

/// Canaries tracking this ConfigMap or Secret.
fn canaries_tracking<K: ResourceExt>(store: &Store<Canary>, kind: &str, obj: &K) -> Vec<ObjectRef<Canary>> {
    let key = format!("{kind}/{}", obj.name_any());
    canaries_where(store, &obj.namespace(), |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.tracked_configs.contains_key(&key))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::index::is_summary;
    use futures::StreamExt;

    #[test]
    fn a_deployment_or_its_primary_names_the_canarys_target_and_nothing_else_does() {
        assert!(is_or_primary_of("podinfo", "podinfo"));
        assert!(is_or_primary_of("podinfo", "podinfo-primary"));
        assert!(!is_or_primary_of("podinfo", "podinfo-canary"));
        assert!(!is_or_primary_of("podinfo", "other-primary"));
        assert!(!is_or_primary_of("podinfo-primary", "podinfo"));
    }

    #[tokio::test]
    async fn what_a_relist_brings_wakes_canaries_only_once_the_store_holds_it() {
        let svc = |name: &str, rv: &str| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}
            }))
            .expect("service")
        };
        let (store, writer) = reflector::store::<Service>();
        // A first list, then a re-list that brings a newer version of the same object.
        let events = futures::stream::iter(vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(svc("a", "1"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(svc("a", "2"))),
            Ok(watcher::Event::InitApply(svc("b", "2"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(svc("a", "3"))),
        ]);
        let mut touched = Box::pin(touched_once_stored(events.reflect(writer), store.clone(), ()));
        let mut seen = Vec::new();
        while let Some(Ok(o)) = touched.next().await {
            // When a canary is woken for an object, the store already holds that version of it.
            let cached = store
                .get(&ObjectRef::from_obj(&o))
                .and_then(|c| c.resource_version());
            assert_eq!(
                cached,
                o.resource_version(),
                "woken for {} before the store had it",
                o.name_any()
            );
            seen.push(format!(
                "{}@{}",
                o.name_any(),
                o.resource_version().unwrap_or_default()
            ));
        }
        assert_eq!(seen, ["a@1", "a@2", "b@2", "a@3"]);
    }

    #[test]
    fn a_deployment_no_canary_names_is_cached_without_its_pod_template_once_the_canaries_are_listed() {
        let deployment = |name: &str| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
                },
                "status": {"replicas": 2, "readyReplicas": 2}
            }))
            .expect("deployment")
        };
        let canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "ns"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898}}
        }))
        .expect("canary");
        let (canaries, mut writer) = reflector::store::<Canary>();
        writer.apply_watcher_event(&watcher::Event::Apply(canary));
        let listed = Arc::new(AtomicBool::new(false));
        let mut keep = keep_of_deployment(canaries, listed.clone());
        let kept = |keep: &mut dyn FnMut(&mut Deployment), name: &str| {
            let mut d = deployment(name);
            keep(&mut d);
            d
        };

        // Before the Canaries are listed nothing can be told apart: all is kept.
        assert!(!is_summary(&kept(&mut keep, "noise")));
        listed.store(true, Ordering::Release);
        for named in ["podinfo", "podinfo-primary"] {
            let d = kept(&mut keep, named);
            assert!(!is_summary(&d), "{named}");
            assert_eq!(d, {
                let mut whole = deployment(named);
                slim(&mut whole);
                whole
            });
        }
        let noise = kept(&mut keep, "noise");
        assert!(is_summary(&noise));
        let spec = noise.spec.as_ref().expect("spec");
        assert!(spec.template.spec.is_none(), "pod template dropped");
        assert_eq!(spec.replicas, Some(2), "replicas and selector stay");
        assert_eq!(noise.status, deployment("noise").status, "status stays");
        // Another namespace's Deployment of the same name is not the Canary's.
        let mut elsewhere = deployment("podinfo");
        elsewhere.metadata.namespace = Some("other".into());
        keep(&mut elsewhere);
        assert!(is_summary(&elsewhere));
    }

    #[test]
    fn a_cached_object_keeps_neither_managed_fields_nor_kubectls_last_applied_copy() {
        let mut cm: PartialObjectMeta<ConfigMap> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "settings",
                "annotations": {LAST_APPLIED: "{\"data\":{\"password\":\"hunter2\"}}", "team": "a"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            }
        }))
        .expect("object");
        slim(&mut cm);
        assert!(cm.managed_fields().is_empty());
        let annotations = cm.annotations();
        assert_eq!(annotations.get("team").map(String::as_str), Some("a"));
        assert!(!annotations.contains_key(LAST_APPLIED));
    }
}
