//! Pipeline throughput: records/s from the zero-latency in-process
//! simulator through the poller, the sled outbox and each sink (file, a
//! webhook receiver on 127.0.0.1 answering 204, librdkafka's mock
//! cluster), with ~2 KB purchase orders (1–3 lines, custom fields, as
//! the simulator generates them); and where the time goes (fetch,
//! encode, commit, sink). Prints figures; asserts only that every event
//! arrived. `cargo bench --bench pipeline` (`BENCH_RECORDS=N`, default
//! 20,000).

#[path = "../tests/it/support/mod.rs"]
mod common;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use coupa_changefeed::config::Settings;
use coupa_changefeed::coupa::client::CoupaClient;
use coupa_changefeed::coupa::record;
use coupa_changefeed::delivery::Drain;
use coupa_changefeed::event::{canonical_json, content_hash, ChangeEvent, ChangeKind, Origin};
use coupa_changefeed::poll::Poller;
use coupa_changefeed::shutdown;
use coupa_changefeed::sink::AnySink;
use coupa_changefeed::store::{ObjectState, OutboxEntry, SeenEntry, Store};
use coupa_sim::Simulator;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::json;
use support::{peak_rss_mib, per_sec, reset_peak, rss_mib};

const OBJECT: &str = "purchase_orders";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Far beyond any healthy run; a stuck sink fails the bench instead of hanging it.
const LIMIT: Duration = Duration::from_secs(600);

/// One sink's figures.
struct SinkFigures {
    /// Poll into the outbox with the sink stopped.
    poll: Duration,
    /// Then the sink alone draining that outbox.
    drain: Duration,
    /// Poll and sink together, from an empty state.
    end_to_end: Duration,
    /// Peak RSS over the pre-run RSS during the end-to-end run, MiB.
    peak_delta: f64,
    /// The outbox commits alone (measured in one run only).
    commit: Option<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = support::env_usize("BENCH_RECORDS", 20_000);
    let sim = Simulator::start(common::sim_config()).await?;
    // The window starts just before the records: a steady-state catch-up,
    // not a sliced backfill (benches/backfill.rs measures that).
    let start_from = (sim.now() - chrono::Duration::seconds(60)).trunc_subsecs(0);
    let record_bytes = support::create_pos(&sim, n, |_| json!({}));
    // Everything created so far falls inside the window (settle is 1 s).
    sim.set_clock_offset(chrono::Duration::seconds(10));
    let work = tempfile::tempdir()?;
    let cfg = |name: &str| {
        common::TestConfig::new(&sim.base_url(), &work.path().join(name))
            .objects(&[OBJECT])
            .coupa("requests_per_second = 100000\ntimeout = \"30s\"")
            .poll(&format!(
                "settle = \"1s\"\nstart_from = \"{}\"",
                record::rfc3339(start_from)
            ))
    };

    println!(
        "pipeline bench: {n} purchase orders of ~{record_bytes} bytes, zero latency, {}",
        support::machine()
    );
    println!(
        "  RSS with the simulator and its data: {:.0} MiB (not the daemon's; figures below are rises over it)",
        rss_mib()
    );

    // Stage figures: the same pages without the daemon's work, and the
    // encoding the poller does per record, timed apart.
    let client = CoupaClient::new(&cfg("fetch").settings().coupa)?;
    let (fetched, fetch, encode, event_bytes) = fetch_and_encode(&client, &sim.base_url()).await?;
    assert_eq!(fetched, n as u64, "fetch-only pass saw every record");

    let file_out = work.path().join("events.jsonl");
    let file = run_sink(
        "file",
        &cfg("file").file_sink(&file_out),
        n,
        Some(work.path()),
    )
    .await?;
    let file_lines = std::fs::read_to_string(&file_out)?.lines().count();
    assert_eq!(file_lines, 2 * n, "the file holds both runs' events");

    let (url, received) = receiver().await?;
    let webhook = run_sink(
        "webhook",
        &cfg("webhook").sink(&format!(
            "type = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\""
        )),
        n,
        None,
    )
    .await?;
    assert!(received.load(Ordering::Relaxed) >= 2 * n as u64);

    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(3)?;
    cluster.create_topic("coupa.purchase_orders", 3, 3)?;
    let kafka = run_sink(
        "kafka",
        &cfg("kafka").sink(&format!(
            "type = \"kafka\"\nbrokers = \"{}\"",
            cluster.bootstrap_servers()
        )),
        n,
        None,
    )
    .await?;

    let commit = file.commit.expect("measured in the file run");
    let polls = [file.poll, webhook.poll, kafka.poll];
    let poll = polls.iter().sum::<Duration>() / polls.len() as u32;
    let rate = |d: Duration| per_sec(n as u64, d);
    println!("\n  where the time goes (records/s; one pass each, except the poll: mean of 3)");
    println!(
        "    fetch only (simulator serves, client parses)   {:>9.0}",
        rate(fetch)
    );
    println!(
        "    encode only (canonical JSON, sha256, CloudEvent){:>9.0}",
        rate(encode)
    );
    println!(
        "    commit only (sled transaction + flush, 50/page) {:>9.0}",
        rate(commit)
    );
    println!(
        "    poll: the next page fetched while one commits  {:>9.0}   ({:.2} s; the stages alone would take fetch {:.0} %, \
         encode {:.0} %, commit {:.0} % of it)",
        rate(poll),
        poll.as_secs_f64(),
        pct(fetch, poll),
        pct(encode, poll),
        pct(commit, poll),
    );
    println!("    events are ~{event_bytes} bytes (envelope + record)");
    println!(
        "\n  {:<8} {:>8} {:>8} {:>11} {:>13} {:>19}",
        "sink", "records", "seconds", "records/s", "peak RSS Δ", "sink alone, rec/s"
    );
    for (name, f) in [("file", &file), ("webhook", &webhook), ("kafka", &kafka)] {
        println!(
            "  {:<8} {:>8} {:>8.2} {:>11.0} {:>9.1} MiB {:>19.0}",
            name,
            n,
            f.end_to_end.as_secs_f64(),
            rate(f.end_to_end),
            f.peak_delta,
            rate(f.drain),
        );
    }
    println!("  (records/s: end to end, poll and sink together from an empty state; webhook concurrency 4, kafka: 3 mock brokers, 3 partitions)");
    sim.shutdown().await;
    Ok(())
}

fn pct(part: Duration, whole: Duration) -> f64 {
    100.0 * part.as_secs_f64() / whole.as_secs_f64().max(1e-9)
}

/// Pages the whole object with the bare client (the simulator's and the
/// client's share) and, apart, encodes each record as the poller does.
/// Returns (records, fetch time, encode time, mean event size).
async fn fetch_and_encode(
    client: &CoupaClient,
    base_url: &str,
) -> anyhow::Result<(u64, Duration, Duration, usize)> {
    let origin = Origin {
        base_url: base_url.into(),
        object: OBJECT.into(),
        singular: "purchase_order".into(),
        path: format!("/api/{OBJECT}"),
    };
    let (mut fetch, mut encode) = (Duration::ZERO, Duration::ZERO);
    let (mut records, mut bytes, mut last) = (0u64, 0usize, 0u64);
    loop {
        let q = vec![
            (
                "updated_at[gt_or_eq]".into(),
                "2000-01-01T00:00:00+00:00".into(),
            ),
            ("id[gt]".to_string(), last.to_string()),
            ("order_by".into(), "id".into()),
            ("dir".into(), "asc".into()),
            ("limit".into(), "50".into()),
        ];
        let t = Instant::now();
        let page = client.list(&format!("/api/{OBJECT}"), &q).await?;
        fetch += t.elapsed();
        let Some(id) = page.last().and_then(record::numeric_id) else {
            break;
        };
        last = id;
        let t = Instant::now();
        for rec in &page {
            let id = record::id(rec).unwrap_or_default();
            let updated = match record::stamp(rec, "updated-at") {
                record::Stamp::At(t) => Some(t),
                _ => None,
            };
            let data = canonical_json(rec);
            let hash = content_hash(&data);
            let ev = ChangeEvent::new(&origin, &id, updated, &hash, ChangeKind::Created, data);
            bytes += std::hint::black_box(ev.to_json()).len();
        }
        encode += t.elapsed();
        records += page.len() as u64;
    }
    Ok((records, fetch, encode, bytes / records.max(1) as usize))
}

/// One sink: (1) poll everything into the outbox with the sink stopped,
/// (2) the sink alone drains it, (3) from an empty state, poll and sink
/// together. With `commit_dir`, also times the outbox commits alone.
async fn run_sink(
    label: &str,
    cfg: &common::TestConfig,
    n: usize,
    commit_dir: Option<&std::path::Path>,
) -> anyhow::Result<SinkFigures> {
    eprintln!("  {label}: poll, then drain …");
    let mut settings = cfg.settings();
    let name = settings.sinks[0].name();
    let (poll_time, drain, commit) = {
        let store = Store::open(&settings.state.dir)?;
        let t = Instant::now();
        let events = poll(&settings, &store).await?;
        let poll_time = t.elapsed();
        anyhow::ensure!(
            events == n as u64,
            "{label}: {events} events for {n} records"
        );
        let commit = match commit_dir {
            Some(dir) => Some(commit_only(&store, dir).await?),
            None => None,
        };
        let t = Instant::now();
        drain_all(&settings, &store, &name, None).await?;
        (poll_time, t.elapsed(), commit)
    };
    eprintln!("  {label}: end to end …");
    let fresh = tempfile::tempdir()?;
    settings.state.dir = fresh.path().to_path_buf();
    let store = Store::open(&settings.state.dir)?;
    support::trim_heap();
    let baseline = rss_mib();
    reset_peak();
    let t = Instant::now();
    drain_all(&settings, &store, &name, Some(n)).await?;
    let end_to_end = t.elapsed();
    Ok(SinkFigures {
        poll: poll_time,
        drain,
        end_to_end,
        peak_delta: peak_rss_mib() - baseline,
        commit,
    })
}

/// One poll of the object into `store`; returns the events committed.
async fn poll(settings: &Settings, store: &Store) -> anyhow::Result<u64> {
    let client = CoupaClient::new(&settings.coupa)?;
    let plan = settings.plans()?.remove(0);
    let poller = Poller::new(plan, client, store.clone());
    let (_trigger, listener) = shutdown::channel();
    let report = poller.poll_once(&listener).await?;
    anyhow::ensure!(report.window_complete, "the window did not complete");
    Ok(report.events)
}

/// Runs the sink's drain until every committed event is settled, checking
/// none was dead-lettered. With `poll_expecting`, polls meanwhile (the
/// pipeline end to end) and checks the poll made that many events.
async fn drain_all(
    settings: &Settings,
    store: &Store,
    name: &str,
    poll_expecting: Option<usize>,
) -> anyhow::Result<()> {
    let sink = AnySink::from_settings(&settings.sinks[0])?;
    let (trigger, listener) = shutdown::channel();
    let names = Arc::new(vec![name.to_string()]);
    let task = tokio::spawn(Drain::new(sink, store.clone(), names).run(listener));
    if let Some(n) = poll_expecting {
        let events = poll(settings, store).await?;
        anyhow::ensure!(
            events == n as u64,
            "{name}: {events} events for {n} records"
        );
    }
    let deadline = Instant::now() + LIMIT;
    while store.cursor(name)? < store.last_seq() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "sink `{name}` did not drain within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    trigger.fire();
    task.await?.map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        store.dead_count(name)? == 0,
        "sink `{name}` dead-lettered events"
    );
    Ok(())
}

/// Commits `store`'s outbox again into a fresh store, 50 events (with
/// their seen entries) per transaction as the poller does: the sled share.
async fn commit_only(store: &Store, dir: &std::path::Path) -> anyhow::Result<Duration> {
    let entries: Vec<OutboxEntry> = store
        .outbox_after(0, usize::MAX)?
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    let target = Store::open(&dir.join("commit-only"))?;
    let now = Utc::now();
    let t = Instant::now();
    for page in entries.chunks(50) {
        let seen: Vec<SeenEntry> = page
            .iter()
            .map(|e| SeenEntry {
                updated_at: Some(now),
                id: e.key.clone(),
                hash: content_hash(e.key.as_bytes()),
            })
            .collect();
        target
            .commit_page(OBJECT, &ObjectState::default(), &seen, page.to_vec())
            .await?;
    }
    Ok(t.elapsed())
}

/// A webhook receiver on 127.0.0.1 that takes the body and answers 204.
async fn receiver() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                std::hint::black_box(body);
                seen.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/hook"), count))
}
