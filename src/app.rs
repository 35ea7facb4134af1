//! Assembles the daemon from settings: opens the store, builds the Coupa
//! client, starts one poller per object and one delivery task per sink,
//! and stops them in order on shutdown (pollers finish their page, sinks
//! get a bounded last drain). `main` and `demo` both run through here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::coupa::client::CoupaClient;
use crate::delivery::Drain;
use crate::metrics::Metrics;
use crate::poll::{Backpressure, Poller};
use crate::shutdown::Shutdown;
use crate::sink::AnySink;
use crate::store::Store;

pub use crate::status::Handles;

/// How long a stopping poller may take to finish its page (at most
/// `delivery.shutdown_timeout`): a SIGTERM must beat the supervisor's
/// kill whatever Coupa is doing.
const POLLER_GRACE: Duration = Duration::from_secs(5);

/// Opens everything the settings name; fails with the culprit named.
pub fn build(settings: &Settings) -> anyhow::Result<(Handles, Vec<Poller>, Vec<AnySink>)> {
    let store = Store::open(&settings.state.dir)?;
    let client = CoupaClient::new(&settings.coupa).context("coupa client")?;
    let listener = std::net::TcpListener::bind(settings.server.listen)
        .with_context(|| format!("server.listen: cannot listen on {}", settings.server.listen))?;
    listener.set_nonblocking(true)?;
    let server_addr = Some(listener.local_addr()?);
    let mut pollers = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut schedules = BTreeMap::new();
    let gate = Backpressure {
        sinks: Arc::new(settings.sinks.iter().map(|s| s.name()).collect()),
        max_backlog: settings.delivery.max_backlog,
    };
    let shard = settings.shard()?;
    for plan in settings.plans()? {
        if let Some(sh) = shard {
            if !sh.owns(&plan.name) {
                continue;
            }
        }
        let p = Poller::new(plan, client.clone(), store.clone()).with_backpressure(gate.clone());
        statuses.insert(p.name().to_string(), p.status());
        schedules.insert(p.name().to_string(), p.schedule().clone());
        pollers.push(p);
    }
    if let Some(sh) = shard {
        let mine: Vec<&str> = pollers.iter().map(|p: &Poller| p.name()).collect();
        if mine.is_empty() {
            warn!(shard = %format!("{}/{}", sh.index, sh.count), "this replica owns none of the configured objects; it only serves health");
        } else {
            info!(shard = %format!("{}/{}", sh.index, sh.count), objects = ?mine, "this replica polls its share of the objects");
        }
    }
    let sinks = settings
        .sinks
        .iter()
        .map(AnySink::from_settings)
        .collect::<Result<Vec<_>, _>>()?;
    let handles_latency = client.latency();
    let handles = Handles {
        store,
        client,
        pollers: statuses,
        sinks: Arc::default(),
        schedules,
        metrics: Arc::new(Metrics {
            coupa_latency: handles_latency,
            ..Metrics::default()
        }),
        stuck_after: settings.delivery.stuck_after,
        shutdown_timeout: settings.delivery.shutdown_timeout,
        stopping: Arc::default(),
        api: settings.api.clone(),
        failure_timeout: settings.state.failure_timeout,
        server: settings.server.clone(),
        server_addr,
        listener: Arc::new(Mutex::new(Some(listener))),
    };
    Ok((handles, pollers, sinks))
}

/// Runs the daemon until `shutdown` fires, then stops cleanly.
pub async fn run(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let (handles, pollers, sinks) = build(&settings)?;
    run_built(handles, pollers, sinks, shutdown).await
}

/// Runs already-built parts (lets callers keep the [`Handles`]). A task
/// that ends on its own (a panic) stops the whole daemon with an error, so
/// a supervisor restarts it instead of an object silently going quiet.
pub async fn run_built(
    handles: Handles,
    pollers: Vec<Poller>,
    sinks: Vec<AnySink>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let store = handles.store.clone();
    let names = Arc::new(
        sinks
            .iter()
            .map(|s| crate::sink::Sink::name(s).to_string())
            .collect::<Vec<_>>(),
    );
    info!(objects = pollers.len(), sinks = names.len(), state = %store.dir().display(), "daemon started");
    // Tasks listen to an inner signal: the outer one, or a task's failure.
    let (stop, inner) = crate::shutdown::channel();
    let listener = crate::sync::lock(&handles.listener)
        .take()
        .context("these handles were already run")?;
    let server_state = crate::http::ServerState {
        handles: handles.clone(),
        started: std::time::Instant::now(),
    };
    // The server outlives the drain: health stays visible while stopping.
    let (server_stop, server_shutdown) = crate::shutdown::channel();
    let server = tokio::spawn(crate::http::serve(
        tokio::net::TcpListener::from_std(listener)?,
        server_state,
        server_shutdown,
    ));
    if let Some(a) = handles.server_addr {
        info!(address = %a, "serving /healthz /readyz /metrics /status");
    }
    let mut poll_tasks = JoinSet::new();
    for p in pollers {
        poll_tasks.spawn(p.run(inner.clone()));
    }
    let mut sink_tasks = JoinSet::new();
    for s in sinks {
        let drain =
            Drain::new(s, store.clone(), names.clone()).with_metrics(handles.metrics.clone());
        crate::sync::lock(&handles.sinks).insert(drain.name().to_string(), drain.status());
        let span = tracing::info_span!("sink", sink = %drain.name());
        sink_tasks.spawn(tracing::Instrument::instrument(
            drain.run(inner.clone()),
            span,
        ));
    }
    let failure = tokio::select! {
        _ = shutdown.recv() => None,
        e = store_gave_up(store.clone(), handles.failure_timeout) => Some(e.to_string()),
        Some(r) = poll_tasks.join_next() => Some(format!("a poller stopped unexpectedly: {}", describe(r))),
        Some(r) = sink_tasks.join_next() => Some(match r {
            Ok(Err(e)) => format!("a sink cannot continue: {e}"),
            other => format!("a sink stopped unexpectedly: {}", describe(other.map(|_| ()))),
        }),
    };
    if let Some(f) = &failure {
        error!("{f}; stopping the daemon");
    }
    stop.fire();
    handles
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    info!("shutting down: pollers finish their page");
    // Sinks are already on their last drain; it ends by this deadline.
    let deadline = tokio::time::Instant::now() + handles.shutdown_timeout;
    // A poller may be waiting out Coupa's backoff or a slow response:
    // give it a bounded grace, then stop it where it waits. Its window is
    // persisted page by page, so the next start resumes it.
    let grace = POLLER_GRACE.min(handles.shutdown_timeout);
    if tokio::time::timeout(grace, async {
        while poll_tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!(
            grace_ms = grace.as_millis() as u64,
            "pollers did not finish their page in time; stopping them (their windows resume on the next start)"
        );
        poll_tasks.abort_all();
        while poll_tasks.join_next().await.is_some() {}
    }
    if tokio::time::timeout_at(deadline, async {
        while sink_tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!(
            backlog = store.backlog(&names).unwrap_or_default(),
            "sinks did not drain in time; the rest stays in the outbox"
        );
        sink_tasks.abort_all();
    }
    // A store that gave up cannot flush either; its exit code says so.
    let unusable = store.failure().map(|f| crate::store::StoreUnusable {
        seconds: f.since.elapsed().as_secs(),
        error: f.error,
    });
    if let Err(e) = store.flush().await {
        if unusable.is_none() {
            return Err(e.into());
        }
    }
    server_stop.fire();
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        warn!("the HTTP server did not stop within 2 s");
    }
    info!(
        backlog = store.backlog(&names).unwrap_or_default(),
        "stopped"
    );
    match (unusable, failure) {
        (Some(u), _) => Err(u.into()),
        (None, Some(f)) => Err(anyhow::anyhow!(f)),
        (None, None) => Ok(()),
    }
}

/// Resolves once the store has failed writes for `timeout` without a
/// success in between (sled 0.34 never recovers from its first IO error
/// in-process; a restart reopens it).
async fn store_gave_up(store: Store, timeout: Duration) -> crate::store::StoreUnusable {
    let mut logged = false;
    loop {
        if let Some(f) = store.failure() {
            if !logged {
                error!(error = %f.error, timeout = ?timeout, "the state store is failing; sinks pause, /healthz fails, and the daemon exits (code {}) if it persists", crate::store::StoreUnusable::EXIT_CODE);
                logged = true;
            }
            if f.since.elapsed() >= timeout {
                return crate::store::StoreUnusable {
                    seconds: f.since.elapsed().as_secs(),
                    error: f.error,
                };
            }
        } else {
            logged = false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn describe(r: Result<(), tokio::task::JoinError>) -> String {
    match r {
        Ok(()) => "it returned".into(),
        Err(e) if e.is_panic() => {
            crate::panic_message(e.into_panic().as_ref()).unwrap_or_else(|| "panicked".into())
        }
        Err(e) => e.to_string(),
    }
}
