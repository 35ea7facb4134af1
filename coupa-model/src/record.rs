//! Reading the few fields the daemon and the simulator need out of a Coupa
//! record (`id`, `created-at`, `updated-at`), whatever the key style (Coupa
//! mixes `updated-at` and `updated_at`) and whatever the UTC offset, and
//! formatting times as Coupa and the events expect them. The record itself
//! is never rewritten: events carry it as Coupa returned it.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// A Coupa record as returned: a JSON object.
pub type Record = Map<String, Value>;

/// Looks a key up in its hyphenated and its underscored spelling.
pub fn field<'a>(record: &'a Record, hyphenated: &str) -> Option<&'a Value> {
    record
        .get(hyphenated)
        .or_else(|| record.get(&hyphenated.replace('-', "_")))
        .filter(|v| !v.is_null())
}

/// The record's id as a string (Coupa sends numbers; tolerate strings).
pub fn id(record: &Record) -> Option<String> {
    match field(record, "id")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// The record's id as a number, when it is one (paging by `id[gt]` needs it).
pub fn numeric_id(record: &Record) -> Option<u64> {
    id(record)?.parse().ok()
}

/// What a timestamp field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stamp {
    /// Parsed and normalised to UTC.
    At(DateTime<Utc>),
    /// Absent or null.
    Missing,
    /// Present but not a timestamp we can read; carries the raw text.
    Unparseable(String),
}

/// Reads a timestamp field (`created-at`, `updated-at`).
pub fn stamp(record: &Record, hyphenated: &str) -> Stamp {
    match field(record, hyphenated) {
        None => Stamp::Missing,
        Some(Value::String(s)) => match parse_timestamp(s) {
            Some(t) => Stamp::At(t),
            None => Stamp::Unparseable(s.clone()),
        },
        Some(other) => Stamp::Unparseable(other.to_string()),
    }
}

/// Parses the timestamp forms Coupa and its look-alikes send: RFC 3339 with
/// any offset or `Z`, an offset without a colon (`+0530`), a space instead
/// of `T`, optional fractional seconds. A zone-less value is read as UTC,
/// as Coupa reads zone-less query values.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f %:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let naive = s.strip_suffix(" UTC").unwrap_or(s);
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// Formats a time as Coupa's query filters expect it: whole seconds with an
/// explicit `+00:00` offset (the documented `YYYY-MM-DDTHH:MM:SS+HH:MM`).
pub fn query_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Formats a time for events and storage: RFC 3339 UTC with `Z`, sub-second
/// digits only when present.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn offsets_normalise_to_the_same_instant() {
        let a = parse_timestamp("2026-11-30T03:15:02-07:00").unwrap();
        let b = parse_timestamp("2026-11-30T15:45:02+05:30").unwrap();
        let c = parse_timestamp("2026-11-30T10:15:02Z").unwrap();
        let d = parse_timestamp("2026-11-30T12:15:02+0200").unwrap();
        let e = parse_timestamp("2026-11-30 10:15:02 UTC").unwrap();
        assert!(a == b && b == c && c == d && d == e);
        assert_eq!(rfc3339(a), "2026-11-30T10:15:02Z");
        assert_eq!(query_time(a), "2026-11-30T10:15:02+00:00");
    }

    #[test]
    fn garbage_is_unparseable_not_a_panic() {
        for s in ["", "yesterday", "2026-13-40T99:99:99Z", "\u{0}"] {
            assert_eq!(parse_timestamp(s), None, "{s:?}");
        }
    }

    #[test]
    fn keys_in_either_style() {
        let r = rec(json!({"id": 7, "updated_at": "2026-11-30T10:15:02Z", "created-at": null}));
        assert_eq!(id(&r).as_deref(), Some("7"));
        assert!(matches!(stamp(&r, "updated-at"), Stamp::At(_)));
        assert_eq!(stamp(&r, "created-at"), Stamp::Missing);
        let bad = rec(json!({"id": "x", "updated-at": 5}));
        assert_eq!(numeric_id(&bad), None);
        assert!(matches!(stamp(&bad, "updated-at"), Stamp::Unparseable(_)));
    }
}
