//! Installing and operating fledge: `kubectl apply -k deploy/` on the real plane, the controller running
//! with nothing but its ServiceAccount's rights, its `/metrics` during the seed story, two replicas under
//! leader election, and a dashboard that only asks for series fledge exports.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use fledge::api::Phase;
use fledge::telemetry::health::WatchHealth;
use fledge::telemetry::metrics::Metrics;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::json;
use support::TestNamespace;
use support::fledge::*;
use support::prometheus::free_port;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn the_dashboard_asks_only_for_series_fledge_exports() {
    let m = Metrics::new();
    m.canary("podinfo", "test", "podinfo", Some(Phase::Failed), 20);
    m.canaries_in("test", 1);
    m.rollout_finished(true, Duration::from_secs(60));
    m.analysis(Duration::from_millis(5));
    m.analysis_value("podinfo", "test", "request-success-rate", Some(99.0));
    m.query(Duration::from_millis(1));
    m.policy_call("step", Duration::from_micros(30), Some("timeout"));
    m.reconcile_error("api");
    m.api_request("get", "deployments");
    let exported = m.render();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/dashboards/fledge.json"
    ))
    .expect("dashboard");
    let asked: BTreeSet<&str> = dashboard
        .match_indices("fledge_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| name.len() > "fledge_".len())
        .collect();
    assert!(asked.len() >= 8, "{asked:?}");
    for name in asked {
        assert!(
            exported.lines().any(|l| l.starts_with(name)),
            "the dashboard asks for {name}, which fledge does not export"
        );
    }
}

/// `kubectl apply -k deploy/` with the plane's kubectl (on PATH under make test).
fn apply_kustomization() {
    let out = Command::new("kubectl")
        .args(["apply", "--server-side", "--force-conflicts", "-k"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy"))
        .output()
        .expect("run kubectl (make test puts the plane's kubectl on PATH)");
    assert!(
        out.status.success(),
        "kubectl apply -k deploy/ failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Verbs of the ClusterRole the seed story does not send, each with the path that does.
const GRANTED_FOR_OTHER_PATHS: &[(&str, &str)] = &[
    // ownerReferences with blockOwnerDeletion on what a Canary owns (OwnerReferencesPermissionEnforcement)
    ("update", "canaries/finalizers"),
    // analysis.metrics[].templateRef (tests/analysis.rs)
    ("get", "metrictemplates"),
    // a MetricTemplate's Ready condition (tests/analysis.rs)
    ("patch", "metrictemplates/status"),
    // a ClusterPolicy's readiness (tests/policy_resources.rs)
    ("patch", "clusterpolicies/status"),
    // autoscalerRef: the -primary HPA copy (tests/lifecycle_seed.rs), released at the teardown deadline
    ("get", "horizontalpodautoscalers"),
    ("patch", "horizontalpodautoscalers"),
    ("create", "horizontalpodautoscalers"),
    // tracked ConfigMaps and Secrets: the -primary copies (tests/lifecycle_rollback.rs, tests/checksums.rs)
    ("patch", "configmaps"),
    ("create", "configmaps"),
    ("patch", "secrets"),
    // … and the checksum key, created on the first start on a plane (this story, unless it ran before)
    ("create", "secrets"),
    // a user's VirtualService fledge took over is handed back (tests/teardown.rs)
    ("update", "virtualservices"),
    // a repeated event is counted on the first one (src/controller/events.rs)
    ("patch", "events"),
];

/// (verb, resource) of every rule of deploy/rbac.yaml's ClusterRole.
fn granted() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).expect("rbac.yaml");
    let role = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("yaml"))
        .find(|doc| doc["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut grants = Vec::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        for resource in strings(&rule["resources"]) {
            for verb in strings(&rule["verbs"]) {
                grants.push((verb, resource.clone()));
            }
        }
    }
    grants
}

/// A client that is fledge's ServiceAccount and nothing more: a token from the TokenRequest API. Its
/// requests are counted in `metrics` and its lists and watches report to `health`, as the controller's own.
async fn service_account_client(admin: &Client, metrics: &Metrics, health: &WatchHealth) -> Client {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "fledge-system");
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).expect("token request");
    let token = support::eventually("service account token", Duration::from_secs(30), || async {
        accounts
            .create_subresource::<TokenRequest, TokenRequest>(
                "token",
                "fledge",
                &PostParams::default(),
                &request,
            )
            .await
            .map_err(|e| e.to_string())?
            .status
            .map(|s| s.token)
            .ok_or_else(|| "no token in the answer".to_owned())
    })
    .await;
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    fledge::telemetry::api_requests::observed_client(
        config,
        metrics,
        health,
        &fledge::controller::leader::Fence::open(),
    )
    .expect("service account client")
}

/// The `fledge_canary_weight` of `workload` in `ns` as `/metrics` shows it now.
async fn scraped_weight(url: &str, workload: &str, ns: &str) -> Option<i64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let series = format!(r#"fledge_canary_weight{{namespace="{ns}",workload="{workload}"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn installed_with_kubectl_apply_k_fledge_runs_the_seed_story_on_its_service_account_alone() {
    apply_kustomization();
    let ns = TestNamespace::create("install").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let metrics = Metrics::new();
    // A watch the role does not allow fails at once and keeps failing: /healthz would say so within 2 s.
    let health = WatchHealth::with_limit(Duration::from_secs(2));
    let sa = service_account_client(&ns.client, &metrics, &health).await;

    // Outside its role: deleting a Namespace is forbidden.
    let denied = Api::<Namespace>::all(sa.clone())
        .delete(&ns.name, &DeleteParams::default())
        .await;
    assert!(
        matches!(&denied, Err(kube::Error::Api(e)) if e.code == 403),
        "{denied:?}"
    );

    // The controller on the ServiceAccount's credentials, with /metrics served as in a pod.
    let port = free_port();
    let engine = fledge::policy::PolicyEngine::new(fledge::policy::Limits::default(), None).expect("engine");
    let options = fledge::controller::Options {
        min_interval: Duration::from_secs(1),
        namespace: Some(ns.name.clone()),
        metrics: metrics.clone(),
        // As installed: the key of Secret checksums in fledge-system, read or created on the role's rights.
        checksum_key_namespace: Some("fledge-system".into()),
        ..Default::default()
    };
    let server = tokio::spawn(fledge::telemetry::http::serve(
        ([127, 0, 0, 1], port).into(),
        metrics,
        Default::default(),
        health,
        std::future::pending(),
    ));
    let controller = tokio::spawn(async move {
        fledge::controller::run(sa, engine, options).await;
    });
    // Its judge is a Policy from a ConfigMap: the role must read both and report on the Policy's status.
    let judge = fledge::policy::builtin(fledge::policy::BUILTIN_DEFAULT).expect("builtin");
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "judge"},
        "binaryData": {"policy.wasm": k8s_openapi::ByteString(judge.to_vec())},
    }))
    .expect("configmap");
    ns.api::<k8s_openapi::api::core::v1::ConfigMap>()
        .create(&Default::default(), &cm)
        .await
        .expect("create configmap");
    let policy: fledge::api::PolicyResource = serde_json::from_value(json!({
        "metadata": {"name": "judge"},
        "spec": {"source": {"configMap": {"name": "judge", "key": "policy.wasm",
                                          "digest": fledge::registry::sha256(judge)}}},
    }))
    .expect("policy");
    ns.api::<fledge::api::PolicyResource>()
        .create(&Default::default(), &policy)
        .await
        .expect("create policy");
    create_canary(
        &ns,
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 60,
               "policy": {"policyRef": {"name": "judge"}}}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    // The ServiceAccount may read the Policy and its ConfigMap, and write the Policy's status.
    support::eventually("policy loaded", LIMIT, || async {
        let p = ns
            .api::<fledge::api::PolicyResource>()
            .get("judge")
            .await
            .map_err(|e| e.to_string())?;
        match p.status.and_then(|s| s.digest) {
            Some(d) if d == fledge::registry::sha256(judge) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;

    // Watch the canary's weight series through /metrics until the rollout ends.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut seen: Vec<i64> = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(w) = scraped_weight(&url, "podinfo", &ns.name).await
            && seen.last() != Some(&w)
        {
            seen.push(w);
        }
        let done = ns
            .api::<fledge::api::Canary>()
            .get("podinfo")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.phase)
            == Some(Phase::Succeeded);
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Succeeded; weights seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(w) = scraped_weight(&url, "podinfo", &ns.name).await
        && seen.last() != Some(&w)
    {
        seen.push(w);
    }
    assert_eq!(
        seen,
        vec![0, 20, 40, 60, 0],
        "fledge_canary_weight of the canary workload"
    );
    let text = reqwest::get(&url)
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let calls = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"fledge_policy_call_duration_seconds_count{world="step"} "#))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(calls >= 4, "policy latency histogram: {calls} step calls\n{text}");
    // Where the controller's time goes: the API's answers, whole reconciles, and how late paced ticks ran.
    let count = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        count(r#"fledge_kube_request_duration_seconds_count{verb="patch"}"#) >= 3,
        "API latency histogram\n{text}"
    );
    assert!(
        count("fledge_reconcile_duration_seconds_count") >= 4,
        "reconcile histogram\n{text}"
    );
    // 20 → 40 → 60 → promotion: each a tick after an interval.
    assert!(
        count("fledge_tick_lateness_seconds_count") >= 3,
        "tick lateness histogram\n{text}"
    );
    // Every watch ran on the role's rights alone, all rollout long.
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "{:?}", health.text().await);
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );
    // Deleted on the role's rights too: the app is restored and the Canary goes.
    ns.api::<fledge::api::Canary>()
        .delete("podinfo", &DeleteParams::default())
        .await
        .expect("delete canary");
    support::eventually("the Canary is gone", LIMIT, || async {
        match ns.api::<fledge::api::Canary>().get_opt("podinfo").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Every verb the ClusterRole grants was sent in this story, or serves a path the story does not take.
    let mut used: BTreeSet<(String, String)> = api_requests(&url)
        .await
        .expect("scrape")
        .into_iter()
        .map(|(verb, resource, _)| (verb, resource))
        .collect();
    // A server-side apply that makes an object is a patch the API authorises as create.
    let applied: Vec<String> = used
        .iter()
        .filter(|(verb, _)| verb == "patch")
        .map(|(_, resource)| resource.clone())
        .collect();
    used.extend(
        applied
            .into_iter()
            .map(|resource| ("create".to_owned(), resource)),
    );
    let unexercised: Vec<(String, String)> = granted()
        .into_iter()
        .filter(|grant| !used.contains(grant))
        .filter(|(verb, resource)| !GRANTED_FOR_OTHER_PATHS.contains(&(verb.as_str(), resource.as_str())))
        .collect();
    assert!(
        unexercised.is_empty(),
        "deploy/rbac.yaml grants what fledge did not send and no listed path needs: {unexercised:?}"
    );
    controller.abort();
    server.abort();
}

fn replica(ns: &str, name: &str) -> ControllerProcess {
    ControllerProcess::spawn_with(
        ns,
        &[
            "--leader-elect",
            "--lease-namespace",
            ns,
            "--lease-duration",
            "4s",
        ],
        &[("POD_NAME", name)],
    )
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn two_replicas_only_the_leader_acts_and_the_standby_finishes_the_rollout_when_it_dies() {
    let ns = TestNamespace::create("leader").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let mut replicas = [replica(&ns.name, "fledge-a"), replica(&ns.name, "fledge-b")];
    create_canary(
        &ns,
        json!({"interval": "2s", "threshold": 2, "stepWeight": 20, "maxWeight": 60}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    let leases: Api<Lease> = ns.api();
    let holder = leases
        .get("fledge-leader-election")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a holder");
    let leader = usize::from(!holder.starts_with("fledge-a_"));
    let standby_name = if leader == 0 { "fledge-b" } else { "fledge-a" };

    // Record every weight the VirtualService takes.
    let history = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, i64)>::new()));
    let recorder = {
        let (client, name, history) = (ns.client.clone(), ns.name.clone(), history.clone());
        tokio::spawn(async move {
            loop {
                if let Some(w) = weights_in(&client, &name).await {
                    let mut h = history.lock().expect("history");
                    if h.last() != Some(&w) {
                        h.push(w);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_weights(&ns, (80, 20)).await;

    // Only the leader has acted so far.
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let instances = |list: &[k8s_openapi::api::events::v1::Event]| -> BTreeSet<String> {
        list.iter().filter_map(|e| e.reporting_instance.clone()).collect()
    };
    let before = events.list(&Default::default()).await.expect("events").items;
    assert!(
        !instances(&before).contains(standby_name),
        "the standby acted: {:?}",
        instances(&before)
    );
    let standby = 1 - leader;
    let requests = api_requests(&replicas[standby].metrics_url)
        .await
        .expect("scrape the standby");
    assert!(
        requests
            .iter()
            .any(|(verb, resource, n)| verb == "get" && resource == "leases" && *n > 0),
        "the standby's request counter shows no Lease polling: {requests:?}"
    );
    let writes: Vec<_> = requests
        .into_iter()
        .filter(|(verb, resource, n)| {
            *n > 0 && resource != "leases" && ["create", "update", "patch", "delete"].contains(&verb.as_str())
        })
        .collect();
    assert!(writes.is_empty(), "the standby wrote to the API: {writes:?}");

    // Kill the leader mid-rollout; the standby takes the Lease within its duration and finishes.
    let killed_at = tokio::time::Instant::now();
    replicas[leader].kill();
    wait_holder(&leases, standby_name, Duration::from_secs(15)).await;
    let took_over = killed_at.elapsed();
    wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    recorder.abort();
    let history = history.lock().expect("history").clone();
    assert_eq!(
        history,
        vec![(100, 0), (80, 20), (60, 40), (40, 60), (100, 0)],
        "every step exactly once"
    );
    let after = events.list(&Default::default()).await.expect("events").items;
    assert!(instances(&after).contains(standby_name));
    assert!(
        took_over < Duration::from_secs(4 + 3),
        "took over after {took_over:?} (lease 4s, retry every 0.8s)"
    );
    assert_eq!(
        image(&ns, "podinfo-primary").await.as_deref(),
        Some("stefanprodan/podinfo:3.1.1")
    );
}

/// Waits until replica `name` (its identity is `<name>_<pid>`) holds the Lease.
async fn wait_holder(leases: &Api<Lease>, name: &str, limit: Duration) {
    support::eventually(&format!("{name} holds the lease"), limit, || async {
        let holder = leases
            .get("fledge-leader-election")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        if holder.starts_with(&format!("{name}_")) {
            Ok(())
        } else {
            Err(holder)
        }
    })
    .await;
}

/// The wall-clock times at which a controller's log (JSON lines) says it `sent` (or `refused: …`) a write
/// other than to its Lease.
fn writes_logged(log: &std::path::Path, outcome: &str) -> Vec<k8s_openapi::jiff::Timestamp> {
    std::fs::read_to_string(log)
        .expect("read the log")
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            entry["target"] == "fledge::writes"
                && entry["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(outcome))
                && entry["fields"]["resource"] != "leases"
        })
        .filter_map(|entry| entry["timestamp"].as_str()?.parse().ok())
        .collect()
}

#[tokio::test]
#[ignore = "needs the local control plane; run with make test"]
async fn a_leader_cut_off_from_the_api_stops_writing_before_the_standby_takes_over_and_exits_when_it_returns()
{
    let ns = TestNamespace::create("partition").await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let leases: Api<Lease> = ns.api();
    // The leader logs every write it sends, with its time.
    let log = std::env::temp_dir().join(format!("fledge-partition-{}.log", std::process::id()));
    let mut leader = ControllerProcess::spawn_logged(
        &ns.name,
        &[
            "--leader-elect",
            "--lease-namespace",
            &ns.name,
            "--lease-duration",
            "4s",
        ],
        &[
            ("POD_NAME", "fledge-a"),
            ("RUST_LOG", "warn,fledge::writes=debug"),
            ("FLEDGE_LOG_JSON", "true"),
        ],
        Some(&log),
    );
    wait_holder(&leases, "fledge-a", Duration::from_secs(15)).await;
    let _standby = replica(&ns.name, "fledge-b");
    // A rollout webhook the test can slow down: the leader is frozen while a call is in flight, so it
    // resumes in the middle of a reconcile with a write still to send.
    let hooks = support::hooks::Hooks::start().await;
    create_canary(
        &ns,
        json!({"interval": "1s", "threshold": 2, "stepWeight": 10, "maxWeight": 50,
               "webhooks": [{"name": "slow", "type": "rollout", "url": format!("{}/slow", hooks.url),
                             "timeout": "20s"}]}),
    )
    .await
    .expect("create canary");
    wait_phase(&ns, Phase::Initialized, LIMIT).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_weights(&ns, (90, 10)).await;

    // Partitioned mid-rollout, inside a reconcile: frozen, it renews nothing and sends nothing. The webhook
    // answers while it is frozen, so on waking its reconcile goes straight on to write.
    let before = hooks.calls("slow").len();
    hooks.delay("slow", Duration::from_secs(6));
    support::eventually(
        "the leader calls the slow webhook",
        Duration::from_secs(10),
        || async {
            if hooks.calls("slow").len() > before {
                Ok(())
            } else {
                Err("no call yet".to_owned())
            }
        },
    )
    .await;
    leader.signal("STOP");
    hooks.delay("slow", Duration::ZERO);
    wait_holder(&leases, "fledge-b", Duration::from_secs(20)).await;
    let taken = leases
        .get("fledge-leader-election")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.acquire_time)
        .expect("acquireTime")
        .0;
    wait_phase(&ns, Phase::Succeeded, LIMIT).await;
    // The frozen leader's webhook call has been answered by now (6 s); its reconcile waits to go on.

    // Back on the network: its fence has closed, so whatever it had in flight is refused; it exits.
    leader.signal("CONT");
    let status = leader
        .exited_within(Duration::from_secs(15))
        .await
        .expect("the old leader exits once it sees its lease is gone");
    assert_eq!(status.code(), Some(1), "lease lost is exit 1 so the pod restarts");
    let sent = writes_logged(&log, "sent");
    assert!(
        !sent.is_empty(),
        "the leader's writes are in its log: {}",
        log.display()
    );
    assert!(
        !writes_logged(&log, "refused").is_empty(),
        "the reconcile it woke up in tried to write and was refused: {}",
        log.display()
    );
    let late: Vec<_> = sent.iter().filter(|t| **t >= taken).collect();
    assert!(
        late.is_empty(),
        "the old leader wrote after fledge-b took the lease at {taken}: {late:?}"
    );
    let _ = std::fs::remove_file(&log);
}
