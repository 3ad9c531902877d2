//! The VirtualService, DestinationRules and Services fledge writes equal the ones Flagger writes, for every
//! documented Canary shape in `tests/fixtures/flagger/` (expected objects written from Flagger's Istio and
//! Kubernetes routers; see the README there). Pure: builds the objects, no cluster.

mod support;

use fledge::api::validate;
use fledge::cluster::services::{Role, service};
use fledge::lifecycle::Split;
use fledge::router::affinity::{Cookies, Sticky};
use fledge::router::istio::{ORIGINAL_CONFIGURATION, destination_rule, virtual_service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;
use serde_json::Value;
use support::routing::{differences, fixtures};

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "fledge.dev/v1alpha1".into(),
        kind: "Canary".into(),
        name: "podinfo".into(),
        uid: "uid-1".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[test]
fn every_documented_canary_shape_is_routed_as_flagger_routes_it() {
    let all = fixtures();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert!(all.len() >= 12, "the fixtures are missing: {names:?}");
    let mut failures = Vec::new();
    for (name, fixture) in &all {
        let spec = validate(&fixture.canary).unwrap_or_else(|e| panic!("{name}: invalid canary: {e:?}"));
        let ab = fixture.canary.analysis.as_ref().and_then(|a| a.match_.as_ref());
        let svc = &fixture.canary.service;
        let sticky = fixture
            .canary
            .analysis
            .as_ref()
            .and_then(|a| a.session_affinity.as_ref());
        let mut found = Vec::new();
        let existing = fixture.existing_virtual_service.as_ref().map(|user| {
            serde_json::from_value::<DynamicObject>(serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": spec.service}, "spec": user
            }))
            .expect("existing VirtualService")
        });
        let label = ("app".to_owned(), "podinfo".to_owned());
        let names: Vec<&String> = fixture.services.keys().collect();
        let apex = &spec.service;
        let wanted = [apex.clone(), format!("{apex}-canary"), format!("{apex}-primary")];
        assert_eq!(
            names,
            wanted.iter().collect::<Vec<_>>(),
            "{name}: the three Services"
        );
        for (role, service_name) in [
            (Role::Apex, &wanted[0]),
            (Role::Canary, &wanted[1]),
            (Role::Primary, &wanted[2]),
        ] {
            if role == Role::Apex && fixture.existing_service.is_some() {
                // What a user's apex becomes is the merge of theirs and fledge's apply: only the plane shows it
                // (flagger_compat's golden test).
                continue;
            }
            let built = service(role, &spec, svc, &label, &owner(), None, &[]);
            let built = serde_json::to_value(&built.spec).expect("service spec");
            differences(
                &format!("service {service_name}"),
                &fixture.services[service_name],
                &built,
                &mut found,
            );
        }
        for host in [format!("{apex}-canary"), format!("{apex}-primary")] {
            let expected = fixture
                .destination_rules
                .get(&host)
                .unwrap_or_else(|| panic!("{name}: no DestinationRule {host}"));
            let built = destination_rule(&host, svc, &owner());
            differences(
                &format!("destinationrule {host}"),
                expected,
                &built["spec"],
                &mut found,
            );
        }
        // Each shape at initialisation (and after promotion, the same routing) and mid-rollout: the 40 % step
        // of a canary release, the switch to the canary of blue/green and A/B testing.
        let iterations = fixture
            .canary
            .analysis
            .as_ref()
            .and_then(|a| a.iterations)
            .is_some();
        let mid = if iterations { (0, 100) } else { (60, 40) };
        for wanted in [(100, 0), mid] {
            assert!(
                fixture.at.iter().any(|at| at.weights == wanted),
                "{name}: no routing at {wanted:?}"
            );
        }
        for at in &fixture.at {
            let (primary, canary) = at.weights;
            let given = at.cookies.as_ref();
            let cookies = Cookies {
                canary: given.and_then(|c| c.canary.clone()),
                primary: given.and_then(|c| c.primary.clone()),
                previous: given.and_then(|c| c.previous.clone()),
            };
            let vs = virtual_service(
                &spec,
                svc,
                ab,
                Split {
                    mirror: at.mirror,
                    ..Split::weights(primary, canary)
                },
                &owner(),
                existing.as_ref(),
                sticky.map(|settings| Sticky {
                    settings,
                    cookies: &cookies,
                    interval_secs: spec.interval.as_secs(),
                }),
            );
            let place = format!("virtualservice at {primary}/{canary}");
            differences(&place, &at.virtual_service, &vs["spec"], &mut found);
            for (kind, wanted) in [("labels", &fixture.labels), ("annotations", &fixture.annotations)] {
                for (key, value) in wanted {
                    if vs["metadata"][kind][key] != value.as_str() {
                        found.push(format!(
                            "{place} metadata.{kind}.{key}: Flagger {value}, fledge {}",
                            vs["metadata"][kind][key]
                        ));
                    }
                }
            }
            if let Some(user) = &fixture.existing_virtual_service {
                // Flagger keeps the user's spec in an annotation of its own name; fledge in its, to hand back.
                let kept: Option<Value> = vs["metadata"]["annotations"][ORIGINAL_CONFIGURATION]
                    .as_str()
                    .and_then(|a| serde_json::from_str(a).ok());
                if kept.as_ref() != Some(user) {
                    found.push(format!("{place}: the user's spec is not kept: {kept:?}"));
                }
                if vs["metadata"].get("ownerReferences").is_some() {
                    found.push(format!(
                        "{place}: the user's VirtualService is taken as fledge's own"
                    ));
                }
            }
        }
        failures.extend(found.into_iter().map(|f| format!("{name}: {f}")));
    }
    assert!(
        failures.is_empty(),
        "routing differs from Flagger's:\n{}",
        failures.join("\n")
    );
}
