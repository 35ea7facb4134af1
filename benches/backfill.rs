//! Backfill: the whole daemon (`app::build` + `run_built`, file sink)
//! starting before 100,000 purchase orders spread over the past year,
//! against a simulator with 200 ms latency and Coupa's 25 requests/s limit.
//! Prints records/s against the 1,250/s ceiling (25 req/s × 50 records),
//! and the requests sent. Sets `[poll] backfill_concurrency` when the
//! config knows the key. Stops at a time cap and reports the rate so far.
//! `cargo bench --bench backfill`; env: `BENCH_RECORDS` (100000),
//! `BENCH_SECONDS` (cap, 100), `BENCH_CONCURRENCY` (8), `BENCH_RPS`
//! (the client's `requests_per_second`, 25), `BENCH_LATENCY_MS` (200).

#[path = "../tests/it/support/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use coupa_changefeed::config::Settings;
use coupa_changefeed::coupa::record;
use coupa_sim::{SimConfig, Simulator};
use serde_json::json;

const OBJECT: &str = "purchase_orders";
/// Coupa's documented limit and page size: the most any client can read.
const CEILING: f64 = 25.0 * 50.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = support::env_usize("BENCH_RECORDS", 100_000);
    let cap = Duration::from_secs(support::env_usize("BENCH_SECONDS", 100) as u64);
    let concurrency = support::env_usize("BENCH_CONCURRENCY", 8);
    let rps = support::env_usize("BENCH_RPS", 25);
    let latency = Duration::from_millis(support::env_usize("BENCH_LATENCY_MS", 200) as u64);

    let sim = Simulator::start(SimConfig {
        // Coupa's 25 req/s leaky bucket (burst 20), answering 429 beyond it.
        rate_limit: SimConfig::default().rate_limit,
        ..common::sim_config()
    })
    .await?;
    // Spread over a year, ids ascending with time as on a real instance;
    // the daemon starts a day before the oldest.
    let now = Utc::now().trunc_subsecs(0);
    let span = chrono::Duration::days(365);
    let oldest = now - span;
    support::create_pos(&sim, n, |i| {
        let offset = span.num_seconds() * (i as i64 - 1) / n.max(1) as i64;
        let t = record::rfc3339(oldest + chrono::Duration::seconds(offset));
        json!({"created-at": t, "updated-at": t})
    });
    let sim_rss = support::rss_mib();
    sim.set_latency(latency);

    let dir = tempfile::tempdir()?;
    let out = dir.path().join("events.jsonl");
    let config = |extra_poll: &str| {
        common::TestConfig::new(&sim.base_url(), &dir.path().join("state"))
            .objects(&[OBJECT])
            .coupa(&format!(
                "requests_per_second = {rps}\ntimeout = \"10s\"\nmax_backoff = \"2s\""
            ))
            .poll(&format!(
                "start_from = \"{}\"\n{extra_poll}",
                record::rfc3339(oldest - chrono::Duration::days(1))
            ))
            .file_sink(&out)
            .raw("[delivery]\nshutdown_timeout = \"5s\"")
    };
    let sliced = format!("backfill_concurrency = {concurrency}");
    let (settings, note) = match Settings::from_toml(&config(&sliced).toml()) {
        Ok(s) => (s, format!("[poll] {sliced}")),
        Err(e) => (
            config("").settings(),
            format!("one request at a time: the config rejects backfill_concurrency ({e})"),
        ),
    };

    println!(
        "backfill bench: {n} purchase orders over a year, {} ms latency, simulator limit 25 req/s \
         (burst 20), client requests_per_second = {rps}, {note}; {}",
        latency.as_millis(),
        support::machine()
    );
    println!(
        "  simulator RSS with the records: {sim_rss:.0} MiB ({:.1} KiB per record)",
        sim_rss * 1024.0 / n.max(1) as f64
    );
    let before = sim.requests().len();
    let started = Instant::now();
    let daemon = common::Daemon::start(&settings);
    let store = daemon.store().clone();
    let mut note_at = Instant::now();
    let (mut last_events, mut last_at) = (0u64, Instant::now());
    let mut done_at = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let events = store.last_seq();
        if events >= n as u64 {
            done_at = Some(started.elapsed());
            break;
        }
        if started.elapsed() >= cap {
            break;
        }
        if note_at.elapsed() >= Duration::from_secs(10) {
            let reqs = sim.requests().len() - before;
            eprintln!(
                "  … {:>5.1} s: {events:>7} records ({:>5.1} %), {:>5.0} records/s over the last 10 s, {reqs} requests",
                started.elapsed().as_secs_f64(),
                100.0 * events as f64 / n as f64,
                support::per_sec(events - last_events, last_at.elapsed()),
            );
            (last_events, last_at, note_at) = (events, Instant::now(), Instant::now());
        }
    }
    let elapsed = done_at.unwrap_or_else(|| started.elapsed());
    let events = store.last_seq();
    let log = sim.requests();
    let mine = &log[before..];
    let limited = mine.iter().filter(|r| r.status == 429).count();
    let other_errors = mine
        .iter()
        .filter(|r| r.status >= 400 && r.status != 429)
        .count();
    daemon.stop().await?;
    let rate = support::per_sec(events, elapsed);

    match done_at {
        Some(_) => println!("  all {n} records committed in {:.1} s", elapsed.as_secs_f64()),
        None => println!(
            "  stopped at the {} s cap with {events} of {n} records ({:.1} %); all would take ~{:.0} s",
            cap.as_secs(),
            100.0 * events as f64 / n as f64,
            n as f64 / rate.max(1e-9),
        ),
    }
    println!(
        "  {rate:.0} records/s = {:.1} % of the {CEILING:.0}/s ceiling (goal ≥ 90 %)",
        100.0 * rate / CEILING
    );
    println!(
        "  {} requests sent ({:.1}/s, {:.1} records per request; {} pages of 50 is the least), \
         {limited} answered 429, {other_errors} other errors",
        mine.len(),
        support::per_sec(mine.len() as u64, elapsed),
        events as f64 / mine.len().max(1) as f64,
        (events as usize).div_ceil(50),
    );
    sim.shutdown().await;
    Ok(())
}
