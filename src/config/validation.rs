//! Validation: every check that names the key at fault.

use super::plan::parse_start;
use super::schedule::Schedule;
use super::sections::MIN_API_TOKEN_CHARS;
use super::Settings;
use crate::setting::ConfigError;

impl Settings {
    /// The `[coupa]` checks: all the action commands need.
    pub(super) fn validate_coupa(&self) -> Result<(), ConfigError> {
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
}
