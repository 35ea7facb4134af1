//! The `coupa-changefeed` command: parses the CLI, loads config, sets up
//! logging (to stderr: stdout carries events) and signals, and calls into
//! the library. No logic of its own beyond printing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coupa_changefeed::config::{LogFormat, Settings};
use coupa_changefeed::coupa::objects::CATALOGUE;
use coupa_changefeed::coupa::record::{parse_timestamp, rfc3339};
use coupa_changefeed::shutdown::{self, Trigger};
use coupa_changefeed::store::{Store, StoreError};
use coupa_changefeed::{app, demo};

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
        /// TOML config; every key can be overridden as COUPA_CHANGEFEED__SECTION__KEY.
        #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the config, reach Coupa (one `limit=1` request per object) and every sink.
    Check {
        #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
        config: Option<PathBuf>,
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
    Action(coupa_changefeed::actions_cli::ActionCommand),
}

#[derive(Subcommand)]
enum DlqAction {
    /// Print dead letters with their last error.
    List {
        /// Only this sink's.
        #[arg(long)]
        sink: Option<String>,
        /// Print JSON (one object per dead letter, event included).
        #[arg(long)]
        json: bool,
        #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Queue dead letters for delivery again (all, or the given SEQs).
    Replay {
        #[arg(long)]
        sink: Option<String>,
        /// Sequence numbers from `dlq list`.
        seqs: Vec<u64>,
        #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Delete dead letters (the given SEQs, or every one with --all).
    Drop {
        #[arg(long)]
        sink: Option<String>,
        seqs: Vec<u64>,
        /// Drop every dead letter (of --sink, if given).
        #[arg(long)]
        all: bool,
        #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StateAction {
    /// Print each object's high-water mark and open window.
    Show {
        #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Rewind one object so the next run replays from TIME (or from its start_from).
    Reset {
        /// Object name.
        object: String,
        /// RFC 3339 time to replay from.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Move one sink's cursor: `oldest` acknowledges events it missed while
    /// not configured; SEQ delivers every held event after SEQ to it again.
    ResetSink {
        /// Sink name.
        sink: String,
        /// `oldest` (the default) or a sequence number.
        #[arg(long, default_value = "oldest")]
        to: String,
        #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Raises the soft open-files limit to the hard one (what most servers
/// do): sockets, sled's files and the file sink share it, and a soft limit
/// of 1024 is easy to reach.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let from = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::debug!(from, to = lim.rlim_max, "raised the open-files limit");
        }
    }
}

/// First SIGINT/SIGTERM: graceful stop. Second: exit at once (what is
/// committed is safe either way).
fn handle_signals(trigger: Trigger) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                tracing::info!("signal received: stopping (send again to exit at once)");
                trigger.fire();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Action(cmd) = cli.command {
        return coupa_changefeed::actions_cli::run(cmd).await;
    }
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A store that cannot be written gets its own code (EX_IOERR),
            // so a supervisor and an operator can tell it apart.
            let store_io = e
                .downcast_ref::<coupa_changefeed::store::StoreUnusable>()
                .is_some()
                || matches!(
                    e.downcast_ref::<coupa_changefeed::store::StoreError>(),
                    Some(coupa_changefeed::store::StoreError::Unwritable { .. })
                );
            if store_io {
                ExitCode::from(coupa_changefeed::store::StoreUnusable::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let settings = Settings::load(config.as_deref())?;
            init_logging(settings.log.format);
            raise_fd_limit();
            let (trigger, listener) = shutdown::channel();
            handle_signals(trigger);
            app::run(settings, listener).await
        }
        Command::Check { config, json } => {
            let settings = Settings::load(config.as_deref())?;
            let rows = coupa_changefeed::check::run(&settings).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<8} {:<28} {:<6} DETAIL", "PART", "NAME", "RESULT");
                for r in &rows {
                    let result = if r.ok { "ok" } else { "FAIL" };
                    println!(
                        "{:<8} {:<28} {:<6} {}",
                        r.component, r.name, result, r.detail
                    );
                }
            }
            let failed = rows.iter().filter(|r| !r.ok).count();
            if failed > 0 {
                anyhow::bail!("{failed} check(s) failed");
            }
            Ok(())
        }
        Command::Health { url } => {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()?;
            let r = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("{url}: no answer"))?;
            if !r.status().is_success() {
                anyhow::bail!("{url}: {}", r.status());
            }
            Ok(())
        }
        Command::Demo { state, rate } => {
            init_logging(LogFormat::Pretty);
            let (trigger, listener) = shutdown::channel();
            handle_signals(trigger);
            demo::run(state, rate, listener).await
        }
        Command::Objects { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(CATALOGUE)?);
                return Ok(());
            }
            println!("{:<28} {:<44} {:<22} ACTIONS", "OBJECT", "PATH", "ALLOWS");
            for o in CATALOGUE {
                let caps = [
                    ("list", o.caps.list),
                    ("get", o.caps.get),
                    ("create", o.caps.create),
                    ("update", o.caps.update),
                ]
                .iter()
                .filter(|c| c.1)
                .map(|c| c.0)
                .collect::<Vec<_>>()
                .join(",");
                println!(
                    "{:<28} {:<44} {:<22} {}",
                    o.name,
                    o.path,
                    caps,
                    o.actions.join(",")
                );
            }
            Ok(())
        }
        Command::State { action } => state(action).await,
        Command::Dlq { action } => dlq(action).await,
        Command::Action(_) => unreachable!("actions are run before dispatch"),
    }
}

/// Where the dead letters are reached: the state dir itself, or, while a
/// daemon holds its lock, that daemon's `/admin/dlq` (needs `[api] token`).
enum Dlq {
    Store(Store),
    Daemon {
        base: String,
        token: secrecy::SecretString,
        http: reqwest::Client,
    },
}

impl Dlq {
    /// Loads the config, checks a `--sink` is configured, picks the way in.
    fn open(config: Option<&std::path::Path>, sink: Option<&str>) -> anyhow::Result<Dlq> {
        let settings = Settings::load(config)?;
        if let Some(s) = sink {
            if !settings.sinks.iter().any(|c| c.name() == s) {
                let names: Vec<String> = settings.sinks.iter().map(|c| c.name()).collect();
                anyhow::bail!(
                    "sink `{s}` is not configured (configured: {})",
                    names.join(", ")
                );
            }
        }
        match Store::open(&settings.state.dir) {
            Ok(store) => Ok(Dlq::Store(store)),
            Err(e @ StoreError::Locked { .. }) => {
                let Some(token) = settings.api.token.clone() else {
                    anyhow::bail!("{e}: stop it first, or set [api] token so `dlq` goes through the running daemon");
                };
                let mut addr = settings.server.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                Ok(Dlq::Daemon {
                    base: format!("http://{addr}/admin/dlq"),
                    token,
                    http: reqwest::Client::builder()
                        .timeout(std::time::Duration::from_secs(30))
                        .build()?,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A call to the running daemon; its JSON answer.
    async fn call(
        req: reqwest::RequestBuilder,
        token: &secrecy::SecretString,
    ) -> anyhow::Result<serde_json::Value> {
        use secrecy::ExposeSecret;
        let r = req
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .context("the daemon holds the state dir but its /admin/dlq does not answer")?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!(
                "the daemon's /admin/dlq answered {status}: {}",
                body["error"]["message"]
            );
        }
        Ok(body)
    }

    async fn list(&self, sink: Option<&str>) -> anyhow::Result<Vec<serde_json::Value>> {
        match self {
            Dlq::Store(store) => Ok(store
                .dead_letters(sink)?
                .iter()
                .map(coupa_changefeed::admin::dead_letter_json)
                .collect()),
            Dlq::Daemon { base, token, http } => {
                let mut req = http.get(base.as_str());
                if let Some(s) = sink {
                    req = req.query(&[("sink", s)]);
                }
                let v = Self::call(req, token).await?;
                Ok(v.as_array().cloned().unwrap_or_default())
            }
        }
    }

    async fn replay(&self, sink: Option<&str>, seqs: &[u64]) -> anyhow::Result<u64> {
        match self {
            Dlq::Store(store) => Ok(store.replay_dead(sink, seqs).await? as u64),
            Dlq::Daemon { base, token, http } => {
                let req = http
                    .post(format!("{base}/replay"))
                    .json(&serde_json::json!({"sink": sink, "seqs": seqs}));
                Ok(Self::call(req, token).await?["replayed"]
                    .as_u64()
                    .unwrap_or(0))
            }
        }
    }

    async fn drop(&self, sink: Option<&str>, seqs: &[u64]) -> anyhow::Result<u64> {
        match self {
            Dlq::Store(store) => Ok(store.drop_dead(sink, seqs).await? as u64),
            Dlq::Daemon { base, token, http } => {
                let req = http
                    .post(format!("{base}/drop"))
                    .json(&serde_json::json!({"sink": sink, "seqs": seqs, "all": seqs.is_empty()}));
                Ok(Self::call(req, token).await?["dropped"]
                    .as_u64()
                    .unwrap_or(0))
            }
        }
    }
}

async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::List { sink, json, config } => {
            let dead = Dlq::open(config.as_deref(), sink.as_deref())?
                .list(sink.as_deref())
                .await?;
            if json {
                for d in &dead {
                    println!("{d}");
                }
                return Ok(());
            }
            println!(
                "{:<16} {:>10} {:<24} {:<12} {:>8}  LAST ERROR",
                "SINK", "SEQ", "OBJECT", "KEY", "ATTEMPTS"
            );
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut superseded = 0;
            for d in &dead {
                let note = match d["superseded_by"].as_u64() {
                    Some(by) => {
                        superseded += 1;
                        format!("[superseded by seq {by}: not replayed] ")
                    }
                    None => String::new(),
                };
                println!(
                    "{:<16} {:>10} {:<24} {:<12} {:>8}  {note}{}",
                    text(&d["sink"]),
                    text(&d["seq"]),
                    text(&d["object"]),
                    text(&d["key"]),
                    text(&d["attempts"]),
                    text(&d["error"])
                );
            }
            println!(
                "{} dead letter(s), {superseded} superseded by a newer delivered version",
                dead.len()
            );
            Ok(())
        }
        DlqAction::Replay { sink, seqs, config } => {
            let dlq = Dlq::open(config.as_deref(), sink.as_deref())?;
            let n = dlq.replay(sink.as_deref(), &seqs).await?;
            println!("{n} dead letter(s) queued for delivery; the daemon sends them next");
            // What stays behind: superseded ones are never replayed.
            let skipped = dlq
                .list(sink.as_deref())
                .await?
                .iter()
                .filter(|d| {
                    d["superseded_by"].is_u64()
                        && (seqs.is_empty() || d["seq"].as_u64().is_some_and(|s| seqs.contains(&s)))
                })
                .count();
            if skipped > 0 {
                println!("{skipped} superseded dead letter(s) skipped: a newer version of their record was delivered (`dlq drop` clears them)");
            }
            Ok(())
        }
        DlqAction::Drop {
            sink,
            seqs,
            all,
            config,
        } => {
            if seqs.is_empty() && !all {
                anyhow::bail!("name the SEQs to drop, or pass --all");
            }
            let n = Dlq::open(config.as_deref(), sink.as_deref())?
                .drop(sink.as_deref(), &seqs)
                .await?;
            println!("{n} dead letter(s) dropped");
            Ok(())
        }
    }
}

async fn state(action: StateAction) -> anyhow::Result<()> {
    match action {
        StateAction::Show { config } => {
            let settings = Settings::load(config.as_deref())?;
            let store = Store::open(&settings.state.dir)?;
            let states = store.object_states()?;
            println!("{:<28} {:<22} OPEN WINDOW", "OBJECT", "HIGH-WATER MARK");
            for (name, s) in states {
                let hwm = s.hwm.map(rfc3339).unwrap_or_else(|| "-".into());
                let window = s
                    .window
                    .map(|w| {
                        format!(
                            "[{}, {}) after id {}",
                            rfc3339(w.lo),
                            rfc3339(w.hi),
                            w.last_id.map_or("-".into(), |i| i.to_string())
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                println!("{name:<28} {hwm:<22} {window}");
            }
            println!("outbox: {} events waiting", store.outbox_len());
            println!(
                "\n{:<24} {:>12} {:>10} {:>12}",
                "SINK", "CURSOR", "BACKLOG", "DEAD LETTERS"
            );
            for sink in &settings.sinks {
                let name = sink.name();
                let cursor = store.cursor(&name)?;
                let backlog = store.sink_backlog(&name)?;
                let dead = store.dead_letters(Some(&name))?.len();
                let missed = store
                    .missed(&name)?
                    .map(|m| format!("  missed {}..={} (state reset-sink)", m.from, m.to))
                    .unwrap_or_default();
                println!("{name:<24} {cursor:>12} {backlog:>10} {dead:>12}{missed}");
            }
            Ok(())
        }
        StateAction::Reset { object, to, config } => {
            let settings = Settings::load(config.as_deref())?;
            if !settings.objects.iter().any(|o| o.name == object) {
                anyhow::bail!("object `{object}` is not configured in [[objects]]");
            }
            let to = match to {
                Some(t) => Some(
                    parse_timestamp(&t)
                        .with_context(|| format!("--to `{t}` is not an RFC 3339 time"))?,
                ),
                None => None,
            };
            let store = Store::open(&settings.state.dir)?;
            store.reset_object(&object, to).await?;
            match to {
                Some(t) => println!("{object}: will replay from {}", rfc3339(t)),
                None => println!("{object}: reset; will start from its configured start_from"),
            }
            Ok(())
        }
        StateAction::ResetSink { sink, to, config } => {
            let settings = Settings::load(config.as_deref())?;
            if !settings.sinks.iter().any(|c| c.name() == sink) {
                let names: Vec<String> = settings.sinks.iter().map(|c| c.name()).collect();
                anyhow::bail!(
                    "sink `{sink}` is not configured (configured: {})",
                    names.join(", ")
                );
            }
            let store = Store::open(&settings.state.dir)?;
            let floor = store.oldest_held()? - 1;
            let last = store.last_seq();
            if to == "oldest" {
                match store.acknowledge_missed(&sink).await? {
                    Some(m) => println!(
                        "{sink}: events {}..={} are gone and will not be sent; acknowledged (cursor at {})",
                        m.from,
                        m.to,
                        store.cursor(&sink)?
                    ),
                    None => println!(
                        "{sink}: missed nothing; cursor left at {}",
                        store.cursor(&sink)?
                    ),
                }
                return Ok(());
            }
            let n: u64 = to.parse().with_context(|| {
                format!("--to `{to}` is neither `oldest` nor a sequence number")
            })?;
            if n > last {
                anyhow::bail!("--to {n} is beyond the last event ({last})");
            }
            if n < floor {
                anyhow::bail!(
                    "--to {n} is below the oldest event still held ({}): the ones before were released; use --to oldest",
                    floor + 1
                );
            }
            store.reset_cursor(&sink, n, true).await?;
            println!(
                "{sink}: cursor at {n}; the {} held event(s) after it will be delivered to it again",
                last - n
            );
            Ok(())
        }
    }
}
