//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never act at once.
//!
//! - The holder renews every third of the lease duration, each attempt bounded by a timeout. It may act only
//!   until two thirds of the duration after its last successful renewal was *sent* — its [`Fence`] — so a
//!   leader cut off from the API (or frozen) stops before any other replica could take over.
//! - A standby judges another replica's Lease on its own clock, as client-go does: the Lease is free once
//!   its record (holder, renewTime, transitions) has stayed unchanged for a full duration as seen here — never
//!   by comparing the holder's renewTime with the local wall clock, which would trust two clocks to agree.
//! - Every write fledge sends passes the fence in the client stack (`telemetry::api_requests`): once it
//!   closes, writes are refused before they leave the process, so a reconcile still in flight writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Where and how long the Lease is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    pub duration: Duration,
}

impl LeaseConfig {
    /// How long a renewal sent at some instant lets this replica act: two thirds of the duration, so a
    /// standby (which waits a full duration after it last saw the Lease change) never overlaps.
    fn acts_for(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// The longest one acquire or renew attempt may take.
    fn attempt_timeout(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(200))
    }
}

/// What the Lease says about us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Leader,
    /// Someone else holds a Lease that has not yet gone unrenewed for its duration.
    Follower,
}

/// Until when this replica may write. Without leader election it is always open; with it, closed until the
/// Lease is held and extended by each renewal.
#[derive(Debug, Clone, Default)]
pub struct Fence(Option<Arc<Until>>);

#[derive(Debug)]
struct Until {
    origin: Instant,
    /// Milliseconds after `origin`; 0 is closed.
    millis: AtomicU64,
}

impl Fence {
    /// Always open: a single replica without leader election.
    pub fn open() -> Self {
        Self(None)
    }

    /// Closed until [`acquire`] extends it.
    pub fn closed() -> Self {
        Self(Some(Arc::new(Until {
            origin: Instant::now(),
            millis: AtomicU64::new(0),
        })))
    }

    /// Whether a write may be sent now.
    pub fn permits(&self) -> bool {
        self.remaining() > Duration::ZERO
    }

    /// How long writes remain permitted (`Duration::MAX` when always open).
    pub fn remaining(&self) -> Duration {
        let Some(until) = &self.0 else {
            return Duration::MAX;
        };
        Duration::from_millis(until.millis.load(Ordering::SeqCst)).saturating_sub(until.origin.elapsed())
    }

    /// Permits writes until `deadline`.
    fn extend_to(&self, deadline: Instant) {
        if let Some(until) = &self.0 {
            let millis = u64::try_from(deadline.saturating_duration_since(until.origin).as_millis())
                .unwrap_or(u64::MAX);
            until.millis.store(millis, Ordering::SeqCst);
        }
    }

    /// Refuses every write from now on.
    pub fn close(&self) {
        if let Some(until) = &self.0 {
            until.millis.store(0, Ordering::SeqCst);
        }
    }
}

/// What this replica has seen of the Lease, and since when (on its own clock) it has not changed.
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<Record>,
    since: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renewed: Option<Timestamp>,
    acquired: Option<Timestamp>,
    transitions: Option<i32>,
}

impl Observed {
    /// Notes what the Lease says at `now`; returns how long it has said exactly that.
    pub fn see(&mut self, spec: Option<&LeaseSpec>, now: Instant) -> Duration {
        let record = spec.map(|s| Record {
            holder: s.holder_identity.clone(),
            renewed: s.renew_time.as_ref().map(|t| t.0),
            acquired: s.acquire_time.as_ref().map(|t| t.0),
            transitions: s.lease_transitions,
        });
        if self.since.is_none() || self.record != record {
            self.record = record;
            self.since = Some(now);
        }
        self.since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

/// Pure: may `me` take or keep a Lease in this state, which has looked exactly like this for `unchanged`?
pub fn may_hold(spec: Option<&LeaseSpec>, me: &str, unchanged: Duration) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == me => true,
        Some(_) => {
            let duration = Duration::from_secs(
                spec.lease_duration_seconds
                    .unwrap_or(15)
                    .max(1)
                    .unsigned_abs()
                    .into(),
            );
            unchanged >= duration
        }
    }
}

/// One attempt to acquire or renew; conflicts (another replica wrote first) mean follower.
pub async fn try_acquire(
    client: &Client,
    lease: &LeaseConfig,
    observed: &mut Observed,
) -> Result<Standing, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let current = api.get_opt(&lease.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let unchanged = observed.see(spec, Instant::now());
    if !may_hold(spec, &lease.identity, unchanged) {
        return Ok(Standing::Follower);
    }
    // Only the holder reads its renewTime as a time; others only see that it changed.
    let now = Timestamp::now();
    let already = spec.and_then(|s| s.holder_identity.as_deref()) == Some(lease.identity.as_str());
    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let next = LeaseSpec {
        holder_identity: Some(lease.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(lease.duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: if already {
            spec.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if already { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    };
    let written = match current {
        None => {
            let lease_obj = Lease {
                metadata: ObjectMeta {
                    name: Some(lease.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(next),
            };
            api.create(&PostParams::default(), &lease_obj).await
        }
        Some(mut existing) => {
            // The resourceVersion we read makes this a compare-and-swap.
            existing.spec = Some(next);
            api.replace(&lease.name, &PostParams::default(), &existing).await
        }
    };
    match written {
        Ok(_) => Ok(Standing::Leader),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Standing::Follower),
        Err(e) => Err(e),
    }
}

/// Waits until this replica holds the Lease, then opens `fence` for as long as that acquisition allows.
pub async fn acquire(client: &Client, lease: &LeaseConfig, fence: &Fence) {
    let retry = (lease.duration / 5).max(Duration::from_millis(500));
    let mut observed = Observed::default();
    loop {
        let sent = Instant::now();
        match tokio::time::timeout(lease.attempt_timeout(), try_acquire(client, lease, &mut observed)).await {
            Ok(Ok(Standing::Leader)) => {
                fence.extend_to(sent + lease.acts_for());
                tracing::info!(lease = lease.name, identity = lease.identity, "became leader");
                return;
            }
            Ok(Ok(Standing::Follower)) => {}
            Ok(Err(e)) => tracing::warn!("leader election: {e}"),
            Err(_) => tracing::warn!("leader election: no answer within {:?}", lease.attempt_timeout()),
        }
        tokio::time::sleep(retry).await;
    }
}

/// Renews while this replica leads, extending `fence` with each renewal; returns — with the fence closed —
/// once another replica holds the Lease or the fence ran out before a renewal got through. The caller must
/// stop acting.
pub async fn keep(client: &Client, lease: &LeaseConfig, fence: &Fence) {
    let every = lease.duration / 3;
    let retry = (lease.duration / 10).max(Duration::from_millis(200));
    let mut observed = Observed::default();
    let mut wait = every;
    loop {
        // Never sleep past the fence: a frozen or slow process wakes to find it closed.
        tokio::time::sleep(wait.min(fence.remaining())).await;
        if !fence.permits() {
            break;
        }
        let sent = Instant::now();
        let attempt = fence.remaining().min(lease.attempt_timeout());
        match tokio::time::timeout(attempt, try_acquire(client, lease, &mut observed)).await {
            Ok(Ok(Standing::Leader)) => {
                fence.extend_to(sent + lease.acts_for());
                wait = every;
            }
            Ok(Ok(Standing::Follower)) => {
                fence.close();
                tracing::error!("lost the lease to another replica; stopping");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot renew the lease: {e}");
                wait = retry;
            }
            Err(_) => {
                tracing::warn!("cannot renew the lease: no answer within {attempt:?}");
                wait = retry;
            }
        }
        if !fence.permits() {
            break;
        }
    }
    fence.close();
    tracing::error!("lease not renewed in time; stopping");
}

/// Gives the Lease up on shutdown so a standby takes over at once; writes stop first.
pub async fn release(client: &Client, lease: &LeaseConfig, fence: &Fence) {
    fence.close();
    let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let attempt = async {
        if let Ok(Some(mut current)) = api.get_opt(&lease.name).await
            && let Some(spec) = current.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(lease.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Err(e) = api.replace(&lease.name, &PostParams::default(), &current).await {
                tracing::warn!("cannot release the lease: {e}");
            }
        }
    };
    if tokio::time::timeout(lease.attempt_timeout(), attempt)
        .await
        .is_err()
    {
        tracing::warn!(
            "cannot release the lease: no answer within {:?}",
            lease.attempt_timeout()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn another_replicas_lease_is_free_only_after_it_stayed_unchanged_for_a_full_duration() {
        let lease = held_by("b");
        assert!(!may_hold(Some(&lease), "a", Duration::from_secs(14)));
        assert!(may_hold(Some(&lease), "a", Duration::from_secs(15)));
        assert!(
            may_hold(Some(&held_by("a")), "a", Duration::ZERO),
            "our own lease is renewed"
        );
        assert!(may_hold(None, "a", Duration::ZERO), "no lease yet");
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("b")
        };
        assert!(
            may_hold(Some(&released), "a", Duration::ZERO),
            "a released lease is free"
        );
    }

    #[test]
    fn a_holders_clock_does_not_matter_only_whether_its_record_changes() {
        // A renewTime far in the past (a holder whose clock is behind) is still a live lease while it changes.
        let start = Instant::now();
        let mut observed = Observed::default();
        let mut lease = held_by("b");
        lease.renew_time = Some(MicroTime("2001-01-01T00:00:00Z".parse().expect("time")));
        assert_eq!(observed.see(Some(&lease), start), Duration::ZERO);
        let later = start + Duration::from_secs(10);
        assert_eq!(observed.see(Some(&lease), later), Duration::from_secs(10));
        lease.renew_time = Some(MicroTime("2001-01-01T00:00:05Z".parse().expect("time")));
        assert_eq!(
            observed.see(Some(&lease), later + Duration::from_secs(10)),
            Duration::ZERO,
            "a renewal restarts the count"
        );
        assert_eq!(
            observed.see(Some(&lease), later + Duration::from_secs(25)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn the_fence_opens_for_two_thirds_of_the_lease_after_the_renewal_was_sent_and_closes_at_once() {
        let lease = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
        };
        assert!(Fence::open().permits(), "no leader election: always");
        let fence = Fence::closed();
        assert!(!fence.permits(), "closed until acquired");
        fence.extend_to(Instant::now() + lease.acts_for());
        assert!(fence.permits());
        assert!(fence.remaining() <= Duration::from_secs(10));
        assert!(fence.remaining() > Duration::from_secs(9));
        let sent_long_ago = Instant::now()
            .checked_sub(Duration::from_secs(11))
            .expect("instant");
        fence.extend_to(sent_long_ago + lease.acts_for());
        assert!(
            !fence.permits(),
            "a renewal older than two thirds of the lease permits nothing"
        );
        fence.extend_to(Instant::now() + lease.acts_for());
        fence.close();
        assert!(!fence.permits());
    }
}
