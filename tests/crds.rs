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
