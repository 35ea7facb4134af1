//! The simulator's data: one table per catalogue object (id → current
//! record), per-object id counters and the append-only version log that
//! is the tests' ground truth. Records are stored already rendered (keys
//! hyphenated, timestamps in the record's UTC offset), so what the API
//! shows, what `get` returns and what the version log holds are the same
//! bytes. Knows nothing of HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, SubsecRound, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

use super::query::Query;
use super::{data, SimError, Version};
use coupa_model::objects::{ObjectSpec, CATALOGUE};
use coupa_model::record::parse_timestamp;

pub(crate) type Record = Map<String, Value>;

/// The current state of one record.
pub(crate) struct Row {
    /// Shared with the version log's entry for the current version.
    pub record: Arc<Record>,
    /// Parent record id for nested objects (supplier sites, remit-to addresses).
    pub parent: Option<u64>,
    /// Index of the current version in [`Store::versions`].
    version: usize,
}

pub(crate) struct Store {
    seed: u64,
    offsets: Vec<FixedOffset>,
    tables: HashMap<&'static str, BTreeMap<u64, Row>>,
    next_id: HashMap<&'static str, u64>,
    versions: Vec<Version>,
}

/// Renders a timestamp the way Coupa does: whole seconds, numeric offset.
pub(crate) fn render_time(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// Maps a caller's key to the record's spelling: `po_number` becomes
/// `po-number` when the record has that key (Coupa keys are hyphenated;
/// tests may write either). Unknown keys are kept as given (legacy
/// top-level custom fields keep their underscores).
pub(crate) fn record_key(k: &str, record: &Record) -> String {
    let hyphenated = k.replace('_', "-");
    if !record.contains_key(k) && record.contains_key(&hyphenated) {
        hyphenated
    } else {
        k.to_string()
    }
}

/// Removes a timestamp field (either spelling) from caller-given fields and parses it.
fn take_time(fields: &mut Record, hyphenated: &str) -> Result<Option<DateTime<Utc>>, SimError> {
    let v = fields
        .remove(hyphenated)
        .or_else(|| fields.remove(&hyphenated.replace('-', "_")));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            parse_timestamp(&s)
                .map(|t| Some(t.trunc_subsecs(0)))
                .ok_or(SimError::BadTimestamp {
                    field: hyphenated.into(),
                    value: s,
                })
        }
        Some(other) => Err(SimError::BadTimestamp {
            field: hyphenated.into(),
            value: other.to_string(),
        }),
    }
}

impl Store {
    pub fn new(seed: u64, offsets: Vec<FixedOffset>) -> Store {
        let mut s = Store {
            seed,
            offsets: Vec::new(),
            tables: CATALOGUE
                .iter()
                .map(|o| (o.name, BTreeMap::new()))
                .collect(),
            next_id: CATALOGUE.iter().map(|o| (o.name, 1)).collect(),
            versions: Vec::new(),
        };
        s.set_offsets(offsets);
        s
    }

    pub fn set_offsets(&mut self, offsets: Vec<FixedOffset>) {
        self.offsets = if offsets.is_empty() {
            vec![FixedOffset::east_opt(0).expect("valid offset")]
        } else {
            offsets
        };
    }

    /// The offset a record's timestamps are rendered in: rotates by id, so
    /// one page mixes offsets like a multi-zone instance would.
    fn offset_for(&self, id: u64) -> FixedOffset {
        self.offsets[(id.saturating_sub(1) % self.offsets.len() as u64) as usize]
    }

    /// Seed for the change generator: derived from the configured seed so
    /// runs repeat, distinct from the per-record generators.
    pub fn seed_for_generator(&self) -> u64 {
        self.seed ^ 0x6E6E_6E6E
    }

    pub fn table(&self, object: &str) -> &BTreeMap<u64, Row> {
        &self.tables[object]
    }

    /// Fills the tables at start: `n` records per top-level object spread
    /// over the last 30 days (ids ascending with created-at, like a real
    /// instance), then one to three children per parent record. Parent
    /// objects go first so generated references point at real records.
    pub fn seed_initial(&mut self, n: usize, now: DateTime<Utc>) {
        if n == 0 {
            return;
        }
        let is_parent = |o: &ObjectSpec| {
            CATALOGUE
                .iter()
                .any(|c| c.parent.is_some_and(|p| p.object == o.name))
        };
        let mut top: Vec<&ObjectSpec> = CATALOGUE.iter().filter(|o| o.parent.is_none()).collect();
        top.sort_by_key(|o| !is_parent(o));
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5EED);
        let span = 30 * 24 * 3600i64;
        for spec in top {
            for i in 0..n as i64 {
                let created = now
                    - chrono::Duration::seconds(
                        span - span * i / n as i64 + rng.random_range(0..60),
                    );
                let age = (now - created).num_seconds().max(1);
                let updated = created + chrono::Duration::seconds(rng.random_range(0..age));
                let fields = serde_json::json!({
                    "created-at": created.to_rfc3339(), "updated-at": updated.to_rfc3339()
                });
                let _ = self.create(spec, fields.as_object().cloned().unwrap_or_default(), now);
            }
        }
        for spec in CATALOGUE.iter().filter(|o| o.parent.is_some()) {
            let parent = spec.parent.expect("filtered on parent").object;
            let parents: Vec<(u64, DateTime<Utc>)> = self.versions_of_current(parent);
            for (pid, pcreated) in parents {
                for _ in 0..rng.random_range(1..=3) {
                    let age = (now - pcreated).num_seconds().max(1);
                    let created = pcreated + chrono::Duration::seconds(rng.random_range(0..age));
                    let fields = serde_json::json!({
                        "_parent_id": pid, "created-at": created.to_rfc3339(), "updated-at": created.to_rfc3339()
                    });
                    let _ = self.create(spec, fields.as_object().cloned().unwrap_or_default(), now);
                }
            }
        }
    }

    /// (id, created-at) of every current record of an object.
    fn versions_of_current(&self, object: &str) -> Vec<(u64, DateTime<Utc>)> {
        self.tables[object]
            .iter()
            .map(|(id, row)| (*id, self.versions[row.version].created_at))
            .collect()
    }

    /// Renders `t` the way record `id`'s timestamps are rendered (its UTC offset).
    pub fn stamp(&self, id: u64, t: DateTime<Utc>) -> String {
        render_time(t, self.offset_for(id))
    }

    pub fn create(
        &mut self,
        spec: &'static ObjectSpec,
        fields: Record,
        now: DateTime<Utc>,
    ) -> Result<Record, SimError> {
        self.create_with(spec, fields, now, |_| {})
    }

    /// [`Store::create`], with `finish` run on the complete record (generated
    /// fields, caller's fields laid over) before it becomes a version: the
    /// API's write side sets defaults and merges custom fields there.
    pub fn create_with(
        &mut self,
        spec: &'static ObjectSpec,
        mut fields: Record,
        now: DateTime<Utc>,
        finish: impl FnOnce(&mut Record),
    ) -> Result<Record, SimError> {
        let parent = match spec.parent {
            None => None,
            Some(_) => Some(
                fields
                    .remove("_parent_id")
                    .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                    .ok_or_else(|| SimError::MissingParent(spec.name.into()))?,
            ),
        };
        fields.remove("_parent_id");
        let updated = take_time(&mut fields, "updated-at")?;
        // A late commit gives only updated-at: created-at follows it, so the
        // record does not claim to be created after its last update.
        let created = take_time(&mut fields, "created-at")?
            .or(updated)
            .unwrap_or_else(|| now.trunc_subsecs(0));
        let updated = updated.unwrap_or_else(|| now.trunc_subsecs(0));

        let id = self.next_id[spec.name];
        self.next_id.insert(spec.name, id + 1);
        let offset = self.offset_for(id);
        let mut rng = data::rng_for(self.seed, spec.name, id);
        let mut record = data::generate(
            spec,
            id,
            parent,
            created.with_timezone(&offset),
            &mut rng,
            self,
        );
        fields.remove("id");
        for (k, v) in fields {
            let key = record_key(&k, &record);
            record.insert(key, v);
        }
        finish(&mut record);
        record.insert("id".into(), id.into());
        record.insert("created-at".into(), render_time(created, offset).into());
        record.insert("updated-at".into(), render_time(updated, offset).into());

        let shared = Arc::new(record.clone());
        self.versions.push(Version {
            object: spec.name.into(),
            id,
            updated_at: updated,
            created_at: created,
            record: shared.clone(),
            appeared_at: now,
            superseded_at: None,
        });
        let version = self.versions.len() - 1;
        let row = Row {
            record: shared,
            parent,
            version,
        };
        self.tables
            .get_mut(spec.name)
            .expect("table per object")
            .insert(id, row);
        Ok(record)
    }

    pub fn update(
        &mut self,
        spec: &ObjectSpec,
        id: u64,
        mut patch: Record,
        now: DateTime<Utc>,
    ) -> Result<Option<Record>, SimError> {
        if !self.tables[spec.name].contains_key(&id) {
            return Ok(None);
        }
        patch.remove("_parent_id");
        patch.remove("id");
        patch.remove("created-at");
        patch.remove("created_at");
        let updated = take_time(&mut patch, "updated-at")?.unwrap_or_else(|| now.trunc_subsecs(0));
        let offset = self.offset_for(id);
        let row = self
            .tables
            .get_mut(spec.name)
            .and_then(|t| t.get_mut(&id))
            .expect("checked above");
        // The old version keeps its copy; this one gets its own.
        let current = Arc::make_mut(&mut row.record);
        let mut bump_revision = true;
        for (k, v) in patch {
            let key = record_key(&k, current);
            bump_revision &= key != "internal-revision";
            current.insert(key, v);
        }
        // Coupa raises internal-revision on every PO change (`version` only
        // on supplier-facing revisions), so a plain update bumps it.
        if bump_revision {
            if let Some(n) = current.get("internal-revision").and_then(Value::as_u64) {
                current.insert("internal-revision".into(), (n + 1).into());
            }
        }
        current.insert("updated-at".into(), render_time(updated, offset).into());
        Ok(Some(self.record_version(spec, id, updated, now)))
    }

    /// Stores `record` as the next version of record `id` (the API's
    /// writes edit a copy, validating against the other records, then
    /// commit it here): `updated-at` = now, `internal-revision` bumped as
    /// on every Coupa change; `id` and `created-at` kept. `None` if no such record.
    pub fn replace(
        &mut self,
        spec: &ObjectSpec,
        id: u64,
        mut record: Record,
        now: DateTime<Utc>,
    ) -> Option<Record> {
        let offset = self.offset_for(id);
        let row = self.tables.get_mut(spec.name)?.get_mut(&id)?;
        for keep in ["id", "created-at"] {
            match row.record.get(keep) {
                Some(v) => record.insert(keep.into(), v.clone()),
                None => record.remove(keep),
            };
        }
        if let Some(n) = row.record.get("internal-revision").and_then(Value::as_u64) {
            record.insert("internal-revision".into(), (n + 1).into());
        }
        let updated = now.trunc_subsecs(0);
        record.insert("updated-at".into(), render_time(updated, offset).into());
        row.record = Arc::new(record);
        Some(self.record_version(spec, id, updated, now))
    }

    /// Makes the row's current record (already changed) the record's next
    /// version in the history, superseding the previous one.
    fn record_version(
        &mut self,
        spec: &ObjectSpec,
        id: u64,
        updated: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Record {
        let row = self
            .tables
            .get_mut(spec.name)
            .and_then(|t| t.get_mut(&id))
            .expect("the caller changed this row");
        let shared = row.record.clone();
        let previous = row.version;
        row.version = self.versions.len();
        self.versions[previous].superseded_at = Some(now);
        let created_at = self.versions[previous].created_at;
        self.versions.push(Version {
            object: spec.name.into(),
            id,
            updated_at: updated,
            created_at,
            record: shared.clone(),
            appeared_at: now,
            superseded_at: None,
        });
        (*shared).clone()
    }

    /// The parent id a nested record sits under.
    pub fn parent_of(&self, spec: &ObjectSpec, id: u64) -> Option<u64> {
        self.tables[spec.name].get(&id)?.parent
    }

    pub fn get(&self, spec: &ObjectSpec, id: u64) -> Option<Record> {
        self.tables[spec.name].get(&id).map(|r| (*r.record).clone())
    }

    /// One record as the API shows it, only if it sits under `parent` (nested objects).
    pub fn get_under(&self, spec: &ObjectSpec, parent: Option<u64>, id: u64) -> Option<Record> {
        let row = self.tables[spec.name].get(&id)?;
        (parent.is_none() || row.parent == parent).then(|| (*row.record).clone())
    }

    pub fn versions(&self, object: &str) -> Vec<Version> {
        self.versions
            .iter()
            .filter(|v| v.object == object)
            .cloned()
            .collect()
    }

    /// A list GET, evaluated against the live data at this moment (so
    /// offset paging over a moving set skips records, as on Coupa).
    /// Records are shared, not copied, unless `fields=` projects them.
    pub fn list(&self, spec: &ObjectSpec, parent: Option<u64>, q: &Query) -> Vec<Arc<Record>> {
        let table = &self.tables[spec.name];
        // Ascending id order is the table's own order: scan from the id
        // floor and stop once the page is full (same result, no full sort).
        if let Some(floor) = q.ascending_id_floor() {
            return table
                .range(floor.unwrap_or(0)..)
                .map(|(_, r)| r)
                .filter(|r| parent.is_none() || r.parent == parent)
                .map(|r| &r.record)
                .filter(|r| q.matches(r))
                .skip(q.offset)
                .take(q.limit)
                .map(|r| q.project_shared(r))
                .collect();
        }
        let mut hits: Vec<&Arc<Record>> = table
            .values()
            .filter(|r| parent.is_none() || r.parent == parent)
            .map(|r| &r.record)
            .filter(|r| q.matches(r))
            .collect();
        hits.sort_by(|a, b| q.order(a, b));
        hits.into_iter()
            .skip(q.offset)
            .take(q.limit)
            .map(|r| q.project_shared(r))
            .collect()
    }
}
