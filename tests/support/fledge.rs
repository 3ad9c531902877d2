//! Helpers for tests that run fledge's controller against the real plane.

use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

use super::{TestNamespace, eventually};
use fledge::api::{Canary, Phase};

/// Installs (or updates) fledge's CRDs (Canary, MetricTemplate, Policy, ClusterPolicy) and waits until they
/// are served.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        Canary::crd(),
        fledge::api::MetricTemplate::crd(),
        fledge::api::PolicyResource::crd(),
        fledge::api::ClusterPolicy::crd(),
    ] {
        let name = crd.metadata.name.clone().expect("crd name");
        crds.patch(
            &name,
            &PatchParams::apply("fledge-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || async {
                let c = crds.get(&name).await.map_err(|e| e.to_string())?;
                let established = c
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    Ok(())
                } else {
                    Err("not established".into())
                }
            },
        )
        .await;
    }
}

/// The components build.rs made (the test policies among them): the controller's `--policy-dir` in tests,
/// so a Canary names them as `file:fledge_policy_scripted.wasm`.
pub fn policy_dir() -> &'static str {
    env!("FLEDGE_POLICY_OUT_DIR")
}

/// Runs the controller for `ns` only, in this process, with a 1 s interval floor.
pub fn start_controller(client: &Client, ns: &str) -> tokio::task::JoinHandle<()> {
    start_controller_with(client, ns, None)
}

/// Like [`start_controller`], with `dir` as its `--policy-dir`.
pub fn start_controller_with_policy_dir(
    client: &Client,
    ns: &str,
    dir: &std::path::Path,
) -> tokio::task::JoinHandle<()> {
    spawn_controller(client, ns, None, dir.to_owned())
}

/// Like [`start_controller`], with a default Prometheus (`--metrics-server`).
pub fn start_controller_with(
    client: &Client,
    ns: &str,
    metrics_server: Option<String>,
) -> tokio::task::JoinHandle<()> {
    spawn_controller(client, ns, metrics_server, policy_dir().into())
}

fn spawn_controller(
    client: &Client,
    ns: &str,
    metrics_server: Option<String>,
    policy_dir: std::path::PathBuf,
) -> tokio::task::JoinHandle<()> {
    start_controller_tuned(client, ns, move |o| {
        o.metrics_server = metrics_server;
        o.policy_dir = Some(policy_dir);
    })
}

/// Like [`start_controller`], with `tune` changing its options (deadlines, say).
pub fn start_controller_tuned(
    client: &Client,
    ns: &str,
    tune: impl FnOnce(&mut fledge::controller::Options),
) -> tokio::task::JoinHandle<()> {
    let engine = fledge::policy::PolicyEngine::new(fledge::policy::Limits::default(), None).expect("engine");
    let mut options = fledge::controller::Options {
        min_interval: Duration::from_secs(1),
        namespace: Some(ns.to_owned()),
        policy_dir: Some(policy_dir().into()),
        ..Default::default()
    };
    tune(&mut options);
    let client = client.clone();
    tokio::spawn(async move {
        fledge::controller::run(client, engine, options).await;
    })
}

/// The real `fledge controller` binary for one namespace (1 s interval floor), serving `/metrics` on a free
/// loopback port; SIGKILLed when dropped, so a failing test leaves no process behind.
pub struct ControllerProcess {
    child: Child,
    pub metrics_url: String,
}

impl ControllerProcess {
    pub fn spawn(ns: &str) -> Self {
        Self::spawn_with(ns, &[], &[])
    }

    /// With more flags (`--leader-elect`, …) and environment variables (`POD_NAME`, …).
    pub fn spawn_with(ns: &str, flags: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_logged(ns, flags, env, None)
    }

    /// Like [`Self::spawn_with`], its log (stderr) written to `log` when given; `RUST_LOG` in `env` wins.
    pub fn spawn_logged(
        ns: &str,
        flags: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let mut all = vec!["--namespace", ns, "--min-interval", "1s"];
        all.extend_from_slice(flags);
        Self::spawn_watching(ns, &all, env, log)
    }

    /// The controller for every namespace, as installed (the 10 s interval floor); the key of Secret checksums
    /// lives in `key_ns`.
    pub fn spawn_cluster_wide(
        key_ns: &str,
        flags: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        Self::spawn_watching(key_ns, flags, env, log)
    }

    fn spawn_watching(
        key_ns: &str,
        flags: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let listen = format!("127.0.0.1:{}", super::prometheus::free_port());
        let stderr = match log {
            Some(path) => {
                std::process::Stdio::from(std::fs::File::create(path).expect("create the log file"))
            }
            None => std::process::Stdio::inherit(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_fledge"))
            .args([
                "controller",
                "--listen",
                &listen,
                "--policy-dir",
                policy_dir(),
                // A test namespace stands in for fledge's own (the key of Secret checksums lives there).
                "--checksum-key-namespace",
                key_ns,
            ])
            .args(flags)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stderr(stderr)
            .spawn()
            .expect("start fledge controller");
        Self {
            child,
            metrics_url: format!("http://{listen}/metrics"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGSTOP (`pause`) or SIGCONT (`resume`): the process is frozen as a partitioned node would be.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn exited_within(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        None
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the controller");
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A controller's `/metrics` text now.
pub async fn scrape(metrics_url: &str) -> Result<String, String> {
    reqwest::get(metrics_url)
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())
}

/// One Prometheus histogram read from an exposition text: cumulative counts per upper bound (`+Inf` last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// The series `name` whose labels (besides `le`) are exactly `labels` (e.g. `verb="patch"`, or "").
    pub fn read(text: &str, name: &str, labels: &str) -> Self {
        // `name_suffix{labels} value`, the labels split off as text (fledge's label values hold no commas).
        let parse = |line: &str| -> Option<(String, Vec<String>, String)> {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let set = rest.strip_suffix('}')?;
            let set = set
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            Some((metric.to_owned(), set, value.to_owned()))
        };
        let mut h = Self::default();
        for (metric, mut set, value) in text.lines().filter_map(parse) {
            let le = set
                .iter()
                .position(|l| l.starts_with("le="))
                .map(|i| set.remove(i));
            if set.join(",") != labels {
                continue;
            }
            match (metric.strip_prefix(name), le) {
                (Some("_sum"), None) => h.sum = value.parse().unwrap_or(0.0),
                (Some("_count"), None) => h.count = value.parse().unwrap_or(0),
                (Some("_bucket"), Some(le)) => {
                    let le = le.trim_start_matches("le=").trim_matches('"');
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    };
                    h.buckets.push((bound, value.parse().unwrap_or(0)));
                }
                _ => {}
            }
        }
        h
    }

    /// What was observed since `before` (the same series, scraped earlier).
    pub fn since(&self, before: &Self) -> Self {
        Self {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| {
                    let was = before
                        .buckets
                        .iter()
                        .find(|(b, _)| *b == le)
                        .map_or(0, |(_, n)| *n);
                    (le, n.saturating_sub(was))
                })
                .collect(),
            sum: self.sum - before.sum,
            count: self.count.saturating_sub(before.count),
        }
    }

    /// The upper bound of the bucket holding the `q` quantile (the largest finite bound when it is past
    /// them all); 0 when nothing was observed.
    pub fn quantile(&self, q: f64) -> f64 {
        let rank = (q * self.count as f64).ceil() as u64;
        let finite = self
            .buckets
            .iter()
            .filter(|(le, _)| le.is_finite())
            .map(|(le, _)| *le);
        self.buckets
            .iter()
            .find(|(_, n)| *n >= rank.max(1))
            .map(|(le, _)| *le)
            .filter(|le| le.is_finite())
            .or_else(|| (self.count > 0).then(|| finite.fold(0.0, f64::max)))
            .unwrap_or(0.0)
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// `fledge_kube_requests_total` as a controller's `/metrics` shows it now: (verb, resource, count).
pub async fn api_requests(metrics_url: &str) -> Result<Vec<(String, String, u64)>, String> {
    let text = reqwest::get(metrics_url)
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let label = |labels: &str, key: &str| {
        let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
        let end = labels[start..].find('"')? + start;
        Some(labels[start..end].to_owned())
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("fledge_kube_requests_total{")?;
            let (labels, value) = rest.split_once("} ")?;
            Some((
                label(labels, "verb")?,
                label(labels, "resource")?,
                value.trim().parse().ok()?,
            ))
        })
        .collect())
}

/// Waits (up to two minutes) for an event in `ns` whose note contains `text`; returns the note.
pub async fn event_note(ns: &TestNamespace, text: &str) -> String {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    eventually(
        &format!("event containing {text:?}"),
        Duration::from_secs(120),
        || async {
            let list = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let notes: Vec<String> = list.items.iter().filter_map(|e| e.note.clone()).collect();
            notes
                .iter()
                .find(|n| n.contains(text))
                .cloned()
                .ok_or_else(|| format!("{notes:#?}"))
        },
    )
    .await
}

/// podinfo at `image` with 2 replicas, and its Service on 9898, as in the seed story.
pub async fn create_podinfo(ns: &TestNamespace, image: &str) {
    create_app(ns, "podinfo", image).await;
}

/// An app like podinfo under another name.
pub async fn create_app(ns: &TestNamespace, name: &str, image: &str) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "podinfod", "image": image, "ports": [{"containerPort": 9898}]}]}
            }
        }
    }))
    .expect("deployment");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create app");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}
    }))
    .expect("service");
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
}

/// Creates a Canary for podinfo with `analysis`.
pub async fn create_canary(ns: &TestNamespace, analysis: serde_json::Value) -> Result<Canary, kube::Error> {
    create_canary_for(ns, "podinfo", analysis).await
}

/// Creates a Canary `name` for the app `name`.
pub async fn create_canary_for(
    ns: &TestNamespace,
    name: &str,
    analysis: serde_json::Value,
) -> Result<Canary, kube::Error> {
    let spec = json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "progressDeadlineSeconds": 60,
        "service": {"port": 9898, "targetPort": 9898},
        "analysis": analysis,
    });
    create_canary_spec(ns, name, spec).await
}

/// Creates a Canary `name` with `spec`.
pub async fn create_canary_spec(
    ns: &TestNamespace,
    name: &str,
    spec: serde_json::Value,
) -> Result<Canary, kube::Error> {
    let canary: Canary = serde_json::from_value(json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("canary");
    ns.api::<Canary>().create(&PostParams::default(), &canary).await
}

/// Non-watch request counts (`api_requests`) that grew from `before` to `after`, by (verb, resource).
pub fn request_delta(
    before: &[(String, String, u64)],
    after: &[(String, String, u64)],
) -> std::collections::BTreeMap<(String, String), u64> {
    after
        .iter()
        .filter(|(verb, _, _)| verb != "watch")
        .filter_map(|(verb, resource, n)| {
            let was = before
                .iter()
                .find(|(v, r, _)| v == verb && r == resource)
                .map_or(0, |(_, _, n)| *n);
            (*n > was).then(|| ((verb.clone(), resource.clone()), n - was))
        })
        .collect()
}

/// Pins podinfo's pods to a node that does not exist: a new revision whose pods never become ready.
pub async fn make_target_unschedulable(ns: &TestNamespace) {
    let patch = json!({"spec": {"template": {"spec": {"nodeSelector": {"fledge.dev/nowhere": "true"}}}}});
    ns.api::<Deployment>()
        .patch("podinfo", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("pin podinfo nowhere");
}

/// The Canary podinfo's phase now (`None` when it or its status is missing).
pub async fn phase(ns: &TestNamespace) -> Option<Phase> {
    ns.api::<Canary>().get_opt("podinfo").await.ok()??.status?.phase
}

/// Waits until the Canary podinfo reaches `phase`.
pub async fn wait_phase(ns: &TestNamespace, phase: Phase, limit: Duration) -> Canary {
    wait_phase_of(ns, "podinfo", phase, limit).await
}

/// Waits until the Canary `name` reaches `phase`.
pub async fn wait_phase_of(ns: &TestNamespace, name: &str, phase: Phase, limit: Duration) -> Canary {
    let canaries = ns.api::<Canary>();
    eventually(&format!("canary {name} phase {phase:?}"), limit, || async {
        let c = canaries.get(name).await.map_err(|e| e.to_string())?;
        match c.status.as_ref().and_then(|s| s.phase) {
            Some(p) if p == phase => Ok(c),
            other => Err(format!("phase {other:?}, status {:?}", c.status)),
        }
    })
    .await
}

/// The VirtualService `podinfo`'s (primary, canary) weights.
pub async fn weights(ns: &TestNamespace) -> Option<(i64, i64)> {
    weights_in(&ns.client, &ns.name).await
}

/// The VirtualService `podinfo`'s (primary, canary) weights in namespace `ns`.
pub async fn weights_in(client: &Client, ns: &str) -> Option<(i64, i64)> {
    let vs = istio_api(client, ns, "VirtualService")
        .get_opt("podinfo")
        .await
        .ok()??;
    podinfo_weights(&vs)
}

/// The Istio `kind` API (networking.istio.io/v1) in namespace `ns`.
pub fn istio_api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A podinfo VirtualService's (primary, canary) weights.
pub fn podinfo_weights(vs: &DynamicObject) -> Option<(i64, i64)> {
    route_weights(vs, "podinfo")
}

/// The (primary, canary) weights of the first HTTP route of `service`'s VirtualService.
pub fn route_weights(vs: &DynamicObject, service: &str) -> Option<(i64, i64)> {
    let route = vs.data["spec"]["http"][0]["route"].as_array()?.clone();
    let weight = |host: &str| {
        route
            .iter()
            .find(|r| r["destination"]["host"] == host)
            .and_then(|r| r["weight"].as_i64())
            .unwrap_or(0)
    };
    Some((
        weight(&format!("{service}-primary")),
        weight(&format!("{service}-canary")),
    ))
}

/// `spec.replicas` and ready replicas of a Deployment.
pub async fn replicas(ns: &TestNamespace, name: &str) -> Option<(i32, i32)> {
    let d = ns.api::<Deployment>().get_opt(name).await.ok()??;
    let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    Some((spec, ready))
}

/// The first container image of a Deployment.
pub async fn image(ns: &TestNamespace, name: &str) -> Option<String> {
    let d = ns.api::<Deployment>().get_opt(name).await.ok()??;
    d.spec?.template.spec?.containers.first()?.image.clone()
}

/// A Service's selector.
pub async fn selector(ns: &TestNamespace, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
    ns.api::<Service>().get_opt(name).await.ok()??.spec?.selector
}

/// `kubectl set image deployment/podinfo podinfod=<image>`.
pub async fn set_image(ns: &TestNamespace, image: &str) {
    set_image_of(ns, "podinfo", image).await;
}

/// `kubectl set image deployment/<name> podinfod=<image>`.
pub async fn set_image_of(ns: &TestNamespace, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "podinfod", "image": image}]}}}});
    ns.api::<Deployment>()
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("set image");
}

/// A fresh namespace with the CRD, podinfo 3.1.0, fledge running for it, and a Canary with `analysis`
/// that has reached Initialized.
pub async fn initialized_podinfo(
    prefix: &str,
    analysis: serde_json::Value,
) -> (TestNamespace, tokio::task::JoinHandle<()>) {
    let ns = TestNamespace::create(prefix).await;
    install_crds(&ns.client).await;
    create_podinfo(&ns, "stefanprodan/podinfo:3.1.0").await;
    let controller = start_controller(&ns.client, &ns.name);
    create_canary(&ns, analysis).await.expect("create canary");
    wait_phase(&ns, Phase::Initialized, Duration::from_secs(90)).await;
    (ns, controller)
}

/// Waits until the VirtualService routes `(primary, canary)`.
pub async fn wait_weights(ns: &TestNamespace, expected: (i64, i64)) {
    eventually(
        &format!("weights {expected:?}"),
        Duration::from_secs(90),
        || async {
            match weights(ns).await {
                Some(w) if w == expected => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// [`initialized_podinfo`], then 3.1.1 shipped and the rollout at `weights` (primary, canary).
pub async fn progressing_podinfo(
    prefix: &str,
    analysis: serde_json::Value,
    at: (i64, i64),
) -> (TestNamespace, tokio::task::JoinHandle<()>) {
    let (ns, controller) = initialized_podinfo(prefix, analysis).await;
    set_image(&ns, "stefanprodan/podinfo:3.1.1").await;
    wait_weights(&ns, at).await;
    (ns, controller)
}
