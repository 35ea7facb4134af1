//! The daemon's live state as every surface sees it: [`Handles`] (what a
//! running daemon holds: store, client, poller and sink statuses) and the
//! [`Snapshot`] taken from them, with the per-object and per-sink views and
//! the readiness verdict. `/status`, `/readyz`, `/metrics` and the page all
//! render one snapshot, so they cannot disagree. Serves nothing itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::coupa::client::{ClientStats, CoupaClient};
use crate::coupa::record::rfc3339;
use crate::delivery::SinkStatus;
use crate::metrics::Metrics;
use crate::poll::PollerStatus;
use crate::store::Store;

/// Live handles of a running daemon, for status and tests.
#[derive(Clone)]
pub struct Handles {
    pub store: Store,
    pub client: CoupaClient,
    pub pollers: BTreeMap<String, Arc<Mutex<PollerStatus>>>,
    /// Filled when the daemon starts its sinks.
    pub sinks: Arc<Mutex<BTreeMap<String, Arc<Mutex<SinkStatus>>>>>,
    /// Each object's schedule (readiness allows 3 × its interval).
    pub schedules: BTreeMap<String, crate::config::Schedule>,
    /// Latency histograms.
    pub metrics: Arc<Metrics>,
    /// `[delivery] stuck_after`, for readiness.
    pub stuck_after: Duration,
    /// `[delivery] shutdown_timeout`: the sinks' last drain.
    pub shutdown_timeout: Duration,
    /// Set once shutdown begins (readiness turns false).
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// `[api]`: the actions API is served under `/v1` when it has a token.
    pub api: crate::config::ApiSettings,
    /// `[state] failure_timeout`: how long a failing store is tolerated.
    pub failure_timeout: Duration,
    /// `[server]`: connection limit and timeouts.
    pub server: crate::config::ServerSettings,
    /// Where the HTTP server listens (bound by [`crate::app::build`], so port 0 works).
    pub server_addr: Option<std::net::SocketAddr>,
    /// The bound listener, taken by [`crate::app::run_built`].
    pub(crate) listener: Arc<Mutex<Option<std::net::TcpListener>>>,
}

/// One object as the operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectView {
    pub name: String,
    pub schedule: String,
    /// `ok`, `starting`, `failing` (last poll failed, still recent),
    /// `paused` (backpressure) or `behind` (not ready).
    pub state: &'static str,
    pub hwm: Option<String>,
    /// Now − high-water mark.
    pub lag_seconds: Option<f64>,
    /// The open window `[lo, hi)` and the last committed id.
    pub window: Option<WindowView>,
    pub last_poll: Option<String>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub paused: Option<String>,
    /// Nested objects: the walk over every parent (the bound on which
    /// versions are promised: those outliving two cycles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walk: Option<crate::poll::WalkCycle>,
    /// A problem polling cannot fix by itself (readiness fails while it holds).
    pub problem: Option<String>,
    /// A sliced backfill under way: percent done and ETA.
    pub backfill: Option<crate::poll::BackfillProgress>,
    pub polls: u64,
    pub requests: u64,
    pub records: u64,
    pub events: u64,
    pub repeats: u64,
    pub undated: u64,
    /// Elements not published (no usable id, unreadable), by reason.
    pub rejected: BTreeMap<String, u64>,
    /// The latest of them (a few), with `updated-at` and an excerpt.
    pub recent_rejects: Vec<crate::coupa::record::Rejected>,
    /// Failed polls by kind.
    pub errors: BTreeMap<String, u64>,
    #[serde(skip)]
    pub last_success_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    pub lo: String,
    pub hi: String,
    /// Where paging resumes (of the one slice, when the window is sliced).
    pub last_id: Option<u64>,
    /// Backfill slices of the window, and how many are read to the end.
    pub slices: usize,
    pub slices_done: usize,
}

/// One sink as the operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SinkView {
    pub name: String,
    /// `ok`, `retrying` or `stuck` (not ready).
    pub state: &'static str,
    pub cursor: u64,
    pub backlog: u64,
    /// Dead letters held in the store.
    pub dead_letters: u64,
    pub delivered: u64,
    pub retries: u64,
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
    pub last_delivery: Option<String>,
    /// Dead letters superseded by a newer delivered version (this run).
    pub superseded: u64,
    /// Events released while the sink was not configured (found at start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<crate::store::Missed>,
}

/// Why the daemon is not ready (one per failing part).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `daemon`, `store`, `coupa`, `object` or `sink`.
    pub component: &'static str,
    pub name: String,
    pub reason: String,
}

/// Coupa's clock: the offset from the host's that several `Date` headers
/// agreed on, and how many headers were ignored for jumping away from it.
#[derive(Debug, Clone, Serialize)]
pub struct ClockView {
    /// Coupa − host; `None` until trusted.
    pub offset_seconds: Option<f64>,
    pub rejected: u64,
}

/// Everything the views show, taken at once.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub ready: bool,
    pub problems: Vec<Problem>,
    pub uptime_seconds: u64,
    pub objects: Vec<ObjectView>,
    pub sinks: Vec<SinkView>,
    pub coupa: ClientStats,
    /// Coupa's clock as the poll windows see it.
    pub clock: ClockView,
    /// Highest committed outbox sequence.
    pub last_seq: u64,
}

fn ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(rfc3339)
}

fn since(t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - t).to_std().unwrap_or_default()
}

/// Takes a snapshot and judges readiness.
pub fn snapshot(h: &Handles, started: Instant) -> Snapshot {
    let now = Utc::now();
    let uptime = started.elapsed();
    let mut problems = Vec::new();
    if h.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        problems.push(Problem {
            component: "daemon",
            name: "coupa-changefeed".into(),
            reason: "shutting down".into(),
        });
    }
    if let Some(f) = h.store.failure() {
        problems.push(Problem {
            component: "store",
            name: h.store.dir().display().to_string(),
            reason: format!(
                "writes failing for {} s: {}",
                f.since.elapsed().as_secs(),
                f.error
            ),
        });
    }
    let stored = match h.store.object_states() {
        Ok(s) => s.into_iter().collect::<BTreeMap<_, _>>(),
        Err(e) => {
            problems.push(Problem {
                component: "store",
                name: h.store.dir().display().to_string(),
                reason: e.to_string(),
            });
            BTreeMap::new()
        }
    };
    let mut objects = Vec::new();
    for (name, status) in &h.pollers {
        let st = crate::sync::lock(status).clone();
        let os = stored.get(name).cloned().unwrap_or_default();
        let schedule = h.schedules.get(name);
        // Since the last success, or since start for a poller yet to succeed.
        let since_when = st
            .last_success
            .unwrap_or_else(|| now - chrono::Duration::from_std(uptime).unwrap_or_default());
        let overdue = schedule
            .and_then(|s| s.overdue_at(since_when))
            .unwrap_or(since_when + chrono::Duration::seconds(180));
        let recent = now <= overdue;
        let state_name = if st.paused.is_some() {
            "paused"
        } else if !recent {
            "behind"
        } else if st.last_error.is_some() {
            "failing"
        } else if st.last_success.is_none() {
            "starting"
        } else {
            "ok"
        };
        if let Some(p) = &st.problem {
            problems.push(Problem {
                component: "object",
                name: name.clone(),
                reason: p.clone(),
            });
        }
        if state_name == "behind" {
            let last = st.last_success.map_or("never".to_string(), |t| {
                format!("{}s ago", since(t, now).as_secs())
            });
            problems.push(Problem {
                component: "object",
                name: name.clone(),
                reason: format!(
                    "no successful poll within 3 × its schedule (due by {}); last success {last}{}",
                    rfc3339(overdue),
                    st.last_error
                        .as_ref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ),
            });
        }
        objects.push(ObjectView {
            name: name.clone(),
            schedule: schedule.map(|s| s.expr.clone()).unwrap_or_default(),
            state: state_name,
            hwm: ts(os.hwm),
            lag_seconds: os.hwm.map(|h| (now - h).num_milliseconds() as f64 / 1000.0),
            window: os.window.map(|w| WindowView {
                lo: rfc3339(w.lo),
                hi: rfc3339(w.hi),
                last_id: match w.slices.as_slice() {
                    [one] => one.last_id,
                    _ => w.last_id,
                },
                slices: w.slices.len(),
                slices_done: w.slices.iter().filter(|s| s.done).count(),
            }),
            last_poll: ts(st.last_poll),
            last_success: ts(st.last_success),
            last_error: st.last_error.clone(),
            paused: st.paused.clone(),
            problem: st.problem.clone(),
            walk: (st.walk != crate::poll::WalkCycle::default()).then(|| st.walk.clone()),
            backfill: st.backfill.clone(),
            polls: st.polls,
            requests: st.totals.requests,
            records: st.totals.records,
            events: st.totals.events,
            repeats: st.totals.repeats,
            undated: st.totals.undated,
            rejected: st.totals.rejected.clone(),
            recent_rejects: st.totals.recent_rejects.clone(),
            errors: st.errors.clone(),
            last_success_at: st.last_success,
        });
    }
    let mut sinks = Vec::new();
    let statuses = crate::sync::lock(&h.sinks).clone();
    for (name, status) in statuses {
        let st = crate::sync::lock(&status).clone();
        let stuck_after = st
            .retry_budget
            .map_or(h.stuck_after, |b| b.min(h.stuck_after));
        let state_name = match st.failing_since {
            Some(t) if since(t, now) > stuck_after => "stuck",
            Some(_) => "retrying",
            None => "ok",
        };
        if state_name == "stuck" {
            problems.push(Problem {
                component: "sink",
                name: name.clone(),
                reason: format!(
                    "failing for {}s (budget {}s): {}",
                    st.failing_since.map_or(0, |t| since(t, now).as_secs()),
                    stuck_after.as_secs(),
                    st.last_error.clone().unwrap_or_default()
                ),
            });
        }
        sinks.push(SinkView {
            cursor: h.store.cursor(&name).unwrap_or_default(),
            backlog: h.store.sink_backlog(&name).unwrap_or_default(),
            dead_letters: h.store.dead_count(&name).unwrap_or_default(),
            name,
            state: state_name,
            delivered: st.delivered,
            retries: st.retries,
            last_error: st.last_error,
            failing_since: ts(st.failing_since),
            last_delivery: ts(st.last_delivery),
            superseded: st.superseded,
            missed: st.missed,
        });
    }
    if let Some(reason) = h.client.clock_problem() {
        problems.push(Problem {
            component: "coupa",
            name: "clock".into(),
            reason,
        });
    }
    Snapshot {
        ready: problems.is_empty(),
        problems,
        uptime_seconds: uptime.as_secs(),
        objects,
        sinks,
        coupa: h.client.stats(),
        clock: ClockView {
            offset_seconds: h
                .client
                .clock_offset()
                .map(|o| o.num_milliseconds() as f64 / 1000.0),
            rejected: h.client.clock_rejected(),
        },
        last_seq: h.store.last_seq(),
    }
}
