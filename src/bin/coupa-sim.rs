//! `coupa-sim`: runs the Coupa API simulator (`coupa_changefeed::sim`) as a
//! standalone server for demos and out-of-process tests, until ctrl-c.
//! Only turns flags into a `SimConfig`; all behaviour lives in the library.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use coupa_changefeed::sim::{parse_offset, OAuthClient, SimConfig, Simulator};

#[derive(Parser, Debug)]
#[command(
    name = "coupa-sim",
    about = "A Coupa Core REST API simulator (admin endpoints under /_sim/)"
)]
struct Args {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
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
