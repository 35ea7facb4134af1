//! `[coupa]`: where the instance is, how to authenticate, how hard to
//! press it. Owned by the client; the config only loads and checks it.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

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
