//! `coupa-changefeed dlq list|replay|drop`: dead letters, read and changed
//! in the state dir itself or, while a daemon holds its lock, through that
//! daemon's `/admin/dlq`.

use anyhow::Context;
use clap::Subcommand;

use super::ConfigArg;
use crate::config::Settings;
use crate::store::{DeadLetter, Store, StoreError};

#[derive(Subcommand)]
pub enum DlqAction {
    /// Print dead letters with their last error.
    List {
        /// Only this sink's.
        #[arg(long)]
        sink: Option<String>,
        /// Print JSON (one object per dead letter, event included).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Queue dead letters for delivery again (all, or the given SEQs).
    Replay {
        #[arg(long)]
        sink: Option<String>,
        /// Sequence numbers from `dlq list`.
        seqs: Vec<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete dead letters (the given SEQs, or every one with --all).
    Drop {
        #[arg(long)]
        sink: Option<String>,
        seqs: Vec<u64>,
        /// Drop every dead letter (of --sink, if given).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
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
                .map(DeadLetter::to_json)
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

pub async fn run(action: DlqAction) -> anyhow::Result<()> {
    match action {
        DlqAction::List { sink, json, config } => {
            let dead = Dlq::open(config.path(), sink.as_deref())?
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
            let dlq = Dlq::open(config.path(), sink.as_deref())?;
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
            let n = Dlq::open(config.path(), sink.as_deref())?
                .drop(sink.as_deref(), &seqs)
                .await?;
            println!("{n} dead letter(s) dropped");
            Ok(())
        }
    }
}
