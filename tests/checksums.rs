//! A Secret a canary tracks shows in the Canary's status only as a checksum keyed with fledge's per-install
//! key (HMAC-SHA256): never the plain hash of its data, which anyone who may read Canaries could test
//! password guesses against. The key is a Secret fledge creates once and reads again after a restart, so
//! the checksum — and the revision — do not change and no rollout starts.
//! Run by `make test` (`#[ignore]`d so a bare `cargo test` needs no cluster).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fledge::api::{Canary, Phase};
use fledge::cluster::workload::{content_hash, keyed_hash};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_tracked_secret_shows_only_as_a_checksum_keyed_per_install_which_a_restart_keeps() {
    let ns = TestNamespace::create("checksum").await;
    install_crds(&ns.client).await;
    let data = Some(BTreeMap::from([(
        "password".to_owned(),
        ByteString(b"hunter2".to_vec()),
    )]));
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("podinfo-db".into()),
            ..Default::default()
        },
        data: data.clone(),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    ns.api::<Deployment>()
        .patch(
            "podinfo",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "podinfod", "envFrom": [{"secretRef": {"name": "podinfo-db"}}]}
            ]}}}})),
        )
        .await
        .expect("podinfo reads the secret");

    let controller = ControllerProcess::spawn(&ns.name);
    create_canary(
        &ns,
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 40}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    let status = |c: Canary| c.status.expect("status");
    let first = status(ns.api::<Canary>().get("podinfo").await.expect("canary"));
    let shown = first
        .tracked_configs
        .get("secret/podinfo-db")
        .cloned()
        .unwrap_or_else(|| panic!("the secret is tracked: {:?}", first.tracked_configs));

    let key = ns
        .api::<Secret>()
        .get(fledge::controller::checksum_key::NAME)
        .await
        .expect("fledge created its key in its namespace");
    let key_bytes = key
        .data
        .as_ref()
        .and_then(|d| d.get("key"))
        .expect("key")
        .0
        .clone();
    assert!(key_bytes.len() >= 32);
    assert_ne!(
        shown,
        content_hash(&data).expect("hash"),
        "not the plain hash of the data"
    );
    assert_eq!(
        shown,
        keyed_hash(&key_bytes, &data).expect("hmac"),
        "HMAC under the key"
    );

    // A restarted controller reads the same key: same checksum, same revision, no rollout.
    drop(controller);
    let _controller = ControllerProcess::spawn(&ns.name);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = status(ns.api::<Canary>().get("podinfo").await.expect("canary"));
    assert_eq!(again.tracked_configs.get("secret/podinfo-db"), Some(&shown));
    assert_eq!(again.last_applied_spec, first.last_applied_spec);
    assert_eq!(again.phase, Some(Phase::Initialized));
    let key_after = ns
        .api::<Secret>()
        .get(fledge::controller::checksum_key::NAME)
        .await
        .expect("key");
    assert_eq!(
        key_after.metadata.resource_version, key.metadata.resource_version,
        "not created again"
    );
}
