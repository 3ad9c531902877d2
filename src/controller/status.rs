//! Between the Canary's status and the lifecycle's state, and the conditions fledge reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{CanaryStatus, Phase};
use crate::lifecycle::State;
use crate::router::affinity::Cookies;

/// The lifecycle's view of a status.
pub fn state_of(status: Option<&CanaryStatus>) -> State {
    let Some(s) = status else { return State::default() };
    let count = |v: i32| u32::try_from(v).unwrap_or(0);
    let policy = s.policy.as_ref();
    State {
        phase: s.phase,
        phase_since: s
            .last_transition_time
            .as_ref()
            .map(|t| crate::cluster::observe::unix_seconds(t.0)),
        canary_weight: count(s.canary_weight),
        iterations: count(s.iterations),
        failed_checks: count(s.failed_checks),
        intervals_at_weight: count(s.intervals_at_weight),
        last_applied: s.last_applied_spec.clone(),
        last_promoted: s.last_promoted_spec.clone(),
        tracked_configs: s.tracked_configs.clone(),
        policy_state: policy.and_then(|p| p.state.clone()),
        history: policy.map(|p| p.history.clone()).unwrap_or_default(),
        paused_by: s.paused_by.clone(),
        gate_opened_by: s.gate_opened_by.clone(),
    }
}

/// Writes `state` into a copy of `old`, stamping transition times when the phase changes.
pub fn with_state(old: Option<&CanaryStatus>, state: &State, generation: Option<i64>) -> CanaryStatus {
    let mut s = old.cloned().unwrap_or_default();
    let count = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let now = Time(Timestamp::now());
    if s.phase != state.phase || s.last_transition_time.is_none() {
        s.last_transition_time = Some(now.clone());
    }
    s.phase = state.phase;
    s.canary_weight = count(state.canary_weight);
    s.iterations = count(state.iterations);
    s.failed_checks = count(state.failed_checks);
    s.intervals_at_weight = count(state.intervals_at_weight);
    s.last_applied_spec = state.last_applied.clone();
    s.last_promoted_spec = state.last_promoted.clone();
    s.tracked_configs = state.tracked_configs.clone();
    s.paused_by = state.paused_by.clone();
    s.gate_opened_by = state.gate_opened_by.clone();
    s.observed_generation = generation;
    if let Some(phase) = state.phase {
        set_condition(&mut s, promoted_condition(phase, generation));
    }
    s
}

/// Flagger's `Promoted` condition: True when Initialized/Succeeded, False when Failed, Unknown otherwise.
fn promoted_condition(phase: Phase, generation: Option<i64>) -> Condition {
    let status = match phase {
        Phase::Initialized | Phase::Succeeded => "True",
        Phase::Failed => "False",
        _ => "Unknown",
    };
    let message = match phase {
        Phase::Initialized => "Deployment initialization completed.",
        Phase::Succeeded => "Canary analysis completed successfully, promotion finished.",
        Phase::Failed => "Canary analysis failed, Deployment scaled to zero.",
        _ => "New revision detected, progressing canary analysis.",
    };
    condition("Promoted", status, &format!("{phase:?}"), message, generation)
}

/// A condition stamped now.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Replaces the condition of the same type, keeping its transition time when its status did not change.
pub fn set_condition(status: &mut CanaryStatus, new: Condition) {
    upsert_condition(&mut status.conditions, new);
}

/// [`set_condition`] on any list of conditions.
pub fn upsert_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conditions.push(new);
    }
}

/// The session-affinity cookies a status holds.
pub fn cookies_of(status: Option<&CanaryStatus>) -> Cookies {
    status.map_or_else(Cookies::default, |s| Cookies {
        canary: s.session_affinity_cookie.clone(),
        primary: s.primary_session_affinity_cookie.clone(),
        previous: s.previous_session_affinity_cookie.clone(),
    })
}

/// Keeps `cookies` in the status, under Flagger's field names.
pub fn set_cookies(status: &mut CanaryStatus, cookies: &Cookies) {
    status.session_affinity_cookie = cookies.canary.clone();
    status.primary_session_affinity_cookie = cookies.primary.clone();
    status.previous_session_affinity_cookie = cookies.previous.clone();
}

/// The status patch that turns `old` into `new` (RFC 7386 merge patch): only what changed, `null` for what
/// went. Cheaper for the API server than applying the whole status: no YAML to parse, no merge by schema.
pub fn status_patch(old: Option<&CanaryStatus>, new: &CanaryStatus) -> serde_json::Value {
    let old = old.and_then(|s| serde_json::to_value(s).ok());
    // A status serialises to an object without fail: its maps are keyed by strings.
    let new = serde_json::to_value(new).unwrap_or_default();
    match old {
        Some(old) => merge_diff(&old, &new),
        None => new,
    }
}

/// The merge patch from `old` to `new`: objects are compared key by key, anything else replaced whole.
fn merge_diff(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return new.clone();
    };
    let changed = new.iter().filter_map(|(key, value)| match old.get(key) {
        Some(was) if was == value => None,
        Some(was) => Some((key.clone(), merge_diff(was, value))),
        None => Some((key.clone(), value.clone())),
    });
    let gone = old
        .keys()
        .filter(|key| !new.contains_key(*key))
        .map(|key| (key.clone(), Value::Null));
    Value::Object(changed.chain(gone).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::api::PolicyStatus;

    /// RFC 7386: what the API server does with a merge patch.
    fn merged(target: &Value, patch: &Value) -> Value {
        let Value::Object(patch) = patch else {
            return patch.clone();
        };
        let mut out = target.as_object().cloned().unwrap_or_default();
        for (key, value) in patch {
            if value.is_null() {
                out.remove(key);
            } else {
                let was = out.get(key).cloned().unwrap_or(Value::Null);
                out.insert(key.clone(), merged(&was, value));
            }
        }
        Value::Object(out)
    }

    fn progressing(weight: i32) -> CanaryStatus {
        CanaryStatus {
            phase: Some(Phase::Progressing),
            canary_weight: weight,
            paused_by: Some("alice".into()),
            policy: Some(PolicyStatus {
                source: "builtin:default".into(),
                digest: "sha256:1".into(),
                last_decision: Some("set-weight 20".into()),
                ..PolicyStatus::default()
            }),
            ..CanaryStatus::default()
        }
    }

    #[test]
    fn a_status_patch_carries_only_what_changed_and_nulls_what_went() {
        let old = progressing(20);
        let mut new = progressing(40);
        new.paused_by = None;
        new.policy.as_mut().expect("policy").last_decision = Some("set-weight 40".into());
        let patch = status_patch(Some(&old), &new);
        assert_eq!(
            patch,
            json!({"canaryWeight": 40, "pausedBy": null, "policy": {"lastDecision": "set-weight 40"}})
        );
        let applied = merged(&serde_json::to_value(&old).expect("old"), &patch);
        assert_eq!(applied, serde_json::to_value(&new).expect("new"));
    }

    #[test]
    fn the_first_status_is_written_whole_and_an_unchanged_one_patches_nothing() {
        let new = progressing(20);
        assert_eq!(status_patch(None, &new), serde_json::to_value(&new).expect("new"));
        assert_eq!(status_patch(Some(&new), &new), json!({}));
    }
}
