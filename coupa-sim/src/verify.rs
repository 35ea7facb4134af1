//! The ground-truth checker: compares every record version the simulator
//! ever showed ([`crate::Version`]) with the events one sink received,
//! and names what was lost, repeated or invented. Pure: it reads and
//! fetches nothing (`coupa-sim check` and the reliability tests do that).
//!
//! A received event is matched to the truth by `(object, record id,
//! updated-at)`. Two versions of one record written within one second share
//! that key (Coupa's timestamps have whole seconds); the checker cannot tell
//! them apart, so an event for the key counts as receiving either, and only
//! more distinct event ids than the key has versions is a duplicate.
//!
//! How repeats count: [`Verdict::duplicate_ids`] lists each event id that
//! arrived more than once, once, however many copies came; [`repeats`]
//! gives the number of extra copies per id, for tests that must judge each
//! repeat (the crash loop allows them only for events in flight at a kill).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Version;
use coupa_model::objects;
use coupa_model::record::{self, parse_timestamp, rfc3339};

/// One event as a sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The CloudEvent `id` (deterministic per version).
    pub event_id: String,
    /// Catalogue (or config) name of the object, e.g. `purchase_orders`.
    pub object: String,
    /// The record id.
    pub id: u64,
    /// The event's `time`: the record's `updated-at`, when it had one.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Received {
    /// From a delivered CloudEvent JSON (as the file sink writes a line, the
    /// webhook body, or a Kafka value). The object comes from `type`
    /// (`coupa.<singular>.<kind>`): the catalogue object of that singular,
    /// or the singular itself, which is the name for objects outside the
    /// catalogue (see `config::Settings::plans`). The `source` path cannot
    /// serve: nested objects carry a parent id there, and one of them
    /// (`remit_to_addresses`) ends in another object's name.
    pub fn from_event(ce: &Value) -> Result<Received, String> {
        let event_id = ce["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("event has no string `id`")?
            .to_string();
        let ty = ce["type"]
            .as_str()
            .ok_or_else(|| format!("event {event_id}: no string `type`"))?;
        let singular = ty
            .strip_prefix("coupa.")
            .and_then(|t| t.rsplit_once('.'))
            .map(|(s, _kind)| s)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("event {event_id}: type `{ty}` is not coupa.<object>.<kind>"))?;
        let object = objects::CATALOGUE
            .iter()
            .find(|o| o.singular == singular)
            .map_or(singular, |o| o.name)
            .to_string();
        let id = match ce["subject"].as_str().and_then(|s| s.parse().ok()) {
            Some(id) => id,
            None => ce["data"]
                .as_object()
                .and_then(record::numeric_id)
                .ok_or_else(|| {
                    format!("event {event_id}: no numeric record id in `subject` or `data`")
                })?,
        };
        let updated_at = match &ce["time"] {
            Value::Null => None,
            Value::String(s) => Some(
                parse_timestamp(s)
                    .ok_or_else(|| format!("event {event_id}: `time` {s:?} is not a timestamp"))?,
            ),
            other => return Err(format!("event {event_id}: `time` is not a string: {other}")),
        };
        Ok(Received {
            event_id,
            object,
            id,
            updated_at,
        })
    }
}

/// What [`verify`] found. Every list is sorted, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Ground-truth versions considered.
    pub versions: usize,
    /// Events received (every copy).
    pub events: usize,
    /// `(object, id, updated_at)` of a record's final version never received.
    pub lost_final: Vec<(String, u64, DateTime<Utc>)>,
    /// A superseded version that lived (`superseded_at − appeared_at`)
    /// longer than 2 × the schedule and was never received.
    pub lost_long_lived: Vec<(String, u64, DateTime<Utc>)>,
    /// Event ids received more than once (each listed once).
    pub duplicate_ids: Vec<String>,
    /// A version received under more distinct event ids than the truth
    /// holds versions with its `(object, id, updated_at)`.
    pub duplicate_versions: Vec<(String, u64, DateTime<Utc>)>,
    /// A received version that never existed; `None` time: an undated
    /// event for a record that never existed.
    pub phantom: Vec<(String, u64, Option<DateTime<Utc>>)>,
}

/// The reliability report's header; [`Verdict::row`] gives its rows.
pub const TABLE_HEADER: &str =
    "| scenario | events | lost | duplicates | phantom |\n|---|---:|---:|---:|---:|";

impl Verdict {
    /// Final plus long-lived versions never received.
    pub fn lost(&self) -> usize {
        self.lost_final.len() + self.lost_long_lived.len()
    }

    /// Repeated event ids plus versions received under several ids.
    pub fn duplicates(&self) -> usize {
        self.duplicate_ids.len() + self.duplicate_versions.len()
    }

    pub fn phantoms(&self) -> usize {
        self.phantom.len()
    }

    pub fn is_clean(&self) -> bool {
        self.lost() == 0 && self.duplicates() == 0 && self.phantoms() == 0
    }

    /// One markdown table row: `| scenario | events | lost | duplicates | phantom |`.
    pub fn row(&self, scenario: &str) -> String {
        format!(
            "| {scenario} | {} | {} | {} | {} |",
            self.events,
            self.lost(),
            self.duplicates(),
            self.phantoms()
        )
    }
}

/// How many examples of each problem the summary names.
const EXAMPLES: usize = 5;

fn stamp(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "(no time)".to_string(), rfc3339)
}

/// `what (n): a, b, … and k more`, or nothing when `items` is empty.
fn list_line<T>(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = items.iter().take(EXAMPLES).map(show).collect();
    write!(f, "\n  {what} ({}): {}", items.len(), shown.join(", "))?;
    if items.len() > EXAMPLES {
        write!(f, " and {} more", items.len() - EXAMPLES)?;
    }
    Ok(())
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events against {} versions: {} lost, {} duplicates, {} phantom{}",
            self.events,
            self.versions,
            self.lost(),
            self.duplicates(),
            self.phantoms(),
            if self.is_clean() { " (clean)" } else { "" }
        )?;
        let version =
            |(o, id, t): &(String, u64, DateTime<Utc>)| format!("{o}/{id}@{}", rfc3339(*t));
        list_line(f, "lost final versions", &self.lost_final, version)?;
        list_line(
            f,
            "lost long-lived versions",
            &self.lost_long_lived,
            version,
        )?;
        list_line(f, "repeated event ids", &self.duplicate_ids, |s| s.clone())?;
        list_line(
            f,
            "versions under several event ids",
            &self.duplicate_versions,
            version,
        )?;
        list_line(f, "phantom versions", &self.phantom, |(o, id, t)| {
            format!("{o}/{id}@{}", stamp(*t))
        })
    }
}

/// Extra copies per event id, for ids received more than once (an id
/// received three times maps to 2).
pub fn repeats(received: &[Received]) -> HashMap<String, usize> {
    let mut n: HashMap<String, usize> = HashMap::new();
    for r in received {
        *n.entry(r.event_id.clone()).or_default() += 1;
    }
    n.retain(|_, c| *c > 1);
    n.values_mut().for_each(|c| *c -= 1);
    n
}

/// Compares ground truth (all objects mixed; each record's versions in
/// creation order, as the simulator lists them) with what a sink received.
/// A version must have been received if it is its record's last, or if it
/// lived longer than 2 × `schedule`.
pub fn verify(truth: &[Version], received: &[Received], schedule: Duration) -> Verdict {
    type Key<'a> = (&'a str, u64, DateTime<Utc>);
    let long = chrono::Duration::from_std(schedule * 2).unwrap_or(chrono::Duration::MAX);

    let mut per_key: HashMap<Key, usize> = HashMap::new();
    let mut records: BTreeSet<(&str, u64)> = BTreeSet::new();
    // Each record's last version, by creation order.
    let mut finals: BTreeMap<(&str, u64), DateTime<Utc>> = BTreeMap::new();
    for v in truth {
        *per_key
            .entry((v.object.as_str(), v.id, v.updated_at))
            .or_default() += 1;
        records.insert((v.object.as_str(), v.id));
        finals.insert((v.object.as_str(), v.id), v.updated_at);
    }

    let mut copies: HashMap<&str, usize> = HashMap::new();
    // Distinct event ids per received dated version.
    let mut ids_per_key: HashMap<Key, BTreeSet<&str>> = HashMap::new();
    let mut phantom = BTreeSet::new();
    for r in received {
        *copies.entry(r.event_id.as_str()).or_default() += 1;
        match r.updated_at {
            Some(t) => {
                let key = (r.object.as_str(), r.id, t);
                if per_key.contains_key(&key) {
                    ids_per_key
                        .entry(key)
                        .or_default()
                        .insert(r.event_id.as_str());
                } else {
                    phantom.insert((r.object.clone(), r.id, Some(t)));
                }
            }
            // Undated: it cannot name a version, only a record.
            None => {
                if !records.contains(&(r.object.as_str(), r.id)) {
                    phantom.insert((r.object.clone(), r.id, None));
                }
            }
        }
    }

    let owned = |(o, id, t): Key| (o.to_string(), id, t);
    let lost_final = finals
        .iter()
        .map(|(&(o, id), &t)| (o, id, t))
        .filter(|k| !ids_per_key.contains_key(k))
        .map(owned)
        .collect();
    let lost_long_lived: BTreeSet<_> = truth
        .iter()
        .filter(|v| {
            v.superseded_at
                .is_some_and(|s| s.signed_duration_since(v.appeared_at) > long)
        })
        .map(|v| (v.object.as_str(), v.id, v.updated_at))
        .filter(|k| !ids_per_key.contains_key(k))
        .map(owned)
        .collect();
    let mut duplicate_ids: Vec<String> = copies
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.to_string())
        .collect();
    duplicate_ids.sort();
    let duplicate_versions: BTreeSet<_> = ids_per_key
        .iter()
        .filter(|(k, ids)| ids.len() > per_key[*k])
        .map(|(k, _)| owned(*k))
        .collect();

    Verdict {
        versions: truth.len(),
        events: received.len(),
        lost_final,
        lost_long_lived: lost_long_lived.into_iter().collect(),
        duplicate_ids,
        duplicate_versions: duplicate_versions.into_iter().collect(),
        phantom: phantom.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    /// Version of `object/id` stamped `u`, shown from `a` until `s` (secs).
    fn v(object: &str, id: u64, u: i64, a: i64, s: Option<i64>) -> Version {
        Version {
            object: object.into(),
            id,
            updated_at: t(u),
            created_at: t(0),
            record: Arc::new(serde_json::Map::new()),
            appeared_at: t(a),
            superseded_at: s.map(t),
        }
    }

    fn r(ev: &str, object: &str, id: u64, u: Option<i64>) -> Received {
        Received {
            event_id: ev.into(),
            object: object.into(),
            id,
            updated_at: u.map(t),
        }
    }

    const PO: &str = "purchase_orders";
    const SCHEDULE: Duration = Duration::from_secs(2);

    /// PO 1: three versions (the middle one lived 1 s), PO 2: one version.
    fn truth() -> Vec<Version> {
        vec![
            v(PO, 1, 0, 0, Some(10)),
            v(PO, 1, 10, 10, Some(11)),
            v(PO, 1, 11, 11, None),
            v(PO, 2, 5, 5, None),
        ]
    }

    fn clean() -> Vec<Received> {
        vec![
            r("a", PO, 1, Some(0)),
            r("c", PO, 1, Some(11)),
            r("d", PO, 2, Some(5)),
        ]
    }

    #[test]
    fn a_clean_set_is_clean_and_a_short_lived_version_may_be_missed() {
        let verdict = verify(&truth(), &clean(), SCHEDULE);
        assert!(verdict.is_clean(), "{verdict}");
        assert_eq!((verdict.versions, verdict.events), (4, 3));
        assert_eq!(verdict.row("x"), "| x | 3 | 0 | 0 | 0 |");
        assert!(verdict.to_string().contains("(clean)"), "{verdict}");
        assert!(repeats(&clean()).is_empty());
    }

    #[test]
    fn a_missing_final_version_is_lost() {
        let got: Vec<_> = clean().into_iter().filter(|e| e.event_id != "c").collect();
        let verdict = verify(&truth(), &got, SCHEDULE);
        assert_eq!(verdict.lost_final, vec![(PO.to_string(), 1, t(11))]);
        assert!(verdict.lost_long_lived.is_empty());
        assert_eq!(verdict.lost(), 1);
        assert!(!verdict.is_clean());
        let text = verdict.to_string();
        assert!(
            text.contains("lost final versions (1): purchase_orders/1@"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_long_lived_version_is_lost_and_a_short_one_is_not() {
        // PO 1's first version lived 10 s > 2 × 2 s.
        let got: Vec<_> = clean().into_iter().filter(|e| e.event_id != "a").collect();
        let verdict = verify(&truth(), &got, SCHEDULE);
        assert_eq!(verdict.lost_long_lived, vec![(PO.to_string(), 1, t(0))]);
        assert!(verdict.lost_final.is_empty());
        // With a longer schedule it was short-lived: no loss.
        assert!(verify(&truth(), &got, Duration::from_secs(5)).is_clean());
    }

    #[test]
    fn a_repeated_event_id_is_a_duplicate_counted_once() {
        let mut got = clean();
        got.push(r("c", PO, 1, Some(11)));
        got.push(r("c", PO, 1, Some(11)));
        let verdict = verify(&truth(), &got, SCHEDULE);
        assert_eq!(verdict.duplicate_ids, vec!["c".to_string()]);
        assert!(verdict.duplicate_versions.is_empty());
        assert_eq!((verdict.duplicates(), verdict.events), (1, 5));
        assert_eq!(repeats(&got), HashMap::from([("c".to_string(), 2)]));
        assert_eq!(verdict.row("r"), "| r | 5 | 0 | 1 | 0 |");
    }

    #[test]
    fn one_version_under_two_event_ids_is_a_duplicate() {
        let mut got = clean();
        got.push(r("other", PO, 2, Some(5)));
        let verdict = verify(&truth(), &got, SCHEDULE);
        assert_eq!(verdict.duplicate_versions, vec![(PO.to_string(), 2, t(5))]);
        assert!(verdict.duplicate_ids.is_empty());
        assert_eq!(verdict.duplicates(), 1);
    }

    #[test]
    fn two_versions_within_one_second_may_carry_two_ids() {
        // Edited twice in second 20: both versions share the key.
        let truth = vec![v(PO, 3, 20, 20, Some(20)), v(PO, 3, 20, 20, None)];
        let two = vec![r("x", PO, 3, Some(20)), r("y", PO, 3, Some(20))];
        assert!(verify(&truth, &two, SCHEDULE).is_clean());
        let mut three = two.clone();
        three.push(r("z", PO, 3, Some(20)));
        assert_eq!(verify(&truth, &three, SCHEDULE).duplicate_versions.len(), 1);
    }

    #[test]
    fn versions_that_never_existed_are_phantoms() {
        let mut got = clean();
        got.push(r("p1", PO, 1, Some(3))); // a time PO 1 never had
        got.push(r("p2", PO, 9, Some(5))); // a record that never existed
        got.push(r("p3", "invoices", 2, Some(5))); // another object
        got.push(r("p4", PO, 9, None)); // undated, unknown record
        got.push(r("ok", PO, 2, None)); // undated, known record: no phantom
        let verdict = verify(&truth(), &got, SCHEDULE);
        assert_eq!(
            verdict.phantom,
            vec![
                ("invoices".to_string(), 2, Some(t(5))),
                (PO.to_string(), 1, Some(t(3))),
                (PO.to_string(), 9, None),
                (PO.to_string(), 9, Some(t(5))),
            ]
        );
        assert_eq!(verdict.phantoms(), 4);
        assert_eq!(verdict.lost(), 0);
        let text = verdict.to_string();
        assert!(text.contains("phantom versions (4)"), "{text}");
        assert!(text.contains("purchase_orders/9@(no time)"), "{text}");
    }

    #[test]
    fn the_summary_names_at_most_five_examples() {
        let truth: Vec<Version> = (1..=8).map(|id| v(PO, id, 1, 1, None)).collect();
        let verdict = verify(&truth, &[], SCHEDULE);
        assert_eq!(verdict.lost_final.len(), 8);
        let text = verdict.to_string();
        assert!(text.contains("lost final versions (8)"), "{text}");
        assert!(text.contains("and 3 more"), "{text}");
        assert!(!text.contains("purchase_orders/6@"), "{text}");
        assert_eq!(TABLE_HEADER.lines().count(), 2);
        assert_eq!(verdict.row("empty sink"), "| empty sink | 0 | 8 | 0 | 0 |");
    }
}
