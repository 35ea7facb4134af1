//! What every settings section shares, the sinks' too: the key-named
//! [`ConfigError`], [`OneOrMany`] and [`read_secret`]. A leaf below both
//! `config` and `sink` (imports nothing from the crate), so `config` can
//! name the sink settings without the sinks importing `config` back.

use std::path::Path;

use secrecy::SecretString;
use serde::Deserialize;

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
