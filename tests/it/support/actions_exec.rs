//! Glue the CLI and HTTP executors of the action cases share: both print
//! errors as the one `{"error": {...}}` shape, read back here into an
//! [`Outcome`].
#![allow(dead_code)]

use coupa_changefeed::coupa::body::ErrorEnvelope;

use super::actions_cases::Outcome;

/// The outcome an error body `text` describes; an `unreadable` failure
/// (naming `context` and the text) if it is not one.
pub fn error_outcome(text: &str, context: &str) -> Outcome {
    match serde_json::from_str::<ErrorEnvelope>(text) {
        Ok(env) => Outcome::Err {
            kind: env.error.kind,
            status: env.error.status,
            message: env.error.message,
            fields: env
                .error
                .fields
                .into_iter()
                .map(|f| (f.field, f.message))
                .collect(),
        },
        Err(e) => unreadable(&format!("{context}: no error body ({e}): {text}")),
    }
}

/// A failure to read what the executor got back (fails any case).
pub fn unreadable(why: &str) -> Outcome {
    Outcome::Err {
        kind: "unreadable".into(),
        status: None,
        message: why.into(),
        fields: Vec::new(),
    }
}
