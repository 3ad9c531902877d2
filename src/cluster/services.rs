//! Pure builders of the three Services: `<svc>-primary`, `<svc>-canary` (owned by the Canary), and the apex
//! `<svc>` pointed at the primary's pods. The apex keeps the user's original selector in an annotation the
//! first time fledge changes it, so deletion can restore it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{CanaryService, ValidSpec};

/// Annotation on the apex Service holding the selector it had before fledge (JSON).
pub const ORIGINAL_SELECTOR: &str = "fledge.dev/original-selector";

/// Which of the three Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Apex,
    Primary,
    Canary,
}

impl Role {
    /// The Service's name for the apex Service name `apex`.
    pub fn name(self, apex: &str) -> String {
        match self {
            Role::Apex => apex.to_owned(),
            Role::Primary => format!("{apex}-primary"),
            Role::Canary => format!("{apex}-canary"),
        }
    }
}

/// Builds the Service for `role`. `live` is that Service as found: a user's apex keeps its original selector
/// and is never owned; Services fledge owns keep the values of `unmanagedMetadata` keys they carry; headless
/// applies only where the Service is created so (a cluster IP cannot be taken away). `extra_ports` are
/// appended after the canary's port (see [`discovered_ports`]).
pub fn service(
    role: Role,
    spec: &ValidSpec,
    svc: &CanaryService,
    label: &(String, String),
    owner: &OwnerReference,
    live: Option<&Service>,
    extra_ports: &[ServicePort],
) -> Service {
    let name = role.name(&spec.service);
    let (selected, meta) = match role {
        Role::Apex => (format!("{}-primary", label.1), svc.apex.as_ref()),
        Role::Primary => (format!("{}-primary", label.1), svc.primary.as_ref()),
        Role::Canary => (label.1.clone(), svc.canary.as_ref()),
    };
    let user_apex = live.filter(|s| role == Role::Apex && !super::owned_by(&s.metadata, owner));
    let meta = meta.cloned().unwrap_or_default();
    let mut annotations = meta.annotations;
    let mut labels = meta.labels;
    if let Some(found) = user_apex {
        // A user-owned apex: remember its selector once, never own it.
        let recorded = found
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ORIGINAL_SELECTOR))
            .cloned();
        let original = recorded.unwrap_or_else(|| {
            let selector = found
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            serde_json::to_string(&selector).unwrap_or_else(|_| "{}".into())
        });
        annotations.insert(ORIGINAL_SELECTOR.to_owned(), original);
    } else if let (Some(found), Some(unmanaged)) = (live, &svc.unmanaged_metadata) {
        keep_unmanaged(&mut labels, found.metadata.labels.as_ref(), &unmanaged.labels);
        keep_unmanaged(
            &mut annotations,
            found.metadata.annotations.as_ref(),
            &unmanaged.annotations,
        );
    }
    labels.insert(label.0.clone(), name.clone());
    if user_apex.is_none() {
        labels.extend(super::ownership_labels(owner));
    }
    let headless = svc.headless && live.is_none_or(|s| cluster_ip(s) == Some("None"));
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: user_apex.and_then(|s| s.metadata.namespace.clone()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: user_apex.is_none().then(|| vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            // A user's apex keeps its type (a LoadBalancer or NodePort stays one), as in Flagger.
            type_: user_apex.is_none().then(|| "ClusterIP".into()),
            cluster_ip: headless.then(|| "None".to_owned()),
            traffic_distribution: svc.traffic_distribution.clone(),
            selector: Some(BTreeMap::from([(label.0.clone(), selected)])),
            ports: Some(
                std::iter::once(ServicePort {
                    name: Some(spec.port_name.clone()),
                    port: spec.port,
                    protocol: Some("TCP".into()),
                    target_port: Some(svc.target_port.clone().unwrap_or(IntOrString::Int(spec.port))),
                    app_protocol: svc.app_protocol.clone(),
                    ..Default::default()
                })
                .chain(extra_ports.iter().cloned())
                .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// Flagger's `unmanagedMetadata`: a listed key the Service already carries keeps its value (fledge writes
/// it back unchanged rather than its own, so it neither changes nor, by dropping it, removes it).
fn keep_unmanaged(
    ours: &mut BTreeMap<String, String>,
    found: Option<&BTreeMap<String, String>>,
    keys: &[String],
) {
    for key in keys {
        if let Some(value) = found.and_then(|f| f.get(key)) {
            ours.insert(key.clone(), value.clone());
        }
    }
}

fn cluster_ip(s: &Service) -> Option<&str> {
    s.spec.as_ref()?.cluster_ip.as_deref()
}

/// Flagger's `service.portDiscovery`: every other TCP container port of the target, named after the
/// container port (or `tcp-<port>`), so the Services expose them too. Empty unless the Canary asks.
pub fn discovered_ports(target: &Deployment, spec: &ValidSpec, svc: &CanaryService) -> Vec<ServicePort> {
    if !svc.port_discovery {
        return Vec::new();
    }
    let main_target = svc.target_port.clone().unwrap_or(IntOrString::Int(spec.port));
    let containers = target
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    let mut seen = BTreeSet::from([spec.port]);
    let mut names = BTreeSet::from([spec.port_name.clone()]);
    let mut ports = Vec::new();
    for p in containers.iter().flat_map(|c| c.ports.iter().flatten()) {
        let tcp = p.protocol.as_deref().unwrap_or("TCP") == "TCP";
        let is_main = match &main_target {
            IntOrString::Int(n) => *n == p.container_port,
            IntOrString::String(name) => p.name.as_ref() == Some(name),
        };
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| format!("tcp-{}", p.container_port));
        if !tcp || is_main || !seen.insert(p.container_port) || !names.insert(name.clone()) {
            continue;
        }
        ports.push(ServicePort {
            name: Some(name),
            port: p.container_port,
            protocol: Some("TCP".into()),
            target_port: Some(IntOrString::Int(p.container_port)),
            ..Default::default()
        });
    }
    ports
}

/// The selector to restore on the apex: what the annotation recorded, else `{label: value}`.
pub fn original_selector(apex: &Service, label: &(String, String)) -> BTreeMap<String, String> {
    apex.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINAL_SELECTOR))
        .and_then(|json| serde_json::from_str(json).ok())
        .filter(|m: &BTreeMap<String, String>| !m.is_empty())
        .unwrap_or_else(|| BTreeMap::from([label.clone()]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanarySpec, validate};

    fn fixtures() -> (ValidSpec, CanaryService, (String, String), OwnerReference) {
        let spec: CanarySpec = serde_json::from_value(serde_json::json!({
            "targetRef": {"kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "targetPort": 9898},
            "analysis": {"stepWeight": 20}
        }))
        .expect("spec");
        let owner = crate::cluster::test_owner("u");
        (
            validate(&spec).expect("valid"),
            spec.service,
            ("app".into(), "podinfo".into()),
            owner,
        )
    }

    fn selector(s: &Service) -> BTreeMap<String, String> {
        s.spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default()
    }

    #[test]
    fn primary_and_apex_select_primary_pods_canary_selects_the_target() {
        let (spec, svc, label, owner) = fixtures();
        let sel = |role| selector(&service(role, &spec, &svc, &label, &owner, None, &[]));
        assert_eq!(
            sel(Role::Apex),
            BTreeMap::from([("app".into(), "podinfo-primary".into())])
        );
        assert_eq!(
            sel(Role::Primary),
            BTreeMap::from([("app".into(), "podinfo-primary".into())])
        );
        assert_eq!(
            sel(Role::Canary),
            BTreeMap::from([("app".into(), "podinfo".into())])
        );
        let canary = service(Role::Canary, &spec, &svc, &label, &owner, None, &[]);
        assert_eq!(canary.metadata.name.as_deref(), Some("podinfo-canary"));
        let port = &canary.spec.expect("spec").ports.expect("ports")[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 9898));
    }

    #[test]
    fn a_user_apex_keeps_its_original_selector_and_is_not_owned() {
        let (spec, svc, label, owner) = fixtures();
        let user: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"selector": {"app": "podinfo"}, "ports": [{"port": 9898}]}
        }))
        .expect("svc");
        let apex = service(Role::Apex, &spec, &svc, &label, &owner, Some(&user), &[]);
        assert_eq!(apex.metadata.owner_references, None);
        assert_eq!(
            apex.spec.as_ref().and_then(|s| s.type_.as_deref()),
            None,
            "its type is the user's"
        );
        assert_eq!(
            original_selector(&apex, &label),
            BTreeMap::from([("app".into(), "podinfo".into())])
        );
        // Applied again over an apex that already points at the primary, the recorded original survives.
        let again = service(Role::Apex, &spec, &svc, &label, &owner, Some(&apex), &[]);
        assert_eq!(
            original_selector(&again, &label),
            BTreeMap::from([("app".into(), "podinfo".into())])
        );
    }

    #[test]
    fn port_discovery_adds_the_targets_other_tcp_ports_to_every_service() {
        let (spec, mut svc, label, owner) = fixtures();
        let target: Deployment = serde_json::from_value(serde_json::json!({
            "spec": {
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"spec": {"containers": [
                    {"name": "podinfod", "ports": [
                        {"name": "http", "containerPort": 9898},
                        {"name": "http-metrics", "containerPort": 9797},
                        {"containerPort": 9999},
                        {"name": "statsd", "containerPort": 8125, "protocol": "UDP"}
                    ]},
                    {"name": "sidecar", "ports": [{"name": "admin", "containerPort": 9797}]}
                ]}}
            }
        }))
        .expect("target");
        assert!(
            discovered_ports(&target, &spec, &svc).is_empty(),
            "off unless asked"
        );
        svc.port_discovery = true;
        let extra = discovered_ports(&target, &spec, &svc);
        let named: Vec<(Option<&str>, i32)> = extra.iter().map(|p| (p.name.as_deref(), p.port)).collect();
        assert_eq!(named, [(Some("http-metrics"), 9797), (Some("tcp-9999"), 9999)]);
        let canary = service(Role::Canary, &spec, &svc, &label, &owner, None, &extra);
        let ports = canary.spec.and_then(|s| s.ports).unwrap_or_default();
        assert_eq!(
            ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            [9898, 9797, 9999]
        );
    }

    fn cluster_ip_of(s: &Service) -> Option<&str> {
        cluster_ip(s)
    }

    #[test]
    fn headless_services_are_created_without_a_cluster_ip_and_an_allocated_one_is_left_alone() {
        let (spec, mut svc, label, owner) = fixtures();
        svc.headless = true;
        svc.traffic_distribution = Some("PreferClose".into());
        let created = service(Role::Primary, &spec, &svc, &label, &owner, None, &[]);
        assert_eq!(cluster_ip_of(&created), Some("None"));
        assert_eq!(
            created
                .spec
                .as_ref()
                .and_then(|s| s.traffic_distribution.as_deref()),
            Some("PreferClose")
        );
        let mut allocated = created.clone();
        allocated.spec.as_mut().expect("spec").cluster_ip = Some("10.0.0.7".into());
        let again = service(Role::Primary, &spec, &svc, &label, &owner, Some(&allocated), &[]);
        assert_eq!(cluster_ip_of(&again), None, "a cluster IP is immutable");
        let still = service(Role::Primary, &spec, &svc, &label, &owner, Some(&created), &[]);
        assert_eq!(cluster_ip_of(&still), Some("None"));
    }

    #[test]
    fn unmanaged_label_and_annotation_keys_keep_the_value_the_service_carries() {
        let (spec, mut svc, label, owner) = fixtures();
        svc.primary = Some(crate::api::CustomMetadata {
            labels: BTreeMap::from([("team".into(), "ours".into())]),
            annotations: BTreeMap::from([("mesh/sidecar".into(), "ours".into())]),
        });
        svc.unmanaged_metadata = Some(crate::api::UnmanagedMetadata {
            labels: vec!["team".into()],
            annotations: vec!["mesh/sidecar".into(), "absent".into()],
        });
        let created = service(Role::Primary, &spec, &svc, &label, &owner, None, &[]);
        let meta = |s: &Service, key: &str| {
            let m = &s.metadata;
            m.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .or_else(|| m.annotations.as_ref().and_then(|a| a.get(key)))
                .cloned()
        };
        assert_eq!(
            meta(&created, "team").as_deref(),
            Some("ours"),
            "created with the Canary's"
        );
        let mut edited = created.clone();
        edited
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("team".into(), "theirs".into());
        edited
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert("mesh/sidecar".into(), "theirs".into());
        let again = service(Role::Primary, &spec, &svc, &label, &owner, Some(&edited), &[]);
        assert_eq!(meta(&again, "team").as_deref(), Some("theirs"));
        assert_eq!(meta(&again, "mesh/sidecar").as_deref(), Some("theirs"));
        assert_eq!(meta(&again, "absent"), None, "an unmanaged key is never added");
    }
}
