//! `[[sinks]] type = "webhook"`: the settings, checked (URL, headers,
//! secret), and what must never be shown of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::sign::{signing_key, HmacSha256, SECRET_PREFIX};
use crate::redact::Secrets;
use crate::setting::{ConfigError, OneOrMany};

/// `[[sinks]] type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique sink name (default: `webhook`).
    #[serde(default)]
    pub name: Option<String>,
    /// Receiver URL (http or https).
    pub url: Url,
    /// `whsec_<base64>` signing secret, or a list to rotate keys (one
    /// signature per secret).
    #[serde(default)]
    pub secret: Option<OneOrMany<SecretString>>,
    /// File holding the secret(s), one per line.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra static headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Requests in flight at once (different record keys).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// An event failing for longer than this becomes a dead letter.
    #[serde(default = "default_max_retry_age", with = "humantime_serde")]
    pub max_retry_age: Duration,
    /// Cap of the backoff between attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

pub(super) fn default_concurrency() -> usize {
    4
}

pub(super) fn default_max_retry_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

pub(super) fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

/// Headers a user may not set: the ones we sign or frame the body with.
pub(super) const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
];

/// What the checks produce: everything the sink needs, ready to use.
pub(super) struct Checked {
    /// One keyed MAC per secret, in config order (new key first).
    pub(super) keys: Vec<HmacSha256>,
    pub(super) headers: HeaderMap,
}

impl WebhookConfig {
    /// Reads `secret_file`, checks every value; `key` is `sinks[i]`.
    pub(crate) fn prepare(&mut self, key: &str) -> Result<(), ConfigError> {
        if let Some(path) = self.secret_file.take() {
            let file_key = format!("{key}.secret_file");
            if self.secret.is_some() {
                return Err(ConfigError::new(
                    file_key,
                    "give `secret` or `secret_file`, not both",
                ));
            }
            let text = crate::setting::read_secret(&file_key, &path)?;
            let mut secrets = Vec::new();
            for (n, line) in text.expose_secret().lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                // Named here, by line: `check` would blame `secret[i]`.
                signing_key(line).map_err(|why| {
                    ConfigError::new(
                        &file_key,
                        format!("line {} of `{}`: {why}", n + 1, path.display()),
                    )
                })?;
                secrets.push(SecretString::from(line));
            }
            if secrets.is_empty() {
                return Err(ConfigError::new(
                    file_key,
                    format!("`{}` holds no secret", path.display()),
                ));
            }
            self.secret = Some(OneOrMany::Many(secrets));
        }
        self.check(key).map(drop)
    }

    /// Every check, shared by `prepare` (config errors) and
    /// `WebhookSink::new` (configs built in code skip `prepare`).
    pub(super) fn check(&self, key: &str) -> Result<Checked, ConfigError> {
        if !matches!(self.url.scheme(), "http" | "https") || self.url.host().is_none() {
            return Err(ConfigError::new(
                format!("{key}.url"),
                format!(
                    "`{}` is not an http(s) URL with a host",
                    crate::redact::display_endpoint(&self.url)
                ),
            ));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::new(
                format!("{key}.concurrency"),
                "must be at least 1",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{key}.timeout"),
                "must be above zero",
            ));
        }
        let secrets = match &self.secret {
            None => {
                return Err(ConfigError::new(
                    format!("{key}.secret"),
                    "is missing (set secret or secret_file; format whsec_<base64>)",
                ))
            }
            Some(OneOrMany::One(s)) => vec![s],
            Some(OneOrMany::Many(v)) => v.iter().collect(),
        };
        if secrets.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.secret"),
                "is an empty list",
            ));
        }
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                signing_key(s.expose_secret()).map_err(|why| {
                    let at = if secrets.len() > 1 {
                        format!("{key}.secret[{i}]")
                    } else {
                        format!("{key}.secret")
                    };
                    ConfigError::new(at, why)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let at = format!("{key}.headers.{name}");
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::new(&at, "is not a valid HTTP header name"))?;
            if RESERVED_HEADERS.contains(&n.as_str()) || n.as_str().starts_with("webhook-") {
                return Err(ConfigError::new(
                    &at,
                    "is set by the sink itself and cannot be overridden",
                ));
            }
            // Values often carry tokens: never echo them.
            let mut v = HeaderValue::from_str(value)
                .map_err(|_| ConfigError::new(&at, "value is not a valid HTTP header value"))?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        Ok(Checked { keys, headers })
    }
}

/// The configured values a receiver could quote back: header values
/// (whole, and each long whitespace-separated part: `Bearer <token>`), the
/// URL's query (whole, and each value raw and decoded), its user info and
/// every secret (whole and its base64 part), each in any encoding.
pub(super) fn hidden_values(config: &WebhookConfig) -> Secrets {
    let url = &config.url;
    let mut v = Secrets::new();
    for h in config.headers.values() {
        v.add(h);
    }
    if let Some(q) = url.query() {
        v.add(q);
        for pair in q.split('&') {
            if let Some((_, raw)) = pair.split_once('=') {
                v.add(raw);
            }
        }
        for (_, value) in url.query_pairs() {
            v.add(&value);
        }
    }
    v.add_userinfo(url);
    let secrets: Vec<&SecretString> = match &config.secret {
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(list)) => list.iter().collect(),
        None => Vec::new(),
    };
    for s in secrets {
        let s = s.expose_secret().trim();
        v.add(s);
        if let Some(b64) = s.strip_prefix(SECRET_PREFIX) {
            v.add(b64);
        }
    }
    v
}
