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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
