//! Pure builders and readings of Deployments: the primary copy, readiness, the revision hash.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{ClusterError, primary_name};
use crate::lifecycle::Workload;

/// The first of `selector_labels` that selects the target's pods, and its value (`app: podinfo`).
pub fn selector_label(
    target: &Deployment,
    selector_labels: &[String],
) -> Result<(String, String), ClusterError> {
    let labels = target
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref());
    selector_labels
        .iter()
        .find_map(|l| labels.and_then(|m| m.get(l)).map(|v| (l.clone(), v.clone())))
        .ok_or_else(|| ClusterError::NoSelectorLabel {
            deployment: target.metadata.name.clone().unwrap_or_default(),
            labels: selector_labels.join(", "),
        })
}

/// Rolled out and serving: the controller saw the latest spec, every replica is updated and available and no
/// old replica is left (Flagger's readiness with a 100 % threshold).
pub fn reading(d: &Deployment, now: Timestamp) -> Workload {
    reading_with(d, now, 100)
}

/// Like [`reading`], ready once `ready_percent` % of the updated replicas are available (Flagger's
/// `primaryReadyThreshold` / `canaryReadyThreshold`).
pub fn reading_with(d: &Deployment, now: Timestamp, ready_percent: u32) -> Workload {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    // Rounded up: 80 % of 4 replicas needs all 4.
    let needed = (i64::from(updated) * i64::from(ready_percent.min(100)) + 99) / 100;
    let ready = observed
        && updated >= replicas
        && status.replicas.unwrap_or(0) <= updated
        && i64::from(status.available_replicas.unwrap_or(0)) >= needed;
    let conditions = status.conditions.unwrap_or_default();
    let stalled = conditions
        .iter()
        .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    // Flagger's clock for the progress deadline: how long the Deployment has lacked its minimum replicas.
    let unavailable_secs = conditions
        .iter()
        .find(|c| {
            c.type_ == "Available"
                && c.status == "False"
                && c.reason.as_deref() == Some("MinimumReplicasUnavailable")
        })
        .and_then(|c| c.last_update_time.as_ref().or(c.last_transition_time.as_ref()))
        .map_or(0, |since| {
            u64::try_from(now.duration_since(since.0).as_secs()).unwrap_or(0)
        });
    Workload {
        replicas,
        ready,
        stalled,
        unavailable_secs,
    }
}

/// The Deployment's pod selector as a label-selector query (`app=podinfo,tier in (web)`).
pub fn pod_selector(d: &Deployment) -> Option<String> {
    let selector = &d.spec.as_ref()?.selector;
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

/// Pods that a Service would send traffic to right now: Ready and not terminating. A Deployment's status
/// can say "ready" from before a scale-down whose pods are still going away; pods cannot.
pub fn serving_pods(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

/// The ConfigMaps and Secrets a pod template references: `configmap/<name>`, `secret/<name>`.
pub fn referenced_configs(template: &PodTemplateSpec) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let Some(spec) = template.spec.as_ref() else {
        return refs;
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            refs.insert(format!("configmap/{}", cm.name));
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            refs.insert(format!("secret/{name}"));
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                refs.insert(format!("configmap/{}", cm.name));
            }
            if let Some(s) = &source.secret {
                refs.insert(format!("secret/{}", s.name));
            }
        }
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for from in c.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                refs.insert(format!("configmap/{}", cm.name));
            }
            if let Some(s) = &from.secret_ref {
                refs.insert(format!("secret/{}", s.name));
            }
        }
        for var in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(k) = &var.config_map_key_ref {
                refs.insert(format!("configmap/{}", k.name));
            }
            if let Some(k) = &var.secret_key_ref {
                refs.insert(format!("secret/{}", k.name));
            }
        }
    }
    refs
}

/// A short content hash (16 hex digits of sha256) of any serialisable value; JSON maps are key-sorted, so
/// equal content always hashes equal.
pub fn content_hash<T: serde::Serialize>(value: &T) -> Result<String, ClusterError> {
    Ok(short_hex(&Sha256::digest(hash_input(value)?.as_bytes())))
}

/// Like [`content_hash`], keyed: HMAC-SHA256 under `key` (16 hex digits), so a checksum shown in status
/// reveals nothing of low-entropy content (a Secret's password) to whoever cannot read the key.
pub fn keyed_hash<T: serde::Serialize>(key: &[u8], value: &T) -> Result<String, ClusterError> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    Ok(short_hex(
        ring::hmac::sign(&key, hash_input(value)?.as_bytes()).as_ref(),
    ))
}

/// What a hash is taken of: the value as JSON text, maps key-sorted.
fn hash_input<T: serde::Serialize>(value: &T) -> Result<String, ClusterError> {
    serde_json::to_value(value)
        .map(|json| json.to_string())
        .map_err(|source| ClusterError::Encode {
            what: "hash input",
            source,
        })
}

/// The first 8 bytes of a digest as 16 hex digits.
fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The revision a target offers: its pod template plus the content of the configs it references.
pub fn revision(target: &Deployment, configs: &BTreeMap<String, String>) -> Result<String, ClusterError> {
    let template = target.spec.as_ref().map(|s| &s.template);
    content_hash(&(template, configs))
}

/// The primary's pod template: the target's, with the selector label rewritten to `<value>-primary` and
/// tracked config references renamed to their `-primary` copies. Nothing random is added, so copying an
/// unchanged template never rolls the primary.
pub fn primary_template(
    target: &Deployment,
    label: &(String, String),
    tracked: &BTreeSet<String>,
) -> Result<PodTemplateSpec, ClusterError> {
    let mut template = target
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(label.0.clone(), format!("{}-primary", label.1));
    // Rename references through JSON: every `name` under a configMap/secret reference that we track.
    let mut json = serde_json::to_value(&template).map_err(|source| ClusterError::Encode {
        what: "pod template",
        source,
    })?;
    rename_config_refs(&mut json, tracked);
    serde_json::from_value(json).map_err(|source| ClusterError::Encode {
        what: "pod template",
        source,
    })
}

fn rename_config_refs(value: &mut serde_json::Value, tracked: &BTreeSet<String>) {
    const CONFIGMAP_KEYS: &[&str] = &["configMap", "configMapRef", "configMapKeyRef"];
    const SECRET_KEYS: &[&str] = &["secret", "secretRef", "secretKeyRef"];
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                let kind = if CONFIGMAP_KEYS.contains(&key.as_str()) {
                    Some(("configmap", "name"))
                } else if SECRET_KEYS.contains(&key.as_str()) {
                    // Volumes name secrets `secretName`; references use `name`.
                    Some(("secret", if key == "secret" { "secretName" } else { "name" }))
                } else {
                    None
                };
                if let (Some((kind, field)), Some(obj)) = (kind, child.as_object_mut())
                    && let Some(serde_json::Value::String(name)) = obj.get_mut(field)
                    && tracked.contains(&format!("{kind}/{name}"))
                {
                    *name = format!("{name}-primary");
                }
                rename_config_refs(child, tracked);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| rename_config_refs(i, tracked)),
        _ => {}
    }
}

/// The whole `<target>-primary` Deployment as fledge applies it, owned by the Canary.
pub fn primary_deployment(
    target: &Deployment,
    label: &(String, String),
    tracked: &BTreeSet<String>,
    replicas: i32,
    owner: OwnerReference,
) -> Result<Deployment, ClusterError> {
    let spec = target.spec.clone().unwrap_or_default();
    let name = primary_name(target.metadata.name.as_deref().unwrap_or_default());
    let mut labels = target.metadata.labels.clone().unwrap_or_default();
    labels.insert(label.0.clone(), format!("{}-primary", label.1));
    labels.extend(super::ownership_labels(&owner));
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: target.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    label.0.clone(),
                    format!("{}-primary", label.1),
                )])),
                ..Default::default()
            },
            template: primary_template(target, label, tracked)?,
            min_ready_seconds: spec.min_ready_seconds,
            progress_deadline_seconds: spec.progress_deadline_seconds,
            revision_history_limit: spec.revision_history_limit,
            strategy: spec.strategy,
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::default_labels;

    fn target() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "test", "labels": {"app": "podinfo", "team": "a"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo"}},
                    "spec": {
                        "containers": [{
                            "name": "podinfod", "image": "stefanprodan/podinfo:3.1.0",
                            "envFrom": [{"configMapRef": {"name": "podinfo-env"}}],
                            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "podinfo-token", "key": "t"}}}]
                        }],
                        "volumes": [{"name": "cfg", "configMap": {"name": "podinfo-config"}},
                                    {"name": "tls", "secret": {"secretName": "podinfo-tls"}}]
                    }
                }
            }
        }))
        .expect("deployment")
    }

    fn owner() -> OwnerReference {
        crate::cluster::test_owner("u")
    }

    #[test]
    fn finds_the_first_known_selector_label() {
        assert_eq!(
            selector_label(&target(), &default_labels()).expect("label"),
            ("app".to_owned(), "podinfo".to_owned())
        );
    }

    #[test]
    fn configured_selector_labels_are_tried_in_order_and_named_when_none_matches() {
        let mut t = target();
        let selector = &mut t.spec.as_mut().expect("spec").selector;
        selector.match_labels = Some(BTreeMap::from([
            ("app".to_owned(), "podinfo".to_owned()),
            ("app.kubernetes.io/instance".to_owned(), "podinfo-eu".to_owned()),
        ]));
        let custom = vec!["app.kubernetes.io/instance".to_owned(), "app".to_owned()];
        assert_eq!(
            selector_label(&t, &custom).expect("label"),
            ("app.kubernetes.io/instance".to_owned(), "podinfo-eu".to_owned())
        );
        let err = selector_label(&t, &["tier".to_owned(), "role".to_owned()]).expect_err("no label");
        assert_eq!(
            err.to_string(),
            "deployment podinfo has no selector label among tier, role"
        );
    }

    #[test]
    fn primary_selects_rewritten_labels_and_uses_primary_config_copies() {
        let t = target();
        let tracked = referenced_configs(&t.spec.as_ref().expect("spec").template);
        assert_eq!(
            tracked.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "configmap/podinfo-config",
                "configmap/podinfo-env",
                "secret/podinfo-tls",
                "secret/podinfo-token"
            ]
        );
        let label = selector_label(&t, &default_labels()).expect("label");
        let p = primary_deployment(&t, &label, &tracked, 3, owner()).expect("primary");
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["metadata"]["name"], "podinfo-primary");
        assert_eq!(
            json["spec"]["selector"]["matchLabels"],
            serde_json::json!({"app": "podinfo-primary"})
        );
        assert_eq!(
            json["spec"]["template"]["metadata"]["labels"]["app"],
            "podinfo-primary"
        );
        let pod = &json["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"][0]["configMap"]["name"], "podinfo-config-primary");
        assert_eq!(pod["volumes"][1]["secret"]["secretName"], "podinfo-tls-primary");
        assert_eq!(
            pod["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            "podinfo-env-primary"
        );
        assert_eq!(
            pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "podinfo-token-primary"
        );
        assert_eq!(json["metadata"]["labels"]["team"], "a");
    }

    #[test]
    fn copying_the_same_template_twice_gives_the_same_primary() {
        let t = target();
        let label = selector_label(&t, &default_labels()).expect("label");
        let a = primary_template(&t, &label, &BTreeSet::new()).expect("a");
        let b = primary_template(&t, &label, &BTreeSet::new()).expect("b");
        assert_eq!(
            a, b,
            "no random annotation: an unchanged template must not roll the primary"
        );
    }

    #[test]
    fn revision_changes_with_the_image_and_with_config_content() {
        let t = target();
        let none = BTreeMap::new();
        let r1 = revision(&t, &none).expect("r1");
        assert_eq!(r1, revision(&t, &none).expect("again"));
        let mut t2 = t.clone();
        t2.spec
            .as_mut()
            .expect("spec")
            .template
            .spec
            .as_mut()
            .expect("pod")
            .containers[0]
            .image = Some("stefanprodan/podinfo:3.1.1".into());
        assert_ne!(r1, revision(&t2, &none).expect("r2"));
        let configs = BTreeMap::from([("configmap/podinfo-config".to_owned(), "abc".to_owned())]);
        assert_ne!(r1, revision(&t, &configs).expect("r3"));
    }

    #[test]
    fn readiness_needs_every_replica_updated_and_available() {
        let mut d = target();
        d.metadata.generation = Some(2);
        d.status = serde_json::from_value(serde_json::json!({
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3
        }))
        .ok();
        let now = Timestamp::now();
        assert!(reading(&d, now).ready);
        d.status.as_mut().expect("status").available_replicas = Some(2);
        assert!(!reading(&d, now).ready);
        d.status.as_mut().expect("status").observed_generation = Some(1);
        d.status.as_mut().expect("status").available_replicas = Some(3);
        assert!(
            !reading(&d, now).ready,
            "the controller has not seen the latest spec"
        );
    }

    #[test]
    fn a_ready_threshold_below_100_needs_only_that_share_of_updated_replicas_available() {
        let mut d = target();
        d.spec.as_mut().expect("spec").replicas = Some(4);
        d.status = serde_json::from_value(serde_json::json!({
            "replicas": 4, "updatedReplicas": 4, "availableReplicas": 3
        }))
        .ok();
        let now = Timestamp::now();
        assert!(!reading(&d, now).ready);
        assert!(reading_with(&d, now, 75).ready);
        assert!(!reading_with(&d, now, 80).ready, "80 % of 4 rounds up to 4");
    }

    #[test]
    fn the_deadline_clock_runs_from_when_the_deployment_lost_its_minimum_replicas() {
        let mut d = target();
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().expect("time");
        let status = |available: &str, reason: &str| {
            serde_json::from_value(serde_json::json!({
                "conditions": [
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                     "lastUpdateTime": "2026-11-27T09:00:00Z", "lastTransitionTime": "2026-11-27T09:00:00Z"},
                    {"type": "Available", "status": available, "reason": reason,
                     "lastUpdateTime": "2026-11-27T11:58:20Z", "lastTransitionTime": "2026-11-27T11:58:20Z"}
                ]
            }))
            .ok()
        };
        d.status = status("False", "MinimumReplicasUnavailable");
        assert_eq!(reading(&d, now).unavailable_secs, 100);
        // Available, or an old Progressing timestamp, starts no clock: a long rollout is not "late".
        d.status = status("True", "MinimumReplicasAvailable");
        assert_eq!(reading(&d, now).unavailable_secs, 0);
    }

    #[test]
    fn pod_selector_renders_labels_and_expressions() {
        let mut d = target();
        assert_eq!(pod_selector(&d).as_deref(), Some("app=podinfo"));
        d.spec.as_mut().expect("spec").selector.match_expressions =
            serde_json::from_value(serde_json::json!([
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]))
            .ok();
        assert_eq!(
            pod_selector(&d).as_deref(),
            Some("app=podinfo,tier in (web,api),!legacy")
        );
    }

    #[test]
    fn terminating_or_unready_pods_do_not_serve() {
        let pod = |ready: &str, terminating: bool| -> Pod {
            let mut p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}
            }))
            .expect("pod");
            if terminating {
                p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
            }
            p
        };
        let pods = [pod("True", false), pod("True", true), pod("False", false)];
        assert_eq!(serving_pods(&pods), 1);
    }
}
