//! Delivery through the outbox with real sinks on real files: a failing
//! sink does not hold back the others and catches up; backpressure pauses
//! the pollers and resumes them; dead letters are listed, replayed and
//! dropped with the CLI.

use crate::support;

use std::time::Duration;

use crate::support::{check_exact, read_jsonl, received, wait_for, Daemon, TestConfig};
use chrono::Utc;
use coupa_changefeed::store::{DeadLetter, ObjectState, OutboxEntry, Settled, Store};

const LIMIT: Duration = Duration::from_secs(60);

fn file_sink(name: &str, path: &std::path::Path) -> String {
    format!(
        "type = \"file\"\nname = \"{name}\"\npath = \"{}\"",
        path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_does_not_hold_back_another_and_catches_up() {
    let sim = support::quiet_sim(30).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    let bad_dir = dir.path().join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    let bad = bad_dir.join("events.jsonl");
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .sink(&file_sink("good", &good))
        .sink(&format!("{}\n", file_sink("bad", &bad)))
        .settings();
    // The directory vanishes after the sink was built: every write fails.
    let daemon = Daemon::start_after(&settings, || std::fs::remove_dir_all(&bad_dir).unwrap());
    wait_for("the good sink gets every record", LIMIT, || {
        read_jsonl(&good).len() >= 30
    })
    .await;
    wait_for("the bad sink reports its failure", LIMIT, || {
        daemon.sink("bad").failing_since.is_some()
    })
    .await;
    assert!(daemon.sink("bad").last_error.unwrap().contains("bad"));
    assert_eq!(daemon.store().cursor("bad").unwrap(), 0);
    assert!(daemon.store().outbox_len() >= 30, "kept for the bad sink");

    std::fs::create_dir(&bad_dir).unwrap();
    wait_for("the bad sink catches up", LIMIT, || {
        read_jsonl(&bad).len() >= 30
    })
    .await;
    wait_for("the outbox is released", LIMIT, || {
        daemon.store().outbox_len() == 0
    })
    .await;
    assert!(daemon.sink("bad").failing_since.is_none());
    daemon.stop().await.unwrap();

    for path in [&good, &bad] {
        let events: Vec<_> = read_jsonl(path).iter().map(received).collect();
        check_exact(&sim, "purchase_orders", &events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_pauses_polling_until_the_sink_catches_up() {
    let sim = support::quiet_sim(60).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("events.jsonl");
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .poll("page_size = 5")
        .sink(&file_sink("out", &out))
        .raw("[delivery]\nmax_backlog = 10")
        .settings();
    let daemon = Daemon::start_after(&settings, || std::fs::remove_dir_all(&out_dir).unwrap());
    let status = daemon.handles.pollers["purchase_orders"].clone();
    wait_for("the poller pauses", LIMIT, || {
        status.lock().unwrap().paused.is_some()
    })
    .await;
    let why = status.lock().unwrap().paused.clone().unwrap();
    assert!(why.contains("max_backlog = 10"), "{why}");
    // Let a few more seconds of polling pass: the outbox does not grow.
    let held = daemon.store().last_seq();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        daemon.store().last_seq(),
        held,
        "nothing polled while paused"
    );
    let backlog = daemon.store().sink_backlog("out").unwrap();
    assert!(
        (10..10 + 5).contains(&backlog),
        "at most one page beyond the limit: {backlog}"
    );

    std::fs::create_dir(&out_dir).unwrap();
    wait_for("every record delivered", LIMIT, || {
        read_jsonl(&out).len() >= 60
    })
    .await;
    wait_for("the pause lifts", LIMIT, || {
        status.lock().unwrap().paused.is_none()
    })
    .await;
    daemon.stop().await.unwrap();
    let events: Vec<_> = read_jsonl(&out).iter().map(received).collect();
    check_exact(&sim, "purchase_orders", &events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_cli_lists_replays_and_drops() {
    let sim = support::quiet_sim(0).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dir.path().join("events.jsonl");
    let config = dir.path().join("c.toml");
    let text = TestConfig::new(&sim.base_url(), &state)
        .objects(&["purchase_orders"])
        .sink(&file_sink("archive", &out))
        .toml();
    std::fs::write(&config, &text).unwrap();
    // Two events the `archive` sink gave up on.
    {
        let store = Store::open(&state).unwrap();
        let entry = |k: &str| OutboxEntry {
            object: "purchase_orders".into(),
            key: k.into(),
            event: format!("{{\"id\":\"ev-{k}\",\"subject\":\"{k}\"}}").into_bytes(),
        };
        store
            .commit_page(
                "purchase_orders",
                &ObjectState::default(),
                &[],
                vec![entry("7"), entry("8")],
            )
            .await
            .unwrap();
        let dead = |seq: u64, k: &str| DeadLetter {
            sink: "archive".into(),
            seq,
            entry: entry(k),
            error: format!("HTTP 400 for record {k}"),
            attempts: 1,
            first_failed: Utc::now(),
            last_failed: Utc::now(),
            superseded_by: None,
        };
        store
            .settle(
                "archive",
                Settled {
                    outbox: vec![1, 2],
                    replayed: vec![],
                    dead: vec![dead(1, "7"), dead(2, "8")],
                    delivered: vec![],
                },
            )
            .await
            .unwrap();
    }
    let (ok, list) = support::cli(&["dlq", "list"], &config);
    assert!(ok, "{list}");
    assert!(
        list.contains("HTTP 400 for record 7") && list.contains("HTTP 400 for record 8"),
        "{list}"
    );
    assert!(list.contains("2 dead letter(s)"), "{list}");
    let (ok, json) = support::cli(&["dlq", "list", "--json", "--sink", "archive"], &config);
    assert!(ok, "{json}");
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["event"]["id"], "ev-7");
    assert_eq!(rows[1]["seq"], 2);

    let (ok, msg) = support::cli(&["dlq", "list", "--sink", "nope"], &config);
    assert!(
        !ok && msg.contains("sink `nope` is not configured"),
        "{msg}"
    );
    let (ok, msg) = support::cli(&["dlq", "drop"], &config);
    assert!(!ok && msg.contains("--all"), "{msg}");

    let (ok, msg) = support::cli(&["dlq", "drop", "2"], &config);
    assert!(ok && msg.contains("1 dead letter(s) dropped"), "{msg}");
    let (ok, msg) = support::cli(&["dlq", "replay", "--sink", "archive"], &config);
    assert!(ok && msg.contains("1 dead letter(s) queued"), "{msg}");
    let (_, list) = support::cli(&["dlq", "list"], &config);
    assert!(list.contains("0 dead letter(s)"), "{list}");

    // The daemon delivers the replayed event, once, and nothing else.
    let settings = coupa_changefeed::config::Settings::from_toml(&text).unwrap();
    let daemon = Daemon::start(&settings);
    wait_for("the replay is delivered", LIMIT, || {
        !read_jsonl(&out).is_empty()
    })
    .await;
    wait_for("the replay queue empties", LIMIT, || {
        daemon.store().replays("archive", 10).unwrap().is_empty()
    })
    .await;
    daemon.stop().await.unwrap();
    let got = read_jsonl(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["id"], "ev-7");
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` (with a visible note) when not root; under `CI=true` it must work.
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root and must mount a tmpfs"
            );
            eprintln!("skipped: root not found (mounting a tmpfs needs it)");
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_mid_batch_is_cut_back_so_the_retry_writes_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let Some(_tmpfs) = Tmpfs::mount(&disk, "2m") else {
        return;
    };
    // Leave 64 KiB free: the 200 events (~1 KiB each) fill it mid-batch.
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![0u8; 2048 * 1024 - 64 * 1024]).unwrap();
    let sim = support::quiet_sim(200).await;
    let out = disk.join("events.jsonl");
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .sink(&file_sink("disk", &out))
        .settings();
    let daemon = Daemon::start(&settings);
    wait_for("the disk fills up", LIMIT, || {
        daemon.handles.sinks.lock().unwrap().contains_key("disk")
            && daemon
                .sink("disk")
                .last_error
                .is_some_and(|e| e.contains("No space left"))
    })
    .await;
    // The failed batch is cut back: only whole lines of earlier batches.
    let before = std::fs::read(&out).unwrap_or_default();
    assert!(
        before.is_empty() || before.ends_with(b"\n"),
        "a failed batch left part of itself behind"
    );
    std::fs::remove_file(&filler).unwrap();
    wait_for("every record delivered", LIMIT, || {
        daemon.store().cursor("disk").unwrap() >= 200
    })
    .await;
    daemon.stop().await.unwrap();
    let got: Vec<coupa_sim::verify::Received> = read_jsonl(&out)
        .iter()
        .map(|e| coupa_sim::verify::Received::from_event(e).unwrap())
        .collect();
    let v = coupa_sim::verify::verify(
        &sim.versions("purchase_orders"),
        &got,
        Duration::from_secs(1),
    );
    println!("{}", coupa_sim::verify::TABLE_HEADER);
    println!("{}", v.row("file sink: disk full mid-batch, then freed"));
    assert!(v.is_clean(), "{v}");
    assert_eq!(v.events, 200, "each event once");
}
