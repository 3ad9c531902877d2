//! Kubernetes events on Canaries, one per distinct message, like Flagger's: "Advance podinfo.test canary
//! weight 20" and "... weight 40" are two events (kube's Recorder would fold them into one series because
//! it keys on reason and action, not on the note). A repeated identical message bumps its series count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::Mutex;

use crate::api::Canary;
use crate::lifecycle::EventKind;

/// Identical messages within this window count into one event's series.
const SERIES_WINDOW: Duration = Duration::from_secs(600);
/// The API's limit on an event's note.
const MAX_NOTE_BYTES: usize = 1024;
/// Remembered messages; older ones are forgotten first.
const MAX_REMEMBERED: usize = 4096;

/// Publishes events as `fledge`.
pub struct EventRecorder {
    client: Client,
    instance: String,
    seen: Mutex<HashMap<(String, String), Seen>>,
}

struct Seen {
    name: String,
    count: i32,
    at: Instant,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl EventRecorder {
    pub fn new(client: Client, instance: String) -> Self {
        Self {
            client,
            instance,
            seen: Mutex::default(),
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
        if let Some((name, count)) = self.repeated(&key) {
            let series = EventSeries {
                count,
                last_observed_time: now.clone(),
            };
            let patch = serde_json::json!({"series": series});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
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
        self.remember(key, created.name_any());
        Ok(())
    }

    /// The event `key` was last published as and its next series count, when that was within the window.
    fn repeated(&self, key: &(String, String)) -> Option<(String, i32)> {
        let mut seen = self.seen();
        let s = seen.get_mut(key).filter(|s| s.at.elapsed() < SERIES_WINDOW)?;
        s.count += 1;
        s.at = Instant::now();
        Some((s.name.clone(), s.count))
    }

    fn remember(&self, key: (String, String), name: String) {
        let mut seen = self.seen();
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, s| s.at.elapsed() < SERIES_WINDOW);
        }
        seen.insert(
            key,
            Seen {
                name,
                count: 1,
                at: Instant::now(),
            },
        );
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Seen>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
