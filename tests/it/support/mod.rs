//! Shared test harness: a simulator on 127.0.0.1, a real sled dir, and
//! helpers that compare what the outbox (or a sink) holds with the
//! simulator's own record of every version it ever showed, through
//! `coupa_sim::verify` ([`check`], [`check_exact`]).
#![allow(dead_code)]

pub mod actions_cases;
pub mod actions_exec;

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SubsecRound, Utc};
use coupa_changefeed::config::Settings;
use coupa_changefeed::coupa::client::CoupaClient;
use coupa_changefeed::coupa::record::{self, parse_timestamp};
use coupa_changefeed::poll::{PollReport, Poller};
use coupa_changefeed::shutdown::{self, Shutdown};
use coupa_changefeed::store::Store;
use coupa_sim::verify::{verify, Received};
use coupa_sim::{SimConfig, Simulator};

pub const API_KEY: &str = "test-api-key-5f1c";

/// A simulator with an API key, no rate limit, and nothing else.
pub fn sim_config() -> SimConfig {
    SimConfig {
        api_key: Some(API_KEY.into()),
        rate_limit: None,
        ..SimConfig::default()
    }
}

/// A daemon config for tests: fast, test-sized defaults that each test
/// adjusts key by key.
pub struct TestConfig {
    dir: PathBuf,
    objects: Vec<String>,
    coupa: Vec<(String, String)>,
    oauth: Option<(String, String)>,
    poll: Vec<(String, String)>,
    sink_file: Option<PathBuf>,
    /// Raw `[[sinks]]` bodies and other trailing TOML.
    extra: Vec<String>,
    listen: String,
}

fn set(section: &mut Vec<(String, String)>, key: &str, toml_value: &str) {
    match section.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = toml_value.to_string(),
        None => section.push((key.to_string(), toml_value.to_string())),
    }
}

/// `key = value` lines into (key, value) pairs.
fn pairs(lines: &str) -> impl Iterator<Item = (&str, &str)> {
    lines
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
}

impl TestConfig {
    /// API-key auth, 200 req/s, 2 s timeout, every-second schedule, 2 s
    /// settle, history from 2000, no sink (the outbox is inspected).
    pub fn new(base_url: &str, dir: &Path) -> TestConfig {
        let q = |s: &str| format!("\"{s}\"");
        TestConfig {
            dir: dir.to_path_buf(),
            objects: Vec::new(),
            coupa: vec![
                ("base_url".into(), q(base_url)),
                ("api_key".into(), q(API_KEY)),
                ("requests_per_second".into(), "200".into()),
                ("timeout".into(), q("2s")),
                ("max_backoff".into(), q("100ms")),
            ],
            oauth: None,
            poll: vec![
                ("schedule".into(), q("* * * * * *")),
                ("lookback".into(), q("5m")),
                ("settle".into(), q("2s")),
                ("start_from".into(), q("2000-01-01T00:00:00Z")),
            ],
            sink_file: None,
            extra: Vec::new(),
            listen: "127.0.0.1:0".into(),
        }
    }

    /// The HTTP server's address (default: any free port).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.into();
        self
    }

    pub fn objects(mut self, objects: &[&str]) -> Self {
        self.objects = objects.iter().map(|o| o.to_string()).collect();
        self
    }

    /// `key = value` lines (TOML values) for `[coupa]`.
    pub fn coupa(mut self, lines: &str) -> Self {
        for (k, v) in pairs(lines) {
            set(&mut self.coupa, k, v);
        }
        self
    }

    /// `key = value` lines (TOML values) for `[poll]`.
    pub fn poll(mut self, lines: &str) -> Self {
        for (k, v) in pairs(lines) {
            set(&mut self.poll, k, v);
        }
        self
    }

    /// OAuth client credentials instead of the API key.
    pub fn oauth(mut self, client_id: &str, secret: &str) -> Self {
        self.coupa.retain(|(k, _)| k != "api_key");
        self.oauth = Some((client_id.into(), secret.into()));
        self
    }

    /// A JSON Lines file sink.
    pub fn file_sink(mut self, path: &Path) -> Self {
        self.sink_file = Some(path.to_path_buf());
        self
    }

    /// Adds a `[[sinks]]` entry from its body, e.g.
    /// `type = "webhook"\nurl = "http://127.0.0.1:1/"`.
    pub fn sink(mut self, body: &str) -> Self {
        self.extra.push(format!("[[sinks]]\n{body}\n"));
        self
    }

    /// Appends raw TOML (e.g. a `[delivery]` section).
    pub fn raw(mut self, toml: &str) -> Self {
        self.extra.push(format!("{toml}\n"));
        self
    }

    pub fn toml(&self) -> String {
        let lines = |s: &[(String, String)]| -> String {
            s.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
        };
        let mut t = format!("[coupa]\n{}", lines(&self.coupa));
        if let Some((id, secret)) = &self.oauth {
            t += &format!("[coupa.oauth]\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\n");
        }
        t += &format!(
            "[server]\nlisten = \"{}\"\n[state]\ndir = \"{}\"\n[poll]\n{}",
            self.listen,
            self.dir.display(),
            lines(&self.poll)
        );
        for o in &self.objects {
            t += &format!("[[objects]]\nname = \"{o}\"\n");
        }
        if let Some(p) = &self.sink_file {
            t += &format!("[[sinks]]\ntype = \"file\"\npath = \"{}\"\n", p.display());
        }
        for e in &self.extra {
            t += e;
        }
        t
    }

    pub fn settings(&self) -> Settings {
        Settings::from_toml(&self.toml()).expect("test config is valid")
    }
}

/// One object's poller over a real store and client.
pub struct Rig {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub store: Store,
    pub client: CoupaClient,
    pub pollers: Vec<Poller>,
    pub shutdown: Shutdown,
    _trigger: shutdown::Trigger,
}

impl Rig {
    pub async fn new(cfg: SimConfig, objects: &[&str]) -> Rig {
        Self::with(cfg, objects, "", "").await
    }

    pub async fn with(
        cfg: SimConfig,
        objects: &[&str],
        extra_coupa: &str,
        extra_poll: &str,
    ) -> Rig {
        let sim = Simulator::start(cfg).await.expect("simulator starts");
        let dir = tempfile::tempdir().unwrap();
        let settings = TestConfig::new(&sim.base_url(), dir.path())
            .objects(objects)
            .coupa(extra_coupa)
            .poll(extra_poll)
            .settings();
        let store = Store::open(&settings.state.dir).unwrap();
        let client = CoupaClient::new(&settings.coupa).unwrap();
        let pollers = settings
            .plans()
            .unwrap()
            .into_iter()
            .map(|p| Poller::new(p, client.clone(), store.clone()))
            .collect();
        let (trigger, shutdown) = shutdown::channel();
        Rig {
            sim,
            dir,
            settings,
            store,
            client,
            pollers,
            shutdown,
            _trigger: trigger,
        }
    }

    /// Drops the pollers, client and store (a crash, as far as state goes)
    /// and reopens them on the same dir.
    pub fn reopen(&mut self) {
        self.pollers.clear();
        let placeholder = tempfile::tempdir().unwrap();
        let old = std::mem::replace(&mut self.store, Store::open(placeholder.path()).unwrap());
        drop(old);
        // sled's background flusher may hold the dir's lock a moment longer.
        let mut reopened = None;
        for _ in 0..100 {
            match Store::open(&self.settings.state.dir) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(e) => {
                    eprintln!("reopen: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
        self.store = reopened.expect("store reopens");
        self.client = CoupaClient::new(&self.settings.coupa).unwrap();
        self.pollers = self
            .settings
            .plans()
            .unwrap()
            .into_iter()
            .map(|p| Poller::new(p, self.client.clone(), self.store.clone()))
            .collect();
    }

    /// One poll of every object.
    pub async fn poll(&self) -> PollReport {
        let mut total = PollReport::default();
        for p in &self.pollers {
            let r = p
                .poll_once(&self.shutdown)
                .await
                .unwrap_or_else(|e| panic!("poll failed: {e}"));
            total.add(&r);
        }
        total
    }

    /// Moves the simulator's clock past `settle` so everything written so
    /// far falls inside the next window, then polls until a window opened
    /// after that completes. Bounded.
    pub async fn catch_up(&self) -> PollReport {
        // Everything written so far is stamped at or before `written`; a
        // window must end after it. The Date header has whole seconds.
        let written = self.sim.now().trunc_subsecs(0);
        self.sim
            .set_clock_offset(self.sim_offset() + chrono::Duration::seconds(5));
        let target = written + chrono::Duration::seconds(1);
        // Let the client see the jump: it learns Coupa's clock from
        // responses, and moves it only once most recent ones agree.
        for _ in 0..3 {
            self.client
                .get_json("/api/users", &[("limit".into(), "1".into())])
                .await
                .unwrap();
        }
        let mut total = PollReport::default();
        for _ in 0..50 {
            let r = self.poll().await;
            total.add(&r);
            let caught_up = self.pollers.iter().all(|p| {
                let s = self.store.object_state(p.name()).unwrap();
                s.window.is_none() && s.hwm.is_some_and(|h| h >= target)
            });
            if caught_up {
                return total;
            }
        }
        let states: Vec<_> = self
            .pollers
            .iter()
            .map(|p| self.store.object_state(p.name()).unwrap())
            .collect();
        panic!("did not catch up within 50 polls: target {target}, sim now {}, client clock {:?}, states {states:?}", self.sim.now(), self.client.coupa_now());
    }

    fn sim_offset(&self) -> chrono::Duration {
        self.sim
            .now()
            .signed_duration_since(Utc::now())
            .round_to_seconds()
    }
}

trait RoundSecs {
    fn round_to_seconds(self) -> chrono::Duration;
}
impl RoundSecs for chrono::Duration {
    fn round_to_seconds(self) -> chrono::Duration {
        chrono::Duration::seconds((self.num_milliseconds() as f64 / 1000.0).round() as i64)
    }
}

/// An outbox event as [`verify`] reads it, with its CloudEvent `type`
/// (derefs to the [`Received`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outboxed {
    pub received: Received,
    /// The CloudEvent `type`, e.g. `coupa.purchase_order.created`.
    pub ty: String,
}

impl std::ops::Deref for Outboxed {
    type Target = Received;
    fn deref(&self) -> &Received {
        &self.received
    }
}

impl Borrow<Received> for Outboxed {
    fn borrow(&self) -> &Received {
        &self.received
    }
}

/// Everything in the outbox (nothing is released without a sink running).
pub fn outbox(store: &Store) -> Vec<Outboxed> {
    store
        .outbox_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, e)| {
            let data = e.event_json()["data"].as_object().unwrap().clone();
            Outboxed {
                received: Received {
                    event_id: e.event_json()["id"].as_str().unwrap().to_string(),
                    object: e.object.clone(),
                    id: record::numeric_id(&data).unwrap(),
                    updated_at: e.event_json()["time"].as_str().and_then(parse_timestamp),
                },
                ty: e.event_json()["type"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// A delivered CloudEvent (a file sink line, a webhook body) as `verify`
/// reads it.
pub fn received(e: &serde_json::Value) -> Received {
    Received::from_event(e).unwrap_or_else(|why| panic!("{why}: {e}"))
}

/// A schedule so long that no superseded version counts as long-lived:
/// [`check`] requires only each record's final version.
const FINALS_ONLY: std::time::Duration = std::time::Duration::from_secs(u64::MAX / 4);

/// The checks every scenario ends with, by [`verify`]: no duplicate event
/// id, no phantom version, every event dated, and every record's final
/// version delivered. Returns the delivered (id, updated-at) pairs.
pub fn check<R: Borrow<Received>>(
    sim: &Simulator,
    object: &str,
    delivered: &[R],
) -> BTreeSet<(u64, DateTime<Utc>)> {
    let mine: Vec<Received> = delivered
        .iter()
        .map(Borrow::borrow)
        .filter(|r| r.object == object)
        .cloned()
        .collect();
    for r in &mine {
        assert!(
            r.updated_at.is_some(),
            "undated event {} for record {} of {object}",
            r.event_id,
            r.id
        );
    }
    let v = verify(&sim.versions(object), &mine, FINALS_ONLY);
    assert!(
        v.duplicate_ids.is_empty(),
        "duplicate event ids for {object}: {v}"
    );
    assert!(v.phantom.is_empty(), "phantom versions of {object}: {v}");
    assert!(
        v.lost_final.is_empty(),
        "{} final versions of {object} lost: {v}",
        v.lost_final.len()
    );
    mine.iter()
        .map(|r| (r.id, r.updated_at.expect("dated")))
        .collect()
}

/// [`check`], and the delivered set is exactly every version the simulator
/// ever showed (for scenarios where no version is superseded between polls).
/// `verify` asks only for finals and long-lived versions; this asks for all.
pub fn check_exact<R: Borrow<Received>>(
    sim: &Simulator,
    object: &str,
    delivered: &[R],
) -> BTreeSet<(u64, DateTime<Utc>)> {
    let got = check(sim, object, delivered);
    let all: BTreeSet<(u64, DateTime<Utc>)> = sim
        .versions(object)
        .iter()
        .map(|v| (v.id, v.updated_at))
        .collect();
    let missing: Vec<_> = all.difference(&got).take(5).collect();
    assert!(
        missing.is_empty(),
        "versions of {object} never delivered, e.g. {missing:?}"
    );
    assert_eq!(got, all);
    got
}

/// The whole daemon in-process (`app::build` + `app::run_built`).
pub struct Daemon {
    pub handles: coupa_changefeed::app::Handles,
    trigger: shutdown::Trigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    pub fn start(settings: &Settings) -> Daemon {
        Self::start_after(settings, || {})
    }

    /// Builds, runs `between` (e.g. to break a sink the build checked),
    /// then starts.
    pub fn start_after(settings: &Settings, between: impl FnOnce()) -> Daemon {
        let (handles, pollers, sinks) =
            coupa_changefeed::app::build(settings).expect("daemon builds");
        between();
        let (trigger, listener) = shutdown::channel();
        let task = tokio::spawn(coupa_changefeed::app::run_built(
            handles.clone(),
            pollers,
            sinks,
            listener,
        ));
        Daemon {
            handles,
            trigger,
            task,
        }
    }

    pub fn store(&self) -> &Store {
        &self.handles.store
    }

    /// One sink's live status (after the sinks started).
    pub fn sink(&self, name: &str) -> coupa_changefeed::delivery::SinkStatus {
        let sinks = self.handles.sinks.lock().unwrap();
        let s = sinks
            .get(name)
            .unwrap_or_else(|| panic!("no sink `{name}`"));
        let st = s.lock().unwrap().clone();
        st
    }

    /// Graceful stop; returns the daemon's result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.trigger.fire();
        self.task.await.expect("daemon task")
    }
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
pub async fn wait_for(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The complete events in a JSON Lines file (none if it does not exist
/// yet); a last line still being written is left for the next read.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// A port free at the time of asking (for child processes that need one).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kills the child if a test fails midway.
pub struct Reap(pub std::process::Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A simulator with `records` per object and no background changes.
pub async fn quiet_sim(records: usize) -> Simulator {
    Simulator::start(SimConfig {
        initial_records: records,
        change_rate: 0.0,
        ..sim_config()
    })
    .await
    .unwrap()
}

/// Runs `coupa-changefeed ARGS --config CONFIG`: (success, stdout + stderr).
pub fn cli(args: &[&str], config: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coupa-changefeed"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Kills one poll of `rig`'s first poller once the simulator has seen
/// `more` further requests (a crash mid-poll, as far as state goes), then
/// reopens the store on the same dir. Bounded by `limit`.
pub async fn crash_poll_after(rig: &mut Rig, more: usize, limit: std::time::Duration) {
    let poller = rig.pollers.remove(0);
    let shutdown = rig.shutdown.clone();
    let seen = rig.sim.requests().len();
    let task = tokio::spawn(async move { poller.poll_once(&shutdown).await });
    let started = std::time::Instant::now();
    while rig.sim.requests().len() < seen + more && !task.is_finished() {
        assert!(started.elapsed() < limit, "poll made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    task.abort();
    let _ = task.await;
    rig.reopen();
}

/// The real daemon (`run --config`) with debug logs. Its stdout and stderr
/// are read as it writes (debug logs fill a pipe fast); join the handles
/// once it has exited.
pub fn spawn_logged(
    config: &Path,
) -> (
    Reap,
    std::thread::JoinHandle<String>,
    std::thread::JoinHandle<String>,
) {
    use std::process::{Command, Stdio};
    let mut daemon = Reap(
        Command::new(env!("CARGO_BIN_EXE_coupa-changefeed"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let err = drain(Box::new(daemon.0.stderr.take().unwrap()));
    let out = drain(Box::new(daemon.0.stdout.take().unwrap()));
    (daemon, err, out)
}

/// The real daemon (`run --config`), its stdout discarded and its stderr
/// (the log) going where the test wants it.
pub fn spawn_run(config: &Path, stderr: impl Into<std::process::Stdio>) -> Reap {
    Reap(
        std::process::Command::new(env!("CARGO_BIN_EXE_coupa-changefeed"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// A small tmpfs mounted for a test (a disk that can fill up or turn
/// read-only), unmounted on drop. `None` (after printing why) when not
/// root outside CI; under `CI=true` (root) failing to mount is a failure.
pub struct Tmpfs {
    pub path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path,
                _parent: parent,
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "cannot mount a tmpfs under CI: {why}"
                );
                eprintln!(
                    "skipped: root not found (mounting a tmpfs needs it: {})",
                    why.trim()
                );
                None
            }
        }
    }

    /// Remounts it read-only (`false`) or read-write (`true`).
    pub fn set_writable(&self, writable: bool) {
        let opt = if writable { "remount,rw" } else { "remount,ro" };
        let ok = std::process::Command::new("mount")
            .args(["-o", opt])
            .arg(&self.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -o {opt} {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon a failed test left behind may still hold files.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Runs one test alone in a child process of this test binary, for tests
/// that change process-wide state (the environment) which the other tests
/// of the one binary, and the daemons they spawn, would otherwise see.
/// Give it `concat!(module_path!(), "::<test fn>")`. In the parent it runs
/// the child, asserts it passed, and returns `false` (the test returns);
/// in the child it returns `true` (the test runs its body).
pub fn in_own_process(test: &str) -> bool {
    const CHILD: &str = "COUPA_CHANGEFEED_IT_OWN_PROCESS";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    // `it::config::x` → `config::x`, the name libtest filters on.
    let name = test.split_once("::").map_or(test, |(_, rest)| rest);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} in its own process:\n{text}"
    );
    false
}
