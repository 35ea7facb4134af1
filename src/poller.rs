//! One object's poll loop: freeze a window from Coupa's clock, page it by
//! `id[gt]` (never by offset), detect new record versions against the
//! seen-set, and commit each page (events + seen entries + position) in one
//! store transaction. The window ends only on an empty page; then the
//! high-water mark moves to its upper bound. It never talks to a sink.
//!
//! Nested objects (supplier sites, remit-to addresses) have no top-level
//! list in Coupa: a window walks every parent supplier by id and pages each
//! one's children with the same time filter. At most `parent_budget`
//! parents are visited per poll, so the request cost of a poll is bounded;
//! an unfinished window is persisted and continued by the next poll. A
//! child edited after we passed its parent has `updated-at` above the
//! frozen upper bound and lands in the next window, so nothing is missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tracing::{debug, info, warn, Instrument};

use crate::config::{ObjectPlan, StartFrom};
use crate::coupa::client::CoupaClient;
use crate::coupa::error::CoupaError;
use crate::coupa::objects;
use crate::coupa::record::{self, query_time, Record, Stamp};
use crate::event::{canonical_json, content_hash, ChangeEvent, ChangeKind, Origin};
use crate::shutdown::Shutdown;
use crate::store::{ObjectState, OutboxEntry, SeenEntry, Store, StoreError, Window};

/// Why a poll stopped early. The window stays persisted; the next poll
/// resumes it, so an error never loses a change.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{object}: {source}")]
    Coupa {
        object: String,
        #[source]
        source: CoupaError,
    },
    #[error("{object}: {source}")]
    Store {
        object: String,
        #[source]
        source: StoreError,
    },
    #[error("{object}: {detail}")]
    Protocol { object: String, detail: String },
}

impl PollError {
    /// A short label for metrics: what failed, not which record.
    pub fn kind(&self) -> &'static str {
        match self {
            PollError::Coupa { source, .. } => match source {
                CoupaError::Config(_) => "config",
                CoupaError::Unauthorized { .. } | CoupaError::InvalidScope { .. } => "auth",
                CoupaError::Forbidden { .. } => "forbidden",
                CoupaError::NotFound { .. } => "not_found",
                CoupaError::Validation { .. } => "validation",
                CoupaError::Status { .. } => "status",
                CoupaError::Transport { .. } => "transport",
                CoupaError::Malformed { .. } => "malformed",
                CoupaError::RetriesExhausted { .. } => "retries_exhausted",
                _ => "other",
            },
            PollError::Store { .. } => "store",
            PollError::Protocol { .. } => "protocol",
        }
    }
}

/// Records each offset-mode page re-reads from the previous one.
pub const OFFSET_OVERLAP: usize = 10;

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// List requests sent (pages, including the closing empty one).
    pub requests: u64,
    /// Records received.
    pub records: u64,
    /// New versions published.
    pub events: u64,
    /// Records already seen with the same content (lookback overlap).
    pub repeats: u64,
    /// Records without a readable `updated-at` (published with a warning).
    pub undated: u64,
    /// Whether the window completed and the high-water mark moved.
    pub window_complete: bool,
}

impl PollReport {
    /// Adds another report's counts (a total over polls or objects); the
    /// completion flag is the latest one's.
    pub fn add(&mut self, other: &PollReport) {
        self.requests += other.requests;
        self.records += other.records;
        self.events += other.events;
        self.repeats += other.repeats;
        self.undated += other.undated;
        self.window_complete = other.window_complete;
    }
}

/// Live figures per object, read by status and tests.
#[derive(Debug, Clone, Default)]
pub struct PollerStatus {
    pub last_poll: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub totals: PollReport,
    pub polls: u64,
    /// Why polling is paused (backpressure), if it is.
    pub paused: Option<String>,
    /// Failed polls by kind (metrics).
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// Pauses a poller while the outbox holds `max_backlog` events or more
/// not yet settled by the slowest sink: a dead sink costs disk, not loss.
#[derive(Debug, Clone)]
pub struct Backpressure {
    /// Every configured sink's name.
    pub sinks: Arc<Vec<String>>,
    pub max_backlog: u64,
}

/// Polls one object.
pub struct Poller {
    plan: ObjectPlan,
    client: CoupaClient,
    store: Store,
    status: Arc<Mutex<PollerStatus>>,
    gate: Option<Backpressure>,
}

/// The paging position inside a window's current list.
struct ListCursor<'a> {
    path: String,
    origin: Origin,
    window: &'a Window,
}

impl Poller {
    /// A poller for one planned object.
    pub fn new(plan: ObjectPlan, client: CoupaClient, store: Store) -> Poller {
        Poller {
            plan,
            client,
            store,
            status: Arc::default(),
            gate: None,
        }
    }

    /// Pauses this poller while the outbox is over its limit.
    pub fn with_backpressure(mut self, gate: Backpressure) -> Poller {
        self.gate = Some(gate);
        self
    }

    /// Waits while the outbox is over its limit. `false`: shutdown came first.
    async fn room(&self, shutdown: &Shutdown) -> bool {
        let Some(gate) = &self.gate else {
            return true;
        };
        let mut paused = false;
        loop {
            let backlog = match self.store.backlog(&gate.sinks) {
                Ok(b) => b,
                Err(e) => {
                    warn!(object = %self.plan.name, error = %e, "cannot read the backlog; not pausing");
                    0
                }
            };
            if backlog < gate.max_backlog {
                if paused {
                    info!(object = %self.plan.name, backlog, "sinks caught up; polling resumes");
                    self.status.lock().expect("status lock").paused = None;
                }
                return true;
            }
            if !paused {
                let why = format!(
                    "backpressure: {backlog} events wait for delivery (delivery.max_backlog = {})",
                    gate.max_backlog
                );
                warn!(object = %self.plan.name, "{why}; polling paused until sinks catch up");
                self.status.lock().expect("status lock").paused = Some(why);
                paused = true;
            }
            let mut stop = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.recv() => return false,
            }
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// The object's schedule.
    pub fn schedule(&self) -> &crate::config::Schedule {
        &self.plan.schedule
    }

    /// Shared live status.
    pub fn status(&self) -> Arc<Mutex<PollerStatus>> {
        self.status.clone()
    }

    fn coupa_err(&self, source: CoupaError) -> PollError {
        PollError::Coupa {
            object: self.plan.name.clone(),
            source,
        }
    }

    fn store_err(&self, source: StoreError) -> PollError {
        PollError::Store {
            object: self.plan.name.clone(),
            source,
        }
    }

    /// Polls now, then on the schedule, until shutdown. A poll in progress
    /// finishes its current page before the loop stops.
    pub async fn run(self, mut shutdown: Shutdown) {
        let name = self.plan.name.clone();
        info!(object = %name, schedule = %self.plan.schedule.expr, "poller started");
        loop {
            // The span puts the object's name on every line logged
            // beneath, the client's retries included.
            let outcome = self
                .poll_once(&shutdown)
                .instrument(tracing::info_span!("poll", object = %name))
                .await;
            self.record(&outcome);
            match outcome {
                Ok(r) if r.events > 0 || r.undated > 0 => {
                    info!(object = %name, events = r.events, repeats = r.repeats, requests = r.requests, complete = r.window_complete, "poll done")
                }
                Ok(r) => {
                    debug!(object = %name, requests = r.requests, complete = r.window_complete, "poll done, no change")
                }
                Err(e) => {
                    warn!(object = %name, error = %e, "poll failed; the window is kept and retried next schedule")
                }
            }
            if shutdown.is_shutdown() {
                break;
            }
            let now = Utc::now();
            let Some(next) = self.plan.schedule.next_after(now) else {
                break;
            };
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.recv() => break,
            }
        }
        info!(object = %name, "poller stopped");
    }

    fn record(&self, outcome: &Result<PollReport, PollError>) {
        let mut s = self.status.lock().expect("status lock");
        let now = Utc::now();
        s.polls += 1;
        s.last_poll = Some(now);
        match outcome {
            Ok(r) => {
                s.last_success = Some(now);
                s.last_error = None;
                s.totals.add(r);
            }
            Err(e) => {
                s.last_error = Some(e.to_string());
                *s.errors.entry(e.kind().to_string()).or_default() += 1;
            }
        }
    }

    /// One poll: opens a window if none is open, then pages it until it
    /// completes, the parent budget is spent, or shutdown is asked for.
    pub async fn poll_once(&self, shutdown: &Shutdown) -> Result<PollReport, PollError> {
        let mut report = PollReport::default();
        let mut state = self
            .store
            .object_state(&self.plan.name)
            .map_err(|e| self.store_err(e))?;
        let window = match state.window.clone() {
            Some(w) => w,
            None => match self.open_window(&mut state).await? {
                Some(w) => w,
                None => return Ok(report),
            },
        };
        let done = match self.plan.spec.and_then(|s| s.parent) {
            None => {
                let list = ListCursor {
                    path: self.plan.path.clone(),
                    origin: self.origin(self.plan.path.clone()),
                    window: &window,
                };
                self.page_list(&list, &mut state, &mut report, shutdown)
                    .await?
            }
            Some(parent) => {
                self.page_parents(parent.object, &window, &mut state, &mut report, shutdown)
                    .await?
            }
        };
        if done {
            self.complete_window(&mut state, &window).await?;
            report.window_complete = true;
        }
        Ok(report)
    }

    fn origin(&self, path: String) -> Origin {
        Origin {
            base_url: self
                .client
                .base_url()
                .as_str()
                .trim_end_matches('/')
                .to_string(),
            object: self.plan.name.clone(),
            singular: self.plan.singular.clone(),
            path,
        }
    }

    /// Freezes `[max(hwm − lookback, floor), coupa_now − settle)` and
    /// persists it. `None` when the window would be empty.
    async fn open_window(&self, state: &mut ObjectState) -> Result<Option<Window>, PollError> {
        let probe = self.probe_path();
        let now = self
            .client
            .clock(&probe)
            .await
            .map_err(|e| self.coupa_err(e))?;
        let settle = chrono::Duration::from_std(self.plan.settle).unwrap_or_default();
        let hi = (now - settle).trunc_subsecs(0);
        let first = state.hwm.is_none();
        if first {
            let start = match self.plan.start_from {
                StartFrom::Now => hi,
                StartFrom::At(t) => t,
            };
            state.hwm = Some(start);
            state.floor = Some(start);
            info!(object = %self.plan.name, start = %record::rfc3339(start), "first poll: starting here");
        }
        let hwm = state.hwm.expect("set above");
        let lookback = chrono::Duration::from_std(self.plan.lookback).unwrap_or_default();
        let mut lo = hwm - lookback;
        if let Some(f) = state.floor {
            lo = lo.max(f);
        }
        if hi <= lo {
            // Nothing to read yet: a first poll starting "now", or Coupa's
            // clock is behind our mark. Keep the start we just chose.
            if first {
                self.store
                    .put_object_state(&self.plan.name, state)
                    .await
                    .map_err(|e| self.store_err(e))?;
            }
            return Ok(None);
        }
        let window = Window {
            lo,
            hi,
            last_id: None,
            parents_done: None,
            parent: None,
            offset: state.offset_paging.then_some(0),
        };
        state.window = Some(window.clone());
        self.store
            .put_object_state(&self.plan.name, state)
            .await
            .map_err(|e| self.store_err(e))?;
        Ok(Some(window))
    }

    /// A path for the clock probe: the object's own list, or its parent's.
    fn probe_path(&self) -> String {
        match self.plan.spec.and_then(|s| s.parent) {
            Some(p) => {
                objects::lookup(p.object).map_or("/api/suppliers".into(), |s| s.path.to_string())
            }
            None => self.plan.path.clone(),
        }
    }

    fn page_query(
        &self,
        window: &Window,
        last_id: Option<u64>,
        offset: Option<u64>,
    ) -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = self
            .plan
            .filter
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        q.push(("updated_at[gt_or_eq]".into(), query_time(window.lo)));
        q.push(("updated_at[lt]".into(), query_time(window.hi)));
        match offset {
            Some(k) => q.push(("offset".into(), k.to_string())),
            None => {
                if let Some(id) = last_id {
                    q.push(("id[gt]".into(), id.to_string()));
                }
            }
        }
        q.push(("order_by".into(), "id".into()));
        q.push(("dir".into(), "asc".into()));
        q.push(("limit".into(), self.plan.page_size.to_string()));
        if !self.plan.fields.is_empty() {
            // Paging and change detection need these whatever the user picked.
            let mut fields: Vec<String> =
                vec!["id".into(), "created-at".into(), "updated-at".into()];
            for f in &self.plan.fields {
                if !fields.contains(&f.replace('_', "-")) {
                    fields.push(f.clone());
                }
            }
            let quoted: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
            q.push(("fields".into(), format!("[{}]", quoted.join(","))));
        }
        q
    }

    /// Pages one list of the window from its persisted position until an
    /// empty page. Returns `false` if it stopped early for shutdown.
    ///
    /// Paging is by `id[gt]`. A server that ignores `id[gt]` or the id
    /// order (or sends non-numeric ids) cannot be paged that way; rather
    /// than stop the object, the window restarts in offset paging with an
    /// overlap of [`OFFSET_OVERLAP`] records between pages, so up to that
    /// many records leaving the window between two requests shift nothing
    /// past us (repeats from the overlap are dropped by the seen-set). The
    /// object stays in offset mode, with a warning.
    async fn page_list(
        &self,
        list: &ListCursor<'_>,
        state: &mut ObjectState,
        report: &mut PollReport,
        shutdown: &Shutdown,
    ) -> Result<bool, PollError> {
        // Offset mode: the previous page's ids, to catch a server that
        // ignores `offset` as well (it would serve the same page forever).
        let mut previous: Option<Vec<Option<String>>> = None;
        loop {
            if shutdown.is_shutdown() || !self.room(shutdown).await {
                return Ok(false);
            }
            let (last_id, offset) = state
                .window
                .as_ref()
                .map_or((None, None), |w| (w.last_id, w.offset));
            let query = self.page_query(list.window, last_id, offset);
            let page = self
                .client
                .list(&list.path, &query)
                .await
                .map_err(|e| self.coupa_err(e))?;
            report.requests += 1;
            if page.is_empty() {
                return Ok(true);
            }
            let w = state.window.as_mut().expect("window is open");
            match offset {
                None => match self.next_last_id(&page, last_id) {
                    Ok(next) => w.last_id = Some(next),
                    Err(why) => {
                        warn!(object = %self.plan.name, path = %list.path, problem = %why, "cannot page by id; re-reading this window by offset with overlap");
                        w.last_id = None;
                        w.offset = Some(0);
                        state.offset_paging = true;
                        self.store
                            .put_object_state(&self.plan.name, state)
                            .await
                            .map_err(|e| self.store_err(e))?;
                        continue;
                    }
                },
                Some(k) => {
                    let ids: Vec<Option<String>> = page.iter().map(record::id).collect();
                    if k > 0 && previous.as_ref() == Some(&ids) {
                        return Err(PollError::Protocol {
                            object: self.plan.name.clone(),
                            detail: format!("{} ignores both `id[gt]` and `offset` (the same page at offset {k}); cannot page it", list.path),
                        });
                    }
                    previous = Some(ids);
                    let advance = page.len().saturating_sub(OFFSET_OVERLAP).max(1) as u64;
                    w.offset = Some(k + advance);
                }
            }
            report.records += page.len() as u64;
            let (events, seen) = self.detect(&page, &list.origin, report)?;
            self.store
                .commit_page(&self.plan.name, state, &seen, events)
                .await
                .map_err(|e| self.store_err(e))?;
        }
    }

    /// The page's highest id, which must move past the previous one. Says
    /// why not when the page shows the server ignores `id[gt]` or the id
    /// order, or has records without numeric ids: paging on would loop
    /// forever or skip records.
    fn next_last_id(&self, page: &[Record], prev: Option<u64>) -> Result<u64, String> {
        let ids: Vec<u64> = page.iter().filter_map(record::numeric_id).collect();
        if ids.len() != page.len() {
            return Err("records without a numeric `id`".into());
        }
        // Equal neighbours (a row served twice) are harmless: detection
        // drops the repeat. Descending ones mean the order is not by id.
        if ids.windows(2).any(|w| w[0] > w[1]) {
            return Err("ids not ascending: `order_by=id&dir=asc` is ignored".into());
        }
        let max = *ids.last().expect("page is not empty");
        match prev {
            Some(p) if max <= p => Err(format!(
                "the `id[gt]` filter is ignored (page ends at id {max}, not after {p})"
            )),
            _ => Ok(max),
        }
    }

    /// Turns a page into new events and seen-set entries.
    fn detect(
        &self,
        page: &[Record],
        origin: &Origin,
        report: &mut PollReport,
    ) -> Result<(Vec<OutboxEntry>, Vec<SeenEntry>), PollError> {
        let mut events = Vec::new();
        let mut seen = Vec::new();
        // The same version twice in one page must still be one event.
        let mut in_page: HashMap<(Option<DateTime<Utc>>, String), [u8; 32]> = HashMap::new();
        for rec in page {
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

    /// Walks the parents of a nested object, paging each one's children.
    /// Returns `true` when every parent is done (the window is complete).
    async fn page_parents(
        &self,
        parent_object: &str,
        window: &Window,
        state: &mut ObjectState,
        report: &mut PollReport,
        shutdown: &Shutdown,
    ) -> Result<bool, PollError> {
        let parent_path = objects::lookup(parent_object)
            .map(|s| s.path.to_string())
            .unwrap_or_else(|| format!("/api/{parent_object}"));
        let spec = self
            .plan
            .spec
            .expect("nested objects come from the catalogue");
        // Parents fetched but not yet visited; in memory only, since a
        // resumed window refetches them after `parents_done`.
        let mut queue = std::collections::VecDeque::new();
        let mut visited = 0u32;
        loop {
            if let Some(pid) = state.window.as_ref().and_then(|w| w.parent) {
                let path = spec.list_path(Some(&pid.to_string()));
                let list = ListCursor {
                    origin: self.origin(path.clone()),
                    path,
                    window,
                };
                match self.page_list(&list, state, report, shutdown).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    // The parent vanished between listing and paging it.
                    Err(PollError::Coupa {
                        source: CoupaError::NotFound { .. },
                        ..
                    }) => {
                        warn!(object = %self.plan.name, parent = pid, "parent not found; skipping it")
                    }
                    Err(e) => return Err(e),
                }
                let w = state.window.as_mut().expect("window is open");
                w.parents_done = Some(pid);
                w.parent = queue.pop_front();
                w.last_id = None;
                w.offset = state.offset_paging.then_some(0);
                self.store
                    .put_object_state(&self.plan.name, state)
                    .await
                    .map_err(|e| self.store_err(e))?;
                visited += 1;
                if visited >= self.plan.parent_budget || shutdown.is_shutdown() {
                    return Ok(false);
                }
                continue;
            }
            let done = state.window.as_ref().and_then(|w| w.parents_done);
            let mut q = vec![
                ("order_by".to_string(), "id".to_string()),
                ("dir".to_string(), "asc".to_string()),
                // No `fields=["id"]`: smaller pages, but a server that
                // rejects the parameter would stop nested objects entirely.
                ("limit".to_string(), "50".to_string()),
            ];
            if let Some(d) = done {
                q.push(("id[gt]".into(), d.to_string()));
            }
            let parents = self
                .client
                .list(&parent_path, &q)
                .await
                .map_err(|e| self.coupa_err(e))?;
            report.requests += 1;
            if parents.is_empty() {
                return Ok(true);
            }
            self.next_last_id(&parents, done)
                .map_err(|why| PollError::Protocol {
                    object: self.plan.name.clone(),
                    detail: format!("cannot walk the parents at {parent_path}: {why}"),
                })?;
            queue.extend(parents.iter().filter_map(record::numeric_id));
            state.window.as_mut().expect("window is open").parent = queue.pop_front();
        }
    }

    /// Moves the high-water mark to the window's end and prunes seen
    /// entries no later window can re-read.
    async fn complete_window(
        &self,
        state: &mut ObjectState,
        window: &Window,
    ) -> Result<(), PollError> {
        state.hwm = Some(window.hi);
        state.window = None;
        self.store
            .put_object_state(&self.plan.name, state)
            .await
            .map_err(|e| self.store_err(e))?;
        let lookback = chrono::Duration::from_std(self.plan.lookback).unwrap_or_default();
        let mut keep_from = window.hi - lookback;
        if let Some(f) = state.floor {
            keep_from = keep_from.max(f);
        }
        let pruned = self
            .store
            .prune_seen(&self.plan.name, keep_from)
            .map_err(|e| self.store_err(e))?;
        debug!(object = %self.plan.name, hwm = %record::rfc3339(window.hi), pruned, "window complete");
        Ok(())
    }
}
