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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use tracing::{debug, info, warn, Instrument};

use crate::config::ObjectPlan;
use crate::coupa::client::CoupaClient;
use crate::coupa::error::CoupaError;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

mod backfill;
mod detect;
mod nested;
mod page;
mod status;
mod window;

use backfill::Shared;
use page::{ListCursor, Slot};
pub use status::{BackfillProgress, PollReport, PollerStatus, WalkCycle, RECENT_REJECTS};

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
            // One vocabulary with the actions API and the CLI: the
            // Coupa error's own kind (a spent retry budget by its cause).
            PollError::Coupa { source, .. } => source.kind(),
            PollError::Store { .. } => "store",
            PollError::Protocol { .. } => "protocol",
        }
    }
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
                    crate::sync::lock(&self.status).paused = None;
                }
                return true;
            }
            if !paused {
                let why = format!(
                    "backpressure: {backlog} events wait for delivery (delivery.max_backlog = {})",
                    gate.max_backlog
                );
                warn!(object = %self.plan.name, "{why}; polling paused until sinks catch up");
                crate::sync::lock(&self.status).paused = Some(why);
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
        let mut s = crate::sync::lock(&self.status);
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
                crate::sync::lock(&self.status)
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
            let mut st = crate::sync::lock(&self.status);
            if let Some(started) = st.walk.started.take() {
                let took = (Utc::now() - started).num_milliseconds() as f64 / 1000.0;
                st.walk.last_cycle_seconds = Some(took);
                st.walk.longest_cycle_seconds = st.walk.longest_cycle_seconds.max(took);
            }
        }
        Ok(report)
    }
}
