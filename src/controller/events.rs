//! Kubernetes events on Canaries, one per distinct message, like Flagger's: "Advance podinfo.test canary
//! weight 20" and "... weight 40" are two events (kube's Recorder would fold them into one series because
//! it keys on reason and action, not on the note). A repeated identical message bumps its series count, which
//! is written at most once per [`SERIES_REFRESH`] (and, for a message that stopped repeating, within
//! [`SERIES_FLUSH`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::{Arc, Mutex, Weak};

use crate::api::Canary;
use crate::lifecycle::EventKind;

/// Identical messages within this window count into one event's series.
const SERIES_WINDOW: Duration = Duration::from_secs(600);
/// How often a repeated message's series reaches the API: every repeat counts at once in memory, and the
/// count is written with the first repeat after this long (client-go's events library writes series every
/// 6 minutes; rollouts last minutes, so sooner here). A halted canary repeats "waiting for rollout to
/// finish" every interval: at 1,000 canaries, writing each repeat was 0.4 requests per canary per interval.
const SERIES_REFRESH: Duration = Duration::from_secs(60);
/// How often the refresh task writes the counts no later repeat wrote (client-go's period too): a quiet
/// message's last count is not urgent, and these writes should not crowd the ones of live rollouts.
const SERIES_FLUSH: Duration = Duration::from_secs(360);
/// The API's limit on an event's note.
const MAX_NOTE_BYTES: usize = 1024;
/// Remembered messages; older ones are forgotten first.
const MAX_REMEMBERED: usize = 4096;

type Memory = Mutex<HashMap<(String, String), Seen>>;

/// Publishes events as `fledge`.
pub struct EventRecorder {
    client: Client,
    instance: String,
    seen: Arc<Memory>,
}

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    /// The last occurrence, and its wall-clock time (the series' lastObservedTime).
    at: Instant,
    observed: Timestamp,
    /// When the event or its series was last written, and the count written then.
    written: Instant,
    written_count: i32,
}

/// What one occurrence of a message asks of the API.
#[derive(Debug, PartialEq, Eq)]
enum Occurrence {
    /// Not seen within the window: a new event.
    New,
    /// Counted; the series is written later.
    Counted,
    /// Write the series of event `name`: `count` occurrences.
    Series { name: String, count: i32 },
}

impl Seen {
    fn new(name: String, namespace: String, now: Instant) -> Self {
        Self {
            name,
            namespace,
            count: 1,
            at: now,
            observed: Timestamp::now(),
            written: now,
            written_count: 1,
        }
    }

    /// Counts an occurrence at `now`.
    fn occur(&mut self, now: Instant) -> Occurrence {
        if now.duration_since(self.at) >= SERIES_WINDOW {
            return Occurrence::New;
        }
        self.count += 1;
        self.at = now;
        self.observed = Timestamp::now();
        self.flush(now)
            .map_or(Occurrence::Counted, |(name, count)| Occurrence::Series {
                name,
                count,
            })
    }

    /// The series to write at `now`, if occurrences are unwritten and the last write is a refresh old.
    fn flush(&mut self, now: Instant) -> Option<(String, i32)> {
        if self.count == self.written_count || now.duration_since(self.written) < SERIES_REFRESH {
            return None;
        }
        self.written = now;
        self.written_count = self.count;
        Some((self.name.clone(), self.count))
    }
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl EventRecorder {
    /// A recorder, and (in the running tokio runtime) the task that writes counted repeats no later repeat
    /// wrote; it ends with the recorder.
    pub fn new(client: Client, instance: String) -> Self {
        let seen = Arc::<Memory>::default();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(flush_series(client.clone(), Arc::downgrade(&seen)));
        }
        Self {
            client,
            instance,
            seen,
        }
    }

    /// Records `note` on `canary`. The memory of past messages is locked only to read and update it, never
    /// across a request: held over each write, it let one event be written at a time for all canaries, and
    /// at 1,000 canaries every reconcile queued behind it (`make scale`).
    pub async fn publish(
        &self,
        canary: &Canary,
        kind: EventKind,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let namespace = canary.namespace().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let note = crate::text::clip(note, MAX_NOTE_BYTES);
        let key = (canary.uid().unwrap_or_default(), note.clone());
        let now = MicroTime(Timestamp::now());
        let occurrence = self
            .seen()
            .get_mut(&key)
            .map_or(Occurrence::New, |s| s.occur(Instant::now()));
        if occurrence == Occurrence::Counted {
            return Ok(());
        }
        if let Occurrence::Series { name, count } = occurrence {
            match write_series(&api, &name, count, now.0).await {
                Ok(_) => return Ok(()),
                // Expired (or deleted) meanwhile: the message starts a new event.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = Event {
            metadata: ObjectMeta {
                // client-go's naming: object name plus a unique hex suffix.
                name: Some(format!(
                    "{}.{:x}",
                    canary.name_any(),
                    Timestamp::now().as_nanosecond()
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            event_time: Some(now),
            type_: Some(match kind {
                EventKind::Normal => "Normal".into(),
                EventKind::Warning => "Warning".into(),
            }),
            reason: Some(reason.to_owned()),
            action: Some("Reconcile".into()),
            note: Some(note),
            regarding: Some(canary.object_ref(&())),
            reporting_controller: Some("fledge.dev/controller".into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        self.remember(key, created.name_any(), created.namespace().unwrap_or_default());
        Ok(())
    }

    fn remember(&self, key: (String, String), name: String, namespace: String) {
        let mut seen = self.seen();
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, s| s.at.elapsed() < SERIES_WINDOW);
        }
        seen.insert(key, Seen::new(name, namespace, Instant::now()));
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Seen>> {
        lock(&self.seen)
    }
}

fn lock(memory: &Memory) -> std::sync::MutexGuard<'_, HashMap<(String, String), Seen>> {
    memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes an event's series: `count` occurrences, the last at `observed`.
async fn write_series(
    api: &Api<Event>,
    name: &str,
    count: i32,
    observed: Timestamp,
) -> Result<Event, kube::Error> {
    let series = EventSeries {
        count,
        last_observed_time: MicroTime(observed),
    };
    let patch = serde_json::json!({"series": series});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Every [`SERIES_FLUSH`], writes the series of messages repeated since their last write and not since.
async fn flush_series(client: Client, memory: Weak<Memory>) {
    loop {
        tokio::time::sleep(SERIES_FLUSH).await;
        let Some(memory) = memory.upgrade() else {
            return;
        };
        let now = Instant::now();
        let due: Vec<(String, String, i32, Timestamp)> = lock(&memory)
            .values_mut()
            .filter_map(|s| {
                let (name, count) = s.flush(now)?;
                Some((s.namespace.clone(), name, count, s.observed))
            })
            .collect();
        drop(memory);
        for (namespace, name, count, observed) in due {
            let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
            if let Err(e) = write_series(&api, &name, count, observed).await {
                tracing::debug!("cannot write the series of event {namespace}/{name}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_message_is_counted_at_once_and_written_at_most_once_per_refresh() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut seen = Seen::new("podinfo.1".into(), "test".into(), start);
        assert_eq!(seen.occur(at(10)), Occurrence::Counted);
        assert_eq!(seen.occur(at(20)), Occurrence::Counted);
        // The first repeat a refresh after the create writes all counted so far.
        let written = Occurrence::Series {
            name: "podinfo.1".into(),
            count: 4,
        };
        assert_eq!(seen.occur(at(60)), written);
        assert_eq!(seen.occur(at(70)), Occurrence::Counted);
        assert_eq!(
            seen.occur(at(120)),
            Occurrence::Series {
                name: "podinfo.1".into(),
                count: 6
            }
        );
        // Repeats no later repeat wrote are written by the refresh.
        assert_eq!(seen.occur(at(130)), Occurrence::Counted);
        assert_eq!(seen.flush(at(150)), None, "not a refresh since the last write");
        assert_eq!(seen.flush(at(180)), Some(("podinfo.1".into(), 7)));
        assert_eq!(seen.flush(at(300)), None, "nothing new to write");
        // Quiet for longer than the window: the message makes a new event.
        assert_eq!(seen.occur(at(130) + SERIES_WINDOW), Occurrence::New);
    }
}
