//! Change detection: a page's records against the seen-set, into new
//! versions (events), repeats and rejected elements.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tracing::warn;

use super::status::PollReport;
use super::{PollError, Poller};
use crate::coupa::record::{self, Listed, Rejected, Stamp};
use crate::event::{canonical_json, content_hash, ChangeEvent, ChangeKind, Origin};
use crate::store::{OutboxEntry, SeenEntry};

impl Poller {
    /// The events' origin; the base URL without user info, which would put
    /// a password in every event's `source` (and its rotation would change
    /// every event id).
    pub(super) fn origin(&self, path: String) -> Origin {
        Origin {
            base_url: crate::redact::display_url(self.client.base_url())
                .trim_end_matches('/')
                .to_string(),
            object: self.plan.name.clone(),
            singular: self.plan.singular.clone(),
            path,
        }
    }

    /// Turns a page into new events and seen-set entries.
    pub(super) fn detect(
        &self,
        page: &[Listed],
        origin: &Origin,
        report: &mut PollReport,
        reseed_below: Option<DateTime<Utc>>,
    ) -> Result<(Vec<OutboxEntry>, Vec<SeenEntry>), PollError> {
        let mut events = Vec::new();
        let mut seen = Vec::new();
        // The same version twice in one page must still be one event.
        let mut in_page: HashMap<(Option<DateTime<Utc>>, String), [u8; 32]> = HashMap::new();
        for item in page {
            // Without a usable id there is no subject, key or seen-set
            // slot: count, log and list it instead of publishing it.
            let rejected = match item {
                Ok(rec) => record::id_problem(rec).map(|(reason, detail)| Rejected {
                    reason,
                    detail,
                    updated_at: record::field(rec, "updated-at").map(|v| match v {
                        serde_json::Value::String(s) => self.client.redact(s),
                        other => self.client.redact(&other.to_string()),
                    }),
                    excerpt: self.client.snippet(&canonical_json(rec)),
                }),
                Err(r) => Some(r.clone()),
            };
            if let Some(r) = rejected {
                warn!(object = %self.plan.name, reason = r.reason.as_str(), detail = %r.detail, updated_at = ?r.updated_at, excerpt = %r.excerpt, "record rejected: not published");
                report.reject(r);
                continue;
            }
            let Ok(rec) = item else { continue };
            let id = record::id(rec).unwrap_or_default();
            let updated_at = match record::stamp(rec, "updated-at") {
                Stamp::At(t) => Some(t),
                other => {
                    report.undated += 1;
                    warn!(object = %self.plan.name, id = %id, value = ?other, "record without a readable updated-at; publishing it as updated");
                    None
                }
            };
            let data = canonical_json(rec);
            let hash = content_hash(&data);
            let key = (updated_at, id.clone());
            let known = match in_page.get(&key) {
                Some(h) => Some(*h),
                None => self
                    .store
                    .seen(&self.plan.name, updated_at, &id)
                    .map_err(|e| self.store_err(e))?,
            };
            if known == Some(hash) {
                report.repeats += 1;
                continue;
            }
            in_page.insert(key, hash);
            // Published under another `fields` selection: a repeat, whose
            // new hash is remembered so later re-reads match it.
            let reread = matches!((updated_at, reseed_below), (Some(u), Some(r)) if u < r);
            if known.is_some() && reread {
                report.repeats += 1;
                seen.push(SeenEntry {
                    updated_at,
                    id,
                    hash,
                });
                continue;
            }
            let kind = match (record::stamp(rec, "created-at"), updated_at) {
                (Stamp::At(c), Some(u)) if c == u => ChangeKind::Created,
                _ => ChangeKind::Updated,
            };
            let event = ChangeEvent::new(origin, &id, updated_at, &hash, kind, data);
            events.push(OutboxEntry {
                object: self.plan.name.clone(),
                key: id.clone(),
                event: event.to_json(),
            });
            seen.push(SeenEntry {
                updated_at,
                id,
                hash,
            });
            report.events += 1;
        }
        Ok((events, seen))
    }
}
