//! Typed settings: loading (TOML file + `COUPA_CHANGEFEED__SECTION__KEY`
//! environment overrides via the `config` crate), secret files, and
//! validation whose every error names the key and the value at fault.
//! Nothing here talks to the network or the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::coupa::objects::{self, ObjectSpec};
use crate::coupa::record::parse_timestamp;

/// Prefix of environment overrides: `COUPA_CHANGEFEED__COUPA__BASE_URL`.
pub const ENV_PREFIX: &str = "COUPA_CHANGEFEED";

/// A config problem, always naming the key (and value, unless secret).
#[derive(Debug, thiserror::Error)]
#[error("config error at `{key}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `objects[1].schedule`.
    pub key: String,
    /// What is wrong, with the offending value where it is not a secret.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where Coupa is and how to authenticate.
    pub coupa: CoupaSettings,
    /// Where the sled state lives.
    #[serde(default)]
    pub state: StateSettings,
    /// Poll defaults for every object.
    #[serde(default)]
    pub poll: PollSettings,
    /// The objects to poll.
    #[serde(default)]
    pub objects: Vec<ObjectSettings>,
    /// Where events go.
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkSettings>,
    /// What all sinks share (backpressure).
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// Splitting the objects between replicas.
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// The health/metrics server.
    #[serde(default)]
    pub server: ServerSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// The HTTP actions API (off unless a token is set).
    #[serde(default)]
    pub api: ApiSettings,
}

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

/// `[coupa]`: the instance and its credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoupaSettings {
    /// Instance root, e.g. `https://acme.coupahost.com` (no `/api`).
    pub base_url: Url,
    /// Legacy `X-COUPA-API-KEY`.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    /// File holding the API key (read at load; wins over nothing, clashes with `api_key`).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// OAuth2 client credentials (the default since 2023).
    #[serde(default)]
    pub oauth: Option<OAuthSettings>,
    /// Global request rate shared by every poller and action.
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per request before the poll gives up (and retries next schedule).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Ceiling of the exponential backoff between attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A `Date` further than this from Coupa's tracked clock is ignored
    /// for poll windows (one bad header must not move them).
    #[serde(default = "default_max_clock_jump", with = "humantime_serde")]
    pub max_clock_jump: Duration,
    /// Readiness fails while Coupa's clock and the host's differ by more.
    #[serde(default = "default_max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Largest response body read (`"32MiB"` or a byte count); beyond it
    /// the request fails rather than the daemon running out of memory.
    #[serde(default = "default_max_response_bytes", deserialize_with = "byte_size")]
    pub max_response_bytes: u64,
}

/// `[coupa.oauth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// The OIDC client's identifier.
    pub client_id: String,
    /// The client's secret.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// File holding the secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes to request, e.g. `core.purchase_order.read`; empty asks for all granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Token endpoint; default `<base_url>/oauth2/token`.
    #[serde(default)]
    pub token_url: Option<Url>,
}

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

/// `[[sinks]]`: each sink type's settings live beside its code.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkSettings {
    /// JSON Lines to a file or stdout.
    File(crate::sink::file::FileConfig),
    /// Signed HTTP POSTs (Standard Webhooks).
    Webhook(crate::sink::webhook::WebhookConfig),
    /// Kafka topics.
    Kafka(crate::sink::kafka::KafkaConfig),
}

impl SinkSettings {
    /// The sink's name: its cursor and dead letters are stored under it
    /// (default: its type).
    pub fn name(&self) -> String {
        let (name, ty) = match self {
            SinkSettings::File(c) => (&c.name, "file"),
            SinkSettings::Webhook(c) => (&c.name, "webhook"),
            SinkSettings::Kafka(c) => (&c.name, "kafka"),
        };
        name.clone().unwrap_or_else(|| ty.into())
    }

    /// Reads secret files and checks the values; `key` is `sinks[i]`.
    fn prepare(&mut self, key: &str) -> Result<(), ConfigError> {
        match self {
            SinkSettings::File(c) => c.prepare(key),
            SinkSettings::Webhook(c) => c.prepare(key),
            SinkSettings::Kafka(c) => c.prepare(key),
        }
    }
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

/// This replica's share: `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `i/n` or `hostname/n` (with the given host name).
    pub fn parse(spec: &str, hostname: &str) -> Result<Shard, String> {
        let (i, n) = spec
            .split_once('/')
            .ok_or_else(|| format!("`{spec}` is not `i/n` or `hostname/n`"))?;
        let count: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("`{n}` is not a replica count of at least 1"))?;
        let index: u32 = if i.trim() == "hostname" {
            hostname
                .rsplit_once('-')
                .and_then(|(_, o)| o.parse().ok())
                .ok_or_else(|| {
                    format!("host name `{hostname}` does not end in `-<ordinal>` (as StatefulSet pods do)")
                })?
        } else {
            i.trim()
                .parse()
                .map_err(|_| format!("`{i}` is not a replica index"))?
        };
        if index >= count {
            return Err(format!(
                "replica index {index} is not below the count {count}"
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether this replica polls `object`: rendezvous hashing, so a
    /// change of replica count moves only about 1/n of the objects.
    pub fn owns(&self, object: &str) -> bool {
        use sha2::{Digest, Sha256};
        let score = |i: u32| -> [u8; 32] { Sha256::digest(format!("{object}\0{i}")).into() };
        (0..self.count).max_by_key(|i| score(*i)) == Some(self.index)
    }
}

fn default_stuck_after() -> Duration {
    Duration::from_secs(300)
}

fn default_max_backlog() -> u64 {
    1_000_000
}

/// A value that may be given once or as a list (`secret = "…"` or
/// `secret = ["new", "old"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
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

fn default_rps() -> u32 {
    10
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    8
}
fn default_max_response_bytes() -> u64 {
    32 << 20
}

/// A byte count: an integer, or a string with an optional unit
/// (`B`, `KB`/`MB`/`GB` = powers of 1000, `KiB`/`MiB`/`GiB` = of 1024).
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte count such as 33554432 or \"32MiB\"")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("a byte count cannot be negative: {v}")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            parse_byte_size(v).ok_or_else(|| {
                E::custom(format!(
                    "`{v}` is not a byte count (e.g. 33554432, \"512KiB\", \"32MiB\", \"1GB\")"
                ))
            })
        }
    }
    d.deserialize_any(V)
}

/// Parses `"32MiB"`, `"100 MB"`, `"4096"`; `None` for anything else or an overflow.
pub fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_max_clock_jump() -> Duration {
    Duration::from_secs(300)
}
fn default_max_clock_skew() -> Duration {
    Duration::from_secs(900)
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
fn default_sinks() -> Vec<SinkSettings> {
    vec![SinkSettings::File(crate::sink::file::FileConfig {
        name: None,
        path: "-".into(),
    })]
}

/// Where a new object's high-water mark starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Coupa's clock at the first poll: no history replayed.
    Now,
    /// A fixed time: replay from there.
    At(DateTime<Utc>),
}

/// A poll schedule: cron with seconds.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As the user wrote it (for messages).
    pub expr: String,
    /// Parsed.
    pub cron: cron::Schedule,
}

impl Schedule {
    /// Parses a 6/7-field cron (seconds first), or translates a 5-field Unix
    /// cron (adds `0` seconds; numeric day-of-week 0-7 mapped to names, since
    /// the cron crate counts 1 = Sunday).
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let translated = if fields.len() == 5 {
            format!(
                "0 {} {} {} {} {}",
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                unix_dow(fields[4])?
            )
        } else {
            expr.trim().to_string()
        };
        let cron = cron::Schedule::from_str(&translated)
            .map_err(|e| format!("`{expr}` is not a valid cron schedule ({e}); write `sec min hour dom month dow`, e.g. `*/30 * * * * *`"))?;
        if cron.upcoming(Utc).next().is_none() {
            return Err(format!("`{expr}` never fires"));
        }
        Ok(Schedule {
            expr: expr.to_string(),
            cron,
        })
    }

    /// The next fire time after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&after).next()
    }

    /// When a poller whose last success was at `last` counts as behind:
    /// three schedules on — the first fire after `last`, plus twice the
    /// gap to the fire after it. Irregular crons (weekdays only) are judged
    /// by their own gaps, so a quiet weekend is not "behind".
    pub fn overdue_at(&self, last: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut it = self.cron.after(&last);
        let (a, b) = (it.next()?, it.next()?);
        Some(a + (b - a) * 2)
    }
}

/// Unix day-of-week numbers (0/7 = Sunday) to names, which the cron crate
/// reads unambiguously.
fn unix_dow(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let map = |tok: &str| -> Result<String, String> {
        if tok.chars().all(|c| c.is_ascii_digit()) {
            let n: usize = tok
                .parse()
                .map_err(|_| format!("bad day of week `{tok}`"))?;
            NAMES
                .get(n)
                .map(|s| s.to_string())
                .ok_or_else(|| format!("day of week `{tok}` is out of range 0-7"))
        } else {
            Ok(tok.to_string())
        }
    };
    field
        .split(',')
        .map(|part| {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            let range = match range.split_once('-') {
                Some((a, b)) => format!("{}-{}", map(a)?, map(b)?),
                None if range == "*" => "*".to_string(),
                None => map(range)?,
            };
            Ok(match step {
                Some(s) => format!("{range}/{s}"),
                None => range,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(|v| v.join(","))
}

/// An object to poll, with every default resolved.
#[derive(Debug, Clone)]
pub struct ObjectPlan {
    /// Config name; also the store key and event-type stem.
    pub name: String,
    /// Singular used in `coupa.<singular>.<created|updated>`.
    pub singular: String,
    /// List path (nested objects carry their parent placeholder).
    pub path: String,
    /// Catalogue entry, if it is one.
    pub spec: Option<&'static ObjectSpec>,
    pub schedule: Schedule,
    pub lookback: Duration,
    pub settle: Duration,
    pub start_from: StartFrom,
    pub page_size: u32,
    pub parent_budget: u32,
    /// Slices of a long window read at once (1 = none).
    pub backfill_concurrency: u32,
    /// Shortest backfill slice.
    pub backfill_slice: Duration,
    pub filter: BTreeMap<String, String>,
    pub fields: Vec<String>,
}

/// Reads a secret from a `*_file` path, trimming the trailing newline.
pub(crate) fn read_secret(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read `{}`: {e}", path.display())))?;
    let text = text.trim_end_matches(['\n', '\r']).to_string();
    if text.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("`{}` is empty", path.display()),
        ));
    }
    Ok(SecretString::from(text))
}

fn parse_start(key: &str, v: &str) -> Result<StartFrom, ConfigError> {
    if v.eq_ignore_ascii_case("now") {
        return Ok(StartFrom::Now);
    }
    let t = parse_timestamp(v).ok_or_else(|| {
        ConfigError::new(key, format!("`{v}` is neither `now` nor an RFC 3339 time"))
    })?;
    // Coupa stamps whole seconds; a fractional bound would re-read the
    // same second as new on every window.
    if t.timestamp_subsec_nanos() != 0 {
        return Err(ConfigError::new(
            key,
            format!("`{v}` has a fraction of a second; Coupa stamps whole seconds, so give whole seconds (e.g. `{}`)", t.format("%Y-%m-%dT%H:%M:%SZ")),
        ));
    }
    Ok(StartFrom::At(t))
}

/// A window bound that moves by this must stay on a whole second.
fn whole_seconds(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.subsec_nanos() != 0 {
        return Err(ConfigError::new(
            key,
            format!(
                "`{}` has a fraction of a second; Coupa stamps whole seconds, so give whole seconds (e.g. `{}s`)",
                humantime::format_duration(d),
                d.as_secs().max(1)
            ),
        ));
    }
    Ok(d)
}

impl Settings {
    /// Loads a TOML file (optional) with environment overrides, then
    /// validates. The one entry point for `run`, `check` and `state`.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut settings = Self::read(path)?;
        settings.resolve_secrets()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads like [`Settings::load`] for the one-shot action commands:
    /// only `[coupa]` is resolved and checked, so a config without
    /// `[[objects]]` works, and sink secret files are not read.
    pub fn load_for_actions(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut settings = Self::read(path)?;
        settings.resolve_coupa_secrets()?;
        settings.validate_coupa()?;
        Ok(settings)
    }

    /// The file and environment, deserialized; nothing resolved or checked.
    fn read(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file `{}` does not exist", p.display()),
                ));
            }
            builder = builder.add_source(config::File::from(p).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("coupa.oauth.scopes")
                .try_parsing(true),
        );
        let raw = builder.build().map_err(from_config_error)?;
        raw.try_deserialize().map_err(from_config_error)
    }

    /// Parses TOML text (tests and `demo`), without the environment.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(from_config_error)?;
        let mut settings: Settings = raw.try_deserialize().map_err(from_config_error)?;
        settings.resolve_secrets()?;
        settings.validate()?;
        Ok(settings)
    }

    fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        self.resolve_coupa_secrets()?;
        let a = &mut self.api;
        if let Some(p) = a.token_file.take() {
            if a.token.is_some() {
                return Err(ConfigError::new(
                    "api.token_file",
                    "give `token` or `token_file`, not both",
                ));
            }
            a.token = Some(read_secret("api.token_file", &p)?);
        }
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            sink.prepare(&format!("sinks[{i}]"))?;
        }
        Ok(())
    }

    fn resolve_coupa_secrets(&mut self) -> Result<(), ConfigError> {
        let c = &mut self.coupa;
        if let Some(p) = c.api_key_file.take() {
            if c.api_key.is_some() {
                return Err(ConfigError::new(
                    "coupa.api_key_file",
                    "give `api_key` or `api_key_file`, not both",
                ));
            }
            c.api_key = Some(read_secret("coupa.api_key_file", &p)?);
        }
        if let Some(o) = c.oauth.as_mut() {
            if let Some(p) = o.client_secret_file.take() {
                if o.client_secret.is_some() {
                    return Err(ConfigError::new(
                        "coupa.oauth.client_secret_file",
                        "give `client_secret` or `client_secret_file`, not both",
                    ));
                }
                o.client_secret = Some(read_secret("coupa.oauth.client_secret_file", &p)?);
            }
        }
        Ok(())
    }

    /// The `[coupa]` checks: all the action commands need.
    fn validate_coupa(&self) -> Result<(), ConfigError> {
        let c = &self.coupa;
        if !matches!(c.base_url.scheme(), "http" | "https") || c.base_url.host().is_none() {
            return Err(ConfigError::new(
                "coupa.base_url",
                format!(
                    "`{}` is not an http(s) URL with a host",
                    crate::redact::display_url(&c.base_url)
                ),
            ));
        }
        match (&c.api_key, &c.oauth) {
            (None, None) => {
                return Err(ConfigError::new(
                    "coupa",
                    "no credentials: set [coupa.oauth] client_id and client_secret (or client_secret_file), or coupa.api_key",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "coupa",
                    "both api_key and [coupa.oauth] are set: choose one",
                ))
            }
            (None, Some(o)) => {
                if o.client_id.trim().is_empty() {
                    return Err(ConfigError::new("coupa.oauth.client_id", "is empty"));
                }
                if o.client_secret.is_none() {
                    return Err(ConfigError::new(
                        "coupa.oauth.client_secret",
                        "is missing (set client_secret or client_secret_file)",
                    ));
                }
            }
            (Some(_), None) => {}
        }
        if c.requests_per_second == 0 {
            return Err(ConfigError::new(
                "coupa.requests_per_second",
                "must be at least 1",
            ));
        }
        if c.max_attempts == 0 {
            return Err(ConfigError::new("coupa.max_attempts", "must be at least 1"));
        }
        if c.timeout.is_zero() {
            return Err(ConfigError::new("coupa.timeout", "must be above zero"));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_coupa()?;
        if self.server.max_connections == 0 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("server.header_timeout", self.server.header_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("state.failure_timeout", self.state.failure_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "must be above zero"));
            }
        }
        if let Some(t) = &self.api.token {
            use secrecy::ExposeSecret;
            if t.expose_secret().chars().count() < MIN_API_TOKEN_CHARS {
                return Err(ConfigError::new(
                    "api.token",
                    format!("is shorter than {MIN_API_TOKEN_CHARS} characters (value not shown); generate one, e.g. `openssl rand -hex 32`"),
                ));
            }
        }
        Schedule::parse(&self.poll.schedule).map_err(|m| ConfigError::new("poll.schedule", m))?;
        parse_start("poll.start_from", &self.poll.start_from)?;
        if !(1..=50).contains(&self.poll.page_size) {
            return Err(ConfigError::new(
                "poll.page_size",
                format!(
                    "{} is outside 1..=50 (Coupa's maximum)",
                    self.poll.page_size
                ),
            ));
        }
        if self.objects.is_empty() {
            return Err(ConfigError::new(
                "objects",
                "no [[objects]] to poll; `coupa-changefeed objects` lists them",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, o) in self.objects.iter().enumerate() {
            if !seen.insert(o.name.as_str()) {
                return Err(ConfigError::new(
                    format!("objects[{i}].name"),
                    format!("`{}` is configured twice", o.name),
                ));
            }
        }
        self.plans()?;
        self.shard()?;
        if self.delivery.max_backlog == 0 {
            return Err(ConfigError::new(
                "delivery.max_backlog",
                "must be at least 1",
            ));
        }
        let mut names = std::collections::HashSet::new();
        if self.sinks.is_empty() {
            return Err(ConfigError::new("sinks", "no [[sinks]] configured"));
        }
        for (i, s) in self.sinks.iter().enumerate() {
            if !names.insert(s.name()) {
                return Err(ConfigError::new(
                    format!("sinks[{i}].name"),
                    format!("sink name `{}` is used twice", s.name()),
                ));
            }
            if s.name().trim().is_empty() || s.name().contains('\0') {
                return Err(ConfigError::new(
                    format!("sinks[{i}].name"),
                    "must be a non-empty name",
                ));
            }
        }
        Ok(())
    }

    /// This replica's share, if `[cluster] shard` is set.
    pub fn shard(&self) -> Result<Option<Shard>, ConfigError> {
        let Some(spec) = &self.cluster.shard else {
            return Ok(None);
        };
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default();
        Shard::parse(spec, host.trim())
            .map(Some)
            .map_err(|m| ConfigError::new("cluster.shard", m))
    }

    /// Every configured object with defaults applied.
    pub fn plans(&self) -> Result<Vec<ObjectPlan>, ConfigError> {
        self.objects
            .iter()
            .enumerate()
            .map(|(i, o)| self.plan(i, o))
            .collect()
    }

    fn plan(&self, i: usize, o: &ObjectSettings) -> Result<ObjectPlan, ConfigError> {
        let key = |k: &str| format!("objects[{i}].{k}");
        let spec = objects::lookup(&o.name);
        let (path, singular) = match (spec, &o.path) {
            (_, Some(p)) => {
                if !p.starts_with("/api/") || p.contains("..") || p.contains('?') {
                    return Err(ConfigError::new(
                        key("path"),
                        format!("`{p}` must be a path under /api/ without a query"),
                    ));
                }
                (
                    p.clone(),
                    spec.map_or_else(|| o.name.clone(), |s| s.singular.to_string()),
                )
            }
            (Some(s), None) => {
                if !s.caps.list {
                    return Err(ConfigError::new(
                        key("name"),
                        format!("`{}` cannot be listed, so it cannot be polled", o.name),
                    ));
                }
                (s.path.to_string(), s.singular.to_string())
            }
            (None, None) => {
                return Err(ConfigError::new(
                    key("name"),
                    format!(
                        "unknown object `{}`; known: {} (or give `path` for another resource)",
                        o.name,
                        objects::names().join(", ")
                    ),
                ))
            }
        };
        if o.name.is_empty()
            || !o
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::new(
                key("name"),
                format!("`{}` must be letters, digits, `_` or `-`", o.name),
            ));
        }
        let schedule_expr = o.schedule.as_deref().unwrap_or(&self.poll.schedule);
        let schedule =
            Schedule::parse(schedule_expr).map_err(|m| ConfigError::new(key("schedule"), m))?;
        let start_from = match &o.start_from {
            Some(s) => parse_start(&key("start_from"), s)?,
            None => parse_start("poll.start_from", &self.poll.start_from)?,
        };
        Ok(ObjectPlan {
            name: o.name.clone(),
            singular,
            spec: if o.path.is_some() { None } else { spec },
            path,
            schedule,
            lookback: match o.lookback {
                Some(d) => whole_seconds(&key("lookback"), d)?,
                None => whole_seconds("poll.lookback", self.poll.lookback)?,
            },
            settle: o.settle.unwrap_or(self.poll.settle),
            start_from,
            page_size: self.poll.page_size,
            parent_budget: self.poll.parent_budget.max(1),
            backfill_concurrency: self.poll.backfill_concurrency.clamp(1, 64),
            backfill_slice: self.poll.backfill_slice.max(Duration::from_secs(1)),
            filter: o.filter.clone(),
            fields: o.fields.clone(),
        })
    }
}

/// Turns the `config` crate's errors into ours, keeping the key it names.
/// Values of secret keys never reach the message.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    let (at, inner) = match &e {
        config::ConfigError::Type { key: Some(k), .. } => (Some(k.clone()), None),
        config::ConfigError::At {
            key: Some(k),
            error,
            ..
        } => (Some(k.clone()), Some(error.to_string())),
        _ => (None, None),
    };
    let text = inner.unwrap_or_else(|| e.to_string());
    // serde names the field: "unknown field `foo`, expected ..." or
    // `missing configuration field "coupa"`.
    let named = text
        .split(['`', '"'])
        .nth(1)
        .filter(|_| text.contains("field"))
        .map(str::to_string);
    let key = match (at, named) {
        (Some(at), Some(field)) if text.contains("unknown field") => format!("{at}.{field}"),
        (Some(at), _) => at,
        (None, Some(field)) => field,
        (None, None) => "config".to_string(),
    };
    let secret = ["secret", "api_key", "token", "password"]
        .iter()
        .any(|s| key.contains(s));
    let message = if secret {
        "has the wrong type (value not shown: it is a secret)".to_string()
    } else if text.contains("missing") && !key.contains('.') && !key.contains('[') {
        format!("{text}; pass --config FILE or set {ENV_PREFIX}__<SECTION>__<KEY> variables")
    } else {
        text
    };
    ConfigError::new(key, message)
}
