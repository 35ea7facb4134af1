//! The commands behind `coupa-changefeed`: what `main` dispatches to once
//! clap has parsed the line. [`ConfigArg`] is the one `--config` flag every
//! command that reads the config flattens in; the rest of this file is the
//! process setup the daemon commands share (logging to stderr, the
//! open-files limit, signals). Printing lives in the submodules.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::config::LogFormat;
use crate::shutdown::Trigger;

pub mod actions;
pub mod dlq;
pub mod state;
pub mod tables;

/// Where the config comes from (every command that reads one takes it).
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// TOML config (the actions read only `[coupa]`); every key can be
    /// overridden as COUPA_CHANGEFEED__SECTION__KEY.
    #[arg(long, short, env = "COUPA_CHANGEFEED_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The path given, if any (none: defaults and environment only).
    pub fn path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// `coupa-changefeed health`: Ok if a running daemon's URL answers 2xx.
pub async fn health(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let r = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("{url}: no answer"))?;
    if !r.status().is_success() {
        anyhow::bail!("{url}: {}", r.status());
    }
    Ok(())
}

/// The exit code for a command's error: a store that cannot be written
/// gets its own (EX_IOERR), so a supervisor and an operator can tell it
/// apart; anything else is 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let store_io = e.downcast_ref::<crate::store::StoreUnusable>().is_some()
        || matches!(
            e.downcast_ref::<crate::store::StoreError>(),
            Some(crate::store::StoreError::Unwritable { .. })
        );
    if store_io {
        crate::store::StoreUnusable::EXIT_CODE
    } else {
        1
    }
}

pub fn init_logging(format: LogFormat) {
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
pub fn raise_fd_limit() {
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
pub fn handle_signals(trigger: Trigger) {
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
