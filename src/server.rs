//! The operator's HTTP surface: `/healthz` (alive), `/readyz` (store open,
//! every poller recent or paused for a stated reason, no sink stuck),
//! `/metrics` (Prometheus text), `/status` (JSON) and `/` (a small
//! auto-refreshing page). All four views render one [`Snapshot`] taken from
//! the live handles, so they cannot disagree. Read-only: it changes nothing;
//! the actions API ([`crate::api`], merged in under `/v1` when `[api]` has a
//! token) is the one part that writes, to Coupa.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;

use crate::app::Handles;
use crate::coupa::client::ClientStats;
use crate::coupa::record::rfc3339;
use crate::shutdown::Shutdown;

/// What the server reads.
#[derive(Clone)]
pub struct ServerState {
    pub handles: Handles,
    pub started: Instant,
}

/// Serves until shutdown on an already bound listener, within `[server]`'s
/// limits: at most `max_connections` open (a new one closes the oldest idle
/// one, so a flood of idle sockets can neither use up file descriptors nor
/// lock out a probe), headers within `header_timeout`, and connections
/// with nothing in flight closed after `idle_timeout`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServerState,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let limits = state.handles.server.clone();
    let app = router(state);
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    http.http2().timer(TokioTimer::new());
    let http = Arc::new(http);
    let open: Arc<Mutex<BTreeMap<u64, Arc<Conn>>>> = Arc::default();
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let epoch = Instant::now();
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            _ = shutdown.recv() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP server cannot accept a connection; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn = Arc::new(Conn {
            epoch,
            last_active_ms: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            in_flight: AtomicUsize::new(0),
            evict: tokio::sync::Notify::new(),
        });
        {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            while open.len() >= limits.max_connections {
                let victim = open
                    .iter()
                    .find(|(_, c)| c.in_flight.load(Ordering::SeqCst) == 0)
                    .or_else(|| open.iter().next())
                    .map(|(id, _)| *id);
                match victim.and_then(|id| open.remove(&id)) {
                    Some(c) => c.evict.notify_one(),
                    None => break,
                }
            }
            open.insert(next_id, conn.clone());
        }
        tasks.spawn(serve_one(
            stream,
            next_id,
            conn,
            app.clone(),
            http.clone(),
            limits.idle_timeout,
            open.clone(),
            closing_rx.clone(),
        ));
        next_id += 1;
    }
    // Idle connections close now, requests in flight get a moment.
    let _ = closing.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// One connection's bookkeeping for the limits.
struct Conn {
    epoch: Instant,
    /// Last byte read or written, in ms since `epoch`.
    last_active_ms: AtomicU64,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// Closed to make room for a newer connection.
    evict: tokio::sync::Notify,
}

impl Conn {
    fn touch(&self) {
        self.last_active_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_millis(
            self.last_active_ms.load(Ordering::Relaxed),
        ))
    }
}

/// Counts a request in flight until dropped (also if the client goes away).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_one(
    stream: tokio::net::TcpStream,
    id: u64,
    conn: Arc<Conn>,
    app: Router,
    http: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    open: Arc<Mutex<BTreeMap<u64, Arc<Conn>>>>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let io = TokioIo::new(Activity {
        inner: stream,
        conn: conn.clone(),
    });
    let c = conn.clone();
    let svc = hyper::service::service_fn(move |req: axum::extract::Request<Incoming>| {
        c.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(c.clone());
        let mut app = app.clone();
        async move {
            let r = tower_service::Service::call(&mut app, req).await;
            drop(guard);
            r
        }
    });
    let served = http.serve_connection(io, svc);
    tokio::pin!(served);
    let mut stopping = false;
    loop {
        let wait = idle_timeout.saturating_sub(conn.idle_for());
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = conn.evict.notified() => {
                tracing::debug!("HTTP connection closed to make room (server.max_connections)");
                break;
            }
            _ = tokio::time::sleep(wait) => {
                if conn.in_flight.load(Ordering::SeqCst) > 0 {
                    conn.touch();
                } else if conn.idle_for() >= idle_timeout {
                    tracing::debug!("HTTP connection idle for server.idle_timeout; closed");
                    break;
                }
            }
            _ = closing.changed(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
}

/// A socket that notes when bytes last moved (for the idle timeout).
struct Activity {
    inner: tokio::net::TcpStream,
    conn: Arc<Conn>,
}

impl tokio::io::AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.touch();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Liveness: fails while the store cannot be written, so a supervisor
/// restarts a daemon that cannot make progress.
async fn healthz(State(state): State<ServerState>) -> Response {
    match state.handles.store.failure() {
        None => "ok\n".into_response(),
        Some(f) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "store failing for {} s (exit after state.failure_timeout = {} s): {}\n",
                f.since.elapsed().as_secs(),
                state.handles.failure_timeout.as_secs_f64(),
                f.error
            ),
        )
            .into_response(),
    }
}

/// The routes (tests mount it directly too), with the actions API's
/// `/v1` routes when it is on.
pub fn router(state: ServerState) -> Router {
    let store = state.handles.store.clone();
    let api = state
        .handles
        .api
        .clone()
        .map(|a| crate::api::router(a.clone()).merge(crate::admin::router(a, store)));
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .with_state(state);
    match api {
        Some(api) => ops.merge(api),
        None => ops,
    }
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
pub fn snapshot(state: &ServerState) -> Snapshot {
    let h = &state.handles;
    let now = Utc::now();
    let uptime = state.started.elapsed();
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
        let st = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
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
    let statuses = h.sinks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (name, status) in statuses {
        let st = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
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

async fn readyz(State(state): State<ServerState>) -> Response {
    let snap = snapshot(&state);
    let code = if snap.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let paused: Vec<_> = snap
        .objects
        .iter()
        .filter_map(|o| o.paused.as_ref().map(|p| (o.name.clone(), p.clone())))
        .collect();
    let body = serde_json::json!({
        "ready": snap.ready,
        "problems": snap.problems,
        "paused": paused.into_iter().collect::<BTreeMap<_, _>>(),
    });
    (code, Json(body)).into_response()
}

async fn status(State(state): State<ServerState>) -> Json<Snapshot> {
    Json(snapshot(&state))
}

async fn metrics(State(state): State<ServerState>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    match state.handles.metrics.render(&snapshot(&state), openmetrics) {
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Escapes text for HTML (error messages can hold anything a server sent).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn opt(s: &Option<String>) -> String {
    esc(s.as_deref().unwrap_or("–"))
}

async fn page(State(state): State<ServerState>) -> Html<String> {
    let snap = snapshot(&state);
    let mut rows = String::new();
    for o in &snap.objects {
        rows += &format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            o.state,
            esc(&o.name),
            match &o.backfill {
                Some(b) => format!(
                    "{} · backfill {}%{}",
                    o.state,
                    b.percent,
                    b.eta_seconds
                        .map(|s| format!(", about {s:.0} s left"))
                        .unwrap_or_default()
                ),
                None => o.state.to_string(),
            },
            opt(&o.hwm),
            o.lag_seconds.map_or("–".into(), |l| format!("{l:.0} s")),
            opt(&o.last_success),
            o.events,
            o.repeats,
            esc(o.last_error.as_deref().or(o.paused.as_deref()).unwrap_or("")),
        );
    }
    let mut sink_rows = String::new();
    for s in &snap.sinks {
        sink_rows += &format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            s.state,
            esc(&s.name),
            s.state,
            s.delivered,
            s.backlog,
            s.dead_letters,
            opt(&s.last_delivery),
            esc(s.last_error.as_deref().filter(|_| s.state != "ok").unwrap_or("")),
        );
    }
    let problems: String = snap
        .problems
        .iter()
        .map(|p| {
            format!(
                "<li>{} <b>{}</b>: {}</li>",
                p.component,
                esc(&p.name),
                esc(&p.reason)
            )
        })
        .collect();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>coupa-changefeed — {ready}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #eee; }}
tr.ok td, tr.starting td {{ background: #e8f6e8; }}
tr.failing td, tr.retrying td, tr.paused td {{ background: #fff4d6; }}
tr.behind td, tr.stuck td {{ background: #fbdada; }}
.badge {{ padding: 2px 8px; border-radius: 4px; color: #fff; background: {colour}; }}
</style></head><body>
<h1>coupa-changefeed <span class="badge" id="ready">{ready}</span></h1>
<p>Up {uptime} s · Coupa requests {requests} ({r5xx} 5xx, {r429} rate-limited) · last event #{last_seq}</p>
<ul id="problems">{problems}</ul>
<h2>Objects</h2>
<table id="objects"><tr><th>object</th><th>state</th><th>high-water mark</th><th>lag</th><th>last success</th><th>events</th><th>repeats</th><th>last error</th></tr>
{rows}</table>
<h2>Sinks</h2>
<table id="sinks"><tr><th>sink</th><th>state</th><th>delivered</th><th>backlog</th><th>dead letters</th><th>last delivery</th><th>last error</th></tr>
{sink_rows}</table>
<p><a href="/status">/status</a> · <a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p>
</body></html>
"#,
        ready = if snap.ready { "ready" } else { "not ready" },
        colour = if snap.ready { "#2a8a2a" } else { "#c0392b" },
        uptime = snap.uptime_seconds,
        requests = snap.coupa.requests,
        r5xx = snap.coupa.responses_5xx,
        r429 = snap.coupa.rate_limited,
        last_seq = snap.last_seq,
    ))
}
