//! The `coupa-changefeed` command: the clap tree and the dispatch into
//! [`coupa_changefeed::cli`], nothing else. Logging goes to stderr: stdout
//! carries events and command output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coupa_changefeed::cli::{self, dlq::DlqAction, state::StateAction, ConfigArg};
use coupa_changefeed::config::{LogFormat, Settings};
use coupa_changefeed::{app, demo, shutdown};

#[derive(Parser)]
#[command(
    name = "coupa-changefeed",
    version,
    about = "Turns a Coupa instance into a stream of change events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the config, reach Coupa (one `limit=1` request per object) and every sink.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if a running daemon's /healthz answers (for container HEALTHCHECKs).
    Health {
        /// Default: http://127.0.0.1:8080/healthz
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Start the simulator and the daemon with embedded defaults; events on stdout.
    Demo {
        /// State directory (default: a fresh temporary one).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Simulated changes per second.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
    },
    /// List the supported objects and what each allows.
    Objects {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show or rewind the per-object high-water marks.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// List, replay or drop dead letters (through a running daemon's
    /// /admin/dlq when it holds the state dir and [api] token is set).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// The actions: get, search, create, update, po, supplier, integration-run, http, ...
    #[command(flatten)]
    Action(cli::actions::ActionCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Action(cmd) = cli.command {
        return cli::actions::run(cmd).await;
    }
    match dispatch(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let settings = Settings::load(config.path())?;
            cli::init_logging(settings.log.format);
            cli::raise_fd_limit();
            let (trigger, listener) = shutdown::channel();
            cli::handle_signals(trigger);
            app::run(settings, listener).await
        }
        Command::Check { config, json } => {
            let settings = Settings::load(config.path())?;
            let rows = coupa_changefeed::check::run(&settings).await;
            cli::tables::check(&rows, json)
        }
        Command::Health { url } => cli::health(&url).await,
        Command::Demo { state, rate } => {
            cli::init_logging(LogFormat::Pretty);
            let (trigger, listener) = shutdown::channel();
            cli::handle_signals(trigger);
            demo::run(state, rate, listener).await
        }
        Command::Objects { json } => cli::tables::objects(json),
        Command::State { action } => cli::state::run(action).await,
        Command::Dlq { action } => cli::dlq::run(action).await,
        Command::Action(_) => unreachable!("actions are run before dispatch"),
    }
}
