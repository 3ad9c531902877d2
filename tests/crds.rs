//! The CRD YAML in deploy/ is generated from the Rust types and must not drift from them.

#[test]
fn deploy_crds_yaml_is_what_fledge_crds_prints() {
    let generated = fledge::api::crds_yaml().expect("render CRDs");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: regenerate it with `cargo run -- crds > deploy/crds.yaml`",
        path.display()
    );
}

#[test]
fn crd_has_flagger_printer_columns_and_validation() {
    let yaml = fledge::api::crds_yaml().expect("render CRDs");
    for needle in [
        "name: Status",
        "name: Weight",
        "name: LastTransitionTime",
        "maximum: 100.0",
        "stepWeight 0 never moves traffic",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle:?}");
    }
}

/// Every field path of `schema` (`spec.service.port`, `spec.metrics[]`, `spec.headers{}`), and the paths
/// under which anything is kept as written (`x-kubernetes-preserve-unknown-fields`).
fn field_paths(
    schema: &serde_json::Value,
    path: &str,
    fields: &mut std::collections::BTreeSet<String>,
    open: &mut Vec<String>,
) {
    fields.insert(path.to_owned());
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        open.push(path.to_owned());
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            field_paths(child, &format!("{path}.{name}"), fields, open);
        }
    }
    if schema["items"].is_object() {
        field_paths(&schema["items"], &format!("{path}[]"), fields, open);
    }
    if schema["additionalProperties"].is_object() {
        field_paths(
            &schema["additionalProperties"],
            &format!("{path}{{}}"),
            fields,
            open,
        );
    }
}

#[test]
fn every_field_of_flaggers_canary_and_metric_template_schemas_is_accepted() {
    use kube::CustomResourceExt;
    let listed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flagger/crd-fields.txt"),
    )
    .expect("the list of Flagger's fields");
    let ours = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let (mut fields, mut open) = (std::collections::BTreeSet::new(), Vec::new());
        field_paths(&schema["openAPIV3Schema"]["properties"]["spec"], "spec", &mut fields, &mut open);
        (fields, open)
    };
    let canary = ours(fledge::api::Canary::crd());
    let template = ours(fledge::api::MetricTemplate::crd());
    let mut checked = 0;
    let mut rejected = Vec::new();
    for line in listed.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (kind, path) = line.split_once(' ').expect("`<Kind> <path>`");
        let (fields, open) = match kind {
            "Canary" => &canary,
            "MetricTemplate" => &template,
            other => panic!("unknown kind {other}"),
        };
        checked += 1;
        let kept_as_written = open.iter().any(|o| {
            path.strip_prefix(o.as_str())
                .is_some_and(|rest| rest.starts_with(['.', '[', '{']))
        });
        if !fields.contains(path) && !kept_as_written {
            rejected.push(format!("{kind} {path}"));
        }
    }
    assert!(checked > 250, "the list is truncated: {checked} fields");
    assert!(
        rejected.is_empty(),
        "fields of Flagger v1.44 that fledge's CRDs reject under --validate=strict:\n{}",
        rejected.join("\n")
    );
}
