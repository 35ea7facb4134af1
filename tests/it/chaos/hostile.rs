//! Hostile conditions (issue 6 items 5 and 6). Damaged state: the real
//! `coupa-changefeed` binary, pointed at a truncated, garbage, foreign-version
//! or already-locked state dir, refuses with a message naming the dir and the
//! problem, emits nothing and leaves the dir as it was (never a silent fresh
//! start from `start_from`). Hostile input: proptest over the list parser
//! (any bytes), timestamps (any string; RFC 3339 in any offset round-trips),
//! the poller fed hostile records, and the poller against random schedules
//! of inserts, edits, polls and clock moves, checked against the simulator.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{
    free_port, read_jsonl, received, sigterm, spawn_run, wait_exit, wait_for, Daemon, Reap, Rig,
    TestConfig,
};
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use coupa_changefeed::coupa::client::CoupaClient;
use coupa_changefeed::coupa::record::{self, parse_timestamp, rfc3339, Stamp};
use coupa_changefeed::poll::Poller;
use coupa_changefeed::shutdown;
use coupa_changefeed::store::Store;
use coupa_sim::verify::{verify, Received};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use serde_json::{json, Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_coupa-changefeed");
const LIMIT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------ state damage

/// Every file under `dir` with its bytes: what "unchanged" is checked against.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (rel, bytes) in snapshot(from) {
        let p = to.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// A state dir a real daemon left behind after delivering every record of
/// `sim` (so a fresh start from `start_from` = 2000 would emit them again).
async fn used_state_dir(sim: &coupa_sim::Simulator, root: &Path) -> PathBuf {
    let state = root.join("used-state");
    let events = root.join("first-run.jsonl");
    let settings = TestConfig::new(&sim.base_url(), &state)
        .objects(&["purchase_orders"])
        .file_sink(&events)
        .settings();
    let daemon = Daemon::start(&settings);
    let want = sim.versions("purchase_orders").len();
    wait_for("the first run delivers every record", LIMIT, || {
        read_jsonl(&events).len() >= want
    })
    .await;
    let store = daemon.store().clone();
    wait_for("a high-water mark is stored", LIMIT, || {
        store.object_state("purchase_orders").unwrap().hwm.is_some()
    })
    .await;
    drop(store);
    daemon.stop().await.unwrap();
    state
}

/// Runs `coupa-changefeed ARGS --config CONFIG` until it exits, or kills
/// it after 20 s (a daemon that accepted the dir): (exited with success,
/// stderr + stdout). A killed run counts as a success: it did not refuse.
fn run_to_exit(args: &[&str], config: &Path) -> (bool, String) {
    let mut child = Reap(
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            sigterm(&child.0);
            wait_exit(&mut child.0, LIMIT);
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut text).unwrap();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut text).unwrap();
    match status {
        Some(s) => (s.success(), text),
        None => (true, format!("(still running after 20 s; stopped)\n{text}")),
    }
}

/// Deterministic junk (xorshift), so a failure reproduces.
fn junk(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// What a damaged state dir must lead to.
enum Expect {
    /// `run` (twice) and `state show` exit non-zero with these words and
    /// the dir's path, and nothing is emitted. With `untouched`, the log and
    /// config are left byte for byte; without, sled rewrote an unreadable log while
    /// opening it, and what matters is that the refusal holds on the next
    /// run too (the dir did not become a fresh one).
    Refused {
        words: &'static [&'static str],
        untouched: bool,
    },
    /// What a crash can leave too: sled recovers the longest valid prefix
    /// of its log, a real earlier state, and the daemon resumes from it.
    /// Nothing is lost and anything emitted again repeats an id the first
    /// run delivered; `replays` says whether repeats are expected at all.
    Resumed { replays: bool },
}

/// Runs the daemon until its poller has polled three times successfully
/// (read from `/status`), then stops it: (exit status ok, log).
async fn run_until_polled(config: &Path, port: u16) -> (bool, String) {
    let mut child = spawn_run(config, Stdio::piped());
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/status");
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            let mut log = String::new();
            std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
            panic!("the daemon exited ({s}) before polling: {log}");
        }
        if let Ok(r) = http.get(&url).send().await {
            let v: Value = r.json().await.unwrap_or_default();
            let o = &v["objects"][0];
            if o["polls"].as_u64().unwrap_or(0) >= 3 && o["last_error"].is_null() {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no three polls");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child.0);
    let ok = wait_exit(&mut child.0, LIMIT).success();
    let mut log = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    (ok, log)
}

/// `run` and `state show` on damaged copies of a used state dir: garbage,
/// foreign files, another format version and a log cut to nothing are
/// refused naming the dir and the problem, with nothing emitted and the dir
/// untouched. A log cut mid-way is indistinguishable from a crash at that
/// point (sled keeps the valid prefix); an emptied `conf` only loses sled's
/// own settings: both resume, losing nothing and inventing no event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_dirs_are_refused_never_started_over() {
    let sim = support::quiet_sim(5).await;
    let root = tempfile::tempdir().unwrap();
    let used = used_state_dir(&sim, root.path()).await;
    let first_ids: std::collections::HashSet<String> =
        read_jsonl(&root.path().join("first-run.jsonl"))
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
    let db_len = std::fs::metadata(used.join("db")).unwrap().len();
    assert!(db_len > 0, "sled wrote its log");
    let truncate = |d: &Path, len: u64| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("db"))
            .unwrap();
        f.set_len(len).unwrap();
    };

    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, Expect)> = vec![
        (
            "log cut to 16 bytes",
            Box::new(move |d: &Path| truncate(d, 16)),
            Expect::Refused {
                words: &["damaged", "no format_version"],
                untouched: false,
            },
        ),
        (
            "garbage",
            Box::new(move |d: &Path| {
                std::fs::write(d.join("db"), junk(db_len.max(4096) as usize, 0x5eed)).unwrap();
                std::fs::write(d.join("conf"), junk(64, 0xc0ff)).unwrap();
            }),
            Expect::Refused {
                words: &["damaged"],
                untouched: true,
            },
        ),
        (
            "not a sled dir",
            Box::new(|d: &Path| {
                for e in std::fs::read_dir(d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(p).unwrap();
                    } else {
                        std::fs::remove_file(p).unwrap();
                    }
                }
                std::fs::write(d.join("README"), "someone else's files").unwrap();
            }),
            Expect::Refused {
                words: &["damaged", "no sled database"],
                untouched: true,
            },
        ),
        (
            // A dir written by another build: same sled, another layout.
            "format version 99",
            Box::new(|d: &Path| {
                let db = sled::open(d).unwrap();
                let meta = db.open_tree("meta").unwrap();
                assert!(meta.get("format_version").unwrap().is_some());
                meta.insert("format_version", &99u32.to_be_bytes()).unwrap();
                db.flush().unwrap();
            }),
            Expect::Refused {
                words: &["format version 99"],
                untouched: true,
            },
        ),
        (
            "log cut to a third",
            Box::new(move |d: &Path| truncate(d, db_len / 3)),
            Expect::Resumed { replays: true },
        ),
        (
            "empty conf",
            Box::new(|d: &Path| std::fs::write(d.join("conf"), b"").unwrap()),
            Expect::Resumed { replays: false },
        ),
    ];

    for (name, damage, expect) in cases {
        let case = root.path().join(name.replace(' ', "-"));
        let state = case.join("state");
        copy_dir(&used, &state);
        damage(&state);
        let before = snapshot(&state);
        let events = case.join("events.jsonl");
        let config = case.join("c.toml");
        let port = free_port();
        let toml = TestConfig::new(&sim.base_url(), &state)
            .objects(&["purchase_orders"])
            .file_sink(&events)
            .listen(&format!("127.0.0.1:{port}"))
            .toml();
        std::fs::write(&config, toml).unwrap();
        match expect {
            Expect::Refused { words, untouched } => {
                for args in [&["run"][..], &["state", "show"][..], &["run"][..]] {
                    let (ok, out) = run_to_exit(args, &config);
                    let cmd = args.join(" ");
                    assert!(!ok, "{name}: `{cmd}` must refuse: {out}");
                    assert!(
                        out.contains(&state.display().to_string()),
                        "{name}: the message names the dir: {out}"
                    );
                    for w in words {
                        assert!(out.contains(w), "{name}: `{w}` in: {out}");
                    }
                    assert!(!out.contains("panicked"), "{name}: {out}");
                    eprintln!("{name} / {cmd}: {}", out.trim());
                }
                assert!(read_jsonl(&events).is_empty(), "{name}: nothing emitted");
                let after = snapshot(&state);
                let changed: Vec<String> = before
                    .keys()
                    .chain(after.keys().filter(|k| !before.contains_key(*k)))
                    .filter(|k| before.get(*k) != after.get(*k))
                    .map(|k| {
                        let len = |m: &BTreeMap<PathBuf, Vec<u8>>| m.get(k).map(Vec::len);
                        format!(
                            "{} ({:?} -> {:?} bytes)",
                            k.display(),
                            len(&before),
                            len(&after)
                        )
                    })
                    .collect();
                if untouched {
                    // sled rewrites its snapshot (an index derived from the
                    // log) on every open; the log and config must not move.
                    let data: Vec<&String> =
                        changed.iter().filter(|c| !c.starts_with("snap.")).collect();
                    assert!(data.is_empty(), "{name}: the dir was modified: {changed:?}");
                } else {
                    eprintln!("{name}: sled rewrote {changed:?} before the refusal");
                }
            }
            Expect::Resumed { replays } => {
                let (ok, log) = run_until_polled(&config, port).await;
                assert!(ok, "{name}: {log}");
                let again: Vec<String> = read_jsonl(&events)
                    .iter()
                    .map(|e| e["id"].as_str().unwrap().to_string())
                    .collect();
                eprintln!("{name}: resumed; {} event(s) repeated", again.len());
                assert!(
                    again.iter().all(|id| first_ids.contains(id)),
                    "{name}: an event id the first run never delivered: {again:?}"
                );
                if !replays {
                    assert!(again.is_empty(), "{name}: the state was intact: {again:?}");
                }
                let (ok, out) = run_to_exit(&["state", "show"], &config);
                assert!(ok && out.contains("purchase_orders"), "{name}: {out}");
            }
        }
    }
}

/// A second daemon on a running daemon's state dir refuses (the lock),
/// and the first one carries on: every record is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_refuses() {
    let sim = support::quiet_sim(5).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let events = dir.path().join("events.jsonl");
    let write_config = |name: &str, events: &Path| {
        let path = dir.path().join(name);
        let toml = TestConfig::new(&sim.base_url(), &state)
            .objects(&["purchase_orders"])
            .file_sink(events)
            .listen(&format!("127.0.0.1:{}", free_port()))
            .toml();
        std::fs::write(&path, toml).unwrap();
        path
    };
    let first_config = write_config("first.toml", &events);
    let mut first = spawn_run(&first_config, Stdio::null());
    wait_for("the first daemon delivers", LIMIT, || {
        read_jsonl(&events).len() >= 5
    })
    .await;

    let second_events = dir.path().join("second.jsonl");
    let second_config = write_config("second.toml", &second_events);
    let (ok, out) = run_to_exit(&["run"], &second_config);
    assert!(!ok, "the second daemon must refuse: {out}");
    assert!(
        out.contains("in use by another process") && out.contains(&state.display().to_string()),
        "{out}"
    );
    assert!(read_jsonl(&second_events).is_empty());
    let (ok, out) = run_to_exit(&["state", "show"], &second_config);
    assert!(!ok && out.contains("in use by another process"), "{out}");

    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first daemon still runs"
    );
    sim.create("purchase_orders", json!({}));
    wait_for("the first daemon goes on polling", LIMIT, || {
        read_jsonl(&events).len() >= 6
    })
    .await;
    sigterm(&first.0);
    assert!(wait_exit(&mut first.0, LIMIT).success());
    let got: Vec<_> = read_jsonl(&events).iter().map(received).collect();
    support::check_exact(&sim, "purchase_orders", &got);
}

// ------------------------------------------------------------ hostile input

/// A proptest runner with `cases` cases, few shrink steps (cases here are
/// whole polls) and no regression files written into the tree.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(PropConfig {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..PropConfig::default()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What the scripted list endpoint answers next.
#[derive(Default)]
struct Script {
    /// Bodies for the next requests that carry a time filter (pages), in
    /// order; after them `[]`. Other requests (the clock probe) get `[]`.
    pages: std::collections::VecDeque<Vec<u8>>,
    content_type: &'static str,
    /// Send page bodies in 8 KiB chunks without a `Content-Length`.
    chunked: bool,
    /// Every request's `path?query`, in order.
    log: Vec<String>,
}

/// A Coupa stand-in on 127.0.0.1 serving `script`; returns its base URL.
async fn scripted_server(script: Arc<Mutex<Script>>) -> String {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let script = script.clone();
        async move {
            let mut s = script.lock().unwrap();
            s.log.push(uri.to_string());
            let page = uri.query().unwrap_or("").contains("updated_at");
            let body = match page {
                true => s.pages.pop_front(),
                false => None,
            };
            let ct = if s.content_type.is_empty() {
                "application/json"
            } else {
                s.content_type
            };
            let body = body.unwrap_or_else(|| b"[]".to_vec());
            let body = if s.chunked {
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    body.chunks(8192).map(|c| Ok(c.to_vec())).collect();
                axum::body::Body::from_stream(futures_util::stream::iter(chunks))
            } else {
                axum::body::Body::from(body)
            };
            ([(axum::http::header::CONTENT_TYPE, ct)], body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// One attempt per request (a broken body is an error at once), no rate limit to speak of.
fn scripted_settings(base: &str) -> coupa_changefeed::config::Settings {
    TestConfig::new(base, Path::new("/nonexistent/state"))
        .objects(&["purchase_orders"])
        .coupa("max_attempts = 1\nrequests_per_second = 10000")
        .settings()
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        timestamp_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Strings shaped like timestamps, valid or nearly so.
fn timestamp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        rendered_timestamp().prop_map(|(_, s)| s),
        "[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}[T ][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\\.[0-9]{0,12})?)?( ?(Z|z|UTC|[+-][0-9]{1,2}(:?[0-9]{1,3})?))?",
    ]
}

/// An instant from year 1000 to 9999 with any sub-second part, and a way
/// Coupa or a look-alike might write it: RFC 3339 in any whole-minute
/// offset, `+HHMM`, a space for `T`, a space before the offset, `Z`, ` UTC`.
fn rendered_timestamp() -> impl Strategy<Value = (DateTime<Utc>, String)> {
    let secs = -30_610_224_000i64..253_402_300_800;
    let nanos = prop_oneof![
        Just(0u32),
        (0..1000u32).prop_map(|ms| ms * 1_000_000),
        (0..1_000_000u32).prop_map(|us| us * 1000),
        0..1_000_000_000u32,
    ];
    let offset_min = -(23 * 60 + 59)..=(23 * 60 + 59);
    (secs, nanos, offset_min, 0..7u8).prop_map(|(s, n, off, style)| {
        let t = Utc.timestamp_opt(s, n).unwrap();
        let local = t.with_timezone(&FixedOffset::east_opt(off * 60).unwrap());
        let text = match style {
            0 => local.format("%Y-%m-%dT%H:%M:%S%.f%:z").to_string(),
            1 => local.format("%Y-%m-%dT%H:%M:%S%.f%z").to_string(),
            2 => local.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string(),
            3 => local.format("%Y-%m-%d %H:%M:%S%.f%z").to_string(),
            4 => local.format("%Y-%m-%d %H:%M:%S%.f %z").to_string(),
            5 => t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string(),
            _ => t.format("%Y-%m-%d %H:%M:%S%.f UTC").to_string(),
        };
        (t, text)
    })
}

#[test]
fn any_string_is_a_timestamp_or_unparseable_never_a_panic() {
    let strings = prop_oneof![
        any::<String>(),
        timestamp_text(),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    runner(3000)
        .run(&strings, |s| {
            let parsed = parse_timestamp(&s);
            let rec: Map<String, Value> = [("updated-at".to_string(), Value::String(s.clone()))]
                .into_iter()
                .collect();
            match record::stamp(&rec, "updated-at") {
                Stamp::At(t) => prop_assert_eq!(Some(t), parsed),
                Stamp::Unparseable(raw) => {
                    prop_assert_eq!(parsed, None);
                    prop_assert_eq!(raw, s);
                }
                Stamp::Missing => prop_assert!(false, "a present string is never missing"),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn rfc3339_in_any_offset_round_trips_to_the_same_instant() {
    runner(5000)
        .run(&rendered_timestamp(), |(t, text)| {
            prop_assert_eq!(parse_timestamp(&text), Some(t), "{}", text);
            // What events and the store write reads back the same.
            prop_assert_eq!(parse_timestamp(&rfc3339(t)), Some(t));
            let q = record::query_time(t);
            prop_assert_eq!(
                parse_timestamp(&q).map(|q| q.timestamp()),
                Some(t.timestamp())
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A list body: raw bytes, JSON of any shape, pages of hostile records,
/// and such pages cut short or with a byte flipped.
fn list_body() -> impl Strategy<Value = Vec<u8>> {
    let page = || {
        prop::collection::vec(hostile_record(), 0..6).prop_map(|p| serde_json::to_vec(&p).unwrap())
    };
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        page(),
        (page(), any::<prop::sample::Index>()).prop_map(|(b, i)| {
            let cut = i.index(b.len().max(1));
            b[..cut].to_vec()
        }),
        (page(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, i, x)| {
            let at = i.index(b.len());
            b[at] = x;
            b
        }),
        Just(b"<!DOCTYPE html><html><body>Maintenance</body></html>".to_vec()),
    ]
}

/// A record as a hostile or broken Coupa might send it: ids of every type,
/// timestamps valid, nearly valid or not strings at all, in either key style.
fn hostile_record() -> impl Strategy<Value = Map<String, Value>> {
    let id = prop_oneof![
        (0u64..50).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[0-9]{1,25}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        any::<f64>().prop_map(Value::from),
        Just(Value::Null),
        Just(Value::Bool(true)),
    ];
    let stamp = prop_oneof![
        3 => timestamp_text().prop_map(Value::String),
        1 => any::<String>().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    let key = prop_oneof![
        Just("updated-at"),
        Just("updated_at"),
        Just("created-at"),
        Just("created_at"),
    ];
    (
        prop::option::weighted(0.9, id),
        prop::collection::vec((key, stamp), 0..3),
        prop::collection::btree_map("[a-z_-]{1,8}|\\PC{0,6}", json_value(), 0..3),
    )
        .prop_map(|(id, stamps, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in stamps {
                m.insert(k.to_string(), v);
            }
            if let Some(id) = id {
                m.insert("id".into(), id);
            }
            m
        })
}

/// The client's list parser, given any body with status 200: records
/// exactly when the body is a JSON array of objects, else an error that
/// names the URL; never a panic.
#[test]
fn the_list_parser_takes_any_bytes() {
    let rt = runtime();
    let script = Arc::new(Mutex::new(Script::default()));
    let base = rt.block_on(scripted_server(script.clone()));
    let client = CoupaClient::new(&scripted_settings(&base).coupa).unwrap();
    let query = vec![("updated_at[gt]".to_string(), "x".to_string())];
    let content_type = prop_oneof![
        Just("application/json"),
        Just("application/json; charset=utf-8"),
        Just("text/html; charset=utf-8"),
        Just("application/octet-stream"),
    ];
    runner(400)
        .run(&(list_body(), content_type), |(body, ct)| {
            {
                let mut s = script.lock().unwrap();
                s.pages = [body.clone()].into();
                s.content_type = ct;
            }
            let got = rt.block_on(client.list("/api/purchase_orders", &query));
            let want: Option<Vec<Map<String, Value>>> = match serde_json::from_slice(&body) {
                Ok(Value::Array(items)) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::Object(m) => Some(m),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            match (got, want) {
                (Ok(records), Some(want)) => prop_assert_eq!(records, want),
                (Err(e), None) => {
                    let text = e.to_string();
                    prop_assert!(text.contains("/api/purchase_orders"), "{}", text);
                }
                (got, want) => prop_assert!(false, "got {:?}, want {:?}", got, want),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The poller fed pages of hostile records: every poll ends (no panic, no
/// loop), every record read is an event or a repeat, and every event is a
/// valid CloudEvent carrying the record as it came.
#[test]
fn the_poller_turns_hostile_records_into_valid_events_or_a_clear_error() {
    let rt = runtime();
    let script = Arc::new(Mutex::new(Script::default()));
    let base = rt.block_on(scripted_server(script.clone()));
    let settings = scripted_settings(&base);
    let plan = settings.plans().unwrap().remove(0);
    let client = CoupaClient::new(&settings.coupa).unwrap();
    let (_trigger, stop) = shutdown::channel();
    let pages = prop::collection::vec(prop::collection::vec(hostile_record(), 0..8), 1..4);
    runner(96)
        .run(&pages, |pages| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            script.lock().unwrap().pages = pages
                .iter()
                .map(|p| serde_json::to_vec(p).unwrap())
                .collect();
            let poller = Poller::new(plan.clone(), client.clone(), store.clone());
            let outcome = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), poller.poll_once(&stop)).await
            });
            let outcome = outcome.expect("a poll of a few pages ends");
            let served: Vec<&Map<String, Value>> = pages.iter().flatten().collect();
            match outcome {
                Ok(r) => {
                    prop_assert_eq!(r.events + r.repeats + r.rejected_total(), r.records);
                    prop_assert!(r.undated <= r.records);
                    let events = store.outbox_after(0, usize::MAX).unwrap();
                    prop_assert_eq!(events.len() as u64, r.events);
                    for (_, e) in &events {
                        let ce = e.event_json();
                        prop_assert_eq!(&ce["specversion"], "1.0");
                        let id = ce["id"].as_str().unwrap_or("");
                        prop_assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
                        let subject = ce["subject"].as_str().unwrap_or("");
                        prop_assert!(!subject.is_empty(), "CloudEvents forbid an empty subject");
                        prop_assert_eq!(
                            &*coupa_changefeed::store::compact_id(subject),
                            e.key.as_str()
                        );
                        let ty = ce["type"].as_str().unwrap_or("");
                        prop_assert!(
                            ty == "coupa.purchase_order.created"
                                || ty == "coupa.purchase_order.updated",
                            "{}",
                            ty
                        );
                        let data = ce["data"].as_object().cloned().unwrap_or_default();
                        prop_assert!(
                            served.iter().any(|r| same_json(
                                &Value::Object((*r).clone()),
                                &Value::Object(data.clone())
                            )),
                            "data is a record served: {}",
                            ce
                        );
                        match (record::stamp(&data, "updated-at"), ce["time"].as_str()) {
                            (Stamp::At(t), Some(time)) => {
                                prop_assert_eq!(parse_timestamp(time), Some(t))
                            }
                            (Stamp::At(_), None) => prop_assert!(false, "dated without time"),
                            (_, time) => prop_assert_eq!(time, None),
                        }
                    }
                }
                Err(e) => {
                    // A server whose pages repeat whatever the offset.
                    prop_assert_eq!(e.kind(), "protocol", "{}", e);
                    prop_assert!(e.to_string().contains("purchase_orders"));
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// JSON equality up to the last bits of floats (serde_json's parser may
/// read a float one ulp off what it printed).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// One step of a random schedule against the simulator.
#[derive(Debug, Clone)]
enum Step {
    Create(usize),
    /// Edit the `n`th record (mod the count) of an object.
    Edit(usize, usize),
    Poll,
    /// Move the sim clock by this many seconds (kept within 120 s behind
    /// the furthest it has been: clock skew the lookback absorbs).
    Clock(i64),
}

const SCHEDULE_OBJECTS: [&str; 2] = ["purchase_orders", "invoices"];

/// The poller against random schedules of inserts, edits, polls and clock
/// moves, with random page sizes: after a catch-up the checker finds every
/// record's final version, no repeat and no phantom.
#[test]
fn random_schedules_of_inserts_and_edits_lose_nothing() {
    let rt = runtime();
    let step = prop_oneof![
        4 => (0..2usize).prop_map(Step::Create),
        4 => (0..2usize, any::<usize>()).prop_map(|(o, n)| Step::Edit(o, n)),
        2 => Just(Step::Poll),
        1 => (-40i64..90).prop_map(Step::Clock),
    ];
    let schedule = (1u32..=12, prop::collection::vec(step, 1..40));
    runner(20)
        .run(&schedule, |(page_size, steps)| {
            let verdict = rt.block_on(async {
                let rig = Rig::with(
                    support::sim_config(),
                    &SCHEDULE_OBJECTS,
                    "",
                    &format!("page_size = {page_size}"),
                )
                .await;
                let mut ids: [Vec<u64>; 2] = Default::default();
                let (mut offset, mut furthest) = (0i64, 0i64);
                for (n, step) in steps.iter().enumerate() {
                    match *step {
                        Step::Create(o) => {
                            let rec = rig.sim.create(SCHEDULE_OBJECTS[o], json!({}));
                            ids[o].push(rec["id"].as_u64().unwrap());
                        }
                        Step::Edit(o, k) if !ids[o].is_empty() => {
                            let id = ids[o][k % ids[o].len()];
                            rig.sim.update(
                                SCHEDULE_OBJECTS[o],
                                id,
                                json!({"status": format!("s{n}")}),
                            );
                        }
                        Step::Edit(..) => {}
                        Step::Poll => {
                            rig.poll().await;
                        }
                        Step::Clock(d) => {
                            offset = (offset + d).max(furthest - 120);
                            furthest = furthest.max(offset);
                            rig.sim.set_clock_offset(chrono::Duration::seconds(offset));
                        }
                    }
                }
                // Past every stamp written, then read everything.
                rig.sim
                    .set_clock_offset(chrono::Duration::seconds(furthest + 1));
                rig.catch_up().await;
                let received: Vec<Received> = rig
                    .store
                    .outbox_after(0, usize::MAX)
                    .unwrap()
                    .iter()
                    .map(|(_, e)| Received::from_event(&e.event_json()).unwrap())
                    .collect();
                let truth: Vec<_> = SCHEDULE_OBJECTS
                    .iter()
                    .flat_map(|o| rig.sim.versions(o))
                    .collect();
                // Polls are explicit here, not scheduled: every final
                // version is owed, superseded ones only if read.
                verify(&truth, &received, Duration::from_secs(1 << 30))
            });
            prop_assert!(verdict.is_clean(), "{}", verdict);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

// ------------------------------------------------------- bounds ahead of Coupa

/// A state dir whose object state is `state` (JSON, so fields added later
/// keep their defaults).
async fn stored_state(dir: &Path, object: &str, state: Value) {
    let store = Store::open(dir).unwrap();
    let st = serde_json::from_value(state).unwrap();
    store.put_object_state(object, &st).await.unwrap();
    store.flush().await.unwrap();
}

/// A high-water mark a year ahead of Coupa's clock (an older build trusted
/// one bad `Date`, or a bad restore) cannot be repaired by polling: it is
/// reported in `/status` and fails `/readyz` with the repair named, never
/// waited out in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_high_water_mark_ahead_of_coupa_is_reported_not_waited_out() {
    let sim = support::quiet_sim(3).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ahead = rfc3339(Utc::now() + chrono::Duration::days(365));
    stored_state(
        &state,
        "invoices",
        json!({"hwm": ahead, "floor": "2000-01-01T00:00:00Z", "window": null}),
    )
    .await;
    let cfg = TestConfig::new(&sim.base_url(), &state)
        .objects(&["invoices"])
        .listen("127.0.0.1:0");
    let daemon = Daemon::start(&cfg.settings());
    let addr = daemon.handles.server_addr.unwrap();
    let status = daemon.handles.pollers["invoices"].clone();
    wait_for("the problem reported", LIMIT, || {
        status.lock().unwrap().problem.is_some()
    })
    .await;
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(
        body.contains("ahead of Coupa's clock") && body.contains("state reset invoices --to"),
        "{body}"
    );
    let st: Value = reqwest::get(format!("http://{addr}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        st["objects"][0]["problem"]
            .as_str()
            .unwrap()
            .contains(&ahead),
        "{st}"
    );
    daemon.stop().await.unwrap();
}

/// An open window ending a year ahead is narrowed to Coupa's clock (what
/// it leaves out lands in the next window): its records are delivered and
/// the high-water mark ends at Coupa's clock, not a year ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_window_ahead_of_coupa_is_narrowed_and_loses_nothing() {
    let sim = support::quiet_sim(5).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let events = dir.path().join("events.jsonl");
    let lo = rfc3339(Utc::now() - chrono::Duration::days(3650));
    let hi = rfc3339(Utc::now() + chrono::Duration::days(365));
    stored_state(
        &state,
        "invoices",
        json!({"hwm": lo, "floor": lo, "window": {"lo": lo, "hi": hi, "last_id": null}}),
    )
    .await;
    let cfg = TestConfig::new(&sim.base_url(), &state)
        .objects(&["invoices"])
        .file_sink(&events);
    let daemon = Daemon::start(&cfg.settings());
    wait_for("every invoice delivered", LIMIT, || {
        read_jsonl(&events).len() >= 5
    })
    .await;
    let store = daemon.store().clone();
    wait_for("a sane high-water mark", LIMIT, || {
        store.object_states().unwrap().iter().any(|(_, st)| {
            st.window.is_none()
                && st
                    .hwm
                    .is_some_and(|h| h <= Utc::now() + chrono::Duration::seconds(5))
        })
    })
    .await;
    daemon.stop().await.unwrap();
    let got: Vec<Received> = read_jsonl(&events)
        .iter()
        .map(|e| Received::from_event(e).unwrap())
        .collect();
    let v = verify(&sim.versions("invoices"), &got, Duration::from_secs(2));
    assert!(v.is_clean(), "{v}");
}

// ------------------------------------------------- hostile records (issue 12)

/// Named so `tests/reliability-report` can run just these (`records::`).
mod records {
    use super::*;

    /// One poll of `purchase_orders` against `pages` (raw bodies, served in
    /// order for page requests, then `[]`), on a fresh store.
    fn poll_pages(
        pages: Vec<Vec<u8>>,
        coupa: &str,
    ) -> (
        Result<coupa_changefeed::poll::PollReport, coupa_changefeed::poll::PollError>,
        Vec<coupa_changefeed::store::OutboxEntry>,
        Vec<String>,
    ) {
        let rt = runtime();
        let script = Arc::new(Mutex::new(Script {
            pages: pages.into(),
            ..Script::default()
        }));
        let base = rt.block_on(scripted_server(script.clone()));
        let settings = TestConfig::new(&base, Path::new("/nonexistent/state"))
            .objects(&["purchase_orders"])
            .coupa(&format!(
                "max_attempts = 1\nrequests_per_second = 10000\n{coupa}"
            ))
            .settings();
        let plan = settings.plans().unwrap().remove(0);
        let client = CoupaClient::new(&settings.coupa).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (_trigger, stop) = shutdown::channel();
        let poller = Poller::new(plan, client, store.clone());
        let outcome = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), poller.poll_once(&stop))
                .await
                .expect("the poll ends")
        });
        let events = store
            .outbox_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let log = script.lock().unwrap().log.clone();
        (outcome, events, log)
    }

    fn subjects(events: &[coupa_changefeed::store::OutboxEntry]) -> Vec<String> {
        events
            .iter()
            .map(|e| e.event_json()["subject"].as_str().unwrap().to_string())
            .collect()
    }

    const STAMP: &str = "2026-11-30T10:15:02Z";

    /// Checks the published subjects against the usable records served
    /// (`want`) and prints the reliability-report row.
    fn row(scenario: &str, want: &[&str], events: &[coupa_changefeed::store::OutboxEntry]) {
        let got = subjects(events);
        let lost = want.iter().filter(|w| !got.iter().any(|g| g == *w)).count();
        let phantom = got.iter().filter(|g| !want.contains(&g.as_str())).count();
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        let duplicates = got.len() - unique.len();
        // On a line of its own: libtest prints the test's name first.
        println!(
            "\n| {scenario} | {} | {lost} | {duplicates} | {phantom} |",
            got.len()
        );
        assert_eq!((lost, duplicates, phantom), (0, 0, 0), "{got:?}");
    }

    /// Item 2: a 70,000-character id once panicked the store (u16 key
    /// length) and so the daemon, on every restart. It is published with the
    /// exact id as subject, keyed by its hash, and the poll goes on.
    #[test]
    fn a_70000_character_id_is_published_exactly() {
        let long = "9".repeat(70_000);
        let page = format!(
            r#"[{{"id":1,"updated-at":"{STAMP}"}},{{"id":"{long}","updated-at":"{STAMP}"}},{{"id":3,"updated-at":"{STAMP}"}}]"#
        );
        // A string id cannot be paged by `id[gt]`: the window is re-read by
        // offset, so the page is served twice.
        let (outcome, events, _) = poll_pages(vec![page.clone().into(), page.into()], "");
        let report = outcome.expect("the poll succeeds");
        assert!(report.window_complete);
        assert_eq!(subjects(&events), ["1", long.as_str(), "3"]);
        let key = &events[1].key;
        assert!(key.starts_with("sha256:") && key.len() < 100, "{key}");
        assert_eq!(report.rejected_total(), 0);
        row(
            "record with a 70,000-character id",
            &["1", &long, "3"],
            &events,
        );
    }

    /// Item 3: ids above u64 keep every digit (they used to become the same
    /// float), and a record without a usable id is rejected, counted and
    /// listed, never published with an empty subject.
    #[test]
    fn ids_keep_every_digit_and_idless_records_are_rejected_not_published() {
        let page = format!(
            r#"[{{"id":18446744073709551616,"updated-at":"{STAMP}","total":0.10000000000000000001}},
            {{"id":18446744073709551617,"updated-at":"{STAMP}","total":1e400}},
            {{"updated-at":"2026-11-30T09:00:00Z","number":"PO-9"}},
            {{"id":"","updated-at":"{STAMP}"}}]"#
        );
        let (outcome, events, _) = poll_pages(vec![page.clone().into(), page.into()], "");
        let report = outcome.expect("the poll succeeds");
        assert!(report.window_complete);
        assert_eq!(
            subjects(&events),
            ["18446744073709551616", "18446744073709551617"]
        );
        let data: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.event).into_owned())
            .collect();
        assert!(
            data[0].contains(r#""total":0.10000000000000000001"#),
            "{}",
            data[0]
        );
        // Out of f64's range, still the same number (serde_json writes `1e+400`).
        assert!(data[1].contains(r#""total":1e+400"#), "{}", data[1]);
        // Ids above u64 cannot be paged by `id[gt]`: the first read only
        // switches to offset paging; the second is detected.
        assert_eq!(report.rejected.get("no_id"), Some(&1));
        assert_eq!(report.rejected.get("bad_id"), Some(&1));
        let r = &report.recent_rejects[0];
        assert_eq!(r.updated_at.as_deref(), Some("2026-11-30T09:00:00Z"));
        assert!(r.excerpt.contains("PO-9"), "{}", r.excerpt);
        row(
            "ids above u64, records without a usable id (rejected)",
            &["18446744073709551616", "18446744073709551617"],
            &events,
        );
    }

    /// Item 4: one unreadable record (bad UTF-8, a non-object) used to fail
    /// its page on every poll. It is rejected in its place; the rest of the
    /// page is published, and `id[gt]` paging moves past it (no offset mode,
    /// nothing skipped), also when the rejected element ends the page.
    #[test]
    fn one_unreadable_record_is_rejected_and_the_page_and_paging_go_on() {
        let page1 = [
            format!(
                r#"[{{"id":1,"updated-at":"{STAMP}"}},{{"id":2,"updated-at":"{STAMP}","name":""#
            )
            .into_bytes(),
            vec![0xff, 0xfe],
            format!(r#""}},7,{{"id":3,"updated-at":"{STAMP}"}},{{"updated-at":"{STAMP}"}}]"#)
                .into_bytes(),
        ]
        .concat();
        let page2 = format!(r#"[{{"id":4,"updated-at":"{STAMP}"}}]"#).into_bytes();
        let (outcome, events, log) = poll_pages(vec![page1, page2], "");
        let report = outcome.expect("the poll succeeds");
        assert!(report.window_complete);
        assert_eq!(subjects(&events), ["1", "3", "4"]);
        assert_eq!(report.rejected.get("unreadable"), Some(&1));
        assert_eq!(report.rejected.get("not_object"), Some(&1));
        assert_eq!(report.rejected.get("no_id"), Some(&1));
        let r = report
            .recent_rejects
            .iter()
            .find(|r| r.reason.as_str() == "unreadable")
            .unwrap();
        assert_eq!(r.updated_at.as_deref(), Some(STAMP));
        let pages: Vec<&String> = log.iter().filter(|q| q.contains("updated_at")).collect();
        assert_eq!(pages.len(), 3, "{pages:?}");
        assert!(
            pages[1].contains("id%5Bgt%5D=3") && !pages[1].contains("offset"),
            "{}",
            pages[1]
        );
        assert!(pages[2].contains("id%5Bgt%5D=4"), "{}", pages[2]);
        row(
            "unreadable records inside a page (rejected)",
            &["1", "3", "4"],
            &events,
        );
    }

    /// Item 5: a response body over `coupa.max_response_bytes` is refused
    /// while it streams (with or without a `Content-Length`), naming the URL
    /// and the limit; the window stays open and nothing is published.
    #[test]
    fn a_body_over_max_response_bytes_is_refused_naming_url_and_limit() {
        let big = format!(
            "[{}]",
            vec![
                format!(
                    r#"{{"id":1,"updated-at":"{STAMP}","pad":"{}"}}"#,
                    "x".repeat(1000)
                );
                200
            ]
            .join(",")
        );
        for chunked in [false, true] {
            let rt = runtime();
            let script = Arc::new(Mutex::new(Script {
                pages: [big.clone().into_bytes()].into(),
                chunked,
                ..Script::default()
            }));
            let base = rt.block_on(scripted_server(script.clone()));
            let settings = TestConfig::new(&base, Path::new("/nonexistent/state"))
                .objects(&["purchase_orders"])
                .coupa("max_attempts = 3\nmax_response_bytes = \"64KiB\"")
                .settings();
            assert_eq!(settings.coupa.max_response_bytes, 65536);
            let client = CoupaClient::new(&settings.coupa).unwrap();
            let query = vec![("updated_at[gt]".to_string(), "x".to_string())];
            let err = rt
                .block_on(client.list_page("/api/purchase_orders", &query))
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("/api/purchase_orders")
                    && text.contains("max_response_bytes = 65536"),
                "chunked={chunked}: {text}"
            );
            assert!(!err.is_transient(), "not retried at once: {text}");
            assert_eq!(client.stats().requests, 1, "{text}");
        }
        // The default is 32 MiB, and a body under the limit is read.
        let (outcome, events, _) =
            poll_pages(vec![big.into_bytes()], "max_response_bytes = 300000");
        assert!(outcome.unwrap().window_complete);
        assert_eq!(events.len(), 1);
        let defaults = TestConfig::new("http://127.0.0.1:1", Path::new("/x"))
            .objects(&["purchase_orders"])
            .settings();
        assert_eq!(defaults.coupa.max_response_bytes, 32 << 20);
    }
}
