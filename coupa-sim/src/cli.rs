//! The `coupa-sim` command line: runs the Coupa API simulator (this crate)
//! as a standalone server for demos and out-of-process tests, until ctrl-c;
//! and `coupa-sim check`, which compares a running simulator's ground truth
//! with a sink's JSON Lines events ([`crate::verify`]).
//! Only turns flags into library calls; all behaviour lives in the library.
//! The binary itself is a one-line shim (`src/bin/coupa-sim.rs` in the
//! daemon's package, so the daemon's tests can spawn it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::verify::{self, Received};
use crate::{parse_offset, OAuthClient, SimConfig, Simulator, Version};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "coupa-sim",
    about = "A Coupa Core REST API simulator (admin endpoints under /_sim/)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compare a running simulator's versions with a sink's events: prints
    /// a report row and the problems found; exits 0 if clean, 1 if not,
    /// 2 if it could not check.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// The simulator's base URL, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    sim: String,
    /// The events as JSON Lines (what the file sink writes).
    #[arg(long)]
    events: PathBuf,
    /// Objects whose versions count, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    objects: Vec<String>,
    /// The daemon's poll interval: a superseded version that lived longer
    /// than twice this must have been received.
    #[arg(long, value_parser = humantime::parse_duration)]
    schedule: Duration,
    /// The scenario name in the report row.
    #[arg(long, default_value = "check")]
    scenario: String,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Seed for generated data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Records generated per top-level object at start.
    #[arg(long = "records", default_value_t = 20)]
    records: usize,
    /// Background creates+updates per second (0 = off).
    #[arg(long, default_value_t = 0.0)]
    change_rate: f64,
    /// Accept this legacy `X-COUPA-API-KEY`.
    #[arg(long)]
    api_key: Option<String>,
    /// OAuth client id (client-credentials grant).
    #[arg(long, default_value = "coupa-sim")]
    client_id: String,
    /// OAuth client secret.
    #[arg(long, default_value = "coupa-sim-secret")]
    client_secret: String,
    /// Scopes granted to the client, comma separated (default: every
    /// catalogue object's read and write scope).
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
    /// UTC offsets for timestamps, rotating per record, e.g. "-07:00,+05:30".
    #[arg(long, default_value = "-07:00", allow_hyphen_values = true)]
    offsets: String,
    /// Latency added to every API response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Disable the 25 rps / burst 20 rate limit.
    #[arg(long)]
    no_rate_limit: bool,
}

/// Parses the command line and runs it; `check` exits the process with its
/// verdict (0 clean, 1 not clean, 2 could not check).
pub async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(c)) => std::process::exit(match check(c).await {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("coupa-sim check: {e:#}");
                2
            }
        }),
        None => serve(cli.serve).await,
    }
}

/// Runs `verify` and prints the report; `Ok(clean)`.
async fn check(c: CheckArgs) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = c.sim.trim_end_matches('/');
    let mut truth: Vec<Version> = Vec::new();
    for object in &c.objects {
        let url = format!("{base}/_sim/versions/{object}");
        let resp = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!(
                "GET {url}: {status}: {}",
                body.chars().take(200).collect::<String>()
            );
        }
        let versions: Vec<Version> = resp
            .json()
            .await
            .with_context(|| format!("GET {url}: not a list of versions"))?;
        truth.extend(versions);
    }
    let text = std::fs::read_to_string(&c.events)
        .with_context(|| format!("cannot read {}", c.events.display()))?;
    let mut received = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", c.events.display(), n + 1);
        let ce: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        received.push(Received::from_event(&ce).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?);
    }
    let verdict = verify::verify(&truth, &received, c.schedule);
    println!(
        "{}\n{}\n\n{verdict}",
        verify::TABLE_HEADER,
        verdict.row(&c.scenario)
    );
    Ok(verdict.is_clean())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let utc_offsets = args
        .offsets
        .split(',')
        .map(|s| {
            parse_offset(s)
                .with_context(|| format!("--offsets: {s:?} is not a UTC offset like -07:00"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut client = OAuthClient::with_all_scopes(&args.client_id, &args.client_secret);
    if !args.scopes.is_empty() {
        client.scopes = args.scopes.clone();
    }
    let defaults = SimConfig::default();
    let cfg = SimConfig {
        listen: args.listen,
        api_key: args.api_key,
        oauth_clients: vec![client],
        seed: args.seed,
        initial_records: args.records,
        utc_offsets,
        rate_limit: if args.no_rate_limit {
            None
        } else {
            defaults.rate_limit
        },
        latency: Duration::from_millis(args.latency_ms),
        change_rate: args.change_rate,
        ..defaults
    };
    let sim = Simulator::start(cfg).await?;
    // The URL goes to stdout so scripts can capture it; logs go to stderr.
    println!("{}", sim.base_url());
    tracing::info!(
        base_url = %sim.base_url(),
        client_id = %args.client_id,
        "coupa-sim listening; token at /oauth2/token, admin under /_sim/"
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    sim.shutdown().await;
    Ok(())
}
