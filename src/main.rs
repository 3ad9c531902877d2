//! The `fledge` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fledge::api::ManualAction;
use fledge::cli::policy::{self, World};

/// Progressive delivery (canary releases) on Istio, with rollout judgement in WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "fledge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (kubeconfig from KUBECONFIG or ~/.kube/config, else in-cluster).
    Controller(Box<ControllerArgs>),
    /// Print the CustomResourceDefinitions fledge installs, as YAML.
    Crds,
    /// Run or describe policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show canaries: a table, or one canary as a tree; `-w` redraws on every change.
    Get {
        /// A Canary's name (default: all in the namespace).
        name: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum, default_value = "tree")]
        output: fledge::cli::operate::Output,
        /// Keep watching and redraw on every change.
        #[arg(short, long)]
        watch: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Open the next gate of a rollout once (`--full`: promote now, skipping what the analysis has left).
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Roll a rollout back now.
    Abort {
        name: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Roll a failed revision out again.
    Retry {
        name: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Hold a rollout at its weight: no step, no analysis counted, until `resume`.
    Pause {
        name: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Let a paused rollout go on.
    Resume {
        name: String,
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Wait for a rollout to end: exit 0 when it succeeded (or none is in flight), 1 when it failed, 2 on
    /// timeout.
    Status {
        name: String,
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Check Canaries in a manifest offline, with the schema and the controller's rules; every problem is
    /// printed with its field path, and the exit code is 1 when there is one.
    Lint {
        /// A YAML file (several documents allowed; kinds other than Canary are skipped), a directory of them,
        /// or `-` for stdin.
        file: PathBuf,
    },
}

/// Every controller setting, by flag or environment variable.
#[derive(Debug, clap::Args)]
struct ControllerArgs {
    /// Floor for analysis.interval, e.g. 10s (Flagger's) or lower for demos and tests.
    #[arg(long, env = "FLEDGE_MIN_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    min_interval: std::time::Duration,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "FLEDGE_NAMESPACE")]
    namespace: Option<String>,
    /// Labels tried, in order, to find the one that selects a target's pods (Flagger's -selector-labels).
    #[arg(
        long,
        env = "FLEDGE_SELECTOR_LABELS",
        value_delimiter = ',',
        default_value = "app,name,app.kubernetes.io/name"
    )]
    selector_labels: Vec<String>,
    /// Kubeconfig file; default: KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Prometheus URL for canaries without spec.metricsServer (Flagger's -metrics-server).
    #[arg(long, env = "FLEDGE_METRICS_SERVER")]
    metrics_server: Option<String>,
    /// Timeout of one metric check query.
    #[arg(long, env = "FLEDGE_QUERY_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    query_timeout: std::time::Duration,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "FLEDGE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Log level; RUST_LOG overrides it.
    #[arg(long, env = "FLEDGE_LOG_LEVEL", default_value = "info",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
    /// Log JSON lines instead of text.
    #[arg(long, env = "FLEDGE_LOG_JSON")]
    log_json: bool,
    /// Act only while holding a Lease (run two replicas with this).
    #[arg(long, env = "FLEDGE_LEADER_ELECT")]
    leader_elect: bool,
    /// The Lease's name.
    #[arg(long, env = "FLEDGE_LEASE_NAME", default_value = "fledge-leader-election")]
    lease_name: String,
    /// The Lease's namespace (in a pod: its own, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "fledge-system")]
    lease_namespace: String,
    /// Where fledge keeps the key of its Secret checksums (the Secret `fledge-checksum-key`, created on first
    /// start): its own namespace (in a pod, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "fledge-system")]
    checksum_key_namespace: String,
    /// How long a Lease holds without renewal.
    #[arg(long, env = "FLEDGE_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: std::time::Duration,
    /// Wall-clock limit of one policy call.
    #[arg(long, env = "FLEDGE_POLICY_DEADLINE", default_value = "100ms", value_parser = parse_duration)]
    policy_deadline: std::time::Duration,
    /// Memory limit of one policy instance, in MiB (at least 1).
    #[arg(long, env = "FLEDGE_POLICY_MEMORY_MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    policy_memory_mib: u32,
    /// Canaries reconciled at once; the others wait first due, first served (`fledge_reconcile_queue_seconds`).
    /// A reconcile mostly waits on the API: at 1,000 canaries at a 10 s interval (`make scale`), a weight
    /// step holds its slot ~0.4 s, so 32 slots passed ~80 steps a second where 100 were due and held the
    /// steps back 2-4 s (gap p99 14.0-14.2 s); 48 gave gap p99 11.6-12.7 s at ~1 MiB more peak RSS; 128
    /// loaded the API so much that the steps were late again. The requests share one HTTP/2 connection.
    /// Policy calls are bounded apart (`--policy-calls`).
    #[arg(long, env = "FLEDGE_CONCURRENCY", default_value_t = fledge::controller::DEFAULT_CONCURRENCY)]
    concurrency: u16,
    /// Policy calls running at once; more wait their turn. Bounds what hostile policies take in all:
    /// this times `--policy-memory-mib`.
    #[arg(long, env = "FLEDGE_POLICY_CALLS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    policy_calls: u16,
    /// A directory of components Canaries may name as `file:<name>` (air-gapped installs, tests).
    #[arg(long, env = "FLEDGE_POLICY_DIR")]
    policy_dir: Option<PathBuf>,
    /// Largest policy component fetched or read, in MiB.
    #[arg(long, env = "FLEDGE_POLICY_MAX_MIB", default_value_t = 32)]
    policy_max_mib: u64,
    /// Longest one reconcile may take (its gate webhooks' own timeouts and retries come on top); one that
    /// takes longer is an error (category `timeout`) and is retried with backoff.
    #[arg(long, env = "FLEDGE_RECONCILE_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    reconcile_deadline: std::time::Duration,
    /// Longest a deleted Canary waits for its target to serve again; then the primary is left serving
    /// (no longer owned by the Canary), the finalizer goes and a Warning event says what was left.
    #[arg(long, env = "FLEDGE_TEARDOWN_DEADLINE", default_value = "5m", value_parser = parse_duration)]
    teardown_deadline: std::time::Duration,
    /// How often every canary's objects are read from the API, not the cache (±20 % jitter), and re-applied
    /// where they drifted: a backstop for a missed watch event; a hand edit seen by the watches is repaired
    /// at once.
    #[arg(long, env = "FLEDGE_RESYNC", default_value = "5m", value_parser = parse_duration)]
    resync: std::time::Duration,
    /// Time limit of fetching one policy component from a registry.
    #[arg(long, env = "FLEDGE_POLICY_FETCH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    policy_fetch_timeout: std::time::Duration,
}

/// Which cluster and namespace, as kubectl takes them.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    #[arg(short, long)]
    namespace: Option<String>,
    /// The kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl TargetArgs {
    fn target(&self) -> fledge::cli::operate::Target {
        fledge::cli::operate::Target {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// An operator's request to a rollout.
#[derive(Debug, clap::Args)]
struct RequestArgs {
    /// Why, for the event the controller records.
    #[arg(long)]
    reason: Option<String>,
    /// How long to wait for the controller to take the request.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    wait: std::time::Duration,
    #[command(flatten)]
    target: TargetArgs,
}

/// How the CLI reaches a registry.
#[derive(Debug, clap::Args)]
struct RegistryArgs {
    /// Plain HTTP (a registry without TLS).
    #[arg(long)]
    insecure: bool,
    /// Basic-auth user; the password comes from FLEDGE_REGISTRY_PASSWORD.
    #[arg(long, env = "FLEDGE_REGISTRY_USERNAME")]
    username: Option<String>,
}

impl RegistryArgs {
    fn auth(&self) -> anyhow::Result<fledge::registry::Auth> {
        Ok(match &self.username {
            None => fledge::registry::Auth::Anonymous,
            Some(username) => fledge::registry::Auth::Basic {
                username: username.clone(),
                password: std::env::var("FLEDGE_REGISTRY_PASSWORD")
                    .map_err(|_| anyhow::anyhow!("--username needs FLEDGE_REGISTRY_PASSWORD"))?,
            },
        })
    }
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Ask a policy for one decision and print it as JSON.
    Eval {
        /// `builtin:default`, a path to a .wasm component, or `oci://registry/repo[:tag]@sha256:<digest>`.
        source: String,
        /// Which judgement to ask for.
        #[arg(long, value_enum)]
        world: World,
        /// JSON file with {"rollout": {...}, "gate": ..., "hooks": [...], "checks": [...]}; `-` for stdin.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Print a component's digest, contract version, exports and imports.
    Inspect {
        /// `builtin:default`, a path to a .wasm component, or `oci://registry/repo[:tag]@sha256:<digest>`.
        source: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Run a scenario (ticks and the decision expected at each) against a component; exit 1 on a mismatch.
    Test {
        /// `builtin:default`, a path to a .wasm component, or `oci://registry/repo[:tag]@sha256:<digest>`.
        source: String,
        /// The scenario (YAML): `analysis`, `config`, `ticks: [{weight, checks, hooks, gate, expect}]`.
        scenario: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Write a policy template (Rust, Python or JavaScript) with its scenario and the contract into a new
    /// directory.
    New {
        #[arg(long, value_enum)]
        lang: fledge::cli::templates::Lang,
        /// The directory to create (it must not hold anything yet).
        dir: PathBuf,
    },
    /// Write the scenario of a canary's rollout (its recorded analyses and moves) for `policy test`.
    Record {
        /// `<namespace>/<canary>`, read with the current kubeconfig.
        canary: String,
        /// Where to write it (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Wrap a core wasm module into a component: one built with wit-bindgen (`wasm32-unknown-unknown`) as it
    /// is, one without bindings (Go) with `--world`; WASI preview 1 imports are answered by a deny-all WASI.
    Componentize {
        /// The core module (.wasm).
        module: PathBuf,
        /// The world of fledge's contract the module serves (`step-policy`, `gate-policy`, `analysis-policy`,
        /// `policy`), for a module that carries no component type.
        #[arg(long)]
        world: Option<String>,
        /// Where to write the component.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Push a component to an OCI registry as a Wasm artifact; prints its digest and a Policy for it.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// `registry/repository:tag`, e.g. `127.0.0.1:5000/policies/errors:v1`.
        reference: String,
        /// The Policy's name in the printed manifest (default: the repository's last element).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull a component by its digest: `registry/repo[:tag]@sha256:<digest>`.
    Pull {
        reference: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// Sends an operator's request and waits for the controller to take it.
fn manual(name: &str, action: ManualAction, args: RequestArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime.block_on(async {
        let (client, namespace) = fledge::cli::operate::connect(&args.target.target()).await?;
        fledge::cli::operate::request(&client, &namespace, name, action, args.reason, args.wait).await
    })?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Lints `path`: a file, `-` (stdin), or every `.yaml`/`.yml` file of a directory. Each problem is printed
/// with its file.
fn lint(path: &std::path::Path) -> anyhow::Result<(usize, Vec<String>)> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let (mut canaries, mut problems) = (0, Vec::new());
    for file in files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
        };
        let report =
            fledge::cli::lint::lint(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        canaries += report.canaries;
        problems.extend(report.problems.iter().map(|p| format!("{}: {p}", file.display())));
    }
    Ok((canaries, problems))
}

/// A Go duration: `30s`, `1m30s`, `500ms`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    fledge::api::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 10s, 1m30s or 500ms"))
}

fn controller(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let limits = fledge::policy::Limits {
            deadline: args.policy_deadline,
            memory_bytes: usize::try_from(args.policy_memory_mib).unwrap_or(usize::MAX) << 20,
            concurrent_calls: usize::from(args.policy_calls),
            ..Default::default()
        };
        let cache = policy::default_cache_dir();
        let engine = fledge::policy::PolicyEngine::new(limits, cache.clone())?;
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("fledge-{}", std::process::id()));
        let selector_labels: Vec<String> = args
            .selector_labels
            .iter()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        anyhow::ensure!(!selector_labels.is_empty(), "--selector-labels names no label");
        let options = fledge::controller::Options {
            min_interval: args.min_interval,
            namespace: args.namespace.clone(),
            selector_labels,
            metrics_server: args.metrics_server.clone(),
            query_timeout: args.query_timeout,
            concurrency: args.concurrency.max(1),
            lease: args
                .leader_elect
                .then(|| fledge::controller::leader::LeaseConfig {
                    namespace: args.lease_namespace.clone(),
                    name: args.lease_name.clone(),
                    identity: format!("{identity}_{}", std::process::id()),
                    duration: args.lease_duration,
                }),
            policy_dir: args.policy_dir.clone(),
            policy_blob_dir: cache.map(|c| c.join("components")),
            policy_fetch: fledge::registry::PullLimits {
                max_bytes: args.policy_max_mib << 20,
                timeout: args.policy_fetch_timeout,
            },
            reconcile_deadline: args.reconcile_deadline,
            teardown_deadline: args.teardown_deadline,
            resync: args.resync,
            checksum_key_namespace: Some(args.checksum_key_namespace.clone()),
            // With leader election nothing is written until the Lease is held.
            fence: if args.leader_elect {
                fledge::controller::leader::Fence::closed()
            } else {
                fledge::controller::leader::Fence::open()
            },
            ..Default::default()
        };
        let health = fledge::telemetry::health::WatchHealth::default();
        let client = fledge::telemetry::api_requests::counted_client(
            args.kubeconfig.as_deref(),
            &options.metrics,
            &health,
            &options.fence,
        )
        .await?;
        // Ready once the API answers: a standby waiting for the Lease is ready to take over.
        let ready = fledge::telemetry::http::Readiness::default();
        let server = tokio::spawn(fledge::telemetry::http::serve(
            args.listen,
            options.metrics.clone(),
            ready.clone(),
            health,
            fledge::controller::shutdown_signal(),
        ));
        client.apiserver_version().await?;
        ready.set(true);
        tracing::info!(?args, "fledge controller starting");
        let ended = fledge::controller::run(client, engine, options).await;
        ready.set(false);
        server.abort();
        Ok(match ended {
            fledge::controller::Ended::Signal => ExitCode::SUCCESS,
            // Exit non-zero so the pod restarts and stands by for the Lease again.
            fledge::controller::Ended::LeaseLost => ExitCode::from(1),
            fledge::controller::Ended::SetupFailed(why) => {
                tracing::error!("cannot start: {why}");
                ExitCode::from(1)
            }
        })
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Controller(args) => {
            fledge::telemetry::init_controller_logging(&args.log_level, args.log_json);
            return controller(*args);
        }
        Command::Crds => print!("{}", fledge::api::crds_yaml()?),
        Command::Policy(PolicyCommand::Eval {
            source,
            world,
            input,
            registry,
        }) => {
            let text = if input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&input).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?
            };
            let input: policy::EvalInput =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("invalid --input: {e}"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&policy::eval(
                    &source,
                    &registry.auth()?,
                    registry.insecure,
                    world,
                    &input
                )?)?
            );
        }
        Command::Policy(PolicyCommand::Inspect { source, registry }) => {
            let inspection = policy::inspect(&source, &registry.auth()?, registry.insecure)?;
            println!("{}", serde_json::to_string_pretty(&inspection)?);
        }
        Command::Policy(PolicyCommand::Test {
            source,
            scenario,
            registry,
        }) => {
            let (table, passed) = policy::test(&source, &scenario, &registry.auth()?, registry.insecure)?;
            print!("{table}");
            if !passed {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Policy(PolicyCommand::New { lang, dir }) => {
            let written = fledge::cli::templates::write(lang, &dir)?;
            for path in written {
                println!("{}", path.display());
            }
        }
        Command::Policy(PolicyCommand::Record { canary, output }) => {
            let scenario = policy::record(&canary)?;
            if let Some(path) = output {
                std::fs::write(&path, scenario).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            } else {
                print!("{scenario}");
            }
        }
        Command::Policy(PolicyCommand::Componentize {
            module,
            world,
            output,
        }) => {
            let inspection = policy::componentize(&module, world.as_deref(), &output)?;
            println!("{}", serde_json::to_string_pretty(&inspection)?);
        }
        Command::Policy(PolicyCommand::Push {
            file,
            reference,
            name,
            registry,
        }) => {
            let pushed = policy::push(&file, &reference, &registry.auth()?, registry.insecure)?;
            tracing::info!("pushed {reference} {}", pushed.digest);
            print!(
                "{}",
                policy::policy_manifest(&reference, &pushed.digest, name.as_deref(), registry.insecure)
            );
        }
        Command::Get {
            name,
            all_namespaces,
            output,
            watch,
            target,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let (client, namespace) = fledge::cli::operate::connect(&target.target()).await?;
                fledge::cli::operate::get(
                    &client,
                    &namespace,
                    name.as_deref(),
                    all_namespaces,
                    output,
                    watch,
                )
                .await
            })?;
        }
        Command::Promote { name, full, request } => {
            let action = if full {
                ManualAction::PromoteFull
            } else {
                ManualAction::Promote
            };
            return manual(&name, action, request);
        }
        Command::Abort { name, request } => return manual(&name, ManualAction::Abort, request),
        Command::Retry { name, request } => return manual(&name, ManualAction::Retry, request),
        Command::Pause { name, request } => return manual(&name, ManualAction::Pause, request),
        Command::Resume { name, request } => return manual(&name, ManualAction::Resume, request),
        Command::Status {
            name,
            timeout,
            target,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (outcome, text) = runtime.block_on(async {
                let (client, namespace) = fledge::cli::operate::connect(&target.target()).await?;
                fledge::cli::operate::status(&client, &namespace, &name, timeout).await
            })?;
            println!("{text}");
            return Ok(ExitCode::from(outcome.code()));
        }
        Command::Lint { file } => {
            let (canaries, problems) = lint(&file)?;
            for problem in &problems {
                println!("{problem}");
            }
            if !problems.is_empty() {
                return Ok(ExitCode::from(1));
            }
            if canaries == 0 {
                println!("{}: no Canary found", file.display());
                return Ok(ExitCode::from(1));
            }
            println!("{}: {canaries} Canary(s), no problem", file.display());
        }
        Command::Policy(PolicyCommand::Pull {
            reference,
            output,
            registry,
        }) => {
            let bytes = policy::pull(&reference, &registry.auth()?, registry.insecure)?;
            std::fs::write(&output, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
            tracing::info!("wrote {} ({} bytes)", output.display(), bytes.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Controller(_)) {
        fledge::telemetry::init_logging();
    }
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(policy::exit_code(&err))
        }
    }
}
