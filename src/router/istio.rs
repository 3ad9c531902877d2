//! Istio routing: pure builders of the VirtualService and DestinationRules, the weight reading, and the
//! server-side apply of all three.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::affinity::{self, Sticky};
use super::lay_over;
use crate::api::{CanaryService, ValidSpec};
use crate::cluster::{ClusterError, owned_by, ownership_labels};
use crate::lifecycle::Split;

/// Annotation keeping the spec a VirtualService had before fledge took it over (JSON).
pub const ORIGINAL_CONFIGURATION: &str = "fledge.dev/original-configuration";
/// Annotation with the canary weight fledge wrote, in the same write as the weights: the weight of record.
/// Weights that differ from it were edited by hand and are put back.
pub const CANARY_WEIGHT: &str = "fledge.dev/canary-weight";

pub const GROUP: &str = "networking.istio.io";
const VERSION: &str = "v1";

/// The networking.istio.io API resource of `kind`.
pub fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, kind))
}

/// The VirtualService for the apex host with `primary`/`canary` weights; weights are always written,
/// and the mirror when the split has one. Flagger's routing rules (`docs/flagger-routing.md`):
/// - hosts: the Canary's, plus the apex name unless listed already or one host is exactly `*`;
/// - gateways: the Canary's, or `mesh` when none (a delegate VirtualService has neither);
/// - destinations name the Service port when `portDiscovery` is on and the first gateway is not `mesh` or the
///   VirtualService is a delegate (a gateway routing a multi-port Service needs it);
/// - `appProtocol: TCP` routes `spec.tcp` (matched by `service.match` ports), with no http routes;
/// - A/B testing: each `analysis.match` condition laid over each `service.match` one;
/// - session affinity (`sticky`, not with A/B testing, as in Flagger): cookie routes ahead of the weighted one;
/// - `service.apex` labels and annotations go on the VirtualService as on the apex Service.
///
/// `existing` is the VirtualService as found, whose original spec is kept when fledge did not create it.
pub fn virtual_service(
    spec: &ValidSpec,
    svc: &CanaryService,
    analysis_match: Option<&Vec<Value>>,
    split: Split,
    owner: &OwnerReference,
    existing: Option<&DynamicObject>,
    sticky: Option<Sticky<'_>>,
) -> Value {
    let apex = &spec.service;
    let mut hosts: Vec<String> = svc.hosts.clone();
    if !hosts.iter().any(|h| h == apex || h == "*") {
        hosts.push(apex.clone());
    }
    let gateways = if svc.gateways.is_empty() {
        vec!["mesh".to_owned()]
    } else {
        svc.gateways.clone()
    };
    let route = |primary: u32, canary: u32| {
        json!([
            destination(svc, &format!("{apex}-primary"), primary),
            destination(svc, &format!("{apex}-canary"), canary),
        ])
    };
    let mut spec_json = if is_tcp(svc) {
        let mut tcp = json!({"route": route(split.primary, split.canary)});
        let ports: Vec<Value> = svc
            .match_
            .iter()
            .flatten()
            .filter_map(|m| m.get("port"))
            .map(|port| json!({"port": port}))
            .collect();
        if !ports.is_empty() {
            tcp["match"] = json!(ports);
        }
        json!({"hosts": hosts, "tcp": [tcp]})
    } else {
        json!({"hosts": hosts, "http": http_routes(svc, analysis_match, split, &route, apex, sticky)})
    };
    if !svc.delegation {
        spec_json["gateways"] = json!(gateways);
    } else {
        // A delegate VirtualService carries no hosts or gateways (Flagger writes the empty list of hosts).
        spec_json["hosts"] = json!([]);
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "VirtualService",
        "metadata": metadata(svc, split, owner, existing, apex),
        "spec": spec_json,
    })
}

/// Flagger's TCP switch: `service.appProtocol: TCP` (any case).
fn is_tcp(svc: &CanaryService) -> bool {
    svc.app_protocol
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("tcp"))
}

/// A weighted destination; with the Service port where Flagger writes it.
fn destination(svc: &CanaryService, host: &str, weight: u32) -> Value {
    let mut destination = json!({"host": host});
    let gateway = svc.gateways.first().is_some_and(|g| g != "mesh");
    if svc.port_discovery && (gateway || svc.delegation) {
        destination["port"] = json!({"number": svc.port});
    }
    json!({"destination": destination, "weight": weight})
}

/// The http routes: one weighted route with the Service's match and settings; for A/B testing the matched
/// route takes the weights and a second route keeps everything else on the primary.
fn http_routes(
    svc: &CanaryService,
    analysis_match: Option<&Vec<Value>>,
    split: Split,
    route: &dyn Fn(u32, u32) -> Value,
    apex: &str,
    sticky: Option<Sticky<'_>>,
) -> Vec<Value> {
    let mut http = json!({"route": route(split.primary, split.canary)});
    let passthrough = [
        ("match", svc.match_.as_ref().map(|m| json!(m))),
        ("rewrite", svc.rewrite.clone()),
        ("retries", svc.retries.clone()),
        ("headers", svc.headers.clone()),
        ("corsPolicy", svc.cors_policy.clone()),
        ("timeout", svc.timeout.as_ref().map(|t| json!(t))),
    ];
    for (key, value) in passthrough {
        if let Some(v) = value {
            http[key] = v;
        }
    }
    if let Some(percent) = split.mirror {
        http["mirror"] = json!({"host": format!("{apex}-canary")});
        // As Flagger: a share only when it is not all (Istio mirrors every request without one).
        if percent < 100 {
            http["mirrorPercentage"] = json!({"value": percent});
        }
    }
    match analysis_match.filter(|m| !m.is_empty()) {
        Some(ab) => {
            let mut matched = http.clone();
            matched["match"] = json!(lay_over(ab, svc.match_.as_deref().unwrap_or_default()));
            let mut rest = http;
            rest["route"] = route(100, 0);
            vec![matched, rest]
        }
        None => match sticky {
            Some(sticky) => affinity::routes(sticky, http, svc.match_.as_deref().unwrap_or_default()),
            None => vec![http],
        },
    }
}

/// Labelled even when it is the user's: the label says which Canary routes this host now. `service.apex`
/// metadata lies beneath fledge's own keys.
fn metadata(
    svc: &CanaryService,
    split: Split,
    owner: &OwnerReference,
    existing: Option<&DynamicObject>,
    apex: &str,
) -> Value {
    let custom = svc.apex.clone().unwrap_or_default();
    let mut labels = custom.labels;
    labels.extend(ownership_labels(owner));
    let mut annotations = custom.annotations;
    annotations.insert(CANARY_WEIGHT.to_owned(), split.canary.to_string());
    let mut metadata = json!({"name": apex, "labels": labels});
    match existing.filter(|vs| !owned_by(&vs.metadata, owner)) {
        // Somebody else's VirtualService: remember it once, never own it.
        Some(vs) => {
            let original = vs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGINAL_CONFIGURATION).cloned())
                .unwrap_or_else(|| {
                    vs.data
                        .get("spec")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into())
                });
            annotations.insert(ORIGINAL_CONFIGURATION.to_owned(), original);
        }
        None => metadata["ownerReferences"] = json!([owner]),
    }
    metadata["annotations"] = json!(annotations);
    metadata
}

fn labels(owner: &OwnerReference) -> Value {
    let labels: serde_json::Map<String, Value> = ownership_labels(owner)
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    Value::Object(labels)
}

/// The DestinationRule `<host>` with the Canary's trafficPolicy.
pub fn destination_rule(host: &str, svc: &CanaryService, owner: &OwnerReference) -> Value {
    let mut spec = json!({"host": host});
    if let Some(policy) = &svc.traffic_policy {
        spec["trafficPolicy"] = policy.clone();
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "DestinationRule",
        "metadata": {"name": host, "labels": labels(owner), "ownerReferences": [owner]},
        "spec": spec,
    })
}

/// The route carrying the split: the first http (or tcp) route, or with session affinity (`sticky`) the last
/// http one, behind the cookie routes.
fn weighted_route(vs: &DynamicObject, sticky: bool) -> &Value {
    let spec = &vs.data["spec"];
    match spec["http"].as_array() {
        Some(http) if sticky => http.last().unwrap_or(&Value::Null),
        Some(http) => http.first().unwrap_or(&Value::Null),
        None => &spec["tcp"][0],
    }
}

/// The canary's weight in a VirtualService fledge manages, if its weighted route names the canary host.
pub fn canary_weight(vs: &DynamicObject, apex: &str, sticky: bool) -> Option<u32> {
    let canary = format!("{apex}-canary");
    weighted_route(vs, sticky)["route"]
        .as_array()?
        .iter()
        .find(|r| r["destination"]["host"].as_str() == Some(canary.as_str()))
        .map(|r| {
            r["weight"]
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .unwrap_or(0)
        })
}

/// The canary weight fledge last wrote into this VirtualService (`None` when it carries no record).
pub fn recorded_weight(vs: &DynamicObject) -> Option<u32> {
    vs.metadata.annotations.as_ref()?.get(CANARY_WEIGHT)?.parse().ok()
}

/// Whether the VirtualService copies requests to the canary.
pub fn mirrored(vs: &DynamicObject, sticky: bool) -> bool {
    weighted_route(vs, sticky)["mirror"].is_object()
}

/// Reads and writes Istio objects in one namespace.
#[derive(Clone)]
pub struct IstioRouter {
    virtual_services: Api<DynamicObject>,
    destination_rules: Api<DynamicObject>,
}

impl std::fmt::Debug for IstioRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstioRouter").finish_non_exhaustive()
    }
}

impl IstioRouter {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            virtual_services: Api::namespaced_with(client.clone(), namespace, &resource("VirtualService")),
            destination_rules: Api::namespaced_with(client, namespace, &resource("DestinationRule")),
        }
    }

    /// The VirtualServices API of this namespace.
    pub fn virtual_services(&self) -> &Api<DynamicObject> {
        &self.virtual_services
    }

    /// The VirtualService named `name`, if any.
    pub async fn virtual_service(&self, name: &str) -> Result<Option<DynamicObject>, ClusterError> {
        Ok(self.virtual_services.get_opt(name).await?)
    }

    /// The DestinationRules API of this namespace.
    pub fn destination_rules(&self) -> &Api<DynamicObject> {
        &self.destination_rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanarySpec, validate};

    fn fixtures(service: Value) -> (ValidSpec, CanaryService, OwnerReference) {
        let spec: CanarySpec = serde_json::from_value(json!({
            "targetRef": {"kind": "Deployment", "name": "podinfo"},
            "service": service,
            "analysis": {"stepWeight": 20}
        }))
        .expect("spec");
        let owner = crate::cluster::test_owner("uid-1");
        (validate(&spec).expect("valid"), spec.service, owner)
    }

    #[test]
    fn defaults_to_the_mesh_gateway_and_the_apex_host_with_both_weights_written() {
        let (spec, svc, owner) = fixtures(json!({"port": 9898}));
        let vs = virtual_service(&spec, &svc, None, Split::weights(100, 0), &owner, None, None);
        assert_eq!(vs["spec"]["hosts"], json!(["podinfo"]));
        assert_eq!(vs["spec"]["gateways"], json!(["mesh"]));
        assert_eq!(
            vs["spec"]["http"][0]["route"],
            json!([
                {"destination": {"host": "podinfo-primary"}, "weight": 100},
                {"destination": {"host": "podinfo-canary"}, "weight": 0}
            ])
        );
        assert_eq!(vs["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    }

    #[test]
    fn the_weight_fledge_wrote_is_recorded_with_the_weights_and_a_hand_edit_is_told_apart() {
        let (spec, svc, owner) = fixtures(json!({"port": 9898}));
        let vs = virtual_service(&spec, &svc, None, Split::weights(80, 20), &owner, None, None);
        let mut object: DynamicObject = serde_json::from_value(vs).expect("object");
        assert_eq!(recorded_weight(&object), Some(20));
        assert_eq!(canary_weight(&object, "podinfo", false), Some(20));
        object.data["spec"]["http"][0]["route"][1]["weight"] = json!(100);
        assert_eq!(
            (recorded_weight(&object), canary_weight(&object, "podinfo", false)),
            (Some(20), Some(100))
        );
    }

    #[test]
    fn a_mirrored_split_copies_its_share_of_requests_to_the_canary_service() {
        let (spec, svc, owner) = fixtures(json!({"port": 9898}));
        let split = Split {
            mirror: Some(50),
            ..Split::weights(100, 0)
        };
        let vs = virtual_service(&spec, &svc, None, split, &owner, None, None);
        let http = &vs["spec"]["http"][0];
        assert_eq!(http["mirror"], json!({"host": "podinfo-canary"}));
        assert_eq!(http["mirrorPercentage"], json!({"value": 50}));
        assert_eq!(http["route"][0]["weight"], 100);
        let plain = virtual_service(&spec, &svc, None, Split::weights(80, 20), &owner, None, None);
        assert!(plain["spec"]["http"][0].get("mirror").is_none());
    }

    #[test]
    fn passes_retries_timeout_match_headers_and_cors_through() {
        let (spec, svc, owner) = fixtures(json!({
            "port": 9898, "hosts": ["app.example.com"], "gateways": ["public-gateway.istio-system.svc.cluster.local"],
            "timeout": "5s", "retries": {"attempts": 3, "perTryTimeout": "1s"},
            "match": [{"uri": {"prefix": "/"}}], "headers": {"request": {"add": {"x-a": "b"}}},
            "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}]}
        }));
        let vs = virtual_service(&spec, &svc, None, Split::weights(80, 20), &owner, None, None);
        let http = &vs["spec"]["http"][0];
        assert_eq!(vs["spec"]["hosts"], json!(["app.example.com", "podinfo"]));
        assert_eq!(
            vs["spec"]["gateways"],
            json!(["public-gateway.istio-system.svc.cluster.local"])
        );
        assert_eq!(http["timeout"], "5s");
        assert_eq!(http["retries"]["attempts"], 3);
        assert_eq!(http["match"][0]["uri"]["prefix"], "/");
        assert_eq!(http["headers"]["request"]["add"]["x-a"], "b");
        assert_eq!(
            http["corsPolicy"]["allowOrigins"][0]["exact"],
            "https://example.com"
        );
    }

    #[test]
    fn a_pre_existing_virtual_service_is_remembered_and_not_owned() {
        let (spec, svc, owner) = fixtures(json!({"port": 9898}));
        let user: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "podinfo"},
            "spec": {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]}
        }))
        .expect("vs");
        let vs = virtual_service(
            &spec,
            &svc,
            None,
            Split::weights(100, 0),
            &owner,
            Some(&user),
            None,
        );
        assert!(vs["metadata"].get("ownerReferences").is_none());
        let original: Value = serde_json::from_str(
            vs["metadata"]["annotations"][ORIGINAL_CONFIGURATION]
                .as_str()
                .expect("annotation"),
        )
        .expect("json");
        assert_eq!(original["http"][0]["route"][0]["destination"]["host"], "podinfo");
    }

    #[test]
    fn ab_testing_routes_matched_requests_by_weight_and_the_rest_to_the_primary() {
        let (spec, svc, owner) = fixtures(json!({"port": 9898}));
        let ab = vec![json!({"headers": {"x-canary": {"exact": "insider"}}})];
        let vs = virtual_service(&spec, &svc, Some(&ab), Split::weights(0, 100), &owner, None, None);
        let http = vs["spec"]["http"].as_array().expect("routes");
        assert_eq!(http.len(), 2);
        assert_eq!(http[0]["match"][0]["headers"]["x-canary"]["exact"], "insider");
        assert_eq!(
            (
                http[0]["route"][0]["weight"].as_u64(),
                http[0]["route"][1]["weight"].as_u64()
            ),
            (Some(0), Some(100))
        );
        assert!(http[1].get("match").is_none());
        assert_eq!(
            (
                http[1]["route"][0]["weight"].as_u64(),
                http[1]["route"][1]["weight"].as_u64()
            ),
            (Some(100), Some(0))
        );
    }

    #[test]
    fn with_session_affinity_the_weight_is_read_from_the_weighted_route_not_a_cookie_route() {
        let (spec, svc, owner) = fixtures(json!({"port": 9898}));
        let settings = crate::api::SessionAffinity {
            cookie_name: "c".into(),
            ..Default::default()
        };
        let cookies = crate::router::affinity::Cookies {
            canary: Some("c=v".into()),
            ..Default::default()
        };
        let sticky = Sticky {
            settings: &settings,
            cookies: &cookies,
            interval_secs: 60,
        };
        let split = Split {
            mirror: Some(50),
            ..Split::weights(75, 25)
        };
        let vs: DynamicObject = serde_json::from_value(virtual_service(
            &spec,
            &svc,
            None,
            split,
            &owner,
            None,
            Some(sticky),
        ))
        .expect("vs");
        assert_eq!(canary_weight(&vs, "podinfo", true), Some(25));
        assert_eq!(
            canary_weight(&vs, "podinfo", false),
            Some(100),
            "the first route is the cookie's"
        );
        assert!(mirrored(&vs, true));
    }

    #[test]
    fn reads_the_canary_weight_back() {
        let (spec, svc, owner) = fixtures(json!({"port": 9898}));
        let vs: DynamicObject = serde_json::from_value(virtual_service(
            &spec,
            &svc,
            None,
            Split::weights(60, 40),
            &owner,
            None,
            None,
        ))
        .expect("vs");
        assert_eq!(canary_weight(&vs, "podinfo", false), Some(40));
    }
}
