//! Crash loop (issue 6): the real `coupa-changefeed run` binary against the
//! real `coupa-sim` (its change generator on, its default rate limit) with
//! a file sink and a webhook sink, killed with SIGKILL at seeded-random
//! moments and restarted on the same state dir; then the changes stop, the
//! last run delivers, SIGTERM stops it, and each sink is judged with
//! `verify` against the simulator's ground truth: nothing lost (final
//! versions, and superseded ones that lived past the threshold), no
//! phantom, no version under two event ids, and every repeated event id
//! was in flight at a kill — received in the run the kill ended while the
//! state that kill left still held it unsettled for that sink (read from
//! the state dir between kill and restart).
//! Also `coupa-sim check`, the checker as a command.
//!
//! `cargo test --test it chaos::crash -- --nocapture` prints the report rows; set
//! `CRASH_SEED` to replay another kill schedule, and `CRASH_KILLS` (default
//! 10) for an opt-in soak: `CRASH_KILLS=200 cargo test --release --test
//! it chaos::crash -- --nocapture`.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::{spawn_run, Reap, TestConfig, API_KEY};
use coupa_changefeed::event::{canonical_json, content_hash, ChangeEvent, ChangeKind, Origin};
use coupa_changefeed::store::Store;
use coupa_sim::verify::{self, Received};
use coupa_sim::{Simulator, Version};

const SIM: &str = env!("CARGO_BIN_EXE_coupa-sim");

/// The kill schedule's seed unless `CRASH_SEED` says otherwise.
const DEFAULT_SEED: u64 = 20_061;
const KILLS: usize = 10;
/// Each run lives this long (uniformly drawn) before its SIGKILL: from
/// before the first poll ends to several delivery rounds.
const RUN_MS: std::ops::Range<u64> = 500..3_000;
/// What the generator touches and the daemon polls.
const OBJECTS: [&str; 3] = ["purchase_orders", "invoices", "suppliers"];
/// Creates + updates per second across `OBJECTS`.
const CHANGE_RATE: &str = "12";
/// The webhook receiver holds each request this long, so kills often land
/// with requests in flight.
const HOOK_DELAY: Duration = Duration::from_millis(60);
/// What `verify` gets as the schedule: the 1 s cron plus the 1 s settle,
/// because a version only enters a window `settle` behind Coupa's
/// whole-second clock. A superseded version is owed if it lived longer
/// than twice this.
const VERIFY_SCHEDULE: Duration = Duration::from_secs(2);
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SINKS: [&str; 2] = ["file", "webhook"];

// ---------------------------------------------------------------- receiver

/// A webhook receiver on 127.0.0.1 that answers 200 and keeps every body,
/// recorded on arrival (before the answer: a kill may cut the answer off,
/// and the body still reached the consumer).
struct Hook {
    addr: std::net::SocketAddr,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(State(bodies): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes) -> StatusCode {
    bodies.lock().unwrap().push(body);
    tokio::time::sleep(HOOK_DELAY).await;
    StatusCode::OK
}

impl Hook {
    async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(bodies.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Hook { addr, bodies, task }
    }

    fn len(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    fn events(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| serde_json::from_slice(b).expect("each webhook body is JSON"))
            .collect()
    }
}

// --------------------------------------------------------------- helpers

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Every version of `OBJECTS` the simulator ever showed.
async fn truth(http: &reqwest::Client, sim: &str) -> Vec<Version> {
    let mut all = Vec::new();
    for o in OBJECTS {
        let v: Vec<Version> = http
            .get(format!("{sim}/_sim/versions/{o}"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap()
            .json()
            .await
            .unwrap();
        all.extend(v);
    }
    all
}

fn received(events: &[Value]) -> Vec<Received> {
    events
        .iter()
        .map(|e| Received::from_event(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect()
}

/// The file sink's complete lines, and whether a torn (unterminated) line
/// follows them.
fn lines(path: &Path) -> (Vec<String>, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let torn = !text.is_empty() && !text.ends_with('\n');
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if torn {
        lines.pop();
    }
    (lines, torn)
}

/// Event ids of the outbox entries `sink` had not settled (delivered or
/// dead-lettered) in the state a kill left: the only events it may be sent
/// again. Opens the store as the next run will, then lets it go.
fn unsettled(state: &Path) -> HashMap<&'static str, HashSet<String>> {
    let store = Store::open(state).unwrap_or_else(|e| panic!("state after a kill: {e}"));
    let entries = store.outbox_after(0, usize::MAX).unwrap();
    SINKS
        .iter()
        .map(|&sink| {
            let cursor = store.cursor(sink).unwrap();
            let acked = store.acked_beyond(sink).unwrap();
            let ids = entries
                .iter()
                .filter(|(seq, _)| *seq > cursor && !acked.contains(seq))
                .map(|(_, e)| e.event_json()["id"].as_str().unwrap().to_string())
                .collect();
            (sink, ids)
        })
        .collect()
}

/// What one SIGKILL left behind.
struct Kill {
    /// File sink lines and webhook bodies received by then.
    file_end: usize,
    hook_end: usize,
    /// Per sink: event ids its outbox entries held unsettled in the state
    /// the kill left.
    unsettled: HashMap<&'static str, HashSet<String>>,
}

/// Repeats of one sink, all explained.
#[derive(Debug)]
struct Repeats {
    /// Copies beyond the first, over all event ids.
    copies: usize,
    /// Per kill: events received in the run it ended and left unsettled
    /// (in flight at the kill).
    in_flight: Vec<usize>,
}

/// Judges one sink's repeats from the event ids it received, in arrival
/// order, and `ends`, its receive counts at each kill (so copy `i` came in
/// run `ends.iter().position(|e| i < e)`, or the last run). A repeat is
/// explained when the copies of one id came in distinct runs and each copy
/// but the last came in a run whose kill left that event unsettled for this
/// sink: it was in flight at the kill. Returns the unexplained otherwise.
fn judge_repeats(
    sink: &'static str,
    ids: &[String],
    ends: &[usize],
    kills: &[Kill],
) -> Result<Repeats, Vec<String>> {
    let mut runs_of: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut in_flight = vec![HashSet::new(); kills.len()];
    for (i, id) in ids.iter().enumerate() {
        let run = ends.iter().position(|&end| i < end).unwrap_or(ends.len());
        runs_of.entry(id).or_default().push(run);
        if kills
            .get(run)
            .is_some_and(|k| k.unsettled[sink].contains(id))
        {
            in_flight[run].insert(id.as_str());
        }
    }
    let mut copies = 0;
    let mut bad = Vec::new();
    for (id, runs) in runs_of.iter().filter(|(_, r)| r.len() > 1) {
        copies += runs.len() - 1;
        for pair in runs.windows(2) {
            let (first, again) = (pair[0], pair[1]);
            if first == again {
                bad.push(format!("{id} twice in run {first}, with no kill between"));
            } else if !kills[first].unsettled[sink].contains(*id) {
                bad.push(format!(
                    "{id} came in run {first} and again in run {again}, though the kill \
                     ending run {first} left it settled"
                ));
            }
        }
    }
    if bad.is_empty() {
        Ok(Repeats {
            copies,
            in_flight: in_flight.iter().map(HashSet::len).collect(),
        })
    } else {
        bad.sort();
        Err(bad)
    }
}

/// Prints the seed if the test fails, so the schedule can be replayed.
struct SeedOnFailure(u64);
impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("crash loop failed with CRASH_SEED={}", self.0);
        }
    }
}

fn spawn_daemon(config: &Path, log: &Path) -> Reap {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    spawn_run(config, log)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kill_9s_lose_nothing_and_repeat_only_what_was_in_flight() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("CRASH_SEED is a u64"))
        .unwrap_or(DEFAULT_SEED);
    let _seed = SeedOnFailure(seed);
    let kills_wanted = std::env::var("CRASH_KILLS")
        .ok()
        .map(|s| s.parse().expect("CRASH_KILLS is a count"))
        .unwrap_or(KILLS);
    let mut rng = StdRng::seed_from_u64(seed);
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();

    let sim_log = std::fs::File::create(dir.path().join("sim.log")).unwrap();
    let mut sim = Reap(
        Command::new(SIM)
            .args(["--listen", "127.0.0.1:0", "--records", "0"])
            .args(["--change-rate", CHANGE_RATE, "--api-key", API_KEY])
            .args(["--seed", &seed.to_string()])
            .stdout(Stdio::piped())
            .stderr(sim_log)
            .spawn()
            .unwrap(),
    );
    // It prints its URL once listening (and closes stdout if it fails).
    let stdout = sim.0.stdout.take().unwrap();
    let sim_url = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    })
    .await
    .unwrap();
    assert!(
        sim_url.starts_with("http://127.0.0.1:"),
        "coupa-sim: {sim_url:?}"
    );

    let hook = Hook::start().await;
    let state = dir.path().join("state");
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("c.toml");
    let daemon_log = dir.path().join("daemon.log");
    let text = TestConfig::new(&sim_url, &state)
        .objects(&OBJECTS)
        .coupa("requests_per_second = 20")
        .poll(&format!(
            "settle = \"1s\"\nstart_from = \"{}\"",
            // Whole seconds: config refuses a fractional start.
            chrono::SubsecRound::trunc_subsecs(Utc::now() - chrono::TimeDelta::seconds(30), 0)
                .to_rfc3339()
        ))
        .file_sink(&events)
        .sink(&format!(
            "type = \"webhook\"\nurl = \"http://{}/hook\"\nsecret = \"{WEBHOOK_SECRET}\"\nmax_backoff = \"200ms\"",
            hook.addr
        ))
        .toml();
    std::fs::write(&config, text).unwrap();

    let mut kills: Vec<Kill> = Vec::new();
    let mut torn = Vec::new();
    let mut respawns = 0;
    while kills.len() < kills_wanted {
        let k = kills.len();
        let mut daemon = spawn_daemon(&config, &daemon_log);
        let life = Duration::from_millis(rng.random_range(RUN_MS));
        tokio::time::sleep(life).await;
        if let Some(status) = daemon.0.try_wait().unwrap() {
            // Our own look at the state may hold sled's lock a moment
            // after it is dropped: then the daemon refuses, and we retry.
            let tail = log_tail(&daemon_log);
            assert!(
                tail.contains("in use by another process") && respawns < 20,
                "run {k} exited by itself ({status}):\n{tail}"
            );
            respawns += 1;
            continue;
        }
        daemon.0.kill().unwrap(); // SIGKILL
        daemon.0.wait().unwrap();
        let (file_lines, torn_now) = lines(&events);
        if torn_now {
            torn.push(k);
        }
        kills.push(Kill {
            file_end: file_lines.len(),
            hook_end: hook.len(),
            unsettled: unsettled(&state),
        });
    }

    // The last run: stop the changes, let it deliver every final version.
    let mut daemon = spawn_daemon(&config, &daemon_log);
    let http = http();
    tokio::time::sleep(Duration::from_millis(500)).await;
    http.put(format!("{sim_url}/_sim/settings"))
        .json(&json!({"change_rate": 0}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap();
    // The generator reads the rate every 10 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let truth = truth(&http, &sim_url).await;
    let settled = Instant::now() + Duration::from_secs(40);
    loop {
        let file = verify::verify(
            &truth,
            &received(&read_file_events(&events)),
            VERIFY_SCHEDULE,
        );
        let webhook = verify::verify(&truth, &received(&hook.events()), VERIFY_SCHEDULE);
        if file.lost_final.is_empty() && webhook.lost_final.is_empty() {
            break;
        }
        if let Some(status) = daemon.0.try_wait().unwrap() {
            panic!("the last run exited ({status}):\n{}", log_tail(&daemon_log));
        }
        assert!(
            Instant::now() < settled,
            "final versions not delivered within 40 s\nfile: {file}\nwebhook: {webhook}\n{}",
            log_tail(&daemon_log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    support::sigterm(&daemon.0);
    let status = support::wait_exit(&mut daemon.0, Duration::from_secs(40));
    assert!(
        status.success(),
        "SIGTERM: {status}\n{}",
        log_tail(&daemon_log)
    );
    assert_eq!(
        truth.len(),
        self::truth(&http, &sim_url).await.len(),
        "the generator stopped"
    );

    // Judge each sink.
    let (file_lines, torn_end) = lines(&events);
    assert!(
        torn.is_empty() && !torn_end,
        "the file sink left a torn line at kills {torn:?} (end: {torn_end})"
    );
    let file_events: Vec<Value> = file_lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("line {} of the file sink: {e}: {l}", i + 1))
        })
        .collect();
    let ends = |end: fn(&Kill) -> usize| kills.iter().map(end).collect::<Vec<_>>();
    let sinks = [
        ("file", file_events, ends(|k| k.file_end)),
        ("webhook", hook.events(), ends(|k| k.hook_end)),
    ];

    // Superseded versions the verdict requires (not only the finals).
    let long_lived = truth
        .iter()
        .filter(|v| {
            v.superseded_at.is_some_and(|s| {
                (s - v.appeared_at).to_std().unwrap_or_default() > VERIFY_SCHEDULE * 2
            })
        })
        .count();
    println!(
        "\nseed {seed}: {kills_wanted} kills ({respawns} respawns), {} versions ({long_lived} superseded \
         after > {:?}), {:.1} s",
        truth.len(),
        VERIFY_SCHEDULE * 2,
        began.elapsed().as_secs_f64()
    );
    println!("{}", verify::TABLE_HEADER);
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    for (name, events, ends) in &sinks {
        let got = received(events);
        let verdict = verify::verify(&truth, &got, VERIFY_SCHEDULE);
        println!("{}", verdict.row(&format!("crash loop ({name})")));
        let ids: Vec<String> = got.iter().map(|r| r.event_id.clone()).collect();
        match judge_repeats(name, &ids, ends, &kills) {
            Ok(r) => notes.push(format!(
                "{name}: {} repeated copies, each in flight at a kill; in flight per kill {:?}",
                r.copies, r.in_flight
            )),
            Err(bad) => failures.push(format!(
                "{name}: unexplained repeats ({}): {:?}",
                bad.len(),
                &bad[..bad.len().min(5)]
            )),
        }
        if verdict.lost() + verdict.phantoms() + verdict.duplicate_versions.len() > 0 {
            failures.push(format!("{name}: {verdict}"));
        }
    }
    println!("{}", notes.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        log_tail(&daemon_log)
    );
}

/// The file sink's events, skipping a torn last line (judged at the end).
fn read_file_events(path: &Path) -> Vec<Value> {
    lines(path)
        .0
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The repeat judge itself: it must reject what the crash loop would
/// otherwise wave through.
#[test]
fn a_repeat_is_explained_only_by_a_kill_that_left_it_unsettled() {
    let kill = |end: usize, unsettled: &[&str]| Kill {
        file_end: end,
        hook_end: end,
        unsettled: HashMap::from([
            ("file", unsettled.iter().map(|s| s.to_string()).collect()),
            ("webhook", HashSet::new()),
        ]),
    };
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Run 0 got a, b; its kill left b unsettled; run 1 got b again, c.
    let kills = [kill(2, &["b"])];
    let ok = judge_repeats("file", &ids(&["a", "b", "b", "c"]), &[2], &kills).unwrap();
    assert_eq!((ok.copies, ok.in_flight), (1, vec![1]));
    // a was settled at the kill: its repeat is unexplained.
    let err = judge_repeats("file", &ids(&["a", "b", "a"]), &[2], &kills).unwrap_err();
    assert!(err[0].contains("left it settled"), "{err:?}");
    // Twice within one run.
    let err = judge_repeats("file", &ids(&["a", "a", "b"]), &[3], &kills).unwrap_err();
    assert!(err[0].contains("twice in run 0"), "{err:?}");
    // The same kill, judged for the webhook, left nothing unsettled.
    assert!(judge_repeats("webhook", &ids(&["b", "b"]), &[1], &kills).is_err());
}

// ------------------------------------------------------ coupa-sim check

/// The CloudEvent the daemon would publish for `v`.
fn event_for(base_url: &str, v: &Version) -> Value {
    let origin = Origin {
        base_url: base_url.into(),
        object: v.object.clone(),
        singular: "purchase_order".into(),
        path: "/api/purchase_orders".into(),
    };
    let data = canonical_json(&v.record);
    let kind = if v.created_at == v.updated_at {
        ChangeKind::Created
    } else {
        ChangeKind::Updated
    };
    ChangeEvent::new(
        &origin,
        &v.id.to_string(),
        Some(v.updated_at),
        &content_hash(&data),
        kind,
        data,
    )
    .to_cloudevent()
}

/// Runs `coupa-sim ARGS` off the async threads: (exit code, stdout, stderr).
async fn coupa_sim(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(SIM).args(&args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn write_jsonl(path: &PathBuf, events: &[Value]) {
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupa_sim_check_passes_a_clean_sink_and_names_what_a_dirty_one_got_wrong() {
    let sim = Simulator::start(support::sim_config()).await.unwrap();
    let po = |sim: &Simulator| {
        sim.create("purchase_orders", json!({}))["id"]
            .as_u64()
            .unwrap()
    };
    let (a, b) = (po(&sim), po(&sim));
    // A later second, so a's two versions do not share an updated-at.
    sim.set_clock_offset(chrono::Duration::seconds(2));
    sim.update("purchase_orders", a, json!({"status": "closed"}));
    let versions = sim.versions("purchase_orders");
    assert_eq!(versions.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let args = |scenario: &str, objects: &str| -> Vec<String> {
        [
            "check",
            "--sim",
            &sim.base_url(),
            "--events",
            path.to_str().unwrap(),
            "--objects",
            objects,
            "--schedule",
            "1s",
            "--scenario",
            scenario,
        ]
        .map(String::from)
        .to_vec()
    };
    let all: Vec<Value> = versions
        .iter()
        .map(|v| event_for(&sim.base_url(), v))
        .collect();

    write_jsonl(&path, &all);
    let (code, out, err) = coupa_sim(args("clean", "purchase_orders")).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(verify::TABLE_HEADER), "{out}");
    assert!(out.contains("| clean | 3 | 0 | 0 | 0 |"), "{out}");
    assert!(out.contains("(clean)"), "{out}");

    // a's final version lost, b's event twice, and a version never shown.
    let mut phantom = versions[1].clone();
    phantom.id = 999;
    let dirty = vec![
        all[0].clone(),
        all[1].clone(),
        all[1].clone(),
        event_for(&sim.base_url(), &phantom),
    ];
    write_jsonl(&path, &dirty);
    let (code, out, err) = coupa_sim(args("dirty", "purchase_orders")).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("| dirty | 4 | 1 | 1 | 1 |"), "{out}");
    let final_a = versions.iter().rev().find(|v| v.id == a).unwrap();
    assert!(
        out.contains(&format!(
            "lost final versions (1): purchase_orders/{a}@{}",
            final_a.updated_at.format("%Y-%m-%dT%H:%M:%SZ")
        )),
        "{out}"
    );
    assert!(out.contains(all[1]["id"].as_str().unwrap()), "{out}");
    assert!(
        out.contains("phantom versions (1): purchase_orders/999@"),
        "{out}"
    );
    assert_ne!(b, 999);

    // It cannot check: a line that is not JSON, an unknown object.
    std::fs::write(&path, format!("{}\n{{torn", all[0])).unwrap();
    let (code, _, err) = coupa_sim(args("x", "purchase_orders")).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("events.jsonl:2: not JSON"), "{err}");
    write_jsonl(&path, &all);
    let (code, _, err) = coupa_sim(args("x", "purchase_orders,widgets")).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/_sim/versions/widgets") && err.contains("404"),
        "{err}"
    );
}

// ------------------------------------------------------------- full disk

/// Fills `dir`'s file system with one file; returns it (delete to free).
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        match f.write_all(&chunk).and_then(|_| f.sync_all()) {
            Ok(()) => continue,
            Err(e) if e.raw_os_error() == Some(28) => return path,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
}

/// Issue 12.7: the state dir on a small tmpfs fills up while events flow.
/// The daemon must fail liveness and exit 74 within
/// `state.failure_timeout` (sled keeps its first IO error, so only a
/// restart recovers); once space is back, a restart delivers everything:
/// nothing committed is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_then_freed_loses_nothing() {
    let Some(disk) = support::Tmpfs::mount("32m") else {
        return;
    };
    const OBJECT: &str = "purchase_orders";
    let sim = Simulator::start(coupa_sim::SimConfig {
        initial_records: 30,
        change_rate: 0.0,
        change_objects: vec![OBJECT.into()],
        ..support::sim_config()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("c.toml");
    let log = dir.path().join("daemon.log");
    let port = support::free_port();
    let text = TestConfig::new(&sim.base_url(), &disk.path.join("state"))
        .objects(&[OBJECT])
        .poll("settle = \"1s\"")
        .file_sink(&events)
        .listen(&format!("127.0.0.1:{port}"))
        .toml()
        .replace("[state]\n", "[state]\nfailure_timeout = \"3s\"\n");
    std::fs::write(&config, text).unwrap();
    let file_events = || received(&read_file_events(&events));
    let wait_for = |what: &str, limit: Duration, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{what} within {limit:?}\n{}",
                log_tail(&log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let mut daemon = spawn_daemon(&config, &log);
    wait_for("the first 30 events", Duration::from_secs(30), &|| {
        file_events().len() >= 30
    });
    let filler = fill(&disk.path);
    sim.set_change_rate(20.0);

    // Liveness fails, naming the store; then the daemon exits 74.
    let http = http();
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let r = http.get(&healthz).send().await;
        if let Ok(r) = r {
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                break r.text().await.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still 200 with the disk full\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Coupa shows only a record's latest version: one born and superseded
    // while no daemon can commit is unobservable to any poller. Changes
    // stop here, so the verdict judges what the daemon could have seen.
    sim.set_change_rate(0.0);
    assert!(body.contains("store failing"), "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    let status = support::wait_exit(&mut daemon.0, Duration::from_secs(30));
    assert_eq!(status.code(), Some(74), "{}", log_tail(&log));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("No space left on device"),
        "{}",
        log_tail(&log)
    );

    // Space returns. What the failed run committed but had not delivered
    // must arrive after the restart.
    std::fs::remove_file(filler).unwrap();
    let committed = unsettled(&disk.path.join("state"))["file"].clone();
    let mut daemon = spawn_daemon(&config, &log);
    sim.set_change_rate(20.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.set_change_rate(0.0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let truth = sim.versions(OBJECT);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !verify::verify(&truth, &file_events(), VERIFY_SCHEDULE)
        .lost_final
        .is_empty()
    {
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "the restarted daemon exited\n{}",
            log_tail(&log)
        );
        assert!(
            Instant::now() < deadline,
            "not caught up after the disk was freed: {}\n{}",
            verify::verify(&truth, &file_events(), VERIFY_SCHEDULE),
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    support::sigterm(&daemon.0);
    let status = support::wait_exit(&mut daemon.0, Duration::from_secs(40));
    assert!(status.success(), "SIGTERM: {status}\n{}", log_tail(&log));
    let verdict = verify::verify(&truth, &file_events(), VERIFY_SCHEDULE);
    println!("{}", verify::TABLE_HEADER);
    println!("{}", verdict.row("disk full then freed (file)"));
    assert!(
        verdict.lost() + verdict.phantoms() + verdict.duplicate_versions.len() == 0,
        "{verdict}"
    );
    let got: HashSet<String> = file_events().into_iter().map(|r| r.event_id).collect();
    let missing: Vec<&String> = committed.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "committed before the failure, never delivered: {missing:?}"
    );
    println!(
        "{} committed but undelivered at the failure, all delivered after the restart",
        committed.len()
    );
}
