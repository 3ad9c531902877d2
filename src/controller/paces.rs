//! When each canary in flight last ticked, to the nanosecond. The status's `lastTickTime` keeps whole seconds
//! (a Kubernetes time), which would let a tick come up to a second early; and a tick whose only news is its
//! own time (a canary halted "waiting for rollout to finish", for minutes while a primary rolls) is kept here
//! instead of in a status write: at 1,000 canaries those writes were most of the API server's work.
//!
//! The status still holds the time of the last tick that changed something. A controller that restarts (or a
//! new leader) sees only that one and ticks at once: for a halted canary that is one more halt, for the rest
//! it is what a restart does anyway (Flagger's tickers start afresh too).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::jiff::Timestamp;

use crate::api::CanaryStatus;

/// Far longer than any interval a canary is paced by (seconds); only the entries of Canaries deleted while
/// halted get this old.
const KEEP_SECS: i64 = 24 * 3600;

/// Per Canary uid, the time of its last paced tick.
#[derive(Debug, Default)]
pub struct Paces(Mutex<HashMap<String, Timestamp>>);

impl Paces {
    /// When the canary last ticked: the later of the status's tick time (whole seconds, and the last written)
    /// and the one kept here.
    pub fn last_tick(&self, uid: &str, status: Option<&CanaryStatus>) -> Option<Timestamp> {
        let written = status.and_then(|s| s.last_tick_time.as_ref()).map(|t| t.0);
        let kept = self.lock().get(uid).copied();
        written.max(kept)
    }

    /// A paced tick found due at `at`.
    pub fn ticked(&self, uid: &str, at: Timestamp) {
        let mut map = self.lock();
        // Ticks finish out of order: another canary's kept tick may be later than `at`, and stays.
        map.retain(|_, then| at.as_second() - then.as_second() < KEEP_SECS);
        map.insert(uid.to_owned(), at);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Timestamp>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `new` differs from `old` in nothing but the tick time: such a tick need not be written.
pub fn only_the_tick_moved(old: Option<&CanaryStatus>, new: &CanaryStatus) -> bool {
    let Some(old) = old else { return false };
    // A status without a tick time is written once, so a restarted controller keeps the interval.
    old.last_tick_time.is_some()
        && *old
            == CanaryStatus {
                last_tick_time: old.last_tick_time.clone(),
                ..new.clone()
            }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::Phase;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    fn status(weight: i32, tick: Option<i64>) -> CanaryStatus {
        CanaryStatus {
            phase: Some(Phase::Progressing),
            canary_weight: weight,
            last_tick_time: tick.map(|s| Time(at(s))),
            ..CanaryStatus::default()
        }
    }

    #[test]
    fn a_tick_that_changed_only_its_time_is_not_written_and_any_other_change_is() {
        let old = status(20, Some(0));
        assert!(only_the_tick_moved(Some(&old), &status(20, Some(10))));
        assert!(
            !only_the_tick_moved(Some(&old), &status(40, Some(10))),
            "the weight moved"
        );
        assert!(
            !only_the_tick_moved(None, &status(20, Some(10))),
            "nothing written yet"
        );
        assert!(
            !only_the_tick_moved(Some(&status(20, None)), &status(20, Some(10))),
            "the first tick time is written"
        );
    }

    #[test]
    fn the_last_tick_is_the_later_of_the_written_and_the_kept_one() {
        let paces = Paces::default();
        let written = status(20, Some(0));
        assert_eq!(paces.last_tick("u1", Some(&written)), Some(at(0)));
        paces.ticked("u1", at(10));
        assert_eq!(paces.last_tick("u1", Some(&written)), Some(at(10)));
        assert_eq!(paces.last_tick("u1", None), Some(at(10)));
        assert_eq!(
            paces.last_tick("u2", Some(&written)),
            Some(at(0)),
            "another canary's"
        );
        // A status written later than the kept tick (another replica's, say) wins.
        assert_eq!(paces.last_tick("u1", Some(&status(20, Some(30)))), Some(at(30)));
    }

    #[test]
    fn a_kept_tick_stays_when_another_canary_keeps_an_earlier_one() {
        let paces = Paces::default();
        paces.ticked("u2", at(11));
        paces.ticked("u1", at(10));
        assert_eq!(paces.last_tick("u2", None), Some(at(11)));
        assert_eq!(paces.last_tick("u1", None), Some(at(10)));
    }

    #[test]
    fn kept_ticks_of_canaries_gone_for_a_day_are_dropped() {
        let paces = Paces::default();
        paces.ticked("gone", at(0));
        paces.ticked("u1", at(24 * 3600 + 1));
        assert_eq!(paces.last_tick("gone", None), None);
        assert_eq!(paces.last_tick("u1", None), Some(at(24 * 3600 + 1)));
    }
}
