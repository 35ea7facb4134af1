//! The window: opened from Coupa's clock (bounds checked, fields noted),
//! completed on an empty page (high-water mark moved, seen-set pruned).

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::{PollError, Poller};
use crate::config::StartFrom;
use crate::coupa::record;
use crate::store::{ObjectState, Window};

impl Poller {
    /// A changed `fields` selection changes every record's content hash:
    /// without care, a restart would republish everything in the lookback
    /// under new ids. Versions below the high-water mark (or the open
    /// window's end) were published under the old selection, so their
    /// re-reads are judged by key alone ([`ObjectState::reseed_below`]).
    /// A state without a recorded selection (an older build) is taken as is.
    pub(super) async fn note_fields(&self, state: &mut ObjectState) -> Result<(), PollError> {
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
    pub(super) async fn check_bounds(
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
        let mut st = crate::sync::lock(&self.status);
        if problem.is_some() && st.problem != problem {
            warn!(object = %self.plan.name, problem = problem.as_deref().unwrap_or_default(), "cannot poll");
        }
        st.problem = problem;
        Ok(st.problem.is_none())
    }

    /// Freezes `[max(hwm − lookback, floor), hi)` (`hi` = Coupa's trusted
    /// now − settle) and persists it. `None` when the window would be empty.
    pub(super) async fn open_window(
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

    /// Moves the high-water mark to the window's end and prunes seen
    /// entries no later window can re-read.
    pub(super) async fn complete_window(
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
        crate::sync::lock(&self.status).backfill = None;
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
