//! Memory with a large backlog: the outbox is filled with 1,000,000
//! CloudEvents of ~2.5 KB (a ~2.1 KB purchase order each, built with
//! `event.rs`), through `Store::commit_page`, in a child process so its
//! allocations do not count. This process then (a) reopens the store and
//! runs a webhook sink that is down (nothing listens) for a few seconds,
//! (b) drains every event through `delivery::Drain` to a file sink, (c)
//! printing RSS every second. Prints figures; asserts only that all
//! events arrive. `cargo bench --bench memory` (`BENCH_EVENTS=N`;
//! `BENCH_MEMORY_DIR=DIR`: the state dir to use, filled if absent; the
//! run drains it).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use coupa_changefeed::config::Settings;
use coupa_changefeed::delivery::Drain;
use coupa_changefeed::event::{canonical_json, content_hash, ChangeEvent, ChangeKind, Origin};
use coupa_changefeed::shutdown;
use coupa_changefeed::sink::AnySink;
use coupa_changefeed::store::{ObjectState, OutboxEntry, Store};
use coupa_sim::Simulator;
use support::{peak_rss_mib, reset_peak, rss_mib};

const OBJECT: &str = "purchase_orders";
/// Set in the child process: the state dir to fill.
const FILL_ENV: &str = "MEMORY_BENCH_FILL_DIR";
/// Events per fill transaction (bigger than a poller's page: the fill is setup, not measured).
const FILL_PAGE: usize = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = support::env_usize("BENCH_EVENTS", 1_000_000);
    if let Ok(dir) = std::env::var(FILL_ENV) {
        return fill(Path::new(&dir), n).await;
    }
    let work = tempfile::tempdir()?;
    // `BENCH_MEMORY_DIR`: a state dir to reuse (filled if absent; the
    // drain empties it), to repeat the measurements without the fill.
    let state = std::env::var_os("BENCH_MEMORY_DIR")
        .map_or_else(|| work.path().join("state"), std::path::PathBuf::from);
    println!(
        "memory bench: {n} events waiting in the outbox, {}",
        support::machine()
    );
    if !state.exists() {
        let started = Instant::now();
        let status = std::process::Command::new(std::env::current_exe()?)
            .env(FILL_ENV, &state)
            .env("BENCH_EVENTS", n.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "the fill process failed: {status}");
        println!(
            "  filled in {:.0} s (child process)",
            started.elapsed().as_secs_f64()
        );
    }
    println!("  state dir {:.0} MiB on disk", dir_mib(&state));

    // (a) reopen, and a sink that is down holding the first batch.
    support::trim_heap();
    let base = rss_mib();
    reset_peak();
    let t = Instant::now();
    let store = Store::open(&state)?;
    let open_secs = t.elapsed().as_secs_f64();
    let after_open = rss_mib();
    let backlog = store.backlog(&["file".to_string()])?;
    anyhow::ensure!(backlog == n as u64, "backlog {backlog}, expected {n}");
    // A port nobody listens on: every attempt is refused (transient).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let down = toml_settings(
        work.path(),
        &format!(
            "type = \"webhook\"\nurl = \"http://{closed}/hook\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntimeout = \"1s\""
        ),
    )?;
    run_for(&store, &down, Duration::from_secs(5)).await?;
    let down_peak = peak_rss_mib();
    println!("  (a) process RSS before opening the store: {base:.1} MiB");
    println!(
        "      after opening it ({open_secs:.1} s): {after_open:.1} MiB; webhook sink down for 5 s: \
         RSS {:.1} MiB, peak {down_peak:.1} MiB",
        rss_mib()
    );

    // (b) + (c): drain everything to a file, sampling RSS every second.
    let out = work.path().join("events.jsonl");
    let file = toml_settings(
        work.path(),
        &format!("type = \"file\"\npath = \"{}\"", out.display()),
    )?;
    support::trim_heap();
    reset_peak();
    let drain_base = rss_mib();
    let sink = AnySink::from_settings(&file.sinks[0])?;
    let (trigger, listener) = shutdown::channel();
    let task = tokio::spawn(
        Drain::new(sink, store.clone(), Arc::new(vec!["file".to_string()])).run(listener),
    );
    println!("  (c) while draining to the file sink, every second:");
    println!(
        "      {:>5} {:>9} {:>9} {:>9} {:>9}",
        "s", "delivered", "events/s", "RSS MiB", "peak MiB"
    );
    let t = Instant::now();
    let mut samples: Vec<f64> = Vec::new();
    let mut last = 0u64;
    let deadline = t + Duration::from_secs(1800);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cursor = store.cursor("file")?;
        let rss = rss_mib();
        samples.push(rss);
        println!(
            "      {:>5.0} {cursor:>9} {:>9} {rss:>9.1} {:>9.1}",
            t.elapsed().as_secs_f64(),
            cursor - last,
            peak_rss_mib()
        );
        last = cursor;
        if cursor >= n as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the drain did not finish in 30 min"
        );
    }
    let drain_secs = t.elapsed().as_secs_f64();
    trigger.fire();
    task.await?.map_err(anyhow::Error::msg)?;
    let lines = count_lines(&out)?;
    anyhow::ensure!(lines == n, "{lines} lines in the file, expected {n}");
    let peak = peak_rss_mib();
    let (lo, hi) = samples
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    println!(
        "  (b) drained {n} events in {drain_secs:.0} s ({:.0} events/s): peak RSS {peak:.1} MiB \
         (+{:.1} MiB over the {drain_base:.1} MiB before the drain); sampled RSS {lo:.1} – {hi:.1} MiB",
        n as f64 / drain_secs,
        peak - drain_base
    );
    println!(
        "  outbox left: {} entries; state dir now {:.0} MiB on disk",
        store.outbox_len(),
        dir_mib(&state)
    );
    println!("  goal: peak RSS < 64 MiB with 1 M events in the outbox, flat while draining");
    Ok(())
}

/// A config with one sink (and the state dir unused: the store is opened directly).
fn toml_settings(dir: &Path, sink: &str) -> anyhow::Result<Settings> {
    let text = format!(
        "[coupa]\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"unused\"\n\
         [state]\ndir = \"{}\"\n[[objects]]\nname = \"{OBJECT}\"\n[[sinks]]\n{sink}\n",
        dir.join("unused").display()
    );
    Ok(Settings::from_toml(&text)?)
}

/// Runs the configured sink's drain for `how_long`, then stops it.
async fn run_for(store: &Store, settings: &Settings, how_long: Duration) -> anyhow::Result<()> {
    let sink = AnySink::from_settings(&settings.sinks[0])?;
    let name = settings.sinks[0].name();
    let (trigger, listener) = shutdown::channel();
    let task = tokio::spawn(Drain::new(sink, store.clone(), Arc::new(vec![name])).run(listener));
    tokio::time::sleep(how_long).await;
    trigger.fire();
    task.await?.map_err(anyhow::Error::msg)?;
    Ok(())
}

/// The child's job: `n` realistic events into a fresh store at `dir`.
async fn fill(dir: &Path, n: usize) -> anyhow::Result<()> {
    // A generated purchase order with two lines (~2.1 KB, the mean),
    // renumbered for every event.
    let sim = Simulator::start(Default::default()).await?;
    support::create_pos(&sim, 20, |_| serde_json::json!({}));
    let lines = |id| {
        sim.get(OBJECT, id)
            .and_then(|r| r.get("order-lines")?.as_array().map(Vec::len))
    };
    let pick = (1..=20).find(|id| lines(*id) == Some(2)).unwrap_or(1);
    let mut template = sim.get(OBJECT, pick).expect("created");
    sim.shutdown().await;
    let origin = Origin {
        base_url: "https://acme.coupahost.com".into(),
        object: OBJECT.into(),
        singular: "purchase_order".into(),
        path: format!("/api/{OBJECT}"),
    };
    let store = Store::open(dir)?;
    let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse()?;
    let started = Instant::now();
    let mut note = Instant::now();
    let mut bytes = 0usize;
    for first in (1..=n as u64).step_by(FILL_PAGE) {
        let last = (first + FILL_PAGE as u64 - 1).min(n as u64);
        let events: Vec<OutboxEntry> = (first..=last)
            .map(|id| {
                template.insert("id".into(), id.into());
                template.insert("po-number".into(), (10_000 + id).to_string().into());
                let data = canonical_json(&template);
                let hash = content_hash(&data);
                let at = t0 + chrono::Duration::seconds(id as i64);
                let ev = ChangeEvent::new(
                    &origin,
                    &id.to_string(),
                    Some(at),
                    &hash,
                    ChangeKind::Created,
                    data,
                );
                let event = ev.to_json();
                bytes += event.len();
                OutboxEntry {
                    object: OBJECT.into(),
                    key: id.to_string(),
                    event,
                }
            })
            .collect();
        store
            .commit_page(OBJECT, &ObjectState::default(), &[], events)
            .await?;
        if note.elapsed() >= Duration::from_secs(10) {
            eprintln!("  … {last} of {n} events written");
            note = Instant::now();
        }
    }
    store.flush().await?;
    println!(
        "  fill: {n} events of ~{} bytes ({:.0} MiB) in {:.0} s, 1,000 per commit; writing them peaked at \
         {:.0} MiB RSS (what a daemon polling while its sink is down holds)",
        bytes / n.max(1),
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    Ok(())
}

fn dir_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p).map_or(0, |rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    walk(dir) as f64 / 1048576.0
}

fn count_lines(path: &Path) -> anyhow::Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(lines);
        }
        lines += buf[..k].iter().filter(|b| **b == b'\n').count();
    }
}
