//! Each object's poll plan: its settings resolved against `[poll]`
//! defaults and the catalogue into one [`ObjectPlan`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::schedule::Schedule;
use super::sections::ObjectSettings;
use super::shard::Shard;
use super::Settings;
use crate::coupa::objects::{self, ObjectSpec};
use crate::coupa::record::parse_timestamp;
use crate::setting::ConfigError;

/// Where a new object's high-water mark starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Coupa's clock at the first poll: no history replayed.
    Now,
    /// A fixed time: replay from there.
    At(DateTime<Utc>),
}

/// An object to poll, with every default resolved.
#[derive(Debug, Clone)]
pub struct ObjectPlan {
    /// Config name; also the store key and event-type stem.
    pub name: String,
    /// Singular used in `coupa.<singular>.<created|updated>`.
    pub singular: String,
    /// List path (nested objects carry their parent placeholder).
    pub path: String,
    /// Catalogue entry, if it is one.
    pub spec: Option<&'static ObjectSpec>,
    pub schedule: Schedule,
    pub lookback: Duration,
    pub settle: Duration,
    pub start_from: StartFrom,
    pub page_size: u32,
    pub parent_budget: u32,
    /// Slices of a long window read at once (1 = none).
    pub backfill_concurrency: u32,
    /// Shortest backfill slice.
    pub backfill_slice: Duration,
    pub filter: BTreeMap<String, String>,
    pub fields: Vec<String>,
}

pub(crate) fn parse_start(key: &str, v: &str) -> Result<StartFrom, ConfigError> {
    if v.eq_ignore_ascii_case("now") {
        return Ok(StartFrom::Now);
    }
    let t = parse_timestamp(v).ok_or_else(|| {
        ConfigError::new(key, format!("`{v}` is neither `now` nor an RFC 3339 time"))
    })?;
    // Coupa stamps whole seconds; a fractional bound would re-read the
    // same second as new on every window.
    if t.timestamp_subsec_nanos() != 0 {
        return Err(ConfigError::new(
            key,
            format!("`{v}` has a fraction of a second; Coupa stamps whole seconds, so give whole seconds (e.g. `{}`)", t.format("%Y-%m-%dT%H:%M:%SZ")),
        ));
    }
    Ok(StartFrom::At(t))
}

/// A window bound that moves by this must stay on a whole second.
pub(crate) fn whole_seconds(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.subsec_nanos() != 0 {
        return Err(ConfigError::new(
            key,
            format!(
                "`{}` has a fraction of a second; Coupa stamps whole seconds, so give whole seconds (e.g. `{}s`)",
                humantime::format_duration(d),
                d.as_secs().max(1)
            ),
        ));
    }
    Ok(d)
}

impl Settings {
    /// This replica's share, if `[cluster] shard` is set.
    pub fn shard(&self) -> Result<Option<Shard>, ConfigError> {
        let Some(spec) = &self.cluster.shard else {
            return Ok(None);
        };
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default();
        Shard::parse(spec, host.trim())
            .map(Some)
            .map_err(|m| ConfigError::new("cluster.shard", m))
    }

    /// Every configured object with defaults applied.
    pub fn plans(&self) -> Result<Vec<ObjectPlan>, ConfigError> {
        self.objects
            .iter()
            .enumerate()
            .map(|(i, o)| self.plan(i, o))
            .collect()
    }

    pub(super) fn plan(&self, i: usize, o: &ObjectSettings) -> Result<ObjectPlan, ConfigError> {
        let key = |k: &str| format!("objects[{i}].{k}");
        let spec = objects::lookup(&o.name);
        let (path, singular) = match (spec, &o.path) {
            (_, Some(p)) => {
                if !p.starts_with("/api/") || p.contains("..") || p.contains('?') {
                    return Err(ConfigError::new(
                        key("path"),
                        format!("`{p}` must be a path under /api/ without a query"),
                    ));
                }
                (
                    p.clone(),
                    spec.map_or_else(|| o.name.clone(), |s| s.singular.to_string()),
                )
            }
            (Some(s), None) => {
                if !s.caps.list {
                    return Err(ConfigError::new(
                        key("name"),
                        format!("`{}` cannot be listed, so it cannot be polled", o.name),
                    ));
                }
                (s.path.to_string(), s.singular.to_string())
            }
            (None, None) => {
                return Err(ConfigError::new(
                    key("name"),
                    format!(
                        "unknown object `{}`; known: {} (or give `path` for another resource)",
                        o.name,
                        objects::names().join(", ")
                    ),
                ))
            }
        };
        if o.name.is_empty()
            || !o
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::new(
                key("name"),
                format!("`{}` must be letters, digits, `_` or `-`", o.name),
            ));
        }
        let schedule_expr = o.schedule.as_deref().unwrap_or(&self.poll.schedule);
        let schedule =
            Schedule::parse(schedule_expr).map_err(|m| ConfigError::new(key("schedule"), m))?;
        let start_from = match &o.start_from {
            Some(s) => parse_start(&key("start_from"), s)?,
            None => parse_start("poll.start_from", &self.poll.start_from)?,
        };
        Ok(ObjectPlan {
            name: o.name.clone(),
            singular,
            spec: if o.path.is_some() { None } else { spec },
            path,
            schedule,
            lookback: match o.lookback {
                Some(d) => whole_seconds(&key("lookback"), d)?,
                None => whole_seconds("poll.lookback", self.poll.lookback)?,
            },
            settle: o.settle.unwrap_or(self.poll.settle),
            start_from,
            page_size: self.poll.page_size,
            parent_budget: self.poll.parent_budget.max(1),
            backfill_concurrency: self.poll.backfill_concurrency.clamp(1, 64),
            backfill_slice: self.poll.backfill_slice.max(Duration::from_secs(1)),
            filter: o.filter.clone(),
            fields: o.fields.clone(),
        })
    }
}
