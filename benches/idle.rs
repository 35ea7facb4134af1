//! Idle cost: API requests per poll of an object that has not changed, as
//! the simulator counted them (goal: 1). Two cases: nothing changed within
//! the lookback, and one record changed within it (the lookback re-reads
//! it every poll until it falls behind). Prints figures; asserts nothing
//! about them. `cargo bench --bench idle` (`BENCH_POLLS=N`, default 50;
//! `BENCH_RECORDS=N` records in the object, default 1,000).

#[path = "../tests/it/support/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{SubsecRound, Utc};
use coupa_changefeed::coupa::record;
use coupa_changefeed::poll::{PollReport, Poller};
use coupa_changefeed::shutdown::{self, Shutdown};
use coupa_sim::{SimHandle, Simulator};
use serde_json::json;

const OBJECT: &str = "purchase_orders";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let polls = support::env_usize("BENCH_POLLS", 50);
    let n = support::env_usize("BENCH_RECORDS", 1_000);
    let sim = Simulator::start(common::sim_config()).await?;
    // Records last changed an hour ago: behind any lookback after the first poll.
    let an_hour_ago = (Utc::now() - chrono::Duration::hours(1)).trunc_subsecs(0);
    support::create_pos(&sim, n, |i| {
        let t = record::rfc3339(an_hour_ago + chrono::Duration::seconds(i as i64 / 10));
        json!({"created-at": t, "updated-at": t})
    });
    let dir = tempfile::tempdir()?;
    let settings = common::TestConfig::new(&sim.base_url(), dir.path())
        .objects(&[OBJECT])
        .poll(&format!(
            "start_from = \"{}\"",
            record::rfc3339(an_hour_ago - chrono::Duration::hours(1))
        ))
        .settings();
    let plan = settings.plans()?.remove(0);
    let lookback = plan.lookback;
    let store = coupa_changefeed::store::Store::open(&settings.state.dir)?;
    let client = coupa_changefeed::coupa::client::CoupaClient::new(&settings.coupa)?;
    let poller = Poller::new(plan, client, store);
    let (_trigger, stop) = shutdown::channel();

    println!(
        "idle bench: {OBJECT} with {n} records, {polls} polls back to back, lookback {}, {}",
        humantime::format_duration(lookback),
        support::machine()
    );
    let first = measure(&sim, &poller, &stop, 1).await?;
    println!(
        "  first poll (catch-up):                 {:>5} requests, {} events",
        first.requests, first.report.events
    );
    assert_eq!(
        first.report.events, n as u64,
        "the catch-up read every record"
    );

    let quiet = measure(&sim, &poller, &stop, polls).await?;
    quiet.print("nothing changed within the lookback");

    // One edit, then wait (bounded) until a poll has picked it up: the
    // client learns the moved clock from the next response.
    sim.update(OBJECT, 1, json!({"status": "closed"}));
    sim.set_clock_offset(chrono::Duration::seconds(10));
    let mut picked = false;
    for _ in 0..5 {
        if poller.poll_once(&stop).await?.events == 1 {
            picked = true;
            break;
        }
    }
    anyhow::ensure!(picked, "the edit was not picked up within 5 polls");
    let recent = measure(&sim, &poller, &stop, polls).await?;
    recent.print("one record changed within the lookback");
    println!(
        "  goal: 1 request per idle poll. The second case lasts one lookback ({}) after each change: \
         the re-read page, then the empty page that closes the window.",
        humantime::format_duration(lookback)
    );
    sim.shutdown().await;
    Ok(())
}

/// What `polls` polls cost, as the simulator saw it.
struct Figures {
    polls: usize,
    /// API requests the simulator received.
    requests: usize,
    /// Requests per poll → how many polls cost that.
    per_poll: BTreeMap<usize, usize>,
    /// Requests by path and query shape (`limit=1` probes apart).
    kinds: BTreeMap<String, usize>,
    report: PollReport,
    seconds: f64,
}

impl Figures {
    fn print(&self, case: &str) {
        let spread: Vec<String> = self
            .per_poll
            .iter()
            .map(|(r, k)| format!("{k} × {r}"))
            .collect();
        println!(
            "  {case}: {:.2} requests per poll ({} requests over {} polls; polls × requests: {}); \
             {} events, {} repeats; {:.1} ms per poll",
            self.requests as f64 / self.polls as f64,
            self.requests,
            self.polls,
            spread.join(", "),
            self.report.events,
            self.report.repeats,
            1000.0 * self.seconds / self.polls as f64,
        );
        for (k, v) in &self.kinds {
            println!("      {v:>5} × {k}");
        }
    }
}

async fn measure(
    sim: &SimHandle,
    poller: &Poller,
    stop: &Shutdown,
    polls: usize,
) -> anyhow::Result<Figures> {
    let mut f = Figures {
        polls,
        requests: 0,
        per_poll: BTreeMap::new(),
        kinds: BTreeMap::new(),
        report: PollReport::default(),
        seconds: 0.0,
    };
    let started = Instant::now();
    for _ in 0..polls {
        let before = sim.requests().len();
        let r = poller.poll_once(stop).await?;
        let log = sim.requests();
        let mine = &log[before..];
        f.requests += mine.len();
        *f.per_poll.entry(mine.len()).or_default() += 1;
        for q in mine {
            let shape = if q.query.contains("limit=1&") || q.query.ends_with("limit=1") {
                "probe (limit=1)"
            } else if q.query.contains("id%5Bgt%5D") || q.query.contains("id[gt]") {
                "list page after id[gt]"
            } else {
                "list page from the window start"
            };
            *f.kinds
                .entry(format!("{} {} {shape} → {}", q.method, q.path, q.status))
                .or_default() += 1;
        }
        f.report.add(&r);
    }
    f.seconds = started.elapsed().as_secs_f64();
    Ok(f)
}
