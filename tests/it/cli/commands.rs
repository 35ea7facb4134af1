//! The real binaries: `demo` prints CloudEvents within seconds and stops
//! on SIGTERM with exit 0; `run` against `coupa-sim` writes a JSON Lines
//! file; `objects` and `state show|reset` work; bad config fails naming
//! the key.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{sigterm, spawn_run, wait_exit, Reap, TestConfig};

const BIN: &str = env!("CARGO_BIN_EXE_coupa-changefeed");
const SIM: &str = env!("CARGO_BIN_EXE_coupa-sim");

#[test]
fn demo_prints_cloudevents_within_ten_seconds_and_stops_on_sigterm() {
    let child = Command::new(BIN)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut events = Vec::new();
    while events.len() < 5 {
        let left = Duration::from_secs(10).saturating_sub(start.elapsed());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {} events within 10 s", events.len()));
        let v: serde_json::Value = serde_json::from_str(&line).expect("each stdout line is JSON");
        events.push(v);
    }
    for e in &events {
        assert_eq!(e["specversion"], "1.0");
        assert!(e["type"].as_str().unwrap().starts_with("coupa."));
        assert_eq!(e["id"].as_str().unwrap().len(), 64);
        assert!(e["data"]["id"].is_number());
    }
    sigterm(&child.0);
    let status = wait_exit(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "demo exits 0 on SIGTERM, got {status}");
}

#[test]
fn objects_lists_the_catalogue() {
    let out = Command::new(BIN).arg("objects").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 24, "header + 23 objects:\n{text}");
    assert!(text.contains("/api/suppliers/{supplier_id}/supplier_sites"));
    let out = Command::new(BIN)
        .args(["objects", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 23);
}

#[test]
fn bad_config_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[coupa]\nbase_url = \"https://acme.coupahost.com\"\napi_key = \"k-123-secret\"\n[[objects]]\nname = \"purchase_orders\"\nschedule = \"every day\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("objects[0].schedule") && err.contains("every day"),
        "{err}"
    );
    assert!(!err.contains("k-123-secret"), "{err}");
}

/// `run` against the real `coupa-sim` binary with a file sink; SIGTERM;
/// `state show`; `state reset --to` replays on the next run.
#[test]
fn run_against_coupa_sim_writes_events_and_state_commands_work() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sim = Command::new(SIM)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--records",
            "5",
            "--change-rate",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _sim = Reap(sim);
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "coupa-sim did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("c.toml");
    let text = TestConfig::new(&base, &dir.path().join("state"))
        .oauth("coupa-sim", "coupa-sim-secret")
        .coupa("requests_per_second = 20")
        .poll("settle = \"1s\"")
        .objects(&["purchase_orders"])
        .file_sink(&events)
        .toml();
    std::fs::write(&config, text).unwrap();
    let run = |expect: usize| {
        let mut child = spawn_run(&config, Stdio::piped());
        let start = Instant::now();
        loop {
            let n = std::fs::read_to_string(&events)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if n >= expect {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "only {n} of {expect} events"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sigterm(&child.0);
        let status = wait_exit(&mut child.0, Duration::from_secs(20));
        assert!(status.success(), "run exits 0 on SIGTERM: {status}");
        let mut log = String::new();
        std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
        assert!(!log.contains("coupa-sim-secret"), "secret in logs");
    };
    run(5);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines
        .iter()
        .all(|e| e["source"] == format!("{base}/api/purchase_orders")));

    let show = Command::new(BIN)
        .args(["state", "show", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success() && text.contains("purchase_orders"),
        "{text}"
    );

    let reset = Command::new(BIN)
        .args([
            "state",
            "reset",
            "purchase_orders",
            "--to",
            "2000-01-01T00:00:00Z",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    // The replay repeats the same versions with the same event ids.
    run(10);
    let text = std::fs::read_to_string(&events).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids[..5], ids[5..10]);
}

/// A stdout sink whose reader goes away (`| head`): the daemon stops with
/// an error instead of retrying for ever, and keeps what it could not send.
#[test]
fn a_closed_stdout_stops_the_daemon_and_keeps_the_events() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // More than a pipe buffer holds, so a write meets the closed pipe.
    let sim = rt.block_on(support::quiet_sim(200));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders", "invoices"])
        .toml()
        + "[[sinks]]\ntype = \"file\"\npath = \"-\"\n";
    std::fs::write(&config, text).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    {
        let stdout = child.0.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("one event").unwrap();
        assert!(first.contains("\"specversion\":\"1.0\""));
        // Dropping the reader closes the pipe.
    }
    let status = wait_exit(&mut child.0, Duration::from_secs(30));
    assert!(!status.success(), "a closed stdout is an error exit");
    let mut log = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("cannot continue"), "{log}");
    let show = Command::new(BIN)
        .args(["state", "show", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    let waiting: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("outbox: ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(waiting > 0, "undelivered events are kept: {text}");
}

/// Issue 13.10: a sink removed and added again finds its cursor below the
/// oldest event still held. The daemon names the range it missed in the
/// log and `/status`; `state show` lists it; `state reset-sink` moves the
/// cursor (and refuses what it cannot do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_added_sink_reports_what_it_missed_and_state_reset_sink_moves_its_cursor() {
    use coupa_changefeed::store::{ObjectState, OutboxEntry, Settled, Store};
    let sim = support::quiet_sim(0).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let old = dir.path().join("old.jsonl");
    let port = support::free_port();
    let file_sink = |name: &str, path: &std::path::Path| {
        format!(
            "type = \"file\"\nname = \"{name}\"\npath = \"{}\"",
            path.display()
        )
    };
    let config = dir.path().join("c.toml");
    let text = TestConfig::new(&sim.base_url(), &state)
        .objects(&["purchase_orders"])
        .listen(&format!("127.0.0.1:{port}"))
        .sink(&file_sink("keep", &dir.path().join("keep.jsonl")))
        .sink(&file_sink("old", &old))
        .toml();
    std::fs::write(&config, text).unwrap();
    // `old` settled 1..=2 and was removed; `keep` alone settled 1..=5,
    // which were released; 6..=8 are still held.
    {
        let store = Store::open(&state).unwrap();
        let entries = |r: std::ops::RangeInclusive<u64>| {
            r.map(|n| OutboxEntry {
                object: "purchase_orders".into(),
                key: n.to_string(),
                event: format!("{{\"id\":\"ev-{n}\",\"subject\":\"{n}\"}}").into_bytes(),
            })
            .collect::<Vec<_>>()
        };
        let none = ObjectState::default();
        let commit = |e| store.commit_page("purchase_orders", &none, &[], e);
        let settled = |seqs: Vec<u64>| Settled {
            outbox: seqs,
            ..Settled::default()
        };
        commit(entries(1..=5)).await.unwrap();
        store.settle("old", settled(vec![1, 2])).await.unwrap();
        store
            .settle("keep", settled((1..=5).collect()))
            .await
            .unwrap();
        assert_eq!(store.release(&["keep".to_string()]).unwrap(), 5);
        commit(entries(6..=8)).await.unwrap();
    }
    let (ok, show) = support::cli(&["state", "show"], &config);
    assert!(ok && show.contains("missed 3..=5"), "{show}");

    let mut child = spawn_run(&config, Stdio::piped());
    let status_url = format!("http://127.0.0.1:{port}/status");
    let deadline = Instant::now() + Duration::from_secs(30);
    let missed = loop {
        let sinks = match reqwest::get(&status_url).await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["sinks"].clone(),
            Err(_) => serde_json::Value::Null,
        };
        let old = sinks
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "old").cloned());
        if let Some(o) = old {
            break o["missed"].clone();
        }
        assert!(Instant::now() < deadline, "no sink `old` in /status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(missed, serde_json::json!({"from": 3, "to": 5}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while support::read_jsonl(&old).len() < 3 {
        assert!(Instant::now() < deadline, "the held events reach `old`");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child.0);
    assert!(wait_exit(&mut child.0, Duration::from_secs(20)).success());
    let mut log = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("events 3..=5 were released while this sink was not configured"),
        "{log}"
    );
    let got: Vec<String> = support::read_jsonl(&old)
        .iter()
        .map(|e| e["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["6", "7", "8"]);

    let (ok, show) = support::cli(&["state", "show"], &config);
    assert!(
        ok && show.contains("missed 3..=5"),
        "kept until acknowledged: {show}"
    );
    let (ok, msg) = support::cli(&["state", "reset-sink", "old", "--to", "oldest"], &config);
    assert!(ok && msg.contains("events 3..=5 are gone"), "{msg}");
    let (ok, show) = support::cli(&["state", "show"], &config);
    assert!(ok && !show.contains("missed"), "{show}");
    let (ok, msg) = support::cli(&["state", "reset-sink", "old"], &config);
    assert!(ok && msg.contains("missed nothing"), "{msg}");
    let (ok, msg) = support::cli(&["state", "reset-sink", "old", "--to", "99"], &config);
    assert!(!ok && msg.contains("beyond the last event (8)"), "{msg}");
    let (ok, msg) = support::cli(&["state", "reset-sink", "old", "--to", "4"], &config);
    assert!(
        !ok && msg.contains("below the oldest event still held (9)"),
        "{msg}"
    );
    let (ok, msg) = support::cli(&["state", "reset-sink", "old", "--to", "x"], &config);
    assert!(!ok && msg.contains("--to `x`"), "{msg}");
    let (ok, msg) = support::cli(&["state", "reset-sink", "nope"], &config);
    assert!(
        !ok && msg.contains("sink `nope` is not configured"),
        "{msg}"
    );
}
