//! Time-sliced backfill against the simulator with real sled dirs: a long,
//! dense window is read by concurrent slices under the one rate limit,
//! loses nothing while records change, resumes every slice after a crash,
//! and shows its progress in `/status`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{
    check, check_exact, crash_poll_after, outbox, read_jsonl, received, sim_config, wait_for,
    Daemon, Rig, TestConfig,
};
use chrono::{DateTime, FixedOffset, SubsecRound, Utc};
use coupa_sim::{SimConfig, Simulator};
use serde_json::json;

fn stamp(t: DateTime<Utc>) -> String {
    t.with_timezone(&FixedOffset::east_opt(5 * 3600 + 1800).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// `n` records of `object` spread evenly over the `days` before now.
fn spread(sim: &Simulator, object: &str, n: i64, days: i64) {
    let now = sim.now().trunc_subsecs(0);
    let span = days * 86_400;
    for i in 0..n {
        let t = stamp(now - chrono::Duration::seconds(span - span * i / n));
        sim.create(object, json!({"created-at": t, "updated-at": t}));
    }
}

/// The distinct `updated_at[gt_or_eq]` lower bounds list requests used:
/// one per slice that was paged.
fn slice_bounds(sim: &Simulator, path: &str) -> BTreeSet<String> {
    sim.requests()
        .iter()
        .filter(|r| r.path == path)
        .filter_map(|r| {
            r.query
                .split('&')
                .find(|kv| kv.starts_with("updated_at%5Bgt_or_eq%5D="))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn a_dense_window_is_read_by_concurrent_slices_and_loses_nothing() {
    let mut cfg = sim_config();
    cfg.latency = Duration::from_millis(150);
    let rig = Rig::with(
        cfg,
        &["invoices"],
        "requests_per_second = 20",
        "backfill_concurrency = 4\nbackfill_slice = \"1m\"",
    )
    .await;
    spread(&rig.sim, "invoices", 1500, 20);
    // Edits while the backfill runs: each moves a record past the window.
    let sim = rig.sim.clone_handle();
    let editor = tokio::spawn(async move {
        for k in 0..40u64 {
            sim.update(
                "invoices",
                1 + k * 37,
                json!({"invoice-number": format!("EDIT-{k}")}),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let report = rig.catch_up().await;
    editor.await.unwrap();
    let report = {
        let mut r = report;
        r.add(&rig.catch_up().await);
        r
    };
    let delivered = outbox(&rig.store);
    // Every final version, no phantom, no duplicate. (An edited record's
    // first version may be superseded before any slice reads it.)
    let got = check(&rig.sim, "invoices", &delivered);
    assert!(got.len() >= 1500, "{} versions", got.len());

    let bounds = slice_bounds(&rig.sim, "/api/invoices");
    assert!(bounds.len() >= 4, "the window was split: {bounds:?}");
    // Sequential requests arrive at least 150 ms apart (the latency);
    // concurrent slices put several much closer together.
    let mut at: Vec<_> = rig
        .sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/invoices")
        .map(|r| r.at)
        .collect();
    at.sort();
    let close = at
        .windows(2)
        .filter(|w| w[1] - w[0] < Duration::from_millis(100))
        .count();
    assert!(
        close >= 5,
        "requests overlap: {close} of {} gaps under 100 ms",
        at.len()
    );
    // Splits cost a few extra requests, not a re-read.
    let pages = 1500u64.div_ceil(50);
    assert!(
        report.requests < pages * 2 + 40,
        "{} requests for {pages} pages",
        report.requests
    );
    let state = rig.store.object_state("invoices").unwrap();
    assert!(state.window.is_none(), "window complete");
}

#[tokio::test]
async fn a_crash_mid_backfill_resumes_every_slice_without_repeats() {
    let mut cfg = sim_config();
    cfg.latency = Duration::from_millis(40);
    let mut rig = Rig::with(
        cfg,
        &["purchase_orders"],
        "",
        "backfill_concurrency = 4\nbackfill_slice = \"1m\"",
    )
    .await;
    spread(&rig.sim, "purchase_orders", 1000, 10);
    rig.sim.set_clock_offset(chrono::Duration::seconds(5));
    let mut crashed_with_slices = 0;
    // Each reopened client first learns Coupa's clock (3 agreeing `Date`
    // headers): three requests more before the pages.
    for more in [9usize, 12, 15] {
        crash_poll_after(&mut rig, more, Duration::from_secs(20)).await;
        let state = rig.store.object_state("purchase_orders").unwrap();
        let window = state.window.expect("a window was open at the crash");
        if window.slices.len() > 1 {
            crashed_with_slices += 1;
            // Positions survive: some slice had committed pages.
            assert!(window.slices.iter().any(|s| s.last_id.is_some() || s.done));
        }
    }
    assert!(crashed_with_slices > 0, "a crash hit a split window");
    let resumed = rig.catch_up().await;
    let delivered = outbox(&rig.store);
    assert_eq!(delivered.len(), 1000, "every record exactly once");
    assert_eq!(
        check_exact(&rig.sim, "purchase_orders", &delivered).len(),
        1000
    );
    // Resuming did not start over: pages committed before the crashes
    // were not read again (repeats: at most the pages in flight).
    assert!(resumed.records < 1000, "{resumed:?}");
    assert!(resumed.repeats <= 4 * 50, "{resumed:?}");
}

#[tokio::test]
async fn a_sparse_long_window_costs_one_request() {
    let rig = Rig::with(sim_config(), &["contracts"], "", "backfill_concurrency = 8").await;
    spread(&rig.sim, "contracts", 5, 300);
    rig.sim.set_clock_offset(chrono::Duration::seconds(5));
    let r = rig.poll().await;
    assert!(r.window_complete);
    assert_eq!(r.requests, 2, "one page of 5, one empty page: {r:?}");
    check_exact(&rig.sim, "contracts", &outbox(&rig.store));
}

#[tokio::test]
async fn backfill_progress_shows_in_status_and_clears_when_done() {
    let sim = Simulator::start(SimConfig {
        latency: Duration::from_millis(100),
        ..sim_config()
    })
    .await
    .unwrap();
    spread(&sim, "invoices", 2000, 30);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let settings = TestConfig::new(&sim.base_url(), dir.path())
        .objects(&["invoices"])
        .poll("backfill_concurrency = 4\nbackfill_slice = \"1m\"")
        .file_sink(&out)
        .settings();
    let daemon = Daemon::start(&settings);
    let url = format!("http://{}/status", daemon.handles.server_addr.unwrap());
    let status = || async {
        match reqwest::get(&url).await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    };
    let mut seen = None;
    for _ in 0..300 {
        let s = status().await;
        let b = &s["objects"][0]["backfill"];
        if b["slices"].as_u64().is_some_and(|n| n >= 2) && b["records"].as_u64() > Some(0) {
            // The open window shows its slices too.
            let w = &s["objects"][0]["window"];
            assert!(w["slices"].as_u64() >= Some(2), "{w}");
            assert!(w["slices_done"].as_u64() <= w["slices"].as_u64(), "{w}");
            seen = Some(b.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = seen.expect("backfill progress in /status within 30 s");
    let percent = b["percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&percent), "{b}");
    assert!(
        b["from"].as_str().is_some() && b["to"].as_str().is_some(),
        "{b}"
    );
    wait_for("every record delivered", Duration::from_secs(60), || {
        read_jsonl(&out).len() >= 2000
    })
    .await;
    let mut done = false;
    for _ in 0..100 {
        if status().await["objects"][0]["backfill"].is_null() {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "progress cleared once the window completes");
    daemon.stop().await.unwrap();
    let delivered: Vec<_> = read_jsonl(&out).iter().map(received).collect();
    check_exact(&sim, "invoices", &delivered);
}
