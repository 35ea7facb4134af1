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
//! frozen upper bound and lands in the next window: final versions are
//! never missed, but an earlier version is read only if it lives until
//! its parent's next visit (up to two walk cycles, not poll intervals).
//!
//! Backfill: a window at least twice `[poll] backfill_slice` wide is
//! paged as time slices by up to `backfill_concurrency` workers over the
//! one client, so all share its rate limit. It starts as one slice; a free
//! worker splits the widest slice whose last page came back at least half
//! full and takes the upper half. Both halves keep the slice's `id[gt]`
//! position, which is exact: everything at or below it in the whole slice
//! is already read. So a sparse window costs one request and a dense one
//! spreads over every worker. Each slice's position is persisted with its
//! pages, so a crash resumes every slice where it stopped. Pages are
//! detected and committed one at a time under one lock, so a version read
//! twice across a split is still one event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tracing::{debug, info, warn, Instrument};

use crate::config::{ObjectPlan, StartFrom};
use crate::coupa::client::CoupaClient;
use crate::coupa::error::CoupaError;
use crate::coupa::objects;
use crate::coupa::record::{self, query_time, Listed, Record, Rejected, Stamp};
use crate::event::{canonical_json, content_hash, ChangeEvent, ChangeKind, Origin};
use crate::shutdown::Shutdown;
use crate::store::{ObjectState, OutboxEntry, SeenEntry, Slice, Store, StoreError, Window};

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
                CoupaError::Clock(_) => "clock",
                _ => "other",
            },
            PollError::Store { .. } => "store",
            PollError::Protocol { .. } => "protocol",
        }
    }
}

/// The page's records that have a usable id (rejected elements are
/// neither published nor paged by).
fn usable_records(page: &[Listed]) -> Vec<&Record> {
    page.iter()
        .filter_map(|e| e.as_ref().ok())
        .filter(|r| record::id_problem(r).is_none())
        .collect()
}

/// The numeric ids of the page's usable records.
fn listed_ids(page: &[Listed]) -> Vec<u64> {
    usable_records(page)
        .into_iter()
        .filter_map(record::numeric_id)
        .collect()
}

/// What one offset-mode page means for the paging position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OffsetStep {
    /// The page continues what was read: commit it, then request `next`
    /// (the offset of its last record, the next anchor) unless `end`.
    Read { max_id: u64, next: u64, end: bool },
    /// Records left the window before this offset, so the page may start
    /// past unread ones: request `retry` (smaller) instead, commit nothing.
    Shifted { retry: u64 },
    /// Nothing at offset 0: the window holds nothing more.
    End,
}

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
    /// Elements not published (no usable id, unreadable): counts by reason.
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// The latest of them, at most [`RECENT_REJECTS`].
    pub recent_rejects: Vec<Rejected>,
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
        for (reason, n) in &other.rejected {
            *self.rejected.entry(reason.clone()).or_default() += n;
        }
        self.note_rejects(other.recent_rejects.iter().cloned());
        self.window_complete = other.window_complete;
    }
}

/// Rejected elements each object keeps for `/status`.
pub const RECENT_REJECTS: usize = 5;

impl PollReport {
    /// Keeps the latest [`RECENT_REJECTS`] rejected elements.
    fn note_rejects(&mut self, new: impl IntoIterator<Item = Rejected>) {
        self.recent_rejects.extend(new);
        let extra = self.recent_rejects.len().saturating_sub(RECENT_REJECTS);
        self.recent_rejects.drain(..extra);
    }

    /// Records one rejected element.
    fn reject(&mut self, r: Rejected) {
        *self
            .rejected
            .entry(r.reason.as_str().to_string())
            .or_default() += 1;
        self.note_rejects([r]);
    }

    /// Elements rejected, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
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
    /// A sliced backfill under way.
    pub backfill: Option<BackfillProgress>,
    /// Nested objects: how long walks over every parent take. A version is
    /// promised only if it outlives two cycles, so this is the bound.
    pub walk: WalkCycle,
    /// A standing problem a poll cannot fix by itself (a high-water mark
    /// ahead of Coupa's clock); readiness fails while it holds.
    pub problem: Option<String>,
}

/// A nested object's walk over every parent supplier, which may span
/// several polls (`poll.parent_budget` parents each).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WalkCycle {
    /// When the walk under way began (in this process).
    #[serde(skip)]
    pub started: Option<DateTime<Utc>>,
    /// The last complete walk's duration.
    pub last_cycle_seconds: Option<f64>,
    /// The longest complete walk since start.
    pub longest_cycle_seconds: f64,
}

/// How far a sliced backfill window is, for logs and `/status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BackfillProgress {
    pub from: String,
    pub to: String,
    pub slices: usize,
    pub slices_done: usize,
    /// Share of the window's time span in finished slices.
    pub percent: f64,
    /// Records read by this process since the backfill (re)started.
    pub records: u64,
    pub elapsed_seconds: f64,
    /// Estimated from the pace so far; `None` until a slice is done.
    pub eta_seconds: Option<f64>,
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

/// One list a window pages: the path and the events' origin.
struct ListCursor {
    path: String,
    origin: Origin,
}

/// Where a list's paging position lives in the open window.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// The window's own position (one list, or a parent's children).
    Whole,
    /// A backfill slice's.
    Slice(usize),
}

/// A slot's time range and position.
#[derive(Debug, Clone, Copy)]
struct Position {
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
    last_id: Option<u64>,
    offset: Option<u64>,
}

/// A spawned request that stops when its poll stops waiting for it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A free backfill worker's next step.
enum Claim {
    Slice(usize),
    Wait,
    Finished,
}

/// One poll's state, shared by the lists it pages at once. Pages are
/// detected and committed under its lock, one at a time.
struct Shared {
    state: ObjectState,
    report: PollReport,
    /// Slices a worker is paging (in memory: a restart frees them all).
    taken: Vec<bool>,
    /// Slices whose last page was at least half full: worth splitting.
    dense: Vec<bool>,
    /// A worker failed: the others stop after their current page.
    halt: bool,
    started: std::time::Instant,
    last_log: Option<std::time::Instant>,
}

impl Shared {
    fn new(state: ObjectState) -> Shared {
        let slices = state.window.as_ref().map_or(0, |w| w.slices.len());
        Shared {
            state,
            report: PollReport::default(),
            taken: vec![false; slices],
            dense: vec![false; slices],
            halt: false,
            started: std::time::Instant::now(),
            last_log: None,
        }
    }

    fn window(&mut self) -> &mut Window {
        self.state.window.as_mut().expect("window is open")
    }

    fn position(&self, slot: Slot) -> Position {
        let w = self.state.window.as_ref().expect("window is open");
        match slot {
            Slot::Whole => Position {
                lo: w.lo,
                hi: w.hi,
                last_id: w.last_id,
                offset: w.offset,
            },
            Slot::Slice(i) => {
                let s = &w.slices[i];
                Position {
                    lo: s.lo,
                    hi: s.hi,
                    last_id: s.last_id,
                    offset: s.offset,
                }
            }
        }
    }

    /// Stores a slot's new `(last_id, offset)`.
    fn advance(&mut self, slot: Slot, last_id: Option<u64>, offset: Option<u64>) {
        let w = self.window();
        match slot {
            Slot::Whole => (w.last_id, w.offset) = (last_id, offset),
            Slot::Slice(i) => (w.slices[i].last_id, w.slices[i].offset) = (last_id, offset),
        }
    }

    /// What a free worker does next: take an unclaimed slice, else split
    /// the widest dense slice another worker is paging by id and take its
    /// upper half (while there are fewer than `max_slices`), else wait
    /// while others page, else stop.
    fn claim(&mut self, min_split: i64, max_slices: usize) -> Claim {
        if self.halt {
            return Claim::Finished;
        }
        let w = self.state.window.as_ref().expect("window is open");
        let open = |i: &usize| !w.slices[*i].done;
        if let Some(i) = (0..w.slices.len()).filter(open).find(|&i| !self.taken[i]) {
            self.taken[i] = true;
            return Claim::Slice(i);
        }
        let widest = (0..w.slices.len())
            .filter(open)
            .filter(|&i| self.dense[i] && w.slices[i].offset.is_none())
            .max_by_key(|&i| w.slices[i].hi - w.slices[i].lo);
        if let Some(i) = widest.filter(|_| w.slices.len() < max_slices) {
            let s = &w.slices[i];
            let span = (s.hi - s.lo).num_seconds();
            if span >= 2 * min_split {
                let mid = s.lo + chrono::Duration::seconds(span / 2);
                let upper = Slice {
                    lo: mid,
                    hi: s.hi,
                    last_id: s.last_id,
                    offset: None,
                    done: false,
                };
                let w = self.window();
                w.slices[i].hi = mid;
                w.slices.push(upper);
                self.taken.push(true);
                self.dense.push(false);
                return Claim::Slice(self.taken.len() - 1);
            }
        }
        if (0..w.slices.len()).any(|i| open(&i)) {
            Claim::Wait
        } else {
            Claim::Finished
        }
    }

    fn progress(&self) -> Option<BackfillProgress> {
        let w = self.state.window.as_ref()?;
        if w.slices.is_empty() {
            return None;
        }
        let total = (w.hi - w.lo).num_seconds().max(1) as f64;
        let done: f64 = w
            .slices
            .iter()
            .filter(|s| s.done)
            .map(|s| (s.hi - s.lo).num_seconds() as f64)
            .sum();
        let fraction = (done / total).clamp(0.0, 1.0);
        let elapsed = self.started.elapsed().as_secs_f64();
        Some(BackfillProgress {
            from: record::rfc3339(w.lo),
            to: record::rfc3339(w.hi),
            slices: w.slices.len(),
            slices_done: w.slices.iter().filter(|s| s.done).count(),
            percent: (fraction * 1000.0).round() / 10.0,
            records: self.report.records,
            elapsed_seconds: elapsed.round(),
            eta_seconds: (fraction > 0.0).then(|| (elapsed * (1.0 - fraction) / fraction).round()),
        })
    }
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

    /// Whether `pending` more events (a page being committed) keep the
    /// outbox under its limit. Never waits.
    fn under_limit(&self, pending: u64) -> bool {
        let Some(gate) = &self.gate else {
            return true;
        };
        self.store
            .backlog(&gate.sinks)
            .map_or(true, |b| b + pending < gate.max_backlog)
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
        let mut state = self
            .store
            .object_state(&self.plan.name)
            .map_err(|e| self.store_err(e))?;
        self.note_fields(&mut state).await?;
        let now = self
            .client
            .clock(&self.probe_path())
            .await
            .map_err(|e| self.coupa_err(e))?;
        let settle = chrono::Duration::from_std(self.plan.settle).unwrap_or_default();
        let hi = (now - settle).trunc_subsecs(0);
        if !self.check_bounds(&mut state, hi).await? {
            return Ok(PollReport::default());
        }
        let window = match state.window.clone() {
            Some(w) => w,
            None => match self.open_window(&mut state, hi).await? {
                Some(w) => w,
                None => return Ok(PollReport::default()),
            },
        };
        let shared = tokio::sync::Mutex::new(Shared::new(state));
        let done = match self.plan.spec.and_then(|s| s.parent) {
            None => {
                let list = ListCursor {
                    path: self.plan.path.clone(),
                    origin: self.origin(self.plan.path.clone()),
                };
                if window.slices.is_empty() {
                    self.page_list(&list, Slot::Whole, &shared, shutdown, None)
                        .await?
                } else {
                    self.page_slices(&list, &shared, shutdown).await?
                }
            }
            Some(parent) => {
                self.status
                    .lock()
                    .expect("status lock")
                    .walk
                    .started
                    .get_or_insert_with(Utc::now);
                self.page_parents(parent.object, &shared, shutdown).await?
            }
        };
        let Shared {
            mut state,
            mut report,
            ..
        } = shared.into_inner();
        if done {
            self.complete_window(&mut state, &window).await?;
            report.window_complete = true;
            let mut st = self.status.lock().expect("status lock");
            if let Some(started) = st.walk.started.take() {
                let took = (Utc::now() - started).num_milliseconds() as f64 / 1000.0;
                st.walk.last_cycle_seconds = Some(took);
                st.walk.longest_cycle_seconds = st.walk.longest_cycle_seconds.max(took);
            }
        }
        Ok(report)
    }

    /// Pages a backfill window's slices with `backfill_concurrency`
    /// workers. `true` when every slice is done.
    async fn page_slices(
        &self,
        list: &ListCursor,
        shared: &tokio::sync::Mutex<Shared>,
        shutdown: &Shutdown,
    ) -> Result<bool, PollError> {
        {
            let sh = shared.lock().await;
            if let Some(p) = sh.progress() {
                info!(object = %self.plan.name, from = %p.from, to = %p.to, slices = p.slices, done = p.slices_done, workers = self.plan.backfill_concurrency, "backfill: paging the window in slices");
            }
        }
        // Wakes waiting workers when a page or slice is done (there may be
        // something to split); the timeout covers a wake-up missed between
        // a claim and the wait.
        let wake = tokio::sync::Notify::new();
        let min_split = self.plan.backfill_slice.as_secs().max(1) as i64;
        // Each slice ends with an empty page: cap what splitting costs.
        let max_slices = 4 * self.plan.backfill_concurrency as usize;
        let worker = || async {
            loop {
                let claim = shared.lock().await.claim(min_split, max_slices);
                match claim {
                    Claim::Finished => return Ok(true),
                    Claim::Wait => {
                        let mut stop = shutdown.clone();
                        tokio::select! {
                            _ = tokio::time::timeout(Duration::from_millis(250), wake.notified()) => {}
                            _ = stop.recv() => return Ok(false),
                        }
                    }
                    Claim::Slice(i) => {
                        let paged = self
                            .page_list(list, Slot::Slice(i), shared, shutdown, Some(&wake))
                            .await;
                        match paged {
                            Ok(true) => {
                                self.slice_done(shared, i).await?;
                                wake.notify_waiters();
                            }
                            other => {
                                if other.is_err() {
                                    shared.lock().await.halt = true;
                                }
                                wake.notify_waiters();
                                return other;
                            }
                        }
                    }
                }
            }
        };
        let workers = self.plan.backfill_concurrency.max(1) as usize;
        let results = futures_util::future::join_all((0..workers).map(|_| worker())).await;
        let mut finished = true;
        for r in results {
            finished &= r?;
        }
        let sh = shared.lock().await;
        let all_done = sh
            .state
            .window
            .as_ref()
            .is_some_and(|w| w.slices.iter().all(|s| s.done));
        if finished && all_done {
            info!(object = %self.plan.name, records = sh.report.records, events = sh.report.events, requests = sh.report.requests, seconds = sh.started.elapsed().as_secs(), "backfill: window done");
        }
        Ok(finished && all_done)
    }

    /// Marks a slice read to its end, persists that, and reports progress
    /// (a log line at most every 10 s, and `/status`).
    async fn slice_done(
        &self,
        shared: &tokio::sync::Mutex<Shared>,
        i: usize,
    ) -> Result<(), PollError> {
        let mut sh = shared.lock().await;
        sh.window().slices[i].done = true;
        sh.taken[i] = false;
        self.store
            .put_object_state(&self.plan.name, &sh.state)
            .await
            .map_err(|e| self.store_err(e))?;
        let progress = sh.progress();
        let due = sh
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if let (Some(p), true) = (&progress, due) {
            sh.last_log = Some(std::time::Instant::now());
            let eta = p.eta_seconds.map_or("unknown".to_string(), |s| {
                humantime::format_duration(Duration::from_secs(s as u64)).to_string()
            });
            info!(object = %self.plan.name, percent = p.percent, slices_done = p.slices_done, slices = p.slices, records = p.records, eta = %eta, "backfill progress");
        }
        self.status.lock().expect("status lock").backfill = progress;
        Ok(())
    }

    /// The events' origin; the base URL without user info, which would put
    /// a password in every event's `source` (and its rotation would change
    /// every event id).
    fn origin(&self, path: String) -> Origin {
        Origin {
            base_url: crate::redact::display_url(self.client.base_url())
                .trim_end_matches('/')
                .to_string(),
            object: self.plan.name.clone(),
            singular: self.plan.singular.clone(),
            path,
        }
    }

    /// A changed `fields` selection changes every record's content hash:
    /// without care, a restart would republish everything in the lookback
    /// under new ids. Versions below the high-water mark (or the open
    /// window's end) were published under the old selection, so their
    /// re-reads are judged by key alone ([`ObjectState::reseed_below`]).
    /// A state without a recorded selection (an older build) is taken as is.
    async fn note_fields(&self, state: &mut ObjectState) -> Result<(), PollError> {
        let fields = self.plan.fields.join(",");
        if state.fields.as_deref() == Some(fields.as_str()) {
            return Ok(());
        }
        if state.fields.is_some() {
            let read_to = state.window.as_ref().map(|w| w.hi).max(state.hwm);
            if let Some(r) = read_to {
                info!(object = %self.plan.name, below = %record::rfc3339(r), "`fields` changed: versions already published are re-read without being published again");
                state.reseed_below = state.reseed_below.max(Some(r));
            }
        }
        state.fields = Some(fields);
        self.store
            .put_object_state(&self.plan.name, state)
            .await
            .map_err(|e| self.store_err(e))
    }

    /// Bounds stored ahead of Coupa's clock (`hi`: its trusted now −
    /// settle), left by an older build that trusted one bad `Date`, or by
    /// a restore. An open window is narrowed to `hi`: safe, since what it
    /// has not read yet lands in the next window. A high-water mark ahead
    /// by more than the lookback covers cannot be repaired here (what
    /// changed since it was set is unknown): it is reported, in the log,
    /// `/status` and `/readyz`, until `state reset --to` rewinds it.
    /// `false`: nothing can be polled until then.
    async fn check_bounds(
        &self,
        state: &mut ObjectState,
        hi: DateTime<Utc>,
    ) -> Result<bool, PollError> {
        if let Some(w) = state.window.as_mut().filter(|w| w.hi > hi && w.lo < hi) {
            warn!(object = %self.plan.name, stored = %record::rfc3339(w.hi), coupa_now = %record::rfc3339(hi), "the open window ends ahead of Coupa's clock; narrowing it (what it leaves out is read by the next window)");
            w.hi = hi;
            for sl in &mut w.slices {
                sl.hi = sl.hi.min(hi);
                if sl.lo >= sl.hi {
                    sl.done = true;
                }
            }
            self.store
                .put_object_state(&self.plan.name, state)
                .await
                .map_err(|e| self.store_err(e))?;
        }
        let lookback = chrono::Duration::from_std(self.plan.lookback).unwrap_or_default();
        let tolerance = lookback.min(chrono::Duration::seconds(60));
        let ahead = state
            .hwm
            .filter(|h| *h > hi + tolerance)
            .or_else(|| state.window.as_ref().map(|w| w.lo).filter(|lo| *lo >= hi));
        let problem = ahead.map(|at| {
            format!(
                "the stored high-water mark {} lies {}s ahead of Coupa's clock ({}): changes before it are not read; rewind with `coupa-changefeed state reset {} --to <time>`",
                record::rfc3339(at),
                (at - hi).num_seconds(),
                record::rfc3339(hi),
                self.plan.name
            )
        });
        let mut st = self.status.lock().expect("status lock");
        if problem.is_some() && st.problem != problem {
            warn!(object = %self.plan.name, problem = problem.as_deref().unwrap_or_default(), "cannot poll");
        }
        st.problem = problem;
        Ok(st.problem.is_none())
    }

    /// Freezes `[max(hwm − lookback, floor), hi)` (`hi` = Coupa's trusted
    /// now − settle) and persists it. `None` when the window would be empty.
    async fn open_window(
        &self,
        state: &mut ObjectState,
        hi: DateTime<Utc>,
    ) -> Result<Option<Window>, PollError> {
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
        // Below the pruning horizon the seen-set cannot tell a repeat.
        if let Some(p) = state.pruned_below {
            lo = lo.max(p);
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
            parent_offset: None,
            // Every window probes `id[gt]` first, even after a fallback:
            // one request shows whether the server honours it again.
            offset: None,
            slices: self.slices(lo, hi),
        };
        state.window = Some(window.clone());
        self.store
            .put_object_state(&self.plan.name, state)
            .await
            .map_err(|e| self.store_err(e))?;
        Ok(Some(window))
    }

    /// A window of a top-level object at least twice `backfill_slice`
    /// wide starts as one slice that free workers split once its pages
    /// come back full, so a sparse window still costs one request and a
    /// dense one spreads over every worker. Empty: one plain list.
    fn slices(&self, lo: DateTime<Utc>, hi: DateTime<Utc>) -> Vec<Slice> {
        let min = self.plan.backfill_slice.as_secs().max(1) as i64;
        let nested = self.plan.spec.and_then(|s| s.parent).is_some();
        if self.plan.backfill_concurrency < 2 || nested || (hi - lo).num_seconds() < 2 * min {
            return Vec::new();
        }
        vec![Slice {
            lo,
            hi,
            last_id: None,
            offset: None,
            done: false,
        }]
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

    fn page_query(&self, pos: &Position) -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = self
            .plan
            .filter
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        q.push(("updated_at[gt_or_eq]".into(), query_time(pos.lo)));
        q.push(("updated_at[lt]".into(), query_time(pos.hi)));
        match pos.offset {
            Some(k) => q.push(("offset".into(), k.to_string())),
            None => {
                if let Some(id) = pos.last_id {
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

    /// Pages one list of the window from its persisted position to its
    /// end. Returns `false` if it stopped early for shutdown.
    ///
    /// Paging is by `id[gt]` and ends on an empty page. A server that
    /// ignores `id[gt]` (or sends records without numeric ids) cannot be
    /// paged that way; rather than stop the object, the window restarts in
    /// offset paging ([`Poller::offset_step`]), which cannot skip a record
    /// however many leave the window between two requests. The object is
    /// marked as offset-paged (logged once), but every new window probes
    /// `id[gt]` again and returns to it once the server honours it.
    async fn page_list(
        &self,
        list: &ListCursor,
        slot: Slot,
        shared: &tokio::sync::Mutex<Shared>,
        shutdown: &Shutdown,
        wake: Option<&tokio::sync::Notify>,
    ) -> Result<bool, PollError> {
        // Offset mode: the previous page's ids, to catch a server that
        // ignores `offset` as well (it would serve the same page forever).
        let mut previous: Option<Vec<u64>> = None;
        // Offset mode: requests in a row that found the window shifted.
        let mut misses = 0u32;
        // This call read a page by id: an empty page after it shows the
        // server honours `id[gt]` (one ignoring it repeats that page).
        let mut paged_by_id = false;
        // The next page, requested while the current one was committed.
        let mut prefetched: Option<(Position, Result<Vec<Listed>, CoupaError>)> = None;
        loop {
            let (pos, fetched) = match prefetched.take() {
                Some(p) => p,
                None => {
                    if shutdown.is_shutdown() || !self.room(shutdown).await {
                        return Ok(false);
                    }
                    let pos = {
                        let sh = shared.lock().await;
                        if sh.halt {
                            return Ok(false);
                        }
                        sh.position(slot)
                    };
                    (pos, self.fetch(list, &pos).await)
                }
            };
            let page = fetched.map_err(|e| self.coupa_err(e))?;
            let mut sh = shared.lock().await;
            sh.report.requests += 1;
            // An offset page that proves the end of the list.
            let mut last = false;
            match pos.offset {
                None if page.is_empty() => {
                    // `id[gt]` was sent and honoured: the server pages by id.
                    if paged_by_id && sh.state.offset_paging {
                        info!(object = %self.plan.name, path = %list.path, "the server honours `id[gt]` again; back to paging by id");
                        sh.state.offset_paging = false;
                        self.store
                            .put_object_state(&self.plan.name, &sh.state)
                            .await
                            .map_err(|e| self.store_err(e))?;
                    }
                    return Ok(true);
                }
                None => match self.next_last_id(&page, pos.last_id) {
                    Ok(next) => {
                        paged_by_id = true;
                        sh.advance(slot, Some(next), None)
                    }
                    Err(why) => {
                        if sh.state.offset_paging {
                            debug!(object = %self.plan.name, path = %list.path, problem = %why, "`id[gt]` still ignored; paging this window by offset");
                        } else {
                            warn!(object = %self.plan.name, path = %list.path, problem = %why, "cannot page by id; re-reading this window by offset (each new window probes `id[gt]` again)");
                        }
                        sh.advance(slot, None, Some(0));
                        sh.state.offset_paging = true;
                        self.store
                            .put_object_state(&self.plan.name, &sh.state)
                            .await
                            .map_err(|e| self.store_err(e))?;
                        continue;
                    }
                },
                Some(k) => {
                    let step = self
                        .offset_step(&page, k, pos.last_id, misses)
                        .map_err(|why| PollError::Protocol {
                            object: self.plan.name.clone(),
                            detail: format!("{} cannot be paged by offset: {why}", list.path),
                        })?;
                    match step {
                        OffsetStep::Shifted { retry } => {
                            misses += 1;
                            debug!(object = %self.plan.name, path = %list.path, offset = k, retry, "records left the window before this offset; re-reading from a smaller one");
                            sh.advance(slot, pos.last_id, Some(retry));
                            continue;
                        }
                        OffsetStep::End => return Ok(true),
                        OffsetStep::Read { max_id, next, end } => {
                            let ids: Vec<u64> = listed_ids(&page);
                            if k > 0 && previous.as_ref() == Some(&ids) {
                                return Err(PollError::Protocol {
                                    object: self.plan.name.clone(),
                                    detail: format!("{} ignores both `id[gt]` and `offset` (the same page at offset {k}); cannot page it", list.path),
                                });
                            }
                            previous = Some(ids);
                            misses = 0;
                            last = end;
                            sh.advance(slot, Some(max_id), Some(next));
                        }
                    }
                }
            }
            // The next position is known before this page is stored:
            // request it while this one is detected and committed, so the
            // network and the store work at the same time.
            let next = sh.position(slot);
            let go_on = !sh.halt && !shutdown.is_shutdown() && !last;
            // The prefetch runs while this page commits: near the limit it
            // waits for the commit, so the pause comes no page late.
            let committing = page.len() as u64;
            let commit = async move {
                let Shared {
                    state,
                    report,
                    dense,
                    ..
                } = &mut *sh;
                report.records += page.len() as u64;
                let reseed = state.reseed_below;
                let (events, seen) = self.detect(&page, &list.origin, report, reseed)?;
                self.store
                    .commit_page(&self.plan.name, state, &seen, events)
                    .await
                    .map_err(|e| self.store_err(e))?;
                if let (Slot::Slice(i), Some(wake)) = (slot, wake) {
                    // A half-full page says the slice holds more: split it.
                    dense[i] = page.len() as u32 * 2 >= self.plan.page_size.min(50);
                    wake.notify_waiters();
                }
                // Other workers may commit while this one waits for its page.
                drop(sh);
                Ok::<(), PollError>(())
            };
            if !go_on {
                commit.await?;
                if last {
                    return Ok(true);
                }
                continue;
            }
            // A task of its own, so parsing the next page runs on another
            // thread while this one commits.
            let fetch = async {
                if !self.under_limit(committing) {
                    return None;
                }
                let client = self.client.clone();
                let (path, query) = (list.path.clone(), self.page_query(&next));
                let mut task = AbortOnDrop(tokio::spawn(
                    async move { client.list_page(&path, &query).await }
                        .instrument(tracing::Span::current()),
                ));
                Some((&mut task.0).await.unwrap_or_else(|e| {
                    Err(CoupaError::Invalid(format!(
                        "page request task failed: {e}"
                    )))
                }))
            };
            // `fetch` first: `join!` polls in order, and the commit runs
            // synchronously up to its flush, so the other order would send
            // the request only once the page is nearly stored.
            let (fetched, committed) = tokio::join!(fetch, commit);
            committed?;
            // Not fetched: the loop's own check waits for room (or shutdown).
            prefetched = fetched.map(|f| (next, f));
        }
    }

    /// Judges an offset-mode page at offset `k`, where every record with
    /// an id up to `read` (the highest id read so far) is already read.
    ///
    /// Why this cannot skip: the window's set only shrinks while it is
    /// paged (an edit moves a record's `updated-at` to or past `hi`), which
    /// shifts later records to smaller offsets by an amount we cannot see.
    /// So no offset is trusted by arithmetic: each request goes to the
    /// offset of the last record read (the anchor), and a page counts only
    /// if it starts at an id we have already read (or at offset 0). One
    /// response is one ordered snapshot, so everything after its first
    /// record is contiguous: every record with an id above `read` up to
    /// the page's last id is in it. A page that starts above `read`, or an
    /// empty one past offset 0, may sit past unread records: it is dropped
    /// and the request retried from a smaller offset (one page back, then
    /// doubling, down to 0, which always counts). The window ends at a page
    /// of at most one record (the server trims pages to no fewer than two
    /// while two remain) or an empty one at offset 0. Bounded: a counted
    /// page moves the offset forward, and a shifted one needs a record to
    /// have left the window since the previous request.
    ///
    /// Rejected elements (no usable id, unreadable) and ids that are not a
    /// u64 hold their place in the server's order, so offsets count them;
    /// a page whose first element has no numeric id cannot show its anchor
    /// and is taken as anchored.
    fn offset_step(
        &self,
        page: &[Listed],
        k: u64,
        read: Option<u64>,
        misses: u32,
    ) -> Result<OffsetStep, String> {
        let ids = listed_ids(page);
        if ids.windows(2).any(|w| w[0] > w[1]) {
            return Err("ids not ascending: `order_by=id&dir=asc` is ignored".into());
        }
        let first_rejected = page
            .first()
            .is_some_and(|e| e.as_ref().map_or(true, |r| record::numeric_id(r).is_none()));
        let anchored =
            k == 0 || first_rejected || ids.first().is_some_and(|&f| read.is_some_and(|r| f <= r));
        if !anchored {
            let back = u64::from(self.plan.page_size.max(1)) << misses.min(32);
            return Ok(OffsetStep::Shifted {
                retry: k.saturating_sub(back),
            });
        }
        if page.is_empty() {
            return Ok(OffsetStep::End);
        }
        let max = ids.last().copied().max(read).unwrap_or(0);
        Ok(OffsetStep::Read {
            max_id: max,
            next: k + page.len() as u64 - 1,
            end: page.len() <= 1,
        })
    }

    /// One list request at a position.
    async fn fetch(&self, list: &ListCursor, pos: &Position) -> Result<Vec<Listed>, CoupaError> {
        self.client
            .list_page(&list.path, &self.page_query(pos))
            .await
    }

    /// The page's highest id, which must move past the previous one. Says
    /// why not when the page shows the server ignores `id[gt]` or the id
    /// order, or has records without numeric ids: paging on would loop
    /// forever or skip records. Rejected elements (no usable id,
    /// unreadable) are never published, so they neither move nor block
    /// the position; a page of nothing else cannot be paged by id.
    fn next_last_id(&self, page: &[Listed], prev: Option<u64>) -> Result<u64, String> {
        // An id that is not a u64 (a string, one beyond 2^64) is published
        // as sent but cannot position the page; the numeric ones around it
        // do. Only a page without any numeric id cannot be paged by id.
        let ids = listed_ids(page);
        if ids.is_empty() {
            return Err("no record on the page has a numeric `id`".into());
        }
        // Equal neighbours (a row served twice) are harmless: detection
        // drops the repeat. Descending ones mean the order is not by id.
        if ids.windows(2).any(|w| w[0] > w[1]) {
            return Err("ids not ascending: `order_by=id&dir=asc` is ignored".into());
        }
        let max = *ids.last().expect("ids is not empty");
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

    /// Walks the parents of a nested object, paging each one's children.
    /// Returns `true` when every parent is done (the window is complete).
    async fn page_parents(
        &self,
        parent_object: &str,
        shared: &tokio::sync::Mutex<Shared>,
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
        // Offset walk: shifted pages in a row, and the previous page's ids.
        let mut parent_misses = 0u32;
        let mut previous_parents: Option<Vec<u64>> = None;
        loop {
            let (parent, done) = {
                let mut sh = shared.lock().await;
                let w = sh.window();
                (w.parent, w.parents_done)
            };
            if let Some(pid) = parent {
                let path = spec.list_path(Some(&pid.to_string()));
                let list = ListCursor {
                    origin: self.origin(path.clone()),
                    path,
                };
                match self
                    .page_list(&list, Slot::Whole, shared, shutdown, None)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return Ok(false),
                    // A 404 on the child list skips the parent only if the
                    // parent itself is gone; otherwise it is an error like
                    // any other, and the next poll retries this parent.
                    Err(
                        e @ PollError::Coupa {
                            source: CoupaError::NotFound { .. },
                            ..
                        },
                    ) => {
                        let parent_url = format!("{parent_path}/{pid}");
                        match self.client.get_json(&parent_url, &[]).await {
                            Err(CoupaError::NotFound { .. }) => {
                                warn!(object = %self.plan.name, parent = pid, "parent not found; skipping it")
                            }
                            Ok(_) => {
                                warn!(object = %self.plan.name, parent = pid, "children list answered 404 but the parent exists; retrying it next poll");
                                return Err(e);
                            }
                            Err(other) => return Err(self.coupa_err(other)),
                        }
                    }
                    Err(e) => return Err(e),
                }
                let mut sh = shared.lock().await;
                let offset_paging = sh.state.offset_paging;
                let w = sh.window();
                w.parents_done = Some(pid);
                w.parent = queue.pop_front();
                w.last_id = None;
                w.offset = offset_paging.then_some(0);
                self.store
                    .put_object_state(&self.plan.name, &sh.state)
                    .await
                    .map_err(|e| self.store_err(e))?;
                visited += 1;
                if visited >= self.plan.parent_budget || shutdown.is_shutdown() {
                    return Ok(false);
                }
                continue;
            }
            let parent_offset = shared.lock().await.window().parent_offset;
            let mut q = vec![
                ("order_by".to_string(), "id".to_string()),
                ("dir".to_string(), "asc".to_string()),
                // No `fields=["id"]`: smaller pages, but a server that
                // rejects the parameter would stop nested objects entirely.
                ("limit".to_string(), "50".to_string()),
            ];
            match (parent_offset, done) {
                (Some(k), _) => q.push(("offset".into(), k.to_string())),
                (None, Some(d)) => q.push(("id[gt]".into(), d.to_string())),
                (None, None) => {}
            }
            let parents = self
                .client
                .list_page(&parent_path, &q)
                .await
                .map_err(|e| self.coupa_err(e))?;
            let mut sh = shared.lock().await;
            sh.report.requests += 1;
            let protocol = |why: String| PollError::Protocol {
                object: self.plan.name.clone(),
                detail: format!("cannot walk the parents at {parent_path}: {why}"),
            };
            let Some(k) = parent_offset else {
                if parents.is_empty() {
                    return Ok(true);
                }
                if let Err(why) = self.next_last_id(&parents, done) {
                    // The same fallback as top-level lists: walk the
                    // parents by offset (see `offset_step`), which cannot
                    // skip one.
                    warn!(object = %self.plan.name, path = %parent_path, problem = %why, "cannot walk the parents by id; walking them by offset");
                    sh.window().parent_offset = Some(0);
                    continue;
                }
                queue.extend(listed_ids(&parents));
                sh.window().parent = queue.pop_front();
                continue;
            };
            match self
                .offset_step(&parents, k, done, parent_misses)
                .map_err(protocol)?
            {
                OffsetStep::End => return Ok(true),
                OffsetStep::Shifted { retry } => {
                    parent_misses += 1;
                    sh.window().parent_offset = Some(retry);
                }
                OffsetStep::Read { next, end, .. } => {
                    parent_misses = 0;
                    let ids: Vec<u64> = listed_ids(&parents);
                    if k > 0 && previous_parents.as_ref() == Some(&ids) {
                        return Err(protocol(format!(
                            "the server ignores both `id[gt]` and `offset` (the same page at offset {k})"
                        )));
                    }
                    let fresh: Vec<u64> = ids
                        .iter()
                        .copied()
                        .filter(|id| done.is_none_or(|d| *id > d))
                        .collect();
                    previous_parents = Some(ids);
                    if fresh.is_empty() && end {
                        return Ok(true);
                    }
                    queue.extend(fresh);
                    let w = sh.window();
                    w.parent_offset = Some(next);
                    w.parent = queue.pop_front();
                }
            }
        }
    }

    /// Moves the high-water mark to the window's end and prunes seen
    /// entries no later window can re-read.
    async fn complete_window(
        &self,
        state: &mut ObjectState,
        window: &Window,
    ) -> Result<(), PollError> {
        let lookback = chrono::Duration::from_std(self.plan.lookback).unwrap_or_default();
        let mut keep_from = window.hi - lookback;
        if let Some(f) = state.floor {
            keep_from = keep_from.max(f);
        }
        // Persisted before pruning: the horizon never moves back, so a
        // larger lookback after a restart stops at it.
        keep_from = state.pruned_below.map_or(keep_from, |p| p.max(keep_from));
        state.pruned_below = Some(keep_from);
        if state.reseed_below.is_some_and(|r| keep_from >= r) {
            state.reseed_below = None;
        }
        state.hwm = Some(window.hi);
        state.window = None;
        self.status.lock().expect("status lock").backfill = None;
        self.store
            .put_object_state(&self.plan.name, state)
            .await
            .map_err(|e| self.store_err(e))?;
        let pruned = self
            .store
            .prune_seen(&self.plan.name, keep_from)
            .map_err(|e| self.store_err(e))?;
        debug!(object = %self.plan.name, hwm = %record::rfc3339(window.hi), pruned, "window complete");
        Ok(())
    }
}
