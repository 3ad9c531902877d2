//! Policy and ClusterPolicy resources on the real plane, with components in a real OCI registry (Debian's
//! docker-registry) and in ConfigMaps: push → Policy → Canary, digests pinned, broken sources reported on
//! the Policy while other canaries go on, hot reload without a restart.

mod support;

use std::process::Command;
use std::time::Duration;

use fledge::api::{Canary, CanaryStatus, Phase, PolicyResource, PolicyResourceStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;
use support::registry::{OciRegistry, PASSWORD, USER};

const LIMIT: Duration = Duration::from_secs(90);

fn scripted_bytes() -> Vec<u8> {
    support::policy::built_component("fledge_policy_scripted")
}

fn default_bytes() -> Vec<u8> {
    fledge::policy::builtin(fledge::policy::BUILTIN_DEFAULT)
        .expect("builtin")
        .to_vec()
}

fn sha256(bytes: &[u8]) -> String {
    fledge::registry::sha256(bytes)
}

/// `fledge policy …` with the real binary; returns stdout, panics with stderr on failure.
fn fledge_cli(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run fledge");
    assert!(
        out.status.success(),
        "fledge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Pushes `bytes` with `fledge policy push --insecure` and returns the Policy manifest it printed.
fn push(bytes: &[u8], reference: &str) -> PolicyResource {
    let file = std::env::temp_dir().join(format!(
        "fledge-push-{}-{}.wasm",
        std::process::id(),
        sha256(bytes)
    ));
    std::fs::write(&file, bytes).expect("write component");
    let manifest = fledge_cli(
        &[
            "policy",
            "push",
            file.to_str().expect("path"),
            reference,
            "--insecure",
        ],
        &[],
    );
    let _ = std::fs::remove_file(&file);
    serde_yaml::from_str(&manifest).unwrap_or_else(|e| panic!("push printed no Policy ({e}): {manifest}"))
}

async fn apply_policy(ns: &TestNamespace, name: &str, spec: serde_json::Value) {
    let policy = json!({"apiVersion": "fledge.dev/v1alpha1", "kind": "Policy", "metadata": {"name": name}, "spec": spec});
    ns.api::<PolicyResource>()
        .patch(
            name,
            &PatchParams::apply("fledge-tests").force(),
            &Patch::Apply(&policy),
        )
        .await
        .expect("apply policy");
}

fn ready_condition(conditions: &[Condition], type_: &str) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the Policy's Ready condition has `status` and `reason`; returns its status.
async fn wait_policy(ns: &TestNamespace, name: &str, status: &str, reason: &str) -> PolicyResourceStatus {
    let api = ns.api::<PolicyResource>();
    support::eventually(
        &format!("policy {name} Ready={status} {reason}"),
        LIMIT,
        || async {
            let p = api.get(name).await.map_err(|e| e.to_string())?;
            let s = p.status.clone().unwrap_or_default();
            match ready_condition(&s.conditions, "Ready") {
                Some((st, r, _)) if st == status && r == reason => Ok(s),
                other => Err(format!("{other:?} {s:?}")),
            }
        },
    )
    .await
}

async fn canary_status(ns: &TestNamespace, name: &str) -> CanaryStatus {
    ns.api::<Canary>()
        .get(name)
        .await
        .expect("canary")
        .status
        .unwrap_or_default()
}

async fn wait_canary_policy_ready(ns: &TestNamespace, status: &str, reason: &str) -> CanaryStatus {
    support::eventually(
        &format!("canary PolicyReady={status} {reason}"),
        LIMIT,
        || async {
            let s = canary_status(ns, "podinfo").await;
            match ready_condition(&s.conditions, "PolicyReady") {
                Some((st, r, _)) if st == status && r == reason => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

async fn config_map(ns: &TestNamespace, name: &str, key: &str, bytes: &[u8]) {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name},
        "binaryData": {key: k8s_openapi::ByteString(bytes.to_vec())},
    }))
    .expect("configmap");
    ns.api::<ConfigMap>()
        .patch(
            name,
            &PatchParams::apply("fledge-tests").force(),
            &Patch::Apply(&cm),
        )
        .await
        .expect("apply configmap");
}

/// podinfo 3.1.0 with a Canary judged by the Policy `policy`, Initialized.
async fn podinfo_with_policy(ns: &TestNamespace, policy: &str, interval: &str) {
    create_podinfo(ns, "stefanprodan/podinfo:3.1.0").await;
    create_canary(
        ns,
        json!({"interval": interval, "threshold": 2, "stepWeight": 20, "maxWeight": 60,
               "policy": {"policyRef": {"name": policy}}}),
    )
    .await
    .expect("create canary");
    wait_phase(ns, Phase::Initialized, LIMIT).await;
}

#[tokio::test]
#[ignore = "needs the local control plane and a registry; run with make test"]
async fn a_rust_policy_pushed_to_a_registry_drives_a_canary_to_succeeded() {
    let registry = OciRegistry::start("push", false).await;
    let ns = TestNamespace::create("pol-oci").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);

    let bytes = scripted_bytes();
    let reference = registry.reference("policies/scripted:v1");
    let manifest = push(&bytes, &reference);
    let oci = manifest.spec.source.oci.clone().expect("oci source");
    assert_eq!(oci.digest, sha256(&bytes), "push prints the component's digest");
    assert_eq!(oci.reference, reference);
    assert_eq!(manifest.metadata.name.as_deref(), Some("scripted"));
    ns.api::<PolicyResource>()
        .create(&PostParams::default(), &manifest)
        .await
        .expect("create the printed Policy");
    let status = wait_policy(&ns, "scripted", "True", "Ready").await;
    assert_eq!(status.digest.as_deref(), Some(oci.digest.as_str()));
    assert_eq!(status.wit_package.as_deref(), Some("fledge:policy@0.1.0"));
    assert_eq!(status.exports, ["step", "gate", "analysis"]);
    assert_eq!(status.size_bytes, Some(bytes.len() as u64));
    for c in ["Fetched", "Compiled"] {
        assert_eq!(
            ready_condition(&status.conditions, c).map(|c| c.0).as_deref(),
            Some("True"),
            "{c}"
        );
    }

    podinfo_with_policy(&ns, "scripted", "1s").await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let done = wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    let policy = done.status.and_then(|s| s.policy).expect("status.policy");
    assert_eq!(policy.source, "Policy/scripted");
    assert_eq!(policy.digest, oci.digest);
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );

    // The author's loop: pull it back by digest, inspect it straight from the registry.
    let pinned = format!("{reference}@{}", oci.digest);
    let out = std::env::temp_dir().join(format!("fledge-pull-{}.wasm", std::process::id()));
    fledge_cli(
        &[
            "policy",
            "pull",
            &pinned,
            "-o",
            out.to_str().expect("path"),
            "--insecure",
        ],
        &[],
    );
    assert_eq!(std::fs::read(&out).expect("pulled"), bytes);
    let _ = std::fs::remove_file(&out);
    let inspected: serde_json::Value = serde_json::from_str(&fledge_cli(
        &["policy", "inspect", &format!("oci://{pinned}"), "--insecure"],
        &[],
    ))
    .expect("inspect json");
    assert_eq!(inspected["digest"], oci.digest.as_str());
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_policy_from_a_config_map_drives_a_canary_to_succeeded() {
    let ns = TestNamespace::create("pol-cm").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);
    let bytes = scripted_bytes();
    config_map(&ns, "scripted-policy", "policy.wasm", &bytes).await;
    apply_policy(
        &ns,
        "scripted",
        json!({"source": {"configMap": {"name": "scripted-policy", "key": "policy.wasm", "digest": sha256(&bytes)}}}),
    )
    .await;
    let status = wait_policy(&ns, "scripted", "True", "Ready").await;
    assert_eq!(status.digest, Some(sha256(&bytes)));

    podinfo_with_policy(&ns, "scripted", "1s").await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let done = wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    let s = done.status.expect("status");
    assert_eq!(s.policy.map(|p| p.digest), Some(sha256(&bytes)));
    assert_eq!(
        ready_condition(&s.conditions, "PolicyReady")
            .map(|c| c.0)
            .as_deref(),
        Some("True")
    );
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane and a registry; run with make test"]
async fn a_wrong_digest_holds_the_canary_at_its_weight_until_the_digest_is_fixed() {
    let registry = OciRegistry::start("wrong", false).await;
    let ns = TestNamespace::create("pol-wrong").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);
    let reference = registry.reference("policies/scripted:v1");
    let manifest = push(&scripted_bytes(), &reference);
    let good = manifest.spec.source.oci.expect("oci").digest;
    let spec =
        |digest: &str| json!({"source": {"oci": {"ref": reference, "digest": digest, "insecure": true}}});
    apply_policy(&ns, "scripted", spec(&good)).await;
    wait_policy(&ns, "scripted", "True", "Ready").await;
    podinfo_with_policy(&ns, "scripted", "3s").await;

    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_weights(&ns, (80, 20)).await;
    let wrong = sha256(b"not the component");
    apply_policy(&ns, "scripted", spec(&wrong)).await;
    let status = wait_policy(&ns, "scripted", "False", "DigestMismatch").await;
    let (_, _, message) = ready_condition(&status.conditions, "Ready").expect("ready");
    assert!(message.contains(&wrong), "{message}");
    let held = wait_canary_policy_ready(&ns, "False", "DigestMismatch").await;
    let weight = held.canary_weight;
    assert!(weight == 20 || weight == 40, "held at {weight}");

    // Several intervals later nothing has moved.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let still = canary_status(&ns, "podinfo").await;
    assert_eq!(
        (still.phase, still.canary_weight),
        (Some(Phase::Progressing), weight)
    );
    assert_eq!(
        weights(&ns).await,
        Some((100 - i64::from(weight), i64::from(weight)))
    );
    assert_eq!(
        replicas(&ns, "podinfo").await.map(|r| r.0),
        Some(2),
        "the canary still runs"
    );
    event_note(&ns, "policy not ready").await;

    // Fixed without a restart: the rollout resumes and promotes.
    apply_policy(&ns, "scripted", spec(&good)).await;
    wait_policy(&ns, "scripted", "True", "Ready").await;
    wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane and registries; run with make test"]
async fn each_broken_source_gets_its_own_reason_while_other_canaries_promote() {
    let open = OciRegistry::start("broken", false).await;
    let locked = OciRegistry::start("locked", true).await;
    let ns = TestNamespace::create("pol-broken").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);
    // A canary on builtin:default goes through a whole rollout meanwhile.
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    create_canary(
        &ns,
        json!({"interval": "1s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;

    let oci = |reference: String, digest: String| json!({"source": {"oci": {"ref": reference, "digest": digest, "insecure": true}}});
    let summary = json!({});
    let anonymous = fledge::registry::Auth::Anonymous;
    // Bytes that are no component, and a 100 MiB blob, pushed as Wasm artifacts.
    let junk = b"\0asm\x01\0\0\0 a core module header and junk".to_vec();
    let junk_ref = open.reference("policies/junk:v1");
    fledge::registry::push(&junk_ref, junk.clone(), &summary, &anonymous, true)
        .await
        .expect("push junk");
    let huge = vec![0u8; 100 << 20];
    let huge_ref = open.reference("policies/huge:v1");
    let huge_digest = fledge::registry::push(&huge_ref, huge, &summary, &anonymous, true)
        .await
        .expect("push 100 MiB")
        .digest;
    // The scripted component behind basic auth.
    let bytes = scripted_bytes();
    let locked_ref = locked.reference("policies/scripted:v1");
    let auth = fledge::registry::Auth::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    fledge::registry::push(&locked_ref, bytes.clone(), &summary, &auth, true)
        .await
        .expect("push with credentials");
    let nobody = format!("127.0.0.1:{}/policies/x:v1", support::prometheus::free_port());

    apply_policy(
        &ns,
        "no-digest",
        oci(open.reference("policies/junk:v1"), String::new()),
    )
    .await;
    apply_policy(&ns, "junk", oci(junk_ref, sha256(&junk))).await;
    apply_policy(&ns, "huge", oci(huge_ref, huge_digest)).await;
    apply_policy(&ns, "unreachable", oci(nobody, sha256(&bytes))).await;
    apply_policy(&ns, "no-credentials", oci(locked_ref.clone(), sha256(&bytes))).await;
    for (name, reason) in [
        ("no-digest", "DigestRequired"),
        ("junk", "NotAComponent"),
        ("huge", "TooLarge"),
        ("unreachable", "RegistryUnreachable"),
        ("no-credentials", "Unauthorized"),
    ] {
        let status = wait_policy(&ns, name, "False", reason).await;
        let (_, _, message) = ready_condition(&status.conditions, "Ready").expect("ready");
        assert!(!message.is_empty(), "{name}: a reason without a message");
    }

    // With the pull Secret the same reference loads.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "registry-creds"},
        "stringData": {"username": USER, "password": PASSWORD},
    }))
    .expect("secret");
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    apply_policy(
        &ns,
        "with-credentials",
        json!({"source": {"oci": {"ref": locked_ref, "digest": sha256(&bytes), "insecure": true,
                                  "pullSecret": {"name": "registry-creds"}}}}),
    )
    .await;
    wait_policy(&ns, "with-credentials", "True", "Ready").await;

    wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_rollout_in_flight_keeps_its_policy_digest_and_the_next_one_takes_the_new() {
    let ns = TestNamespace::create("pol-pin").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);
    let (v1, v2) = (scripted_bytes(), default_bytes());
    config_map(&ns, "policy-v1", "policy.wasm", &v1).await;
    config_map(&ns, "policy-v2", "policy.wasm", &v2).await;
    let source = |cm: &str, bytes: &[u8]| json!({"source": {"configMap": {"name": cm, "key": "policy.wasm", "digest": sha256(bytes)}}});
    apply_policy(&ns, "judge", source("policy-v1", &v1)).await;
    wait_policy(&ns, "judge", "True", "Ready").await;
    podinfo_with_policy(&ns, "judge", "2s").await;

    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_weights(&ns, (80, 20)).await;
    apply_policy(&ns, "judge", source("policy-v2", &v2)).await;
    support::eventually("policy serves v2", LIMIT, || async {
        let p = ns
            .api::<PolicyResource>()
            .get("judge")
            .await
            .map_err(|e| e.to_string())?;
        match p.status.and_then(|s| s.digest) {
            Some(d) if d == sha256(&v2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Every tick until the end of this rollout reports the digest it started with.
    let in_flight_samples = std::sync::atomic::AtomicU32::new(0);
    let finished = support::eventually("rollout finished on v1", LIMIT, || {
        let ns = &ns;
        let samples = &in_flight_samples;
        let v1 = sha256(&v1);
        async move {
            let s = canary_status(ns, "podinfo").await;
            match s.phase {
                Some(Phase::Succeeded) => Ok(s),
                Some(p) if p.in_flight() => {
                    assert_eq!(
                        s.policy.as_ref().map(|p| p.digest.clone()),
                        Some(v1),
                        "during {p:?}"
                    );
                    samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Err(format!("{p:?}"))
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(
        in_flight_samples.into_inner() > 0,
        "saw the rollout in flight after the Policy changed"
    );
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );

    set_image(&ns, "stefanprodan/podinfo:3.1.2").await;
    support::eventually("next rollout on v2", LIMIT, || async {
        let s = canary_status(&ns, "podinfo").await;
        match (s.phase, s.policy.map(|p| p.digest)) {
            (Some(Phase::Progressing | Phase::Promoting | Phase::Finalising | Phase::Succeeded), Some(d))
                if d == sha256(&v2) && s.last_applied_spec != finished.last_applied_spec =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_canary_naming_a_path_on_the_controller_is_refused_and_nothing_is_read() {
    let ns = TestNamespace::create("pol-path").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);
    for (i, path) in ["/dev/zero", "/etc/passwd", "../../../../etc/passwd"]
        .iter()
        .enumerate()
    {
        let app = format!("app{i}");
        create_app(&ns, &app, "stefanprodan/podinfo:3.1.0").await;
        create_canary_for(
            &ns,
            &app,
            json!({"interval": "1s", "policy": {"component": path}}),
        )
        .await
        .expect("the schema accepts a string");
        let refused = support::eventually(&format!("{path} refused"), LIMIT, || async {
            let s = canary_status(&ns, &app).await;
            match ready_condition(&s.conditions, "Ready") {
                Some((st, reason, message)) if st == "False" && reason == "InvalidSpec" => Ok(message),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(refused.contains("cannot name a path"), "{refused}");
        assert!(
            ns.api::<Deployment>()
                .get_opt(&format!("{app}-primary"))
                .await
                .expect("get")
                .is_none(),
            "nothing created for {path}"
        );
    }
    controller.abort();
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_cluster_policy_judges_with_its_own_config_and_limits() {
    let ns = TestNamespace::create("pol-cluster").await;
    install_crds(&ns.client).await;
    let controller = start_controller(&ns.client, &ns.name);
    let bytes = scripted_bytes();
    config_map(&ns, "shared-policy", "policy.wasm", &bytes).await;
    let api: kube::Api<fledge::api::ClusterPolicy> = kube::Api::all(ns.client.clone());
    let apply = |name: String, spec: serde_json::Value| {
        let api = api.clone();
        async move {
            let p = json!({"apiVersion": "fledge.dev/v1alpha1", "kind": "ClusterPolicy",
                           "metadata": {"name": name}, "spec": spec});
            api.patch(
                &name,
                &PatchParams::apply("fledge-tests").force(),
                &Patch::Apply(&p),
            )
            .await
            .expect("apply cluster policy");
        }
    };
    let (good, homeless) = (format!("{}-judge", ns.name), format!("{}-homeless", ns.name));
    // The Policy's default config ("fail") reaches the component when the Canary sets none.
    apply(
        good.clone(),
        json!({"source": {"configMap": {"name": "shared-policy", "namespace": ns.name, "key": "policy.wasm",
                                        "digest": sha256(&bytes)}},
               "config": "fail", "limits": {"deadline": "40ms", "memoryMiB": 16}}),
    )
    .await;
    apply(
        homeless.clone(),
        json!({"source": {"configMap": {"name": "shared-policy", "key": "policy.wasm", "digest": sha256(&bytes)}}}),
    )
    .await;
    let status_of = |name: String, want: &'static str| {
        let api = api.clone();
        async move {
            support::eventually(&format!("cluster policy {name} {want}"), LIMIT, || async {
                let s = api
                    .get(&name)
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .unwrap_or_default();
                match ready_condition(&s.conditions, "Ready") {
                    Some((_, reason, _)) if reason == want => Ok(s),
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    let loaded = status_of(good.clone(), "Ready").await;
    let compiled = ready_condition(&loaded.conditions, "Compiled")
        .expect("compiled")
        .2;
    assert_eq!(compiled, "deadline 40 ms, memory 16 MiB");
    let refused = status_of(homeless.clone(), "InvalidSource").await;
    assert!(
        ready_condition(&refused.conditions, "Ready")
            .expect("ready")
            .2
            .contains("needs a namespace"),
        "{refused:?}"
    );

    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    create_canary(
        &ns,
        json!({"interval": "1s", "threshold": 2, "stepWeight": 20, "maxWeight": 60,
               "policy": {"policyRef": {"name": good, "kind": "ClusterPolicy"}}}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    let failed = wait_phase(&ns, Phase::Failed, LIMIT).await;
    let s = failed.status.expect("status");
    assert_eq!(s.policy.map(|p| p.source), Some(format!("ClusterPolicy/{good}")));
    assert_eq!(
        s.failed_checks, 2,
        "the scripted analysis failed as its Policy's config says"
    );
    for name in [good, homeless] {
        let _ = api.delete(&name, &Default::default()).await;
    }
    controller.abort();
}
