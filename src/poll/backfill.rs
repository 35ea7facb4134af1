//! Backfill: a wide window paged as time slices by several workers over
//! the one client. [`Shared`] is one poll's state under one lock; a free
//! worker claims a slice or splits the widest dense one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::info;

use super::page::{ListCursor, Position, Slot};
use super::status::{BackfillProgress, PollReport};
use super::{PollError, Poller};
use crate::coupa::record;
use crate::shutdown::Shutdown;
use crate::store::{ObjectState, Slice, Window};

/// A free backfill worker's next step.
pub(super) enum Claim {
    Slice(usize),
    Wait,
    Finished,
}

/// One poll's state, shared by the lists it pages at once. Pages are
/// detected and committed under its lock, one at a time.
pub(super) struct Shared {
    pub(super) state: ObjectState,
    pub(super) report: PollReport,
    /// Slices a worker is paging (in memory: a restart frees them all).
    pub(super) taken: Vec<bool>,
    /// Slices whose last page was at least half full: worth splitting.
    pub(super) dense: Vec<bool>,
    /// A worker failed: the others stop after their current page.
    pub(super) halt: bool,
    pub(super) started: std::time::Instant,
    pub(super) last_log: Option<std::time::Instant>,
}

impl Shared {
    pub(super) fn new(state: ObjectState) -> Shared {
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

    pub(super) fn window(&mut self) -> &mut Window {
        self.state.window.as_mut().expect("window is open")
    }

    pub(super) fn position(&self, slot: Slot) -> Position {
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
    pub(super) fn advance(&mut self, slot: Slot, last_id: Option<u64>, offset: Option<u64>) {
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
    pub(super) fn claim(&mut self, min_split: i64, max_slices: usize) -> Claim {
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

    pub(super) fn progress(&self) -> Option<BackfillProgress> {
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
    /// Pages a backfill window's slices with `backfill_concurrency`
    /// workers. `true` when every slice is done.
    pub(super) async fn page_slices(
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
    pub(super) async fn slice_done(
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
        crate::sync::lock(&self.status).backfill = progress;
        Ok(())
    }

    /// A window of a top-level object at least twice `backfill_slice`
    /// wide starts as one slice that free workers split once its pages
    /// come back full, so a sparse window still costs one request and a
    /// dense one spreads over every worker. Empty: one plain list.
    pub(super) fn slices(&self, lo: DateTime<Utc>, hi: DateTime<Utc>) -> Vec<Slice> {
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
}
