//! The `fledge` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    Controller {
        /// Floor for analysis.interval, e.g. 10s (Flagger's) or lower for demos and tests.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        min_interval: std::time::Duration,
        /// Watch only this namespace.
        #[arg(long, env = "FLEDGE_NAMESPACE")]
        namespace: Option<String>,
        /// Kubeconfig file; default: KUBECONFIG, ~/.kube/config, or the in-cluster service account.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Prometheus URL for canaries without spec.metricsServer (Flagger's -metrics-server).
        #[arg(long, env = "FLEDGE_METRICS_SERVER")]
        metrics_server: Option<String>,
    },
    /// Print the CustomResourceDefinitions fledge installs, as YAML.
    Crds,
    /// Run or describe policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Ask a policy for one decision and print it as JSON.
    Eval {
        /// `builtin:default` or a path to a .wasm component.
        source: String,
        /// Which judgement to ask for.
        #[arg(long, value_enum)]
        world: World,
        /// JSON file with {"rollout": {...}, "gate": ..., "hooks": [...], "checks": [...]}; `-` for stdin.
        #[arg(long)]
        input: PathBuf,
    },
    /// Print a component's digest, contract version, exports and imports.
    Inspect {
        /// `builtin:default` or a path to a .wasm component.
        source: String,
    },
}

/// `30s`, `2m`, `500ms`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

fn controller(
    min_interval: std::time::Duration,
    namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
    metrics_server: Option<String>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(&path)?;
                let config =
                    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                        .await?;
                kube::Client::try_from(config)?
            }
            None => kube::Client::try_default().await?,
        };
        let engine = fledge::policy::PolicyEngine::new(
            fledge::policy::Limits::default(),
            policy::default_cache_dir(),
        )?;
        tracing::info!(
            ?min_interval,
            ?namespace,
            ?metrics_server,
            "fledge controller starting"
        );
        fledge::controller::run(
            client,
            engine,
            fledge::controller::Options {
                min_interval,
                namespace,
                metrics_server,
                ..Default::default()
            },
        )
        .await;
        anyhow::Ok(())
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Controller {
            min_interval,
            namespace,
            kubeconfig,
            metrics_server,
        } => {
            controller(min_interval, namespace, kubeconfig, metrics_server)?;
        }
        Command::Crds => print!("{}", fledge::api::crds_yaml()?),
        Command::Policy(PolicyCommand::Eval { source, world, input }) => {
            let text = if input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&input).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?
            };
            let input: policy::EvalInput =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("invalid --input: {e}"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&policy::eval(&source, world, &input)?)?
            );
        }
        Command::Policy(PolicyCommand::Inspect { source }) => {
            println!("{}", serde_json::to_string_pretty(&policy::inspect(&source)?)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fledge::telemetry::init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(policy::exit_code(&err))
        }
    }
}
