//! Pipeline throughput: records/s from the zero-latency simulator through
//! the poller, the sled outbox and the file sink, and the process's peak
//! RSS. Prints figures; asserts nothing. `cargo bench --bench pipeline`
//! (`BENCH_RECORDS=N` to change the size).

use std::time::{Duration, Instant};

use coupa_changefeed::config::Settings;
use coupa_changefeed::coupa::client::CoupaClient;
use coupa_changefeed::delivery;
use coupa_changefeed::poller::Poller;
use coupa_changefeed::shutdown;
use coupa_changefeed::sim::{SimConfig, Simulator};
use coupa_changefeed::sink::AnySink;
use coupa_changefeed::store::Store;

/// Current RSS, MiB.
fn rss_mib() -> f64 {
    status_kib("VmRSS:") / 1024.0
}

/// Resets the kernel's peak-RSS mark so the next reading covers only what follows.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn status_kib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let sim = Simulator::start(SimConfig {
        api_key: Some("bench".into()),
        rate_limit: None,
        ..SimConfig::default()
    })
    .await?;
    for _ in 0..n {
        sim.create("purchase_orders", serde_json::json!({}));
    }
    let sample = serde_json::to_vec(&sim.get("purchase_orders", 1).unwrap())?.len();
    sim.set_clock_offset(chrono::Duration::seconds(10));
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("events.jsonl");
    let text = format!(
        r#"
[coupa]
base_url = "{}"
api_key = "bench"
requests_per_second = 100000
[state]
dir = "{}"
[poll]
start_from = "2000-01-01T00:00:00Z"
settle = "1s"
[[objects]]
name = "purchase_orders"
[[sinks]]
type = "file"
path = "{}"
"#,
        sim.base_url(),
        dir.path().join("state").display(),
        out.display()
    );
    let settings = Settings::from_toml(&text)?;
    let store = Store::open(&settings.state.dir)?;
    let client = CoupaClient::new(&settings.coupa)?;
    let plan = settings.plans()?.remove(0);
    let poller = Poller::new(plan, client.clone(), store.clone());
    let (trigger, listener) = shutdown::channel();
    let sink = AnySink::from_settings(&settings.sinks[0])?;
    let names = std::sync::Arc::new(vec![settings.sinks[0].name()]);
    let drain =
        tokio::spawn(delivery::Drain::new(sink, store.clone(), names).run(listener.clone()));

    // The simulator's share: the same pages without the daemon's work.
    let raw = Instant::now();
    let mut last = 0u64;
    loop {
        let q = vec![
            (
                "updated_at[gt_or_eq]".to_string(),
                "2000-01-01T00:00:00+00:00".to_string(),
            ),
            ("id[gt]".to_string(), last.to_string()),
            ("limit".to_string(), "50".to_string()),
        ];
        let page = client.list("/api/purchase_orders", &q).await?;
        match page
            .last()
            .and_then(coupa_changefeed::coupa::record::numeric_id)
        {
            Some(id) => last = id,
            None => break,
        }
    }
    let raw = raw.elapsed();
    println!(
        "  fetch only (simulator + client): {:>9.0} records/s",
        n as f64 / raw.as_secs_f64()
    );

    let baseline = rss_mib();
    reset_peak();
    let start = Instant::now();
    let report = poller.poll_once(&listener).await?;
    let polled = start.elapsed();
    while store.cursor("file")? < report.events {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = start.elapsed();
    trigger.fire();
    drain.await?.map_err(anyhow::Error::msg)?;
    let lines = std::fs::read_to_string(&out)?.lines().count();
    assert_eq!(lines as u64, report.events);
    println!(
        "pipeline bench: {n} purchase orders of ~{sample} bytes, {} requests",
        report.requests
    );
    println!(
        "  poll (fetch + detect + commit): {:>10.0} records/s",
        n as f64 / polled.as_secs_f64()
    );
    // Fetching and committing are sequential, so the daemon's own share is
    // roughly the poll time less the fetch-only time.
    let own = polled.saturating_sub(raw).as_secs_f64().max(1e-9);
    println!(
        "  detect + commit alone (approx.): {:>9.0} records/s",
        n as f64 / own
    );
    println!(
        "  end to end (to file sink):      {:>10.0} records/s",
        n as f64 / total.as_secs_f64()
    );
    let peak = peak_rss_mib();
    println!("  RSS before the run (simulator and its data): {baseline:.1} MiB");
    println!(
        "  peak RSS during the run: {peak:.1} MiB (+{:.1} MiB for the daemon's work)",
        peak - baseline
    );
    sim.shutdown().await;
    Ok(())
}
