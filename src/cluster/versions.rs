//! The resourceVersion of every ConfigMap (or Secret) a watch has seen, by namespace and name: all a reconcile
//! reads of them before it decides to fetch one ([`super::index::Index::config_hash`]). A reflector store of
//! `PartialObjectMeta` kept ~740 B per object for the ~60 B fledge reads, and a cluster holds thousands of
//! them (`make scale`'s noise: 10,000, ~7 MB); this map keeps two short strings per object.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher;

type Map = HashMap<Box<str>, Box<str>>;

fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

/// The read side: shared by the [`super::index::Index`] and every reconcile.
#[derive(Clone)]
pub struct Versions {
    map: Arc<RwLock<Map>>,
    listed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Versions")
            .field("objects", &read(&self.map).len())
            .finish()
    }
}

fn read(map: &RwLock<Map>) -> std::sync::RwLockReadGuard<'_, Map> {
    map.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The write side, fed every event of one watch ([`VersionsWriter::apply`]).
#[derive(Debug)]
pub struct VersionsWriter {
    versions: Versions,
    /// What a (re-)list has brought so far; swapped in whole at its end, as a reflector store does, so a
    /// reconcile never reads a half-listed map.
    listing: Option<Map>,
}

/// An empty map and its writer.
pub fn versions() -> (Versions, VersionsWriter) {
    let (listed, _) = tokio::sync::watch::channel(false);
    let versions = Versions {
        map: Arc::default(),
        listed: Arc::new(listed),
    };
    let writer = VersionsWriter {
        versions: versions.clone(),
        listing: None,
    };
    (versions, writer)
}

impl Versions {
    /// The resourceVersion of `namespace/name`, `None` when the watch has not seen it (or saw it deleted).
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        read(&self.map).get(&key(namespace, name)).map(|v| v.to_string())
    }

    /// Resolves once the first list is in. Every waiter wakes (a watch channel, unlike kube's store).
    pub async fn ready(&self) {
        let mut listed = self.listed.subscribe();
        let _ = listed.wait_for(|listed| *listed).await;
    }
}

impl VersionsWriter {
    /// Applies one watch event and returns the objects it touched, for the triggers: an added, changed or
    /// deleted object at once; what a (re-)list brought only at its end, once the map holds it — the order
    /// `watches::touched_once_stored` keeps for the reflector stores. Listed objects come back as name,
    /// namespace and resourceVersion only (all a trigger reads), made one at a time.
    pub fn apply<K>(
        &mut self,
        event: watcher::Event<PartialObjectMeta<K>>,
    ) -> Box<dyn Iterator<Item = PartialObjectMeta<K>> + Send>
    where
        K: Send + 'static,
    {
        let entry = |o: &PartialObjectMeta<K>| {
            let m = &o.metadata;
            let version = m.resource_version.clone().unwrap_or_default().into_boxed_str();
            let (namespace, name) = (m.namespace.as_deref(), m.name.as_deref());
            (
                key(namespace.unwrap_or_default(), name.unwrap_or_default()),
                version,
            )
        };
        match event {
            watcher::Event::Init => {
                self.listing = Some(Map::new());
                Box::new(std::iter::empty())
            }
            watcher::Event::InitApply(o) => {
                let (key, version) = entry(&o);
                self.listing.get_or_insert_with(Map::new).insert(key, version);
                Box::new(std::iter::empty())
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let released: Vec<(Box<str>, Box<str>)> =
                    listed.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                *self.write() = listed;
                self.versions.listed.send_replace(true);
                Box::new(released.into_iter().map(|(key, version)| {
                    let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
                    PartialObjectMeta {
                        types: None,
                        metadata: ObjectMeta {
                            name: Some(name.to_owned()),
                            namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                            resource_version: Some(version.into_string()),
                            ..ObjectMeta::default()
                        },
                        _phantom: std::marker::PhantomData,
                    }
                }))
            }
            watcher::Event::Apply(o) => {
                let (key, version) = entry(&o);
                self.write().insert(key, version);
                Box::new(std::iter::once(o))
            }
            watcher::Event::Delete(o) => {
                self.write().remove(&entry(&o).0);
                Box::new(std::iter::once(o))
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map> {
        self.versions
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;

    fn meta(name: &str, rv: &str) -> PartialObjectMeta<ConfigMap> {
        let mut o = PartialObjectMeta::<ConfigMap>::default();
        o.metadata.name = Some(name.to_owned());
        o.metadata.namespace = Some("ns".to_owned());
        o.metadata.resource_version = Some(rv.to_owned());
        o
    }

    fn touched(it: Box<dyn Iterator<Item = PartialObjectMeta<ConfigMap>> + Send>) -> Vec<String> {
        let mut names: Vec<String> = it
            .map(|o| format!("{}@{}", o.name_any(), o.resource_version().unwrap_or_default()))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_relist_replaces_the_map_at_its_end_and_wakes_what_it_brought_only_then() {
        let (versions, mut writer) = versions();
        let waiter = {
            let versions = versions.clone();
            tokio::spawn(async move { versions.ready().await })
        };
        assert!(touched(writer.apply(watcher::Event::Init)).is_empty());
        assert!(touched(writer.apply(watcher::Event::InitApply(meta("a", "1")))).is_empty());
        assert_eq!(versions.get("ns", "a"), None, "not before the list ends");
        assert_eq!(touched(writer.apply(watcher::Event::InitDone)), ["a@1"]);
        assert_eq!(versions.get("ns", "a").as_deref(), Some("1"));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("ready once listed")
            .expect("waiter");

        assert_eq!(
            touched(writer.apply(watcher::Event::Apply(meta("b", "2")))),
            ["b@2"]
        );
        assert_eq!(versions.get("ns", "b").as_deref(), Some("2"));

        // A re-list after the watch fell behind: `a` changed, `b` was deleted meanwhile, `c` is new.
        let _ = touched(writer.apply(watcher::Event::Init));
        let _ = touched(writer.apply(watcher::Event::InitApply(meta("a", "3"))));
        let _ = touched(writer.apply(watcher::Event::InitApply(meta("c", "3"))));
        assert_eq!(
            versions.get("ns", "a").as_deref(),
            Some("1"),
            "the old map serves meanwhile"
        );
        assert_eq!(touched(writer.apply(watcher::Event::InitDone)), ["a@3", "c@3"]);
        assert_eq!(versions.get("ns", "a").as_deref(), Some("3"));
        assert_eq!(
            versions.get("ns", "b"),
            None,
            "gone from the re-list, gone from the map"
        );

        assert_eq!(
            touched(writer.apply(watcher::Event::Delete(meta("c", "4")))),
            ["c@4"]
        );
        assert_eq!(versions.get("ns", "c"), None);
        assert_eq!(versions.get("other", "a"), None, "namespaces are apart");
    }
}
