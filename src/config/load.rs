//! Loading: a TOML file and environment overrides into [`Settings`],
//! secrets read from their files, then validated.

use std::path::Path;

use super::Settings;
use crate::setting::{read_secret, ConfigError};

/// Prefix of environment overrides: `COUPA_CHANGEFEED__COUPA__BASE_URL`.
pub const ENV_PREFIX: &str = "COUPA_CHANGEFEED";

/// Turns the `config` crate's errors into ours, keeping the key it names.
/// Values of secret keys never reach the message.
pub(crate) fn from_config_error(e: config::ConfigError) -> ConfigError {
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
    pub(super) fn read(path: Option<&Path>) -> Result<Settings, ConfigError> {
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

    pub(super) fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
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

    pub(super) fn resolve_coupa_secrets(&mut self) -> Result<(), ConfigError> {
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
}
