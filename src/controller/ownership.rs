//! Which Canary may manage a target and a service name: one at a time, so two Canaries never overwrite each
//! other's routing or garbage-collect each other's objects. Pure: decided from the objects' claim labels and
//! the cached Canaries, before anything is written.

use crate::api::Canary;
use crate::cluster::canary_label_value;
use kube::ResourceExt;

/// Another Canary holds what this one would manage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The holder's name (same namespace).
    pub owner: String,
    /// What is held, e.g. `target podinfo` or `virtualservice/podinfo`.
    pub what: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is managed by canary {}; this canary touches nothing until that one is deleted",
            self.what, self.owner
        )
    }
}

/// What a Canary would manage: its target and its apex service name.
fn claims(canary: &Canary) -> (&str, String) {
    let target = canary.spec.target_ref.name.as_str();
    let service = canary
        .spec
        .service
        .name
        .clone()
        .unwrap_or_else(|| target.to_owned());
    (target, service)
}

/// Whether `me` must stand back. `labelled` are the claims found on existing objects (`what`, the value of
/// their `fledge.dev/canary` label); `others` are the Canaries of the cache, any namespace.
///
/// An object labelled for another Canary that still exists decides; with nothing labelled yet (both new),
/// the older Canary (then the smaller name) wins. A Canary being deleted or itself standing back claims
/// nothing new, so it never blocks a fresh one.
pub fn conflict(
    me: &Canary,
    labelled: &[(String, String)],
    others: &[std::sync::Arc<Canary>],
) -> Option<Conflict> {
    let mine = canary_label_value(&me.name_any());
    let same_namespace =
        |c: &&std::sync::Arc<Canary>| c.namespace() == me.namespace() && c.name_any() != me.name_any();
    for (what, holder) in labelled.iter().filter(|(_, holder)| *holder != mine) {
        if let Some(owner) = others
            .iter()
            .filter(same_namespace)
            .find(|c| canary_label_value(&c.name_any()) == *holder)
        {
            return Some(Conflict {
                owner: owner.name_any(),
                what: what.clone(),
            });
        }
    }
    if labelled.iter().any(|(_, holder)| *holder == mine) {
        return None;
    }
    let (target, service) = claims(me);
    let age = |c: &Canary| (c.creation_timestamp().map(|t| t.0), c.name_any());
    others
        .iter()
        .filter(same_namespace)
        .filter(|c| c.metadata.deletion_timestamp.is_none() && !stands_back(c))
        .filter(|c| age(c) < age(me))
        .find_map(|c| {
            let (their_target, their_service) = claims(c);
            let what = if their_target == target {
                format!("target {target}")
            } else if their_service == service {
                format!("service {service}")
            } else {
                return None;
            };
            Some(Conflict {
                owner: c.name_any(),
                what,
            })
        })
}

/// A Canary whose last status says it stands back for another.
pub fn stands_back(canary: &Canary) -> bool {
    canary.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Conflict" && c.status == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn canary(name: &str, target: &str, service: Option<&str>, created: &str) -> Arc<Canary> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "fledge.dev/v1alpha1", "kind": "Canary",
                "metadata": {"name": name, "namespace": "test", "creationTimestamp": created},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                         "service": {"port": 9898, "name": service}},
            }))
            .expect("canary"),
        )
    }

    const EARLY: &str = "2026-12-04T10:00:00Z";
    const LATE: &str = "2026-12-04T11:00:00Z";

    #[test]
    fn with_nothing_labelled_the_older_canary_of_a_shared_target_or_service_wins() {
        let a = canary("a", "podinfo", None, EARLY);
        let same_target = canary("b", "podinfo", Some("b"), LATE);
        let same_service = canary("c", "other", Some("podinfo"), LATE);
        let unrelated = canary("d", "other", Some("other"), LATE);
        let all = [
            a.clone(),
            same_target.clone(),
            same_service.clone(),
            unrelated.clone(),
        ];
        assert_eq!(conflict(&a, &[], &all), None);
        assert_eq!(
            conflict(&same_target, &[], &all),
            Some(Conflict {
                owner: "a".into(),
                what: "target podinfo".into()
            })
        );
        assert_eq!(
            conflict(&same_service, &[], &all).map(|c| (c.owner, c.what)),
            Some(("a".into(), "service podinfo".into()))
        );
        assert_eq!(conflict(&unrelated, &[], &[a, unrelated.clone()]), None);
    }

    #[test]
    fn an_object_labelled_for_an_existing_canary_decides_over_age() {
        let old = canary("old", "podinfo", None, EARLY);
        let holder = canary("holder", "podinfo", None, LATE);
        let all = [old.clone(), holder.clone()];
        let labelled = [("deployment/podinfo-primary".to_owned(), "holder".to_owned())];
        assert_eq!(conflict(&holder, &labelled, &all), None, "the holder keeps it");
        assert_eq!(
            conflict(&old, &labelled, &all).map(|c| (c.owner, c.what)),
            Some(("holder".into(), "deployment/podinfo-primary".into()))
        );
        // The labelled holder is gone: the claim is free again.
        assert_eq!(conflict(&old, &labelled, std::slice::from_ref(&old)), None);
    }

    #[test]
    fn a_canary_being_deleted_or_standing_back_blocks_no_one() {
        let mut going = (*canary("a", "podinfo", None, EARLY)).clone();
        going.metadata.deletion_timestamp = going.metadata.creation_timestamp.clone();
        let mut back = (*canary("b", "podinfo", None, EARLY)).clone();
        back.status = Some(crate::api::CanaryStatus {
            conditions: vec![crate::controller::status::condition(
                "Conflict", "True", "Held", "", None,
            )],
            ..Default::default()
        });
        let fresh = canary("c", "podinfo", None, LATE);
        assert_eq!(
            conflict(&fresh, &[], &[Arc::new(going), Arc::new(back), fresh.clone()]),
            None
        );
    }

    #[test]
    fn canaries_in_other_namespaces_never_conflict() {
        let mut elsewhere = (*canary("a", "podinfo", None, EARLY)).clone();
        elsewhere.metadata.namespace = Some("prod".into());
        let me = canary("b", "podinfo", None, LATE);
        assert_eq!(conflict(&me, &[], &[Arc::new(elsewhere), me.clone()]), None);
    }
}
