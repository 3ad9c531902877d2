//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never act at once: the holder
//! renews every third of the lease duration; a standby takes the Lease once it has gone unrenewed for a
//! full duration. A leader that cannot renew stops acting before its lease could have expired.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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

/// What the Lease says about us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Leader,
    /// Someone else holds an unexpired Lease.
    Follower,
}

/// Pure: may `me` take or keep a Lease in this state at `now`?
pub fn may_hold(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == me => true,
        Some(_) => {
            let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            renewed.is_none_or(|t| t.checked_add(duration).is_ok_and(|expiry| expiry < now))
        }
    }
}

/// One attempt to acquire or renew; conflicts (another replica wrote first) mean follower.
pub async fn try_acquire(client: &Client, lease: &LeaseConfig) -> Result<Standing, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let now = Timestamp::now();
    let current = api.get_opt(&lease.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    if !may_hold(spec, &lease.identity, now) {
        return Ok(Standing::Follower);
    }
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

/// Waits until this replica holds the Lease.
pub async fn acquire(client: &Client, lease: &LeaseConfig) {
    let retry = (lease.duration / 5).max(Duration::from_millis(500));
    loop {
        match try_acquire(client, lease).await {
            Ok(Standing::Leader) => {
                tracing::info!(lease = lease.name, identity = lease.identity, "became leader");
                return;
            }
            Ok(Standing::Follower) => {}
            Err(e) => tracing::warn!("leader election: {e}"),
        }
        tokio::time::sleep(retry).await;
    }
}

/// Renews until a renewal fails for longer than two thirds of the duration, or another replica holds the
/// Lease; then returns — the caller must stop acting.
pub async fn keep(client: &Client, lease: &LeaseConfig) {
    let every = lease.duration / 3;
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match try_acquire(client, lease).await {
            Ok(Standing::Leader) => last_renewed = tokio::time::Instant::now(),
            Ok(Standing::Follower) => {
                tracing::error!("lost the lease to another replica");
                return;
            }
            Err(e) => tracing::warn!("cannot renew the lease: {e}"),
        }
        if last_renewed.elapsed() > lease.duration * 2 / 3 {
            tracing::error!("lease not renewed in time; stopping");
            return;
        }
    }
}

/// Gives the Lease up on shutdown so a standby takes over at once.
pub async fn release(client: &Client, lease: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        let now = Timestamp::now();
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                now.checked_sub(SignedDuration::from_secs(renewed_secs_ago))
                    .expect("time"),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_fresh_lease_of_another_replica_is_respected_and_an_expired_one_is_taken() {
        let now = Timestamp::now();
        assert!(!may_hold(Some(&held_by("b", 5)), "a", now));
        assert!(may_hold(Some(&held_by("b", 20)), "a", now));
        assert!(
            may_hold(Some(&held_by("a", 5)), "a", now),
            "our own lease is renewed"
        );
        assert!(may_hold(None, "a", now), "no lease yet");
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("b", 1)
        };
        assert!(may_hold(Some(&released), "a", now), "a released lease is free");
    }
}
