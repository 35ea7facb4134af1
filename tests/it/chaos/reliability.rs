//! The reliability report (issue 6 items 3, 4 and 7): the whole daemon
//! in-process against a simulator whose change generator keeps editing,
//! through Coupa's failure modes (the fault matrix) and sink outages
//! (webhook receiver and Kafka brokers down for a stretch, backpressure),
//! each judged by `verify` against the simulator's ground truth and printed
//! as a row of the report table; and secrets under bad credentials and a
//! receiver that echoes what it was sent.
//!
//! `cargo test --test it chaos::reliability -- --nocapture --test-threads 1` prints
//! the report tables.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    free_port, read_jsonl, sigterm, spawn_logged, wait_exit, wait_for, Daemon, TestConfig,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use coupa_sim::verify::{self, Received, Verdict};
use coupa_sim::{
    Fault, FaultRule, OAuthClient, RateLimit, RequestLog, SimConfig, SimHandle, Simulator, Version,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(90);
/// What the generator touches and the daemon polls.
const OBJECTS: [&str; 3] = ["purchase_orders", "invoices", "suppliers"];
/// Creates + updates per second across the objects while a scenario runs.
const CHANGE_RATE: f64 = 6.0;
/// How long changes (and faults) go on in a scenario.
const CHANGES_FOR: Duration = Duration::from_secs(4);
/// The interval the checker owes versions by: the 1 s cron plus the 1 s
/// settle (a version enters a window only `settle` behind Coupa's clock).
/// A superseded version must arrive if it lived longer than twice this.
const SCHEDULE: Duration = Duration::from_secs(2);

// ------------------------------------------------------------- harness

/// A simulator with the generator's objects seeded, and the daemon
/// following them into a file sink.
struct Run {
    sim: Simulator,
    /// Taken by [`Run::finish`].
    daemon: Option<Daemon>,
    /// The file sink's JSON Lines.
    events: PathBuf,
    /// What the checker judges: every polled object unless a test narrows it.
    objects: Vec<&'static str>,
    _dir: tempfile::TempDir,
}

impl Run {
    /// `sim` (its generator off until [`Run::changes`]) with at least 10
    /// records per object; `cfg` adjusts the daemon's config (1 s settle, file sink).
    async fn start(
        sim: SimConfig,
        objects: &[&'static str],
        cfg: impl FnOnce(TestConfig) -> TestConfig,
    ) -> Run {
        let sim = Simulator::start(SimConfig {
            initial_records: sim.initial_records.max(10),
            change_rate: 0.0,
            change_objects: objects.iter().map(|o| o.to_string()).collect(),
            ..sim
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let config = cfg(TestConfig::new(&sim.base_url(), &dir.path().join("state"))
            .objects(objects)
            .poll("settle = \"1s\"")
            .file_sink(&events));
        let daemon = Daemon::start(&config.settings());
        Run {
            sim,
            daemon: Some(daemon),
            events,
            objects: objects.to_vec(),
            _dir: dir,
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Every version of the polled objects the simulator ever showed.
    fn truth(&self) -> Vec<Version> {
        truth(&self.sim, &self.objects)
    }

    /// The generator at `CHANGE_RATE` for `CHANGES_FOR`, then off.
    async fn changes(&self) {
        self.sim.set_change_rate(CHANGE_RATE);
        tokio::time::sleep(CHANGES_FOR).await;
        self.sim.set_change_rate(0.0);
    }

    /// Waits until every final version so far is in the file.
    async fn caught_up(&self, name: &str, schedule: Duration) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let v = verify::verify(&self.truth(), &from_jsonl(&self.events), schedule);
            if v.lost_final.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let polls: Vec<String> = self
                    .daemon()
                    .handles
                    .pollers
                    .iter()
                    .map(|(o, s)| format!("{o}: {:?}", s.lock().unwrap()))
                    .collect();
                panic!("{name}: final versions missing after {LIMIT:?}: {v}\n{polls:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clears faults, waits for every final version in the file, stops the
    /// daemon and judges the file with versions owed after `schedule`.
    async fn finish(&mut self, name: &str, schedule: Duration) -> Verdict {
        self.sim.clear_faults();
        self.caught_up(name, schedule).await;
        let daemon = self.daemon.take().expect("daemon running");
        tokio::time::timeout(LIMIT, daemon.stop())
            .await
            .expect("the daemon stops")
            .unwrap();
        verify::verify(&self.truth(), &from_jsonl(&self.events), schedule)
    }
}

fn truth(sim: &SimHandle, objects: &[&str]) -> Vec<Version> {
    objects.iter().flat_map(|o| sim.versions(o)).collect()
}

/// Events as a receiver or consumer got them (one CloudEvent per body).
fn decode<B: AsRef<[u8]>>(bodies: &[B]) -> Vec<Received> {
    bodies
        .iter()
        .map(|b| Received::from_event(&serde_json::from_slice(b.as_ref()).unwrap()).unwrap())
        .collect()
}

fn from_jsonl(path: &Path) -> Vec<Received> {
    read_jsonl(path)
        .iter()
        .map(|e| Received::from_event(e).unwrap())
        .collect()
}

/// Prints the report table of one test and asserts every row clean.
fn report(rows: &[(String, Verdict)]) {
    println!("{}", verify::TABLE_HEADER);
    for (name, v) in rows {
        println!("{}", v.row(name));
    }
    for (name, v) in rows {
        assert!(v.is_clean(), "{name}: {v}");
        assert!(v.events > 0, "{name}: nothing delivered");
    }
}

/// Most requests the simulator saw inside any 2-second span.
fn busiest_two_seconds(log: &[RequestLog]) -> usize {
    let times: Vec<Instant> = log.iter().map(|r| r.at).collect();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(2))
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn statuses(sim: &SimHandle) -> Vec<u16> {
    sim.requests().iter().map(|r| r.status).collect()
}

/// `fault` injected `times` requests at a time, every `every`, while the
/// generator runs.
async fn with_bursts(run: &Run, faults: &[Fault], times: usize, every: Duration) {
    let sim = run.sim.clone_handle();
    let faults = faults.to_vec();
    let bursts = tokio::spawn(async move {
        let end = Instant::now() + CHANGES_FOR;
        while Instant::now() < end {
            for f in &faults {
                sim.inject(FaultRule::times(f.clone(), times));
            }
            tokio::time::sleep(every).await;
        }
    });
    run.changes().await;
    bursts.await.unwrap();
}

fn status(code: u16, retry_after: Option<&str>) -> Fault {
    Fault::Status {
        status: code,
        retry_after: retry_after.map(str::to_string),
        body: None,
    }
}

// ------------------------------------------------- item 3: Coupa faults

/// Broken answers in bursts while records change: each burst is retried
/// and nothing is lost, repeated or invented.
async fn burst(
    name: &str,
    faults: &[Fault],
    times: usize,
    schedule: Duration,
) -> (String, Verdict) {
    let mut run = Run::start(support::sim_config(), &OBJECTS, |c| c).await;
    with_bursts(&run, faults, times, Duration::from_millis(700)).await;
    let retries = run.daemon().handles.client.stats().retries;
    let seen = statuses(&run.sim);
    let v = run.finish(name, schedule).await;
    assert!(retries > 0, "{name}: the faults were met and retried");
    for f in faults {
        if let Fault::Status { status, .. } = f {
            assert!(seen.contains(status), "{name}: no {status} was served");
        }
    }
    (name.to_string(), v)
}

/// A 429 storm: the simulator's bucket (4/s, burst 2) is below the
/// daemon's own rate (8/s), plus a stretch of injected 429s. The daemon
/// never sends faster than its `coupa.requests_per_second`.
async fn storm(retry_after: bool) -> (String, Verdict) {
    let name = format!(
        "429 storm, {} Retry-After",
        if retry_after { "with" } else { "without" }
    );
    let sim = SimConfig {
        rate_limit: Some(RateLimit {
            per_second: 4.0,
            burst: 2,
        }),
        retry_after_on_429: retry_after,
        ..support::sim_config()
    };
    // Every 2 s: two objects need ~3 requests a second with changes, below
    // the bucket's 4, so the storm slows polls without starving them.
    let objects = ["purchase_orders", "invoices"];
    let mut run = Run::start(sim, &objects, |c| {
        c.coupa("requests_per_second = 8\nmax_attempts = 20")
            .poll("schedule = \"*/2 * * * * *\"")
    })
    .await;
    let ra = retry_after.then_some("1");
    with_bursts(&run, &[status(429, ra)], 6, Duration::from_secs(2)).await;
    // The 2 s cron plus the 1 s settle; a storm's waits add up to a second.
    let v = run.finish(&name, Duration::from_secs(4)).await;
    let log = run.sim.requests();
    let limited = log.iter().filter(|r| r.status == 429).count();
    assert!(limited >= 5, "{name}: a storm of 429s ({limited})");
    let worst = busiest_two_seconds(&log);
    assert!(
        worst <= 2 * 8 + 1,
        "{name}: {worst} requests inside two seconds at 8/s"
    );
    (name, v)
}

/// A hostile server that once drops `updated-at` from two records: they
/// are published as `updated` events without a `time` (never dropped), and
/// the checker counts them against the record, not a version. Injected
/// after the history is read, on records of the last minutes: a page of
/// made-up ids in the first window would make the poller page past real
/// records older than the lookback, which no Coupa does. Only invoices
/// are polled, so the fault meets an invoices page.
async fn undated() -> (String, Verdict) {
    let name = "records without updated-at".to_string();
    let mut run = Run::start(support::sim_config(), &["invoices"], |c| c).await;
    run.caught_up(&name, SCHEDULE).await;
    let ids: Vec<u64> = (0..2)
        .map(|_| {
            run.sim.create("invoices", json!({}))["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    run.caught_up(&name, SCHEDULE).await;
    let body = json!([{"id": ids[0], "status": "no stamp"}, {"id": ids[1]}]).to_string();
    run.sim.inject(FaultRule {
        fault: Fault::Status {
            status: 200,
            retry_after: None,
            body: Some(body),
        },
        times: 1,
        // A window's first page (no `id[gt]` after the bounds): a page of
        // lower ids after `id[gt]` would rightly switch to offset paging.
        path_contains: Some("%3A00&order_by=id".into()),
    });
    run.changes().await;
    let undated = run.daemon().handles.pollers["invoices"]
        .lock()
        .unwrap()
        .totals
        .undated;
    let v = run.finish(&name, SCHEDULE).await;
    assert_eq!(undated, 2, "{name}: counted");
    let events = read_jsonl(&run.events);
    let published: Vec<&Value> = events.iter().filter(|e| e["time"].is_null()).collect();
    assert_eq!(published.len(), 2, "{name}: published, not dropped");
    for e in published {
        assert_eq!(e["type"], "coupa.invoice.updated");
    }
    (name, v)
}

/// Coupa's failure modes, each its own simulator and daemon, run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupa_fault_matrix_loses_nothing() {
    // A timed-out attempt holds its poll for `coupa.timeout` (2 s).
    let timeouts = SCHEDULE + Duration::from_secs(2);
    let rows = futures_util::future::join_all([
        Box::pin(storm(false)) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
        Box::pin(storm(true)),
        Box::pin(burst(
            "500/502/503 bursts",
            &[status(500, None), status(502, None), status(503, Some("1"))],
            2,
            SCHEDULE,
        )),
        Box::pin(burst(
            "timeouts",
            &[Fault::Delay(Duration::from_millis(2500))],
            1,
            timeouts,
        )),
        Box::pin(burst(
            "connection reset mid-body",
            &[Fault::ResetConnection],
            3,
            SCHEDULE,
        )),
        Box::pin(burst(
            "malformed JSON",
            &[Fault::MalformedJson],
            3,
            SCHEDULE,
        )),
        Box::pin(burst(
            "HTML error page with 200",
            &[Fault::HtmlPage],
            3,
            SCHEDULE,
        )),
        Box::pin(async {
            let name = "pages of 49 while more exist";
            let mut run = Run::start(
                SimConfig {
                    initial_records: 120,
                    ..support::sim_config()
                },
                &OBJECTS,
                |c| c,
            )
            .await;
            run.sim
                .inject(FaultRule::always(Fault::TrimPage { max: 49 }));
            run.changes().await;
            let v = run.finish(name, SCHEDULE).await;
            (name.to_string(), v)
        }),
        Box::pin(undated()),
    ])
    .await;
    report(&rows);
}

/// A client granted `scopes`, or every scope.
fn oauth_sim(scopes: Option<&[&str]>) -> SimConfig {
    let client = match scopes {
        Some(s) => OAuthClient {
            client_id: "daemon".into(),
            client_secret: OAUTH_SECRET.into(),
            scopes: s.iter().map(|s| s.to_string()).collect(),
        },
        None => OAuthClient::with_all_scopes("daemon", OAUTH_SECRET),
    };
    SimConfig {
        oauth_clients: vec![client],
        rate_limit: None,
        ..SimConfig::default()
    }
}

const OAUTH_SECRET: &str = "oauth-secret-rel-5a1f";

/// Coupa's clock-settle after a re-mint: a 401 holds its poll this long
/// (`coupa::exchange::FRESH_TOKEN_SETTLE`).
const FRESH_TOKEN_SETTLE: Duration = Duration::from_secs(5);

/// Tokens revoked mid-run, then a stretch of 401s: the client re-mints,
/// polls that fail are retried on the next schedule, nothing is lost.
async fn revoked() -> (String, Verdict) {
    let name = "401 mid-run (tokens revoked, then a 401 stretch)".to_string();
    let mut run = Run::start(oauth_sim(None), &OBJECTS, |c| {
        c.oauth("daemon", OAUTH_SECRET)
    })
    .await;
    run.caught_up(&name, SCHEDULE).await;
    let sim = run.sim.clone_handle();
    let chaos = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        sim.revoke_tokens();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sim.inject(FaultRule::times(status(401, None), 3));
    });
    run.changes().await;
    chaos.await.unwrap();
    let mints = run.daemon().handles.client.stats().token_mints;
    assert!(
        mints >= 2,
        "{name}: re-minted after the revocation ({mints})"
    );
    // A 401 costs one settle; a poll that meets two fails and the next
    // schedule reads what it missed.
    let v = run.finish(&name, SCHEDULE + 2 * FRESH_TOKEN_SETTLE).await;
    assert!(
        statuses(&run.sim).contains(&401),
        "{name}: the 401s were served"
    );
    (name, v)
}

/// One object's scope is missing: it reports the 403 in its status and in
/// `/status`, delivers nothing, and the others are clean.
async fn missing_scope() -> (String, Verdict) {
    let name = "one object's scope missing (the others)".to_string();
    let granted = ["core.purchase_order.read", "core.invoice.read"];
    let mut run = Run::start(
        oauth_sim(Some(&granted)),
        &["purchase_orders", "invoices", "users"],
        |c| c.oauth("daemon", OAUTH_SECRET),
    )
    .await;
    run.changes().await;
    // Only the objects the client may read are owed.
    run.objects = vec!["purchase_orders", "invoices"];
    let users = run.daemon().handles.pollers["users"]
        .lock()
        .unwrap()
        .clone();
    let err = users.last_error.expect("users reports its error");
    assert!(err.contains("users") && err.contains("403"), "{err}");
    let addr = run.daemon().handles.server_addr.unwrap();
    let status: Value = reqwest::get(format!("http://{addr}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let objects = status["objects"].as_array().unwrap();
    let row = |n: &str| objects.iter().find(|o| o["name"] == n).unwrap().clone();
    assert!(
        row("users")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("403")),
        "{status}"
    );
    assert!(row("invoices")["last_error"].is_null(), "{status}");
    let v = run.finish(&name, SCHEDULE).await;
    let users_events = read_jsonl(&run.events)
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("coupa.user."))
        .count();
    assert_eq!(users_events, 0);
    (name, v)
}

/// Credentials going wrong mid-run, each its own simulator and daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_lose_nothing() {
    let (a, b) = tokio::join!(revoked(), missing_scope());
    report(&[a, b]);
}

// ---------------------------------------------------- item 4: sink outages

const WEBHOOK_SECRET: &str = "whsec_c2luay1vdXRhZ2UtdGVzdC1rZXktMjAyNg==";

/// A webhook receiver on one 127.0.0.1 port that can stop serving (the
/// port refuses connections) and come back on the same port. It keeps the
/// body of every event it answered 200; a stop is graceful, so no request
/// is cut between being kept and being answered.
struct Hook {
    port: u16,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    server: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

async fn keep(State(bodies): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes) -> StatusCode {
    bodies.lock().unwrap().push(body);
    StatusCode::OK
}

impl Hook {
    async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut hook = Hook {
            port: listener.local_addr().unwrap().port(),
            bodies: Arc::default(),
            server: None,
        };
        hook.serve(listener);
        hook
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hook", post(keep))
            .with_state(self.bodies.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        self.server = Some((stop, task));
    }

    /// Stops serving: requests in flight finish, then the port is closed.
    async fn stop(&mut self) {
        let (stop, mut task) = self.server.take().expect("serving");
        let _ = stop.send(());
        if tokio::time::timeout(Duration::from_secs(10), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }

    /// Serves again on the same port.
    async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebind {}: {e}; retrying", self.port);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind 127.0.0.1:{}: {e}", self.port),
            }
        };
        self.serve(listener);
    }

    fn received(&self) -> Vec<Received> {
        decode(&self.bodies.lock().unwrap())
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some((_, task)) = self.server.take() {
            task.abort();
        }
    }
}

fn webhook_sink(url: &str) -> String {
    format!("type = \"webhook\"\nurl = \"{url}\"\nsecret = \"{WEBHOOK_SECRET}\"\nmax_backoff = \"200ms\"")
}

/// Waits until `received()` holds every final version of `run`'s objects.
async fn sink_caught_up(what: &str, run: &Run, received: impl Fn() -> Vec<Received>) {
    wait_for(what, LIMIT, || {
        verify::verify(&run.truth(), &received(), SCHEDULE)
            .lost_final
            .is_empty()
    })
    .await;
}

/// The receiver down for 3 s while records keep changing: the webhook
/// sink retries, the pollers and the file sink go on, the backlog drains
/// once it is back, and both sinks hold every version, once.
async fn webhook_down() -> Vec<(String, Verdict)> {
    let mut hook = Hook::start().await;
    let mut run = Run::start(support::sim_config(), &OBJECTS, |c| {
        c.sink(&webhook_sink(&hook.url()))
    })
    .await;
    sink_caught_up("the webhook has the history", &run, || hook.received()).await;
    run.sim.set_change_rate(CHANGE_RATE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    hook.stop().await;
    let store = run.daemon().store().clone();
    let at_stop = store.sink_backlog("webhook").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failing = run.daemon().sink("webhook").failing_since.is_some();
    let held = store.sink_backlog("webhook").unwrap();
    let file_meanwhile = read_jsonl(&run.events).len();
    hook.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.sim.set_change_rate(0.0);
    run.caught_up("webhook down (file sink)", SCHEDULE).await;
    sink_caught_up("the webhook catches up", &run, || hook.received()).await;
    wait_for("the webhook backlog drains", LIMIT, || {
        store.sink_backlog("webhook").unwrap() == 0
    })
    .await;
    assert!(failing, "the sink reported the outage");
    assert!(
        held > at_stop,
        "events waited for the receiver ({at_stop} -> {held})"
    );
    let file = run.finish("webhook down (file sink)", SCHEDULE).await;
    assert!(
        file_meanwhile > 0 && read_jsonl(&run.events).len() > file_meanwhile,
        "the file sink went on during the outage"
    );
    let webhook = verify::verify(&run.truth(), &hook.received(), SCHEDULE);
    vec![
        ("webhook receiver down 3 s".to_string(), webhook),
        (
            "webhook receiver down 3 s (file sink beside it)".to_string(),
            file,
        ),
    ]
}

/// The receiver down with `delivery.max_backlog = 15`: the pollers pause
/// (status and `/status` say why) and resume when it is back. Versions
/// superseded while polling was paused cannot be seen by anyone; the
/// checker owes the finals and whatever lived past the pause.
async fn backpressure() -> (String, Verdict) {
    let name = "webhook down, max_backlog 15: pause, resume";
    let mut hook = Hook::start().await;
    let mut run = Run::start(support::sim_config(), &OBJECTS, |c| {
        c.sink(&webhook_sink(&hook.url()))
            .raw("[delivery]\nmax_backlog = 15")
    })
    .await;
    sink_caught_up("the webhook has the history", &run, || hook.received()).await;
    hook.stop().await;
    run.sim.set_change_rate(CHANGE_RATE);
    let statuses = run.daemon().handles.pollers.clone();
    let paused = || {
        statuses
            .values()
            .any(|s| s.lock().unwrap().paused.is_some())
    };
    wait_for("a poller pauses", LIMIT, paused).await;
    let since = Instant::now();
    let why = statuses
        .values()
        .find_map(|s| s.lock().unwrap().paused.clone())
        .unwrap();
    assert!(why.contains("max_backlog = 15"), "{why}");
    let addr = run.daemon().handles.server_addr.unwrap();
    let status: Value = reqwest::get(format!("http://{addr}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["state"] == "paused" && o["paused"].is_string()),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    hook.restart().await;
    wait_for("every poller resumes", LIMIT, || !paused()).await;
    let pause = since.elapsed();
    // Changes after the resume, so the last window is read unpaused.
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.sim.set_change_rate(0.0);
    sink_caught_up("the webhook catches up", &run, || hook.received()).await;
    let schedule = SCHEDULE + pause;
    run.finish(name, schedule).await;
    eprintln!("{name}: paused {pause:?}");
    (
        name.to_string(),
        verify::verify(&run.truth(), &hook.received(), schedule),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_outage_and_backpressure_lose_nothing() {
    let (mut rows, b) = tokio::join!(webhook_down(), backpressure());
    rows.push(b);
    report(&rows);
}

/// Reads every partition of `topics` from the beginning into a shared list
/// until dropped.
struct Consumed {
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumed {
    fn start(brokers: &str, topics: &[String], partitions: i32) -> Consumed {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "reliability")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            for p in 0..partitions {
                tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
            }
        }
        consumer.assign(&tpl).expect("assign");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let task = tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(m) => sink
                        .lock()
                        .unwrap()
                        .push(m.payload().unwrap_or_default().to_vec()),
                    // A broker down: keep reading.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Consumed { got, task }
    }

    fn received(&self) -> Vec<Received> {
        decode(&self.got.lock().unwrap())
    }
}

impl Drop for Consumed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every broker of librdkafka's mock cluster down (3 s at least) while records
/// keep changing: deliveries fail (transient) and are retried, nothing is
/// lost or invented, the backlog drains. The Kafka sink may repeat an
/// event the broker already had (README: same `ce_id`), so repeated ids
/// are reported but versions under several ids are not allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_brokers_down_lose_nothing() {
    const PARTITIONS: i32 = 2;
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(3).expect("mock cluster");
    let topics: Vec<String> = OBJECTS.iter().map(|o| format!("coupa.{o}")).collect();
    for t in &topics {
        cluster.create_topic(t, PARTITIONS, 3).expect("topic");
    }
    let brokers = cluster.bootstrap_servers();
    let mut run = Run::start(support::sim_config(), &OBJECTS, |c| {
        c.sink(&format!(
            "type = \"kafka\"\nbrokers = \"{brokers}\"\nmax_backoff = \"200ms\"\n[sinks.properties]\n\"message.timeout.ms\" = \"2000\""
        ))
    })
    .await;
    let consumed = Consumed::start(&brokers, &topics, PARTITIONS);
    sink_caught_up("Kafka has the history", &run, || consumed.received()).await;
    run.sim.set_change_rate(CHANGE_RATE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for b in 1..=3 {
        cluster.broker_down(b).unwrap();
    }
    let store = run.daemon().store().clone();
    let at_stop = store.sink_backlog("kafka").unwrap();
    let down = Instant::now();
    // Until a delivery round ends in failure (`message.timeout.ms` and a
    // request timeout), and at least 3 s.
    wait_for("the Kafka sink reports the outage", LIMIT, || {
        run.daemon().sink("kafka").failing_since.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    let held = store.sink_backlog("kafka").unwrap();
    let name = format!("Kafka brokers down {} s", down.elapsed().as_secs());
    for b in 1..=3 {
        cluster.broker_up(b).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.sim.set_change_rate(0.0);
    run.caught_up("kafka down (file sink)", SCHEDULE).await;
    sink_caught_up("Kafka catches up", &run, || consumed.received()).await;
    wait_for("the Kafka backlog drains", LIMIT, || {
        store.sink_backlog("kafka").unwrap() == 0
    })
    .await;
    assert!(
        held > at_stop,
        "events waited for the brokers ({at_stop} -> {held})"
    );
    let file = run.finish("kafka down (file sink)", SCHEDULE).await;
    let kafka = verify::verify(&run.truth(), &consumed.received(), SCHEDULE);
    println!("{}", verify::TABLE_HEADER);
    println!("{}", kafka.row(&name));
    println!("{}", file.row(&format!("{name} (file sink beside it)")));
    assert!(file.is_clean(), "{file}");
    assert!(
        kafka.lost() == 0 && kafka.phantoms() == 0 && kafka.duplicate_versions.is_empty(),
        "{name}: {kafka}"
    );
    assert!(kafka.events > 0);
}

// ------------------------------------------------------- item 7: secrets

/// Distinctive secrets; none may show in any output, log or endpoint.
const WRONG_OAUTH: &str = "oauth-wrong-7c3e9a";
const WRONG_API_KEY: &str = "apikey-wrong-41d8";
const HEADER_TOKEN: &str = "hdr-token-rel-92fe";
const URL_TOKEN: &str = "url-token-rel-6b1d";
/// base64("reliability-hook-secret-k3y").
const HOOK_SECRET: &str = "whsec_cmVsaWFiaWxpdHktaG9vay1zZWNyZXQtazN5";
const SASL_PASSWORD: &str = "sasl-pass-rel-30aa";

fn assert_no_secret(what: &str, text: &str) {
    for s in [
        WRONG_OAUTH,
        WRONG_API_KEY,
        OAUTH_SECRET,
        support::API_KEY,
        HEADER_TOKEN,
        URL_TOKEN,
        HOOK_SECRET,
        &HOOK_SECRET[6..],
        "reliability-hook-secret-k3y",
        SASL_PASSWORD,
    ] {
        assert!(!text.contains(s), "{what} shows secret `{s}`:\n{text}");
    }
}

/// A receiver that rejects every event with 401, echoing what it was sent
/// (URL with its query, auth header and its token without `Bearer `,
/// signature) as some real ones do.
async fn echoing_receiver() -> (String, tokio::task::JoinHandle<()>) {
    async fn echo(uri: Uri, h: HeaderMap) -> (StatusCode, String) {
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        (
            StatusCode::UNAUTHORIZED,
            format!(
                "rejected {uri}: x-auth `{}` token {} signature `{}`",
                get("x-auth"),
                get("x-auth").trim_start_matches("Bearer "),
                get("webhook-signature")
            ),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/hook", post(echo)))
            .await
            .unwrap();
    });
    (format!("http://{addr}/hook?token={URL_TOKEN}"), task)
}

/// Every sink kind with its secrets: the echoing webhook, and Kafka with a
/// SASL password on a port nothing listens on.
fn secret_sinks(config: TestConfig, hook_url: &str) -> TestConfig {
    config
        .sink(&format!(
            "type = \"webhook\"\nurl = \"{hook_url}\"\nsecret = \"{HOOK_SECRET}\"\nheaders = {{ \"x-auth\" = \"Bearer {HEADER_TOKEN}\" }}\nmax_backoff = \"200ms\""
        ))
        .sink(&format!(
            "type = \"kafka\"\nbrokers = \"127.0.0.1:{}\"\nmax_backoff = \"200ms\"\n[sinks.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.username\" = \"svc\"\n\"sasl.password\" = \"{SASL_PASSWORD}\"\n\"message.timeout.ms\" = \"1000\"",
            free_port()
        ))
}

/// Runs the real daemon until `ready(/status)` holds, gathers `/status`,
/// `/readyz`, `/metrics` and the status page, stops it: (bodies, logs).
async fn run_daemon(config: &Path, port: u16, ready: impl Fn(&Value) -> bool) -> (String, String) {
    let (mut daemon, err, out) = spawn_logged(config);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(r) = http.get(format!("{base}/status")).send().await {
            if ready(&r.json().await.unwrap_or_default()) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the daemon never got there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut bodies = String::new();
    for path in ["/status", "/readyz", "/metrics", "/"] {
        bodies += &http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    sigterm(&daemon.0);
    wait_exit(&mut daemon.0, LIMIT);
    (bodies, err.join().unwrap() + &out.join().unwrap())
}

/// Credentials Coupa rejects and a receiver that echoes what it was sent:
/// `check` (text and JSON), the running daemon's logs and endpoints, and
/// `dlq list` afterwards show the failures, and not one secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_echoing_receivers_leak_no_secret() {
    let sim = Simulator::start(SimConfig {
        initial_records: 3,
        ..oauth_sim(None)
    })
    .await
    .unwrap();
    let (hook_url, _hook) = echoing_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let port = free_port();
    let base = |state: &str| {
        TestConfig::new(&sim.base_url(), &dir.path().join(state))
            .objects(&["purchase_orders"])
            .listen(&format!("127.0.0.1:{port}"))
            .raw("[log]\nformat = \"json\"")
    };

    // `check` with a secret Coupa rejects and with a rejected API key, text
    // and JSON, at once (each waits out the Kafka probe's 10 s).
    let oauth_config = dir.path().join("check-oauth.toml");
    let key_config = dir.path().join("check-key.toml");
    std::fs::write(
        &oauth_config,
        secret_sinks(base("s1").oauth("daemon", WRONG_OAUTH), &hook_url).toml(),
    )
    .unwrap();
    std::fs::write(
        &key_config,
        secret_sinks(
            base("s1").coupa(&format!("api_key = \"{WRONG_API_KEY}\"")),
            &hook_url,
        )
        .toml(),
    )
    .unwrap();
    let checks: Vec<_> = [&oauth_config, &key_config]
        .into_iter()
        .flat_map(|c| [(c.clone(), false), (c.clone(), true)])
        .map(|(c, json)| {
            std::thread::spawn(move || {
                let args: &[&str] = if json {
                    &["check", "--json"]
                } else {
                    &["check"]
                };
                (
                    format!("{} {}", c.display(), args.join(" ")),
                    support::cli(args, &c),
                )
            })
        })
        .collect();
    for c in checks {
        let (what, (ok, out)) = c.join().unwrap();
        assert!(!ok, "`{what}` fails: {out}");
        assert!(
            out.contains("purchase_orders") && out.contains("unauthorized"),
            "{out}"
        );
        assert_no_secret(&what, &out);
    }

    // The daemon with a rejected OAuth secret: every poll fails with 401.
    std::fs::write(
        &config,
        secret_sinks(base("s2").oauth("daemon", WRONG_OAUTH), &hook_url).toml(),
    )
    .unwrap();
    let (bodies, logs) =
        run_daemon(&config, port, |s| s["objects"][0]["last_error"].is_string()).await;
    assert!(bodies.contains("purchase_orders"), "{bodies}");
    assert_no_secret("endpoints (rejected OAuth secret)", &bodies);
    assert_no_secret("logs (rejected OAuth secret)", &logs);

    // The daemon with good credentials: events reach the echoing receiver,
    // which rejects them (dead letters) quoting the token and URL back.
    std::fs::write(
        &config,
        secret_sinks(base("s3").oauth("daemon", OAUTH_SECRET), &hook_url).toml(),
    )
    .unwrap();
    let (bodies, logs) = run_daemon(&config, port, |s| {
        s["sinks"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["dead_letters"].as_u64() >= Some(3)))
    })
    .await;
    assert!(logs.contains("401"), "the rejections are logged");
    assert_no_secret("endpoints (echoing receiver)", &bodies);
    assert_no_secret("logs (echoing receiver)", &logs);
    for args in [
        &["dlq", "list"][..],
        &["dlq", "list", "--json"][..],
        &["state", "show"][..],
    ] {
        let (ok, out) = support::cli(args, &config);
        assert!(ok, "{out}");
        assert_no_secret(&format!("`{}`", args.join(" ")), &out);
    }
    let (_, out) = support::cli(&["dlq", "list"], &config);
    assert!(out.contains("401"), "dead letters carry the answer: {out}");
}

// ------------------------------------------ hostile time (issue 12 item 1)

/// A front end stamps every third response's `Date` a year ahead while
/// records change. The window's upper bound rests on the clock several
/// `Date` headers agree on, so the rejected ones move nothing: every
/// version arrives, and no stored bound (high-water mark or open window)
/// ever lies ahead of the real clock. Before, one such `Date` froze a
/// window ending a year ahead and the object read nothing for a year.
async fn date_a_year_ahead() -> (String, Verdict) {
    let name = "Date a year ahead on every 3rd response".to_string();
    let mut run = Run::start(support::sim_config(), &OBJECTS, |c| c).await;
    run.caught_up(&name, SCHEDULE).await;
    run.sim.inject(FaultRule::always(Fault::SkewDate {
        seconds: 365 * 86_400,
        every: 3,
    }));
    let store = run.daemon().store().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst: Option<String> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let limit = chrono::Utc::now() + chrono::Duration::seconds(5);
                for (o, st) in store.object_states().unwrap() {
                    let bounds = st.hwm.into_iter().chain(st.window.as_ref().map(|w| w.hi));
                    for b in bounds {
                        if b > limit && worst.is_none() {
                            worst = Some(format!("{o}: stored bound {b} ahead of {limit}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst
        })
    };
    run.changes().await;
    let rejected = run.daemon().handles.client.clock_rejected();
    let v = run.finish(&name, SCHEDULE).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(w) = watcher.await.unwrap() {
        panic!("{name}: {w}");
    }
    assert!(
        rejected > 0,
        "{name}: the skewed Dates were met and rejected"
    );
    (name, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_time_loses_nothing() {
    report(&[date_a_year_ahead().await]);
}

// ------------------------------------- issue 12 item 6: echoed secrets

/// Characters that broke redaction: quotes, backslashes, `+`, `/`, spaces
/// (form `+`), non-ASCII (`%XX`, `\uXXXX`); `ascii` for header values.
fn secret_chars(ascii: bool, len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    let special = if ascii {
        prop_oneof![Just('"'), Just('\\'), Just('+'), Just('/'), Just('%')].boxed()
    } else {
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('+'),
            Just('/'),
            Just('%'),
            Just(' '),
            Just('é'),
            Just('€'),
            Just('😀')
        ]
        .boxed()
    };
    proptest::collection::vec(
        prop_oneof![3 => proptest::char::range('a', 'z'), 2 => special],
        len,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// One generated case: the secrets and where each echo puts them.
#[derive(Debug, Clone)]
struct Echoes {
    /// OAuth (client secret) or API key with a password in `base_url`.
    oauth: bool,
    coupa_secret: String,
    url_password: String,
    /// The webhook `authorization` header is `Bearer <hook_token>`.
    hook_token: String,
    coupa_pad: usize,
    coupa_json: bool,
    coupa_status: u16,
    token_pad: usize,
    token_json: bool,
    hook_pad: usize,
    hook_json: bool,
}

fn echoes() -> impl Strategy<Value = Echoes> {
    (
        any::<bool>(),
        secret_chars(false, 16..32),
        secret_chars(true, 16..32),
        secret_chars(false, 12..24),
        secret_chars(true, 12..24),
        (
            0usize..260,
            any::<bool>(),
            prop_oneof![Just(400u16), Just(403), Just(500)],
        ),
        (0usize..260, any::<bool>()),
        (0usize..260, any::<bool>()),
    )
        .prop_map(|(oauth, s, key, pw, hook, c, t, h)| Echoes {
            oauth,
            coupa_secret: if oauth { s } else { key },
            url_password: pw,
            hook_token: format!("HOOKHDR-{hook}"),
            coupa_pad: c.0,
            coupa_json: c.1,
            coupa_status: c.2,
            token_pad: t.0,
            token_json: t.1,
            hook_pad: h.0,
            hook_json: h.1,
        })
}

/// The forms an echo may take: raw, JSON-escaped (also `\uXXXX`),
/// form-encoded and percent-encoded.
fn encodings(s: &str) -> Vec<String> {
    let json = serde_json::to_string(s).unwrap();
    vec![
        s.to_string(),
        json[1..json.len() - 1].to_string(),
        s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect(),
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect(),
        s.bytes().map(|b| format!("%{b:02X}")).collect(),
    ]
}

/// Fails when any 8 characters of `secret`, in any encoding, are in `text`.
fn assert_no_eight(what: &str, secret: &str, text: &str) {
    let chars: Vec<char> = secret.chars().collect();
    for w in chars.windows(8) {
        let w: String = w.iter().collect();
        for form in encodings(&w) {
            assert!(
                !text.contains(&form),
                "{what} shows `{form}` of secret `{secret}`:\n{text}"
            );
        }
    }
}

/// A receiver refusing every event with `401 invalid token <token>` (the
/// header value without `Bearer `) after `pad` characters, plain or JSON.
async fn token_echoing_receiver(pad: usize, json: bool) -> (String, tokio::task::JoinHandle<()>) {
    let echo = move |h: HeaderMap| async move {
        let auth = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let text = format!(
            "{}invalid token {}",
            "x".repeat(pad),
            auth.trim_start_matches("Bearer ")
        );
        let body = if json {
            json!({ "error": text }).to_string()
        } else {
            text
        };
        (StatusCode::UNAUTHORIZED, body)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/hook", post(echo)))
            .await
            .unwrap();
    });
    (format!("http://{addr}/hook"), task)
}

fn echo(status: u16, pad: usize, json: bool, path: Option<&str>, times: usize) -> FaultRule {
    FaultRule {
        fault: Fault::Echo { status, pad, json },
        times,
        path_contains: path.map(str::to_string),
    }
}

/// One case: Coupa, its token endpoint and a receiver echo the secrets;
/// logs, `/status`, `/readyz`, `/metrics`, the status page, events, dead
/// letters, `check` and `get` show none of them; the file sink's events
/// judged against the simulator.
async fn echoed_secrets_case(e: &Echoes) -> Verdict {
    let sim = Simulator::start(SimConfig {
        initial_records: 3,
        api_key: (!e.oauth).then(|| e.coupa_secret.clone()),
        oauth_clients: if e.oauth {
            vec![OAuthClient::with_all_scopes("daemon", &e.coupa_secret)]
        } else {
            Vec::new()
        },
        rate_limit: None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (hook_url, _hook) = token_echoing_receiver(e.hook_pad, e.hook_json).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("c.toml");
    let port = free_port();
    let mut base_url = url::Url::parse(&sim.base_url()).unwrap();
    let quoted = |s: &str| serde_json::to_string(s).unwrap();
    let auth = if e.oauth {
        format!(
            "oauth = {{ client_id = \"daemon\", client_secret = {} }}",
            quoted(&e.coupa_secret)
        )
    } else {
        // reqwest sends URL user info as Basic auth, beside the API key.
        base_url.set_username("svc").unwrap();
        base_url.set_password(Some(&e.url_password)).unwrap();
        format!("api_key = {}", quoted(&e.coupa_secret))
    };
    let toml = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .listen(&format!("127.0.0.1:{port}"))
        .file_sink(&events)
        .sink(&format!(
            "type = \"webhook\"\nname = \"hook\"\nurl = \"{hook_url}\"\nsecret = \"{HOOK_SECRET}\"\nheaders = {{ authorization = {} }}\nmax_backoff = \"200ms\"",
            quoted(&format!("Bearer {}", e.hook_token))
        ))
        .raw("[log]\nformat = \"json\"")
        .toml()
        .replace(
            &format!("base_url = \"{}\"", sim.base_url()),
            &format!("base_url = {}", quoted(base_url.as_str())),
        )
        .replace(&format!("api_key = \"{}\"", support::API_KEY), &auth);
    std::fs::write(&config, toml).unwrap();

    let inject = || {
        if e.oauth {
            sim.inject(echo(
                500,
                e.token_pad,
                e.token_json,
                Some("/oauth2/token"),
                1,
            ));
        }
        sim.inject(echo(e.coupa_status, e.coupa_pad, e.coupa_json, None, 2));
    };
    inject();
    let (bodies, logs) = run_daemon(&config, port, |s| {
        s["sinks"].as_array().is_some_and(|k| {
            k.iter()
                .any(|k| k["name"] == "hook" && k["dead_letters"].as_u64() >= Some(1))
                && k.iter().all(|k| k["backlog"] == 0)
        })
    })
    .await;
    let echoed = sim
        .requests()
        .iter()
        .filter(|r| r.status == e.coupa_status)
        .count();
    assert!(echoed >= 1, "Coupa echoed nothing");
    let mut shown = vec![("endpoints", bodies), ("logs", logs)];
    let sent = read_jsonl(&events);
    assert!(!sent.is_empty(), "no events");
    for ev in &sent {
        assert!(
            ev["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("http://127.0.0.1:")),
            "source shows user info: {ev}"
        );
    }
    shown.push((
        "events",
        sent.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    ));
    for args in [&["dlq", "list"][..], &["dlq", "list", "--json"][..]] {
        let (ok, out) = support::cli(args, &config);
        assert!(ok, "{out}");
        assert!(out.contains("401"), "dead letters carry the answer: {out}");
        shown.push(("dlq list", out));
    }
    for args in [
        &["check"][..],
        &["check", "--json"][..],
        &["get", "purchase_orders", "1"][..],
    ] {
        inject();
        let (_, out) = support::cli(args, &config);
        shown.push(("check/get", out));
    }
    for (what, text) in &shown {
        for secret in [&e.coupa_secret, &e.hook_token, &e.url_password] {
            assert_no_eight(what, secret, text);
        }
    }
    verify::verify(
        &truth(&sim.clone_handle(), &["purchase_orders"]),
        &from_jsonl(&events),
        SCHEDULE,
    )
}

/// Issue 12 item 6: random secrets (quotes, backslashes, `+`, `/`,
/// non-ASCII) echoed at random offsets, raw or in JSON, by Coupa, its
/// token endpoint and a webhook receiver: no 8 characters of any of them
/// reach any output. `PROPTEST_CASES` sets the number of cases (default 3:
/// each runs the real daemon).
#[test]
fn echoed_secrets_never_show() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: 4,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let totals = std::cell::RefCell::new([0usize; 4]);
    let result = runner.run(&echoes(), |e| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(echoed_secrets_case(&e))
        })) {
            Ok(v) => {
                let mut t = totals.borrow_mut();
                for (t, n) in t
                    .iter_mut()
                    .zip([v.events, v.lost(), v.duplicates(), v.phantoms()])
                {
                    *t += n;
                }
                Ok(())
            }
            Err(p) => {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(TestCaseError::fail(why))
            }
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let [events, lost, duplicates, phantoms] = *totals.borrow();
    println!("{}", verify::TABLE_HEADER);
    println!(
        "| secrets echoed by Coupa, token endpoint and receiver ({cases} random cases, none shown) | {events} | {lost} | {duplicates} | {phantoms} |"
    );
    assert_eq!((lost, duplicates, phantoms), (0, 0, 0));
}

/// Issue 12 item 6, first bullet and the stale error: a receiver answering
/// `401 invalid token <token>` (the header's token without `Bearer `) shows
/// it in no dead letter and no sink status; once the receiver accepts
/// again, the sink's `last_error` is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_header_token_is_hidden_and_a_recovered_sink_clears_its_error() {
    const TOKEN: &str = "HOOKHDR-4f2a9c1e7b3d";
    let sim = support::quiet_sim(2).await;
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = refuse.clone();
    let answer = move |h: HeaderMap| {
        let refuse = flag.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            let auth = h.get("authorization").and_then(|v| v.to_str().ok());
            let bare = auth.unwrap_or("").trim_start_matches("Bearer ").to_string();
            if refuse {
                (
                    StatusCode::UNAUTHORIZED,
                    format!("401 invalid token {bare}"),
                )
            } else {
                (StatusCode::OK, String::new())
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _rx = tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/hook", post(answer)))
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .sink(&format!(
            "type = \"webhook\"\nname = \"hook\"\nurl = \"http://{addr}/hook\"\nsecret = \"{HOOK_SECRET}\"\nheaders = {{ authorization = \"Bearer {TOKEN}\" }}\nmax_backoff = \"200ms\""
        ))
        .settings();
    let d = Daemon::start(&settings);
    wait_for("dead letters", LIMIT, || {
        d.store().dead_letters(Some("hook")).unwrap().len() == 2
    })
    .await;
    for dl in d.store().dead_letters(Some("hook")).unwrap() {
        assert!(
            dl.error.contains("invalid token [redacted]"),
            "{}",
            dl.error
        );
        assert!(!dl.error.contains(&TOKEN[..8]), "{}", dl.error);
    }
    let error = d.sink("hook").last_error.unwrap_or_default();
    assert!(
        error.contains("401") && !error.contains(&TOKEN[8..]),
        "{error}"
    );

    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    sim.create("purchase_orders", json!({}));
    wait_for("a delivery", LIMIT, || d.sink("hook").delivered >= 1).await;
    assert_eq!(
        d.sink("hook").last_error,
        None,
        "recovered, yet the old error shows"
    );
    d.stop().await.unwrap();
}

/// Issue 12 item 6, bullets 2 and 3: a token endpoint error quoting the
/// client secret just before the 200-character cut (20 of 25 characters
/// showed), or JSON-escaped (`"` and `\`), shows none of it in `get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_across_the_cut_or_json_escaped_is_hidden() {
    const SECRET: &str = "cs-q\"uo\\te-0123456789abcd";
    let sim = Simulator::start(SimConfig {
        initial_records: 1,
        oauth_clients: vec![OAuthClient::with_all_scopes("daemon", SECRET)],
        rate_limit: None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let toml = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .toml()
        .replace(
            &format!("api_key = \"{}\"", support::API_KEY),
            &format!(
                "max_attempts = 1\noauth = {{ client_id = \"daemon\", client_secret = {} }}",
                serde_json::to_string(SECRET).unwrap()
            ),
        );
    std::fs::write(&config, toml).unwrap();
    let escaped = serde_json::to_string(SECRET).unwrap();
    for body in [
        format!("{}{SECRET}", "x".repeat(180)),
        json!({"error": "server_error", "error_description": format!("bad client_secret {SECRET}")})
            .to_string(),
    ] {
        sim.inject(FaultRule {
            fault: Fault::Status {
                status: 500,
                retry_after: None,
                body: Some(body),
            },
            times: 1,
            path_contains: Some("/oauth2/token".into()),
        });
        let (ok, out) = support::cli(&["get", "purchase_orders", "1"], &config);
        assert!(!ok && out.contains("HTTP 500"), "{out}");
        assert_no_eight("`get`", SECRET, &out);
        assert!(!out.contains(&escaped[1..9]), "{out}");
    }
}

/// Issue 12 item 6, last bullet: `base_url = "http://user:pass@host"` puts
/// the password in no event's `source`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_user_info_is_not_published_in_events() {
    const PASSWORD: &str = "url-pass-9e4b71";
    let sim = support::quiet_sim(2).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let with_user = sim
        .base_url()
        .replace("http://", &format!("http://svc:{PASSWORD}@"));
    let toml = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .file_sink(&events)
        .toml()
        .replace(&sim.base_url(), &with_user);
    let settings = coupa_changefeed::config::Settings::from_toml(&toml).unwrap();
    let d = Daemon::start(&settings);
    wait_for("two events", LIMIT, || read_jsonl(&events).len() >= 2).await;
    d.stop().await.unwrap();
    for ev in read_jsonl(&events) {
        let source = ev["source"].as_str().unwrap();
        assert!(
            !source.contains(PASSWORD) && !source.contains("svc@"),
            "{source}"
        );
        assert!(
            source.starts_with(sim.base_url().trim_end_matches('/')),
            "{source}"
        );
    }
}
