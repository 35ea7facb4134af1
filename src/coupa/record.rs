//! Coupa records in the daemon: reading ids and timestamps comes from
//! [`coupa_model::record`] (shared with the simulator, re-exported here so
//! `crate::coupa::record::*` keeps working); this file adds what only the
//! daemon needs, why a list element was not published.

pub use coupa_model::record::*;

use serde_json::Value;

/// Why a list element was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not valid JSON on its own (bad UTF-8, a number out of range, ...).
    Unreadable,
    /// Valid JSON but not an object.
    NotObject,
    /// No `id`, or a null one.
    NoId,
    /// An `id` that identifies nothing: empty, a boolean, an array, an object.
    BadId,
}

impl RejectReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unreadable => "unreadable",
            RejectReason::NotObject => "not_object",
            RejectReason::NoId => "no_id",
            RejectReason::BadId => "bad_id",
        }
    }
}

/// A list element the daemon could not publish: counted, logged and
/// listed in `/status`, never dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    pub reason: RejectReason,
    /// What was wrong, e.g. `element 3: invalid unicode code point`.
    pub detail: String,
    /// The element's `updated-at` as sent, when one could be read.
    pub updated_at: Option<String>,
    /// The element's start, one line, credentials masked.
    pub excerpt: String,
}

/// One element of a list page, in its place: a record or why not.
pub type Listed = Result<Record, Rejected>;

/// Why a record's id cannot identify it (`None`: it can).
pub fn id_problem(record: &Record) -> Option<(RejectReason, String)> {
    match field(record, "id") {
        None => Some((RejectReason::NoId, "no `id`".into())),
        Some(Value::Number(_)) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => None,
        Some(Value::String(_)) => Some((RejectReason::BadId, "an empty `id`".into())),
        Some(other) => Some((
            RejectReason::BadId,
            format!(
                "an `id` that is {}",
                match other {
                    Value::Bool(_) => "a boolean",
                    Value::Array(_) => "an array",
                    _ => "an object",
                }
            ),
        )),
    }
}

/// A string field read from raw, possibly broken JSON by its text
/// (`"key": "value"`), for naming an element that does not parse.
pub fn raw_field(raw: &[u8], key: &str) -> Option<String> {
    let needle = format!("\"{key}\"");
    let at = raw
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    let rest = raw[at + needle.len()..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|b| *b == b'"')?.min(64);
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn ids_stay_exact_and_unusable_ones_are_named() {
        let big: Record = serde_json::from_str(r#"{"id": 18446744073709551616}"#).unwrap();
        let next: Record = serde_json::from_str(r#"{"id": 18446744073709551617}"#).unwrap();
        assert_eq!(id(&big).as_deref(), Some("18446744073709551616"));
        assert_ne!(id(&big), id(&next));
        assert_eq!(numeric_id(&big), None, "above u64: not pageable by id");
        for (v, reason) in [
            (json!({}), RejectReason::NoId),
            (json!({"id": null}), RejectReason::NoId),
            (json!({"id": " "}), RejectReason::BadId),
            (json!({"id": true}), RejectReason::BadId),
            (json!({"id": [1]}), RejectReason::BadId),
        ] {
            assert_eq!(
                id_problem(&rec(v.clone())).map(|p| p.0),
                Some(reason),
                "{v}"
            );
            assert_eq!(id(&rec(v)), None);
        }
        assert_eq!(id_problem(&rec(json!({"id": "A-1"}))), None);
    }

    #[test]
    fn raw_fields_read_from_broken_json() {
        let raw = b"{\"id\": 1e400, \"updated-at\" : \"2026-11-30T10:15:02Z\", \"x\": \"\xff\"";
        assert_eq!(
            raw_field(raw, "updated-at").as_deref(),
            Some("2026-11-30T10:15:02Z")
        );
        assert_eq!(raw_field(raw, "created-at"), None);
    }
}
