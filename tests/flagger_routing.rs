//! The VirtualService fledge writes equals the one Flagger writes, for every documented Canary shape in
//! `tests/fixtures/flagger/` (expected objects written from Flagger's Istio router; see the README there).
//! Pure: builds the objects, no cluster.

use std::path::Path;

use fledge::api::{CanarySpec, validate};
use fledge::lifecycle::Split;
use fledge::router::istio::virtual_service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::Value;

#[derive(serde::Deserialize)]
struct Fixture {
    canary: CanarySpec,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    at: Vec<At>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct At {
    weights: (u32, u32),
    virtual_service: Value,
}

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

/// Every difference between `expected` and `actual`, by path.
fn differences(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for key in e.keys().chain(a.keys().filter(|k| !e.contains_key(*k))) {
                let (ev, av) = (
                    e.get(key).unwrap_or(&Value::Null),
                    a.get(key).unwrap_or(&Value::Null),
                );
                differences(&format!("{path}.{key}"), ev, av, out);
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                differences(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => {}
        _ if expected == actual => {}
        _ => out.push(format!("{path}: Flagger {expected}, fledge {actual}")),
    }
}

#[test]
fn every_documented_canary_shape_is_routed_as_flagger_routes_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flagger");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "the fixtures are missing: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let fixture: Fixture = serde_yaml::from_str(&std::fs::read_to_string(file).expect("read fixture"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let spec = validate(&fixture.canary).unwrap_or_else(|e| panic!("{name}: invalid canary: {e:?}"));
        let ab = fixture.canary.analysis.as_ref().and_then(|a| a.match_.as_ref());
        for at in &fixture.at {
            let (primary, canary) = at.weights;
            let vs = virtual_service(
                &spec,
                &fixture.canary.service,
                ab,
                Split::weights(primary, canary),
                &owner(),
                None,
            );
            let mut found = Vec::new();
            differences("spec", &at.virtual_service, &vs["spec"], &mut found);
            for (kind, wanted) in [("labels", &fixture.labels), ("annotations", &fixture.annotations)] {
                for (key, value) in wanted {
                    if vs["metadata"][kind][key] != value.as_str() {
                        found.push(format!(
                            "metadata.{kind}.{key}: Flagger {value}, fledge {}",
                            vs["metadata"][kind][key]
                        ));
                    }
                }
            }
            failures.extend(
                found
                    .into_iter()
                    .map(|f| format!("{name} at {primary}/{canary}: {f}")),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "routing differs from Flagger's:\n{}",
        failures.join("\n")
    );
}
