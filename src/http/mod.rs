//! The operator's HTTP surface: `/healthz` (alive), `/readyz` (store open,
//! every poller recent or paused for a stated reason, no sink stuck),
//! `/metrics` (Prometheus text), `/status` (JSON) and `/` (a small
//! auto-refreshing page). All four views render one [`Snapshot`] taken from
//! the live handles, so they cannot disagree. Read-only: it changes nothing;
//! the actions API ([`api`], merged in under `/v1` when `[api]` has a
//! token) is the one part that writes, to Coupa.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::shutdown::Shutdown;
use crate::status::Handles;

pub mod admin;
pub mod api;
mod ops;
mod token;

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
            let mut open = crate::sync::lock(&open);
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
    crate::sync::lock(&open).remove(&id);
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

/// The routes (tests mount it directly too), with the actions API's
/// `/v1` routes when it is on.
pub fn router(state: ServerState) -> Router {
    let store = state.handles.store.clone();
    let api = api::ApiState::from_settings(&state.handles.api, state.handles.client.clone())
        .map(|a| api::router(a.clone()).merge(admin::router(a.token.clone(), store)));
    let ops = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/status", get(ops::status))
        .route("/metrics", get(ops::metrics))
        .route("/", get(ops::page))
        .with_state(state);
    match api {
        Some(api) => ops.merge(api),
        None => ops,
    }
}
