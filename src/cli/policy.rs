//! `fledge policy eval`, `inspect`, `push` and `pull`: run, describe and ship a policy component from the
//! shell.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::Replay;
use crate::api::QueryRecord;
use crate::policy::types::{GateKind, MetricCheck, MetricsSource, Rollout, WebhookOutcome};
use crate::policy::{Grants, Limits, Policy, PolicyComponent, PolicyEngine, PolicyError, read_source};
use crate::registry::{self, Auth, PullLimits};

/// Which judgement to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum World {
    Step,
    Gate,
    Analysis,
}

/// What `policy eval --input` reads: the rollout plus what the chosen world needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalInput {
    pub rollout: Rollout,
    /// The gate to decide (world gate).
    #[serde(default)]
    pub gate: Option<GateKind>,
    /// Webhook outcomes (worlds gate and analysis).
    #[serde(default)]
    pub hooks: Vec<WebhookOutcome>,
    /// Metric checks (world analysis).
    #[serde(default)]
    pub checks: Vec<MetricCheck>,
    /// The policy's own queries as a Canary's `status.analysis.queries` recorded them: replayed to the
    /// component's `metrics` import instead of asking Prometheus (world analysis).
    #[serde(default)]
    pub queries: Vec<QueryRecord>,
}

/// Where compiled policies are cached: `$FLEDGE_POLICY_CACHE`, else `~/.cache/fledge/policy-cache`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FLEDGE_POLICY_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("fledge").join("policy-cache"))
}

/// The bytes of `builtin:<name>`, a local file, or `oci://…@sha256:<digest>` (pulled and verified).
fn read_bytes(source: &str, auth: &Auth, insecure: bool) -> anyhow::Result<Vec<u8>> {
    if source.starts_with("oci://") {
        return pull(source, auth, insecure);
    }
    Ok(read_source(source)?.into_owned())
}

fn load(source: &str, auth: &Auth, insecure: bool) -> anyhow::Result<std::sync::Arc<PolicyComponent>> {
    load_into(&engine()?, source, auth, insecure)
}

fn engine() -> anyhow::Result<PolicyEngine> {
    Ok(PolicyEngine::new(Limits::default(), default_cache_dir())?)
}

fn load_into(
    engine: &PolicyEngine,
    source: &str,
    auth: &Auth,
    insecure: bool,
) -> anyhow::Result<std::sync::Arc<PolicyComponent>> {
    let bytes = read_bytes(source, auth, insecure)?;
    Ok(engine.load(source, &bytes, Grants::ALL)?)
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

/// Pulls `registry/repo[:tag]@sha256:<component digest>` (an `oci://` prefix is allowed).
pub fn pull(pinned: &str, auth: &Auth, insecure: bool) -> anyhow::Result<Vec<u8>> {
    let (reference, digest) = registry::split_pinned(pinned)?;
    let limits = PullLimits {
        // The CLI is the author's own tool: generous, but still bounded.
        max_bytes: 256 << 20,
        ..PullLimits::default()
    };
    Ok(block_on(registry::pull(
        &reference, &digest, auth, insecure, limits,
    ))??)
}

/// Pushes a component (checked to load first: a broken one never reaches the registry).
pub fn push(file: &Path, reference: &str, auth: &Auth, insecure: bool) -> anyhow::Result<registry::Pushed> {
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let engine = PolicyEngine::new(Limits::default(), default_cache_dir())?;
    let component = engine.load(&file.display().to_string(), &bytes, Grants::ALL)?;
    let summary = serde_json::json!({
        "exports": component.exports(),
        "imports": component.imports(),
        "target": component.package_version().map(|v| format!("{}@{v}", crate::policy::PACKAGE)),
    });
    Ok(block_on(registry::push(
        reference, bytes, &summary, auth, insecure,
    ))??)
}

/// A ready `Policy` manifest for a pushed component.
pub fn policy_manifest(reference: &str, digest: &str, name: Option<&str>, insecure: bool) -> String {
    let repository = reference.rsplit('/').next().unwrap_or(reference);
    let default_name = repository.split(':').next().unwrap_or(repository);
    let name = name.unwrap_or(default_name);
    let insecure = if insecure { "\n      insecure: true" } else { "" };
    format!(
        "apiVersion: fledge.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  source:\n    oci:\n      \
         ref: {reference}\n      digest: {digest}{insecure}\n"
    )
}

/// Runs one judgement and returns the decision as JSON.
pub fn eval(
    source: &str,
    auth: &Auth,
    insecure: bool,
    world: World,
    input: &EvalInput,
) -> anyhow::Result<serde_json::Value> {
    let policy = load(source, auth, insecure)?;
    let r = &input.rollout;
    let decision = match world {
        World::Step => serde_json::to_value(policy.step(r)?)?,
        World::Gate => {
            let kind = input
                .gate
                .ok_or_else(|| anyhow::anyhow!("world gate needs \"gate\" in the input"))?;
            serde_json::to_value(policy.gate(r, kind, &input.hooks)?)?
        }
        World::Analysis => {
            let replay: std::sync::Arc<dyn MetricsSource> = std::sync::Arc::new(Replay::new(&input.queries));
            serde_json::to_value(policy.analyse(r, &input.checks, &input.hooks, Some(replay))?)?
        }
    };
    Ok(decision)
}

/// Runs a scenario file against a component: the report as a table, and whether every tick matched.
pub fn test(source: &str, scenario: &Path, auth: &Auth, insecure: bool) -> anyhow::Result<(String, bool)> {
    let text =
        std::fs::read_to_string(scenario).map_err(|e| anyhow::anyhow!("{}: {e}", scenario.display()))?;
    let scenario = super::scenario::parse(&text)?;
    let engine = engine()?;
    let policy = load_into(&engine, source, auth, insecure)?;
    // The worlds a component does not export are the built-in default's, as in the controller.
    let fallback = load_into(&engine, crate::policy::BUILTIN_DEFAULT, auth, insecure)?;
    let reports = super::scenario::run(policy.as_ref(), fallback.as_ref(), &scenario);
    Ok((super::scenario::table(&reports), reports.iter().all(|r| r.ok)))
}

/// What `policy inspect` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub source: String,
    pub digest: String,
    pub package_version: Option<String>,
    /// The judgements it implements: `step`, `gate`, `analysis`.
    pub worlds: Vec<String>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

/// Describes a component: digest, contract version, exports and imports.
pub fn inspect(source: &str, auth: &Auth, insecure: bool) -> anyhow::Result<Inspection> {
    let component = load(source, auth, insecure)?;
    Ok(Inspection {
        source: source.to_owned(),
        digest: format!("sha256:{}", component.digest()),
        package_version: component.package_version().map(str::to_owned),
        worlds: component.worlds().into_iter().map(str::to_owned).collect(),
        exports: component.exports().to_vec(),
        imports: component.imports().to_vec(),
    })
}

/// Wraps a core module into a component (`world`: embed fledge's contract for it, for a module built without
/// wit-bindgen), writes it to `output`, and describes it as the host loads it.
pub fn componentize(module: &Path, world: Option<&str>, output: &Path) -> anyhow::Result<Inspection> {
    let bytes = std::fs::read(module).map_err(|e| anyhow::anyhow!("{}: {e}", module.display()))?;
    let component = super::componentize::componentize(&bytes, world)
        .map_err(|e| anyhow::anyhow!("{}: {e}", module.display()))?;
    std::fs::write(output, &component).map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
    inspect(&output.display().to_string(), &Auth::Anonymous, false)
}

/// `fledge policy record`: the scenario of a canary's rollout, written to `output` or returned.
pub fn record(target: &str) -> anyhow::Result<String> {
    block_on(super::record::from_cluster(target))?
}

/// Maps a policy failure to the process exit code the CLI uses for it.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<PolicyError>() {
        Some(
            PolicyError::Load { .. } | PolicyError::ImportDenied { .. } | PolicyError::MissingExport { .. },
        ) => 3,
        Some(_) => 4,
        None => 2,
    }
}
