//! What fledge wrote to a Canary that the watch cache may not show yet. A reconcile starts from the cached
//! Canary; when that is a version fledge has since written over, it starts from what the write returned
//! instead, so a stale status never repeats a step — and no GET is needed to be sure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::api::Canary;

/// The resourceVersions fledge has written over, the object its last write returned, and when.
type Record = (Vec<String>, Arc<Canary>, Instant);

/// How long a record is kept: far longer than any cache lag, short enough that the records of deleted
/// Canaries (whose last write removed the finalizer) do not pile up.
const KEEP: Duration = Duration::from_secs(600);

/// Per Canary uid, its [`Record`].
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, Record>>);

impl Written {
    /// The freshest Canary known: `cached`, unless it is a version a write of fledge's has replaced.
    pub fn freshest(&self, cached: Arc<Canary>) -> Arc<Canary> {
        let (Some(uid), Some(version)) = (cached.uid(), cached.resource_version()) else {
            return cached;
        };
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(&uid) {
            Some((replaced, latest, _)) if replaced.contains(&version) => latest.clone(),
            // The cache shows our last write, or something written after it: it is the freshest.
            Some(_) => {
                map.remove(&uid);
                cached
            }
            None => cached,
        }
    }

    /// Records that a write made on `before` returned `after`.
    pub fn record(&self, before: &Canary, after: Canary) {
        let (Some(uid), Some(version)) = (before.uid(), before.resource_version()) else {
            return;
        };
        // Kept like the cache keeps a Canary: a write's answer carries managedFields, a few KB per Canary
        // that nothing reads (one record per Canary lives until its next reconcile).
        let mut after = after;
        super::watches::slim(&mut after);
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (after, now) = (Arc::new(after), Instant::now());
        map.retain(|_, (_, _, at)| now.duration_since(*at) < KEEP);
        match map.get_mut(&uid) {
            Some((replaced, latest, at)) if latest.resource_version().as_ref() == Some(&version) => {
                replaced.push(version);
                *latest = after;
                *at = now;
            }
            _ => {
                map.insert(uid, (vec![version], after, now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: &str, phase: &str) -> Canary {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1", "resourceVersion": version},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898}},
            "status": {"phase": phase},
        }))
        .expect("canary")
    }

    fn version(c: &Canary) -> String {
        c.resource_version().unwrap_or_default()
    }

    #[test]
    fn a_cache_behind_our_writes_yields_what_the_last_write_returned() {
        let written = Written::default();
        written.record(&at("1", "Initialized"), at("2", "Initialized"));
        written.record(&at("2", "Initialized"), at("3", "Progressing"));
        for stale in ["1", "2"] {
            let fresh = written.freshest(Arc::new(at(stale, "Initialized")));
            assert_eq!(version(&fresh), "3", "cache at {stale}");
        }
    }

    #[test]
    fn a_cache_that_caught_up_or_moved_on_is_used_and_the_record_dropped() {
        let written = Written::default();
        written.record(&at("1", "Initialized"), at("2", "Progressing"));
        assert_eq!(version(&written.freshest(Arc::new(at("5", "Failed")))), "5");
        // Dropped: an old version seen later (a relist) is taken as it is.
        assert_eq!(version(&written.freshest(Arc::new(at("1", "Initialized")))), "1");
    }

    #[test]
    fn a_recorded_write_keeps_no_managed_fields() {
        let written = Written::default();
        let mut answer = at("2", "Progressing");
        answer.metadata.managed_fields = Some(vec![Default::default()]);
        written.record(&at("1", "Initialized"), answer);
        let fresh = written.freshest(Arc::new(at("1", "Initialized")));
        assert_eq!(version(&fresh), "2");
        assert!(fresh.managed_fields().is_empty());
    }

    #[test]
    fn a_write_on_an_unrecorded_version_starts_a_new_record() {
        let written = Written::default();
        written.record(&at("1", "Initialized"), at("2", "Progressing"));
        written.record(&at("7", "Progressing"), at("8", "Progressing"));
        assert_eq!(version(&written.freshest(Arc::new(at("7", "Progressing")))), "8");
        assert_eq!(version(&written.freshest(Arc::new(at("1", "Initialized")))), "1");
    }
}
