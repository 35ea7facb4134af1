//! The config sections besides `[coupa]`: `[api]`, `[state]`, `[poll]`,
//! `[[objects]]`, `[[sinks]]`, `[delivery]`, `[cluster]`, `[server]`,
//! `[log]`, and their defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// `[api]`: the actions API under `/v1` on the server. Off unless a
/// bearer token is configured; the token guards writes to Coupa, so it is
/// a secret (redacted in `Debug`, never logged).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// The bearer token callers must send (`Authorization: Bearer …`).
    #[serde(default)]
    pub token: Option<SecretString>,
    /// File holding the token (read at load; clashes with `token`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// Shortest `[api] token` accepted: a guessable token would hand out
/// write access to Coupa.
pub const MIN_API_TOKEN_CHARS: usize = 16;

/// `[state]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// Directory of the sled database.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// How long the store may keep failing writes (disk full, IO error)
    /// before the daemon exits with code 74 for its supervisor to restart
    /// it; `/healthz` fails meanwhile.
    #[serde(default = "default_failure_timeout", with = "humantime_serde")]
    pub failure_timeout: Duration,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            dir: default_state_dir(),
            failure_timeout: default_failure_timeout(),
        }
    }
}

fn default_failure_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[poll]` defaults, and the per-object overrides resolved against them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSettings {
    /// Cron with seconds (`sec min hour dom month dow`); 5-field Unix cron is translated.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// How far behind the high-water mark each window starts.
    #[serde(default = "default_lookback", with = "humantime_serde")]
    pub lookback: Duration,
    /// How far behind Coupa's clock each window ends.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// `now` or an RFC 3339 time: where a new object starts.
    #[serde(default = "default_start_from")]
    pub start_from: String,
    /// Page size asked for (Coupa clamps to 50).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Nested objects: parent records visited per poll (bounds the request cost).
    #[serde(default = "default_parent_budget")]
    pub parent_budget: u32,
    /// Backfill: slices of one long window read at once (1 = no slicing).
    /// All share the one rate limit.
    #[serde(default = "default_backfill_concurrency")]
    pub backfill_concurrency: u32,
    /// Backfill: slices are never split below this; windows under twice
    /// this are paged as one list.
    #[serde(default = "default_backfill_slice", with = "humantime_serde")]
    pub backfill_slice: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            schedule: default_schedule(),
            lookback: default_lookback(),
            settle: default_settle(),
            start_from: default_start_from(),
            page_size: default_page_size(),
            parent_budget: default_parent_budget(),
            backfill_concurrency: default_backfill_concurrency(),
            backfill_slice: default_backfill_slice(),
        }
    }
}

/// One `[[objects]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSettings {
    /// Catalogue name, or any name when `path` is given.
    pub name: String,
    /// Resource path for objects outside the catalogue (`/api/...`).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub lookback: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub settle: Option<Duration>,
    #[serde(default)]
    pub start_from: Option<String>,
    /// Extra query filters, e.g. `{status = "issued"}` or `{"status[in]" = "issued,closed"}`.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Coupa `fields=` selection (top-level names).
    #[serde(default)]
    pub fields: Vec<String>,
}

/// `[delivery]`: what all sinks share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Outbox size at which pollers pause until sinks catch up.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
    /// A sink failing this long without one delivery fails `/readyz`.
    #[serde(default = "default_stuck_after", with = "humantime_serde")]
    pub stuck_after: Duration,
    /// On SIGTERM, how long sinks may keep delivering what is committed.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_backlog: default_max_backlog(),
            stuck_after: default_stuck_after(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[cluster]`: splitting the objects between replicas.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `"i/n"` (this replica is i of n, from 0), or `"hostname/n"` to take
    /// i from the host name's trailing `-i` (a StatefulSet ordinal).
    #[serde(default)]
    pub shard: Option<String>,
}

fn default_stuck_after() -> Duration {
    Duration::from_secs(300)
}

fn default_max_backlog() -> u64 {
    1_000_000
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address for health, readiness, metrics and status.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
    /// Open connections at most; beyond it the oldest idle one is closed
    /// (so a flood cannot exhaust file descriptors or lock out probes).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request's headers must arrive within this.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is
    /// closed after this.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: default_listen(),
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_max_connections() -> usize {
    256
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("./data")
}

fn default_schedule() -> String {
    "*/30 * * * * *".into()
}

fn default_lookback() -> Duration {
    Duration::from_secs(300)
}

fn default_settle() -> Duration {
    Duration::from_secs(5)
}

fn default_start_from() -> String {
    "now".into()
}

fn default_page_size() -> u32 {
    50
}

fn default_parent_budget() -> u32 {
    200
}

fn default_backfill_concurrency() -> u32 {
    8
}

fn default_backfill_slice() -> Duration {
    Duration::from_secs(60)
}

fn default_listen() -> std::net::SocketAddr {
    ([127, 0, 0, 1], 8080).into()
}

pub(super) fn default_sinks() -> Vec<crate::sink::SinkSettings> {
    vec![crate::sink::SinkSettings::File(
        crate::sink::file::FileConfig {
            name: None,
            path: "-".into(),
        },
    )]
}
