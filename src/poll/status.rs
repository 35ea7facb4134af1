//! What a poller reports: one poll's [`PollReport`], the live
//! [`PollerStatus`] per object and the backfill and walk figures in it.
//! Plain data; read by `status`, metrics and tests.

use chrono::{DateTime, Utc};

use crate::coupa::record::Rejected;

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
    pub(super) fn note_rejects(&mut self, new: impl IntoIterator<Item = Rejected>) {
        self.recent_rejects.extend(new);
        let extra = self.recent_rejects.len().saturating_sub(RECENT_REJECTS);
        self.recent_rejects.drain(..extra);
    }

    /// Records one rejected element.
    pub(super) fn reject(&mut self, r: Rejected) {
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
