//! What the controller knows of the cluster without asking: reflector stores of every kind a tick reads
//! (Deployments, Services, HorizontalPodAutoscalers, VirtualServices, DestinationRules),
//! filled by the same watches that wake Canaries, so a reconcile reads memory, not the API. Of ConfigMaps and
//! Secrets only the resourceVersions are kept ([`super::versions`]); their content is fetched once per
//! resourceVersion to hash it.
//! Writes are remembered by what they applied, so an object already as desired is not written again.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use super::ClusterError;
use super::versions::Versions;
use super::workload::{content_hash, keyed_hash};

/// The reflector stores a reconcile reads. Stores of the Istio kinds are `None` when the cluster does not
/// serve them.
#[derive(Clone)]
pub struct Index {
    stores: Stores,
    /// The per-install key of Secret checksums (`controller::checksum_key`); without one (tests that run the
    /// controller in process) a Secret is hashed like a ConfigMap.
    secret_key: Option<std::sync::Arc<[u8]>>,
    memo: std::sync::Arc<Memo>,
    /// Resolves once every store has listed. One shared future polls each store's readiness: kube's
    /// `Store::wait_until_ready` wakes only the waiter that polled it last, so of many reconciles waiting
    /// at startup all but one slept on (found by `make scale`; `every_waiter_wakes_when_the_caches_fill`).
    ready: Shared<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

/// Remembered answers: config hashes per resourceVersion, and what fledge last applied per object.
#[derive(Debug, Default)]
struct Memo {
    /// `kind/ns/name` → (resourceVersion, hash when tracked).
    hashes: Mutex<HashMap<String, (String, Option<String>)>>,
    /// `kind/ns/name` → hash of the object fledge last applied there successfully.
    applied: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every store the watches fill, handed to [`Index::new`].
#[allow(missing_debug_implementations)] // stores of whole clusters: nothing worth printing
#[derive(Clone)]
pub struct Stores {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    pub virtual_services: Option<(Store<DynamicObject>, ApiResource)>,
    pub destination_rules: Option<(Store<DynamicObject>, ApiResource)>,
    pub config_maps: Versions,
    pub secrets: Versions,
}

/// The annotation a cached Deployment summary carries (only in the cache, never written): the watch keeps a
/// Deployment no Canary names without its pod template.
pub const SUMMARY: &str = "fledge.dev/cached-summary";

/// Whether the cache keeps only a summary of `d`.
pub fn is_summary(d: &Deployment) -> bool {
    d.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SUMMARY))
}

impl Index {
    pub fn new(stores: Stores, secret_key: Option<std::sync::Arc<[u8]>>) -> Self {
        let ready = {
            let stores = stores.clone();
            async move {
                let _ = stores.deployments.wait_until_ready().await;
                let _ = stores.services.wait_until_ready().await;
                let _ = stores.autoscalers.wait_until_ready().await;
                stores.config_maps.ready().await;
                stores.secrets.ready().await;
                for (store, _) in [&stores.virtual_services, &stores.destination_rules]
                    .into_iter()
                    .flatten()
                {
                    let _ = store.wait_until_ready().await;
                }
            }
            .boxed()
            .shared()
        };
        Self {
            stores,
            secret_key,
            memo: std::sync::Arc::default(),
            ready,
        }
    }

    /// Waits until every store has listed once, so a first reconcile never mistakes "not listed yet" for
    /// "absent" and creates what exists.
    pub async fn ready(&self) {
        self.ready.clone().await;
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Deployment> {
        self.stores
            .deployments
            .get(&ObjectRef::new(name).within(namespace))
            .map(|d| d.as_ref().clone())
    }

    /// A Deployment whole: from the cache, or from the API server when the cache keeps only a summary of it
    /// (no Canary named it when the watch last saw it: [`SUMMARY`]).
    pub async fn deployment_in_full(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Deployment>, kube::Error> {
        match self.deployment(namespace, name) {
            Some(d) if is_summary(&d) => {
                Api::<Deployment>::namespaced(client.clone(), namespace)
                    .get_opt(name)
                    .await
            }
            cached => Ok(cached),
        }
    }

    /// Whether the cluster served Istio's VirtualService and DestinationRule when the watches started.
    pub fn istio_served(&self) -> bool {
        self.stores.virtual_services.is_some() && self.stores.destination_rules.is_some()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<Service> {
        self.stores
            .services
            .get(&ObjectRef::new(name).within(namespace))
            .map(|s| s.as_ref().clone())
    }

    pub fn autoscaler(&self, namespace: &str, name: &str) -> Option<HorizontalPodAutoscaler> {
        self.stores
            .autoscalers
            .get(&ObjectRef::new(name).within(namespace))
            .map(|h| h.as_ref().clone())
    }

    pub fn virtual_service(&self, namespace: &str, name: &str) -> Option<DynamicObject> {
        dynamic(self.stores.virtual_services.as_ref(), namespace, name)
    }

    pub fn destination_rule(&self, namespace: &str, name: &str) -> Option<DynamicObject> {
        dynamic(self.stores.destination_rules.as_ref(), namespace, name)
    }

    /// The content hash of a ConfigMap (`kind` "configmap") or Secret ("secret"), `None` when it is absent or
    /// not tracked (`tracked` decides on the full object). Fetched only when its resourceVersion changed.
    pub async fn config_hash(
        &self,
        client: &Client,
        namespace: &str,
        kind: &str,
        name: &str,
        tracked: impl Fn(&ConfigOrSecret) -> bool,
    ) -> Result<Option<String>, ClusterError> {
        let version = match kind {
            "configmap" => self.stores.config_maps.get(namespace, name),
            "secret" => self.stores.secrets.get(namespace, name),
            _ => return Ok(None),
        };
        let Some(version) = version else {
            return Ok(None);
        };
        let key = format!("{kind}/{namespace}/{name}");
        if let Some((seen, hash)) = lock(&self.memo.hashes).get(&key)
            && *seen == version
        {
            return Ok(hash.clone());
        }
        let object = match kind {
            "configmap" => Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(ConfigOrSecret::ConfigMap),
            _ => Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(ConfigOrSecret::Secret),
        };
        let Some(object) = object else {
            return Ok(None);
        };
        let hash = if tracked(&object) {
            Some(match &object {
                ConfigOrSecret::ConfigMap(cm) => content_hash(&(&cm.data, &cm.binary_data))?,
                ConfigOrSecret::Secret(s) => match &self.secret_key {
                    Some(key) => keyed_hash(key, &s.data)?,
                    None => content_hash(&s.data)?,
                },
            })
        } else {
            None
        };
        let fetched = object.resource_version().unwrap_or(version);
        lock(&self.memo.hashes).insert(key, (fetched, hash.clone()));
        Ok(hash)
    }

    /// Whether `desired` (a server-side apply body) needs writing over `live`, the cached object: it does
    /// unless fledge's last successful apply there was this very body and every field in it still holds.
    pub fn needs_apply(
        &self,
        key: &str,
        desired: &serde_json::Value,
        live: Option<&serde_json::Value>,
    ) -> bool {
        let Some(live) = live else { return true };
        let same_body = lock(&self.memo.applied).get(key).map(String::as_str) == Some(&body_hash(desired));
        !(same_body && contains(live, desired))
    }

    /// Remembers that `desired` was applied at `key`.
    pub fn applied(&self, key: &str, desired: &serde_json::Value) {
        lock(&self.memo.applied).insert(key.to_owned(), body_hash(desired));
    }

    /// Forgets what was applied at `key` (the object was deleted or handed back).
    pub fn forget(&self, key: &str) {
        lock(&self.memo.applied).remove(key);
    }
}

/// A full ConfigMap or Secret, for the tracking decision.
#[derive(Debug, Clone)]
pub enum ConfigOrSecret {
    ConfigMap(ConfigMap),
    Secret(Secret),
}

impl ConfigOrSecret {
    fn resource_version(&self) -> Option<String> {
        match self {
            Self::ConfigMap(c) => c.resource_version(),
            Self::Secret(s) => s.resource_version(),
        }
    }
}

fn dynamic(
    store: Option<&(Store<DynamicObject>, ApiResource)>,
    namespace: &str,
    name: &str,
) -> Option<DynamicObject> {
    let (store, resource) = store?;
    store
        .get(&ObjectRef::new_with(name, resource.clone()).within(namespace))
        .map(|o| unpacked(&o))
}

/// What the cache keeps of a VirtualService's or DestinationRule's body (all but its metadata): its JSON
/// text, one allocation, instead of a `serde_json::Value` tree — a node and a key string per field, several
/// times the text. At N = 1,000 canaries their 3,000 trees were ~14 MB of the controller's heap (heaptrack).
/// A reconcile reads them back with [`unpacked`] (microseconds for a body of a few hundred bytes).
pub fn pack(o: &mut DynamicObject) {
    if !o.data.is_string() {
        o.data = serde_json::Value::String(o.data.to_string());
    }
}

/// A cached object as the API served it (the inverse of [`pack`]).
fn unpacked(o: &DynamicObject) -> DynamicObject {
    match &o.data {
        serde_json::Value::String(text) => DynamicObject {
            types: o.types.clone(),
            metadata: o.metadata.clone(),
            // Written by `pack` from a Value: it parses. Should it not, the object reads as without a body,
            // which fledge re-applies: the same as an object someone emptied.
            data: serde_json::from_str(text).unwrap_or_default(),
        },
        _ => o.clone(),
    }
}

fn body_hash(body: &serde_json::Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.to_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Whether every field of `wanted` holds in `live`: objects by key (extra keys in `live` are fine: server
/// defaults, other managers' fields), arrays element by element with the same length, scalars equal.
pub fn contains(live: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, wanted) {
        (Value::Object(l), Value::Object(w)) => w.iter().all(|(k, wv)| {
            l.get(k).is_some_and(|lv| contains(lv, wv)) || (wv.is_null() && !l.contains_key(k))
        }),
        (Value::Array(l), Value::Array(w)) => {
            l.len() == w.len() && l.iter().zip(w).all(|(lv, wv)| contains(lv, wv))
        }
        (Value::Number(l), Value::Number(w)) => l.as_f64() == w.as_f64(),
        _ => live == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::{Index, Stores, contains};
    use kube::runtime::reflector::{self, store::Writer};
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn filled<K>(writer: &mut Writer<K>)
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
    }

    #[tokio::test]
    async fn every_waiter_wakes_when_the_caches_fill() {
        let (deployments, mut d) = reflector::store();
        let (services, mut s) = reflector::store();
        let (autoscalers, mut a) = reflector::store();
        let (config_maps, mut c) = crate::cluster::versions::versions();
        let (secrets, mut x) = crate::cluster::versions::versions();
        let stores = Stores {
            deployments,
            services,
            autoscalers,
            virtual_services: None,
            destination_rules: None,
            config_maps,
            secrets,
        };
        let index = Index::new(stores, None);
        // Many reconciles wait at once, as at a controller's start.
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let index = index.clone();
                tokio::spawn(async move { index.ready().await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        filled(&mut d);
        filled(&mut s);
        filled(&mut a);
        for writer in [&mut c, &mut x] {
            let _ = writer.apply::<k8s_openapi::api::core::v1::ConfigMap>(Event::Init);
            let _ = writer.apply::<k8s_openapi::api::core::v1::ConfigMap>(Event::InitDone);
        }
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("a waiter slept on after the caches filled")
                .expect("waiter task");
        }
    }

    #[test]
    fn a_cached_istio_object_reads_back_as_the_api_served_it() {
        let served: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "podinfo", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"hosts": ["podinfo"], "http": [{"route": [
                {"destination": {"host": "podinfo-primary"}, "weight": 80},
                {"destination": {"host": "podinfo-canary"}, "weight": 20}]}]}
        }))
        .expect("object");
        let mut cached = served.clone();
        super::pack(&mut cached);
        assert!(cached.data.is_string(), "kept as one string");
        super::pack(&mut cached);
        assert_eq!(super::unpacked(&cached), served, "packing twice changes nothing");
        assert_eq!(
            super::unpacked(&served),
            served,
            "an unpacked object reads as itself"
        );
    }

    #[test]
    fn server_defaults_and_other_managers_fields_do_not_count_as_a_change() {
        let desired = json!({"spec": {"ports": [{"name": "http", "port": 9898}], "selector": {"app": "p"}}});
        let live = json!({
            "metadata": {"uid": "1", "annotations": {"kubectl": "x"}},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 9898, "protocol": "TCP"}],
                     "selector": {"app": "p"}, "type": "ClusterIP"}
        });
        assert!(contains(&live, &desired));
    }

    #[test]
    fn an_edited_value_a_missing_field_or_a_different_list_is_a_change() {
        let desired = json!({"spec": {"http": [{"route": [{"weight": 80}, {"weight": 20}]}]}});
        let edited = json!({"spec": {"http": [{"route": [{"weight": 100}, {"weight": 0}]}]}});
        let shorter = json!({"spec": {"http": [{"route": [{"weight": 80}]}]}});
        let missing = json!({"spec": {}});
        for live in [edited, shorter, missing] {
            assert!(!contains(&live, &desired), "{live}");
        }
    }

    #[test]
    fn numbers_compare_by_value_and_a_null_means_absent() {
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
        assert!(contains(&json!({}), &json!({"gone": null})));
        assert!(!contains(&json!({"gone": 1}), &json!({"gone": null})));
    }
}
