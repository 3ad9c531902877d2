//! Whether the controller's watches run: every list and watch request reports its answer (the client's
//! `ObserveLayer`), and `/healthz` fails once one has been failing longer than [`FAILING_LIMIT`] — a
//! controller that cannot see the cluster acts on a stale picture, and a restart is the honest answer. A
//! quiet watch is a healthy one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a watch may keep failing (the API down, RBAC revoked) before the controller reports unhealthy.
pub const FAILING_LIMIT: Duration = Duration::from_secs(60);

/// A failing watch: since when, and its last error.
type Failing = (Instant, String);

/// Per watch: whether (and since when) it fails; and how long a failure is tolerated.
#[derive(Debug, Clone)]
pub struct WatchHealth {
    watches: Arc<Mutex<BTreeMap<String, Option<Failing>>>>,
    limit: Duration,
}

impl Default for WatchHealth {
    fn default() -> Self {
        Self::with_limit(FAILING_LIMIT)
    }
}

impl WatchHealth {
    /// Health that reports a watch once it has failed for longer than `limit`.
    pub fn with_limit(limit: Duration) -> Self {
        Self {
            watches: Arc::default(),
            limit,
        }
    }

    /// Records a watch's answer: `Ok` clears it, an error starts (or continues) its failing time.
    pub fn observe(&self, watch: &str, outcome: Result<(), String>) {
        let mut map = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(watch.to_owned()).or_default();
        match outcome {
            Ok(()) => *entry = None,
            Err(why) => {
                let since = entry.as_ref().map_or_else(Instant::now, |(since, _)| *since);
                *entry = Some((since, why));
            }
        }
    }

    /// `Err` naming every watch failing for longer than the limit, with its last error.
    pub fn check(&self) -> Result<(), String> {
        let limit = self.limit;
        let map = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let failing: Vec<String> = map
            .iter()
            .filter_map(|(watch, state)| {
                let (since, why) = state.as_ref()?;
                (since.elapsed() >= limit)
                    .then(|| format!("watch {watch} failing for {}s: {why}", since.elapsed().as_secs()))
            })
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_failing_past_the_limit_is_named_and_one_answer_clears_it() {
        let patient = WatchHealth::with_limit(Duration::from_secs(3600));
        patient.observe("services", Err("403 forbidden".into()));
        assert!(patient.check().is_ok(), "not failing long enough yet");
        let health = WatchHealth::with_limit(Duration::ZERO);
        health.observe("deployments", Ok(()));
        health.observe("services", Err("403 forbidden".into()));
        let why = health.check().expect_err("failing");
        assert!(
            why.contains("watch services failing") && why.contains("403 forbidden"),
            "{why}"
        );
        assert!(!why.contains("deployments"), "{why}");
        health.observe("services", Ok(()));
        assert!(health.check().is_ok());
    }

    #[test]
    fn repeated_errors_keep_the_time_of_the_first() {
        let health = WatchHealth::with_limit(Duration::from_millis(15));
        health.observe("canaries", Err("one".into()));
        std::thread::sleep(Duration::from_millis(20));
        health.observe("canaries", Err("two".into()));
        let why = health.check().expect_err("failing since the first error");
        assert!(why.contains("two"), "the last error is shown: {why}");
    }
}
