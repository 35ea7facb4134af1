//! Change events and their CloudEvents 1.0 (JSON, structured mode)
//! encoding, with the deterministic id consumers deduplicate on. Pure
//! functions: no I/O.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::coupa::record::{rfc3339, Record};

/// Whether a record version is its first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// `created-at == updated-at`.
    Created,
    /// Anything else, including a record first seen after several edits.
    Updated,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
        }
    }
}

/// A record's canonical JSON: keys sorted (serde_json's map is ordered),
/// so key order in Coupa's response cannot fake a change.
pub fn canonical_json(record: &Record) -> Vec<u8> {
    serde_json::to_vec(record).expect("a JSON map serialises")
}

/// The sha256 of a record's canonical JSON (from [`canonical_json`]).
pub fn content_hash(canonical: &[u8]) -> [u8; 32] {
    Sha256::digest(canonical).into()
}

/// Where an event comes from: the same for every record of one list.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Instance root, no trailing slash.
    pub base_url: String,
    /// Object name (config/catalogue).
    pub object: String,
    /// Singular for the event type.
    pub singular: String,
    /// The list path the record came from.
    pub path: String,
}

/// One detected record version.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    /// Deterministic: hex sha256 of `base_url|object|id|updated-at|hash`.
    pub id: String,
    /// Resource URL, e.g. `https://acme.coupahost.com/api/purchase_orders`.
    pub source: String,
    /// `coupa.<singular>.<created|updated>`.
    pub ty: String,
    /// The record id.
    pub subject: String,
    /// The record's `updated-at`, in UTC, when readable.
    pub time: Option<DateTime<Utc>>,
    /// The record as Coupa returned it, as canonical JSON.
    pub data: Vec<u8>,
}

/// The envelope without `data`, which is spliced in as bytes.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    datacontenttype: &'static str,
}

impl ChangeEvent {
    /// Builds the event for one record version.
    pub fn new(
        origin: &Origin,
        record_id: &str,
        updated_at: Option<DateTime<Utc>>,
        hash: &[u8; 32],
        kind: ChangeKind,
        data: Vec<u8>,
    ) -> ChangeEvent {
        let base = origin.base_url.trim_end_matches('/');
        let stamp = updated_at.map(rfc3339).unwrap_or_default();
        let id_input = format!(
            "{base}|{}|{record_id}|{stamp}|{}",
            origin.object,
            hex::encode(hash)
        );
        ChangeEvent {
            id: hex::encode(Sha256::digest(id_input.as_bytes())),
            source: format!("{base}{}", origin.path),
            ty: format!("coupa.{}.{}", origin.singular, kind.as_str()),
            subject: record_id.to_string(),
            time: updated_at,
            data,
        }
    }

    /// The CloudEvents 1.0 structured-mode JSON, as bytes: the record's
    /// JSON is spliced in as it is, not rebuilt.
    pub fn to_json(&self) -> Vec<u8> {
        let envelope = Envelope {
            specversion: "1.0",
            id: &self.id,
            source: &self.source,
            ty: &self.ty,
            subject: &self.subject,
            time: self.time.map(rfc3339),
            datacontenttype: "application/json",
        };
        let mut out = serde_json::to_vec(&envelope).expect("envelope serialises");
        out.pop(); // the closing brace
        out.reserve(self.data.len() + 10);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(&self.data);
        out.push(b'}');
        out
    }

    /// The same, parsed (tests and tools).
    pub fn to_cloudevent(&self) -> Value {
        serde_json::from_slice(&self.to_json()).expect("valid JSON")
    }
}

/// The envelope fields sinks put in headers, read back from event bytes.
#[derive(Debug, serde::Deserialize)]
pub struct EventHead<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub ty: Cow<'a, str>,
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    #[serde(borrow)]
    pub specversion: Cow<'a, str>,
}

impl<'a> EventHead<'a> {
    /// Parses the head of a CloudEvent's JSON bytes (`data` is skipped).
    pub fn parse(event: &'a [u8]) -> Option<EventHead<'a>> {
        serde_json::from_slice(event).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn id_is_deterministic_and_content_sensitive() {
        let t = "2026-11-30T10:15:02Z".parse().ok();
        let a = rec(json!({"id": 1, "b": 2, "a": 1}));
        let b = rec(json!({"a": 1, "id": 1, "b": 2}));
        let c = rec(json!({"a": 1, "id": 1, "b": 3}));
        assert_eq!(
            content_hash(&canonical_json(&a)),
            content_hash(&canonical_json(&b)),
            "key order is not a change"
        );
        let origin = Origin {
            base_url: "https://x.coupahost.com/".into(),
            object: "purchase_orders".into(),
            singular: "purchase_order".into(),
            path: "/api/purchase_orders".into(),
        };
        let mk = |r: &Record| {
            ChangeEvent::new(
                &origin,
                "1",
                t,
                &content_hash(&canonical_json(r)),
                ChangeKind::Updated,
                canonical_json(r),
            )
        };
        assert_eq!(mk(&a).id, mk(&b).id);
        assert_ne!(mk(&a).id, mk(&c).id);
        let ce = mk(&a).to_cloudevent();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["type"], "coupa.purchase_order.updated");
        assert_eq!(ce["source"], "https://x.coupahost.com/api/purchase_orders");
        assert_eq!(ce["time"], "2026-11-30T10:15:02Z");
        assert_eq!(ce["subject"], "1");
        assert_eq!(ce["id"].as_str().unwrap().len(), 64);
        assert_eq!(ce["data"], json!({"a": 1, "id": 1, "b": 2}));
        assert_eq!(ce["datacontenttype"], "application/json");
        let bytes = mk(&a).to_json();
        let head = EventHead::parse(&bytes).unwrap();
        assert_eq!(head.id, mk(&a).id);
        assert_eq!(head.ty, "coupa.purchase_order.updated");
        assert_eq!(head.specversion, "1.0");
    }
}

/// `coupa_sim::verify` reads events as this file writes them (the test
/// lives here because the simulator's crate does not know the daemon).
#[cfg(test)]
mod verify_reads_events {
    use coupa_sim::verify::Received;
    use serde_json::{json, Value};

    use super::*;
    use crate::coupa::record::parse_timestamp;

    const PO: &str = "purchase_orders";

    #[test]
    fn received_reads_a_cloudevent_as_the_daemon_writes_it() {
        let origin = |object: &str, singular: &str, path: &str| Origin {
            base_url: "http://127.0.0.1:9".into(),
            object: object.into(),
            singular: singular.into(),
            path: path.into(),
        };
        let rec = json!({"id": 42, "updated-at": "2026-11-30T03:15:02-07:00"});
        let rec = rec.as_object().unwrap();
        let data = canonical_json(rec);
        let at = parse_timestamp("2026-11-30T10:15:02Z");
        let make = |o: &Origin| {
            ChangeEvent::new(
                o,
                "42",
                at,
                &content_hash(&data),
                ChangeKind::Updated,
                data.clone(),
            )
            .to_cloudevent()
        };
        let po = make(&origin(PO, "purchase_order", "/api/purchase_orders"));
        let got = Received::from_event(&po).unwrap();
        assert_eq!(got.object, PO);
        assert_eq!((got.id, got.updated_at), (42, at));
        assert_eq!(got.event_id, po["id"].as_str().unwrap());
        // Nested, and whose path ends in another object's name.
        let remit = make(&origin(
            "remit_to_addresses",
            "remit_to_address",
            "/api/suppliers/7/addresses",
        ));
        assert_eq!(
            Received::from_event(&remit).unwrap().object,
            "remit_to_addresses"
        );
        // Outside the catalogue: the singular is the config name.
        let custom = make(&origin(
            "receiving_transactions",
            "receiving_transactions",
            "/api/receiving_transactions",
        ));
        assert_eq!(
            Received::from_event(&custom).unwrap().object,
            "receiving_transactions"
        );
        // Undated, and the id only in data.
        let mut undated = po.clone();
        undated.as_object_mut().unwrap().remove("time");
        undated["subject"] = Value::Null;
        let got = Received::from_event(&undated).unwrap();
        assert_eq!((got.id, got.updated_at), (42, None));
        for (bad, says) in [
            (
                json!({"type": "coupa.purchase_order.updated"}),
                "no string `id`",
            ),
            (
                json!({"id": "e", "type": "other"}),
                "not coupa.<object>.<kind>",
            ),
            (
                json!({"id": "e", "type": "coupa.purchase_order.updated", "subject": "x"}),
                "no numeric record id",
            ),
            (
                json!({"id": "e", "type": "coupa.purchase_order.updated", "subject": "1", "time": "soon"}),
                "not a timestamp",
            ),
        ] {
            let err = Received::from_event(&bad).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
