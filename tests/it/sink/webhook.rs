//! The webhook sink against a real receiver on 127.0.0.1 that verifies
//! every request the way a Standard Webhooks consumer does (HMAC-SHA256
//! over `id.timestamp.body`, constant-time compare, 5-minute tolerance)
//! and answers 401 to anything else. Sink-level tests call
//! `WebhookSink::deliver` directly; end-to-end tests run the whole daemon
//! against the simulator.

use crate::support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{check, sim_config, TestConfig};
use coupa_changefeed::config::{OneOrMany, Settings, SinkSettings};
use coupa_changefeed::coupa::record::{numeric_id, parse_timestamp};
use coupa_changefeed::event::{canonical_json, content_hash, ChangeEvent, ChangeKind, Origin};
use coupa_changefeed::sink::webhook::{WebhookConfig, WebhookSink};
use coupa_changefeed::sink::{Sink, SinkError};
use coupa_changefeed::store::OutboxEntry;
use coupa_sim::verify::Received;
use coupa_sim::Simulator;

/// The sink's current key.
const NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The key being rotated out.
const OLD: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itd2ViaG9vay10ZXN0cyE=";
/// A key the sink never has.
const OTHER: &str = "whsec_YSB0aGlyZCBrZXksIGtub3duIHRvIG5vYm9keS4uLi4=";
/// Stands for a credential in the URL's query: must never show in errors.
const URL_TOKEN: &str = "tok-8d1e77";

// ---------------------------------------------------------------- receiver

/// How the receiver answers requests that pass verification.
#[derive(Debug, Clone)]
enum Mode {
    Ok,
    /// The first `n` verified requests get `status`, then 200.
    FailFirst(usize, u16),
    Always(u16),
    /// Every `n`th verified request gets 503; each waits `delay` first.
    FailEvery(usize, Duration),
    /// 302 to `/elsewhere` (which would accept).
    Redirect,
    /// Answers 200 after this long.
    Slow(Duration),
    /// Stores the event (recorded as accepted) at once, answers 200 after
    /// this long: a receiver slower than the sink's `timeout`.
    StoreThenSlow(Duration),
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Attempt {
    webhook_id: String,
    signature: String,
    content_type: String,
    query: Option<String>,
    tenant: Option<String>,
    body: Vec<u8>,
    status: u16,
}

impl Attempt {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

struct RxState {
    keys: Vec<Vec<u8>>,
    mode: Mutex<Mode>,
    attempts: Mutex<Vec<Attempt>>,
    verified: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    redirect_followed: AtomicUsize,
}

/// A Standard Webhooks receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    state: Arc<RxState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn secret_bytes(secret: &str) -> Vec<u8> {
    BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64")
}

impl Receiver {
    /// Verifies with `secrets` (any one valid signature suffices).
    async fn start(secrets: &[&str], mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, secrets, mode)
    }

    /// On a given port (a receiver coming up where the sink already points).
    async fn start_on(port: u16, secrets: &[&str], mode: Mode) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => return Self::serve(l, secrets, mode),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("bind {port}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind 127.0.0.1:{port}: {e}"),
            }
        }
    }

    fn serve(listener: tokio::net::TcpListener, secrets: &[&str], mode: Mode) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RxState {
            keys: secrets.iter().map(|s| secret_bytes(s)).collect(),
            mode: Mutex::new(mode),
            attempts: Mutex::new(Vec::new()),
            verified: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            redirect_followed: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/elsewhere", post(elsewhere))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/hook?token=…`.
    fn url(&self) -> String {
        format!("http://{}/hook?token={URL_TOKEN}", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.state.attempts.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(Attempt::accepted)
            .collect()
    }

    /// Accepted events reduced to what `support::check` compares.
    fn seen(&self) -> Vec<Received> {
        self.accepted().iter().map(|a| seen(&a.json())).collect()
    }
}

fn seen(ce: &Value) -> Received {
    let data = ce["data"].as_object().expect("data is an object");
    Received {
        event_id: ce["id"].as_str().unwrap().to_string(),
        object: "purchase_orders".into(),
        id: numeric_id(data).unwrap(),
        updated_at: ce["time"].as_str().and_then(parse_timestamp),
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The Standard Webhooks check a consumer runs.
fn verify(keys: &[Vec<u8>], h: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let id = header(h, "webhook-id").ok_or("no webhook-id")?;
    let ts = header(h, "webhook-timestamp").ok_or("no webhook-timestamp")?;
    let sigs = header(h, "webhook-signature").ok_or("no webhook-signature")?;
    let t: i64 = ts.parse().map_err(|_| "timestamp is not an integer")?;
    if (Utc::now().timestamp() - t).abs() > 300 {
        return Err(format!("timestamp {t} outside the 5-minute tolerance"));
    }
    for key in keys {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        for sig in sigs.split(' ') {
            let Some(b64) = sig.strip_prefix("v1,") else {
                continue;
            };
            let Ok(raw) = BASE64.decode(b64) else {
                continue;
            };
            if mac.clone().verify_slice(&raw).is_ok() {
                return Ok(());
            }
        }
    }
    Err("no signature verifies".into())
}

async fn hook(State(s): State<Arc<RxState>>, uri: Uri, h: HeaderMap, body: Bytes) -> Response {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let status = match verify(&s.keys, &h, &body) {
        Err(_) => StatusCode::UNAUTHORIZED,
        Ok(()) => {
            let n = s.verified.fetch_add(1, Ordering::SeqCst) + 1;
            let mode = s.mode.lock().unwrap().clone();
            match mode {
                Mode::Ok => StatusCode::OK,
                Mode::FailFirst(k, code) if n <= k => StatusCode::from_u16(code).unwrap(),
                Mode::FailFirst(..) => StatusCode::OK,
                Mode::Always(code) => StatusCode::from_u16(code).unwrap(),
                Mode::FailEvery(k, delay) => {
                    tokio::time::sleep(delay).await;
                    if n % k == 0 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
                Mode::Redirect => StatusCode::FOUND,
                Mode::Slow(d) => {
                    tokio::time::sleep(d).await;
                    StatusCode::OK
                }
                Mode::StoreThenSlow(d) => {
                    s.attempts.lock().unwrap().push(Attempt {
                        webhook_id: header(&h, "webhook-id").unwrap_or_default(),
                        signature: header(&h, "webhook-signature").unwrap_or_default(),
                        content_type: header(&h, "content-type").unwrap_or_default(),
                        query: uri.query().map(str::to_string),
                        tenant: header(&h, "x-tenant"),
                        body: body.to_vec(),
                        status: 200,
                    });
                    s.in_flight.fetch_sub(1, Ordering::SeqCst);
                    tokio::time::sleep(d).await;
                    return (StatusCode::OK, "ok").into_response();
                }
            }
        }
    };
    s.attempts.lock().unwrap().push(Attempt {
        webhook_id: header(&h, "webhook-id").unwrap_or_default(),
        signature: header(&h, "webhook-signature").unwrap_or_default(),
        content_type: header(&h, "content-type").unwrap_or_default(),
        query: uri.query().map(str::to_string),
        tenant: header(&h, "x-tenant"),
        body: body.to_vec(),
        status: status.as_u16(),
    });
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    if status == StatusCode::FOUND {
        return (status, [("location", "/elsewhere")], "moved").into_response();
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return (status, [("retry-after", "1")], "slow down").into_response();
    }
    let text = match status.as_u16() {
        200 => "ok".to_string(),
        401 => "bad signature".to_string(),
        // A long body: the sink must keep only a short prefix.
        code => format!("receiver says {code}: {}", "x".repeat(5000)),
    };
    (status, text).into_response()
}

async fn elsewhere(State(s): State<Arc<RxState>>) -> StatusCode {
    s.redirect_followed.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

// ------------------------------------------------------------- sink level

/// A real CloudEvent for version `seq` of purchase order `record`.
fn event(record: u64, seq: u32) -> OutboxEntry {
    let origin = Origin {
        base_url: "https://acme.coupahost.com".into(),
        object: "purchase_orders".into(),
        singular: "purchase_order".into(),
        path: "/api/purchase_orders".into(),
    };
    let at: DateTime<Utc> = "2026-11-30T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        + chrono::Duration::seconds(seq.into());
    let rec =
        json!({"id": record, "custom-seq": seq, "status": "issued", "updated-at": at.to_rfc3339()});
    let data = canonical_json(rec.as_object().unwrap());
    let ev = ChangeEvent::new(
        &origin,
        &record.to_string(),
        Some(at),
        &content_hash(&data),
        ChangeKind::Updated,
        data,
    );
    OutboxEntry {
        object: "purchase_orders".into(),
        key: record.to_string(),
        event: ev.to_json(),
    }
}

fn batch(entries: Vec<OutboxEntry>) -> Vec<(u64, OutboxEntry)> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e))
        .collect()
}

fn config(url: &str, secrets: &[&str]) -> WebhookConfig {
    WebhookConfig {
        name: None,
        url: url.parse().unwrap(),
        secret: Some(OneOrMany::Many(
            secrets
                .iter()
                .map(|s| SecretString::from(s.to_string()))
                .collect(),
        )),
        secret_file: None,
        timeout: Duration::from_secs(10),
        headers: BTreeMap::from([("X-Tenant".to_string(), "acme".to_string())]),
        concurrency: 4,
        max_retry_age: Duration::from_secs(60),
        max_backoff: Duration::from_millis(200),
    }
}

fn sink(cfg: &WebhookConfig) -> WebhookSink {
    WebhookSink::new("webhook".into(), cfg).expect("sink builds")
}

/// Neither a secret nor the URL's token may appear in an error.
fn assert_clean(msg: &str) {
    for s in [NEW, OLD, OTHER] {
        assert!(!msg.contains(&s[6..]), "secret in {msg}");
    }
    assert!(!msg.contains(URL_TOKEN), "URL token in {msg}");
}

fn transient(o: &Result<(), SinkError>) -> &str {
    match o {
        Err(SinkError::Transient(m)) => {
            assert_clean(m);
            m
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
}

fn permanent(o: &Result<(), SinkError>) -> &str {
    match o {
        Err(SinkError::Permanent(m)) => {
            assert_clean(m);
            m
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

#[tokio::test]
async fn signed_events_verify_and_arrive_as_sent() {
    let rx = Receiver::start(&[NEW], Mode::Ok).await;
    let mut s = sink(&config(&rx.url(), &[NEW]));
    let b = batch(vec![event(1, 1), event(2, 1), event(3, 1)]);
    let out = s.deliver(&b).await;
    assert_eq!(out, vec![Ok(()), Ok(()), Ok(())]);
    let got = rx.accepted();
    assert_eq!(got.len(), 3);
    for (_, e) in &b {
        let id = e.event_json()["id"].as_str().unwrap().to_string();
        let a = got.iter().find(|a| a.webhook_id == id).expect("arrived");
        assert_eq!(a.body, e.event, "the body is the event, byte for byte");
        assert_eq!(a.content_type, "application/cloudevents+json");
        assert_eq!(a.query.as_deref(), Some(&*format!("token={URL_TOKEN}")));
        assert_eq!(a.tenant.as_deref(), Some("acme"), "static headers sent");
        assert_eq!(a.signature.split(' ').count(), 1);
    }
}

#[tokio::test]
async fn a_receiver_with_another_secret_rejects_and_the_event_is_permanent() {
    let rx = Receiver::start(&[OTHER], Mode::Ok).await;
    let mut s = sink(&config(&rx.url(), &[NEW]));
    let out = s.deliver(&batch(vec![event(1, 1), event(2, 1)])).await;
    for o in &out {
        let m = permanent(o);
        assert!(m.contains("401"), "{m}");
    }
    assert_eq!(rx.attempts().len(), 2);
    assert!(rx.accepted().is_empty());
}

#[tokio::test]
async fn rotation_signs_with_every_key_so_either_receiver_accepts() {
    let old_only = Receiver::start(&[OLD], Mode::Ok).await;
    let new_only = Receiver::start(&[NEW], Mode::Ok).await;
    for rx in [&old_only, &new_only] {
        let mut s = sink(&config(&rx.url(), &[NEW, OLD]));
        let out = s.deliver(&batch(vec![event(1, 1)])).await;
        assert_eq!(out, vec![Ok(())]);
        let a = &rx.accepted()[0];
        let sigs: Vec<&str> = a.signature.split(' ').collect();
        assert_eq!(sigs.len(), 2, "one signature per key: {}", a.signature);
        assert!(sigs.iter().all(|s| s.starts_with("v1,")));
    }
}

#[tokio::test]
async fn statuses_other_than_2xx_fail_and_only_plain_4xx_are_permanent() {
    let rx = Receiver::start(&[NEW], Mode::Ok).await;
    let mut s = sink(&config(&rx.url(), &[NEW]));
    for code in [400u16, 403, 404, 410, 413, 422] {
        rx.set_mode(Mode::Always(code));
        let out = s.deliver(&batch(vec![event(1, 1)])).await;
        let m = permanent(&out[0]);
        assert!(m.contains(&code.to_string()), "{m}");
    }
    for code in [408u16, 429, 500, 502, 503, 504] {
        rx.set_mode(Mode::Always(code));
        let out = s.deliver(&batch(vec![event(1, 1)])).await;
        let m = transient(&out[0]);
        assert!(m.contains(&code.to_string()), "{m}");
        if code != 429 {
            // The body's start is quoted, not all 5000 bytes of it.
            assert!(m.contains("receiver says"), "{m}");
            assert!(m.len() < 600, "{} bytes: {m}", m.len());
        }
    }
    assert!(rx.accepted().is_empty());
}

#[tokio::test]
async fn a_429s_retry_after_delays_the_next_batch() {
    let rx = Receiver::start(&[NEW], Mode::Always(429)).await;
    let mut cfg = config(&rx.url(), &[NEW]);
    cfg.max_backoff = Duration::from_secs(5);
    let mut s = sink(&cfg);
    let out = s.deliver(&batch(vec![event(1, 1)])).await;
    transient(&out[0]);
    rx.set_mode(Mode::Ok);
    let started = Instant::now();
    assert_eq!(s.deliver(&batch(vec![event(1, 1)])).await, vec![Ok(())]);
    // `Retry-After: 1` (within max_backoff) was honoured: a lower bound
    // only, which load cannot break.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_counts_as_a_failure() {
    let rx = Receiver::start(&[NEW], Mode::Redirect).await;
    let mut s = sink(&config(&rx.url(), &[NEW]));
    let out = s.deliver(&batch(vec![event(1, 1)])).await;
    let m = transient(&out[0]);
    assert!(m.contains("302"), "{m}");
    assert_eq!(rx.state.redirect_followed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_slow_receiver_times_out_as_a_transient_failure() {
    let rx = Receiver::start(&[NEW], Mode::Slow(Duration::from_secs(5))).await;
    let mut cfg = config(&rx.url(), &[NEW]);
    cfg.timeout = Duration::from_millis(300);
    let mut s = sink(&cfg);
    let out = s.deliver(&batch(vec![event(1, 1)])).await;
    let m = transient(&out[0]);
    assert!(m.contains("timeout"), "{m}");
}

/// Issue 13.9: a receiver that stores an event but answers after the
/// sink's `timeout` gets it again, with the same `webhook-id`. Inherent to
/// HTTP (the sink cannot tell "not stored" from "answered late"); the
/// README says so and receivers deduplicate on the id.
#[tokio::test]
async fn a_receiver_answering_after_the_timeout_gets_the_event_again_with_the_same_id() {
    let rx = Receiver::start(&[NEW], Mode::StoreThenSlow(Duration::from_secs(2))).await;
    let mut cfg = config(&rx.url(), &[NEW]);
    cfg.timeout = Duration::from_millis(300);
    let mut s = sink(&cfg);
    let b = batch(vec![event(1, 1)]);
    assert!(transient(&s.deliver(&b).await[0]).contains("timeout"));
    rx.set_mode(Mode::Ok);
    assert_eq!(s.deliver(&b).await[0], Ok(()));
    let stored: Vec<String> = rx.accepted().iter().map(|a| a.webhook_id.clone()).collect();
    assert_eq!(stored.len(), 2, "stored twice: {stored:?}");
    assert_eq!(stored[0], stored[1], "with the same webhook-id");
}

/// A port with nothing listening (bound, then released).
#[tokio::test]
async fn a_receiver_that_is_down_is_transient_and_served_once_up() {
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}/hook?token={URL_TOKEN}");
    let mut s = sink(&config(&url, &[NEW]));
    let b = batch(vec![event(1, 1), event(1, 2)]);
    let out = s.deliver(&b).await;
    transient(&out[0]);
    let m = transient(&out[1]);
    assert!(
        m.contains("waiting for an earlier event of record 1"),
        "{m}"
    );
    let rx = Receiver::start_on(port, &[NEW], Mode::Ok).await;
    let out = s.deliver(&b).await;
    assert_eq!(out, vec![Ok(()), Ok(())]);
    assert_eq!(rx.accepted().len(), 2);
}

/// What `delivery` does, reduced: resend the transient ones until none is
/// left (bounded), as one would with backoff.
async fn until_settled(s: &mut WebhookSink, mut pending: Vec<(u64, OutboxEntry)>) {
    for _ in 0..50 {
        let out = s.deliver(&pending).await;
        assert_eq!(out.len(), pending.len());
        pending = pending
            .into_iter()
            .zip(out)
            .filter_map(|(p, o)| match o {
                Ok(()) => None,
                Err(SinkError::Transient(_)) => Some(p),
                Err(SinkError::Permanent(m) | SinkError::Fatal(m)) => panic!("not transient: {m}"),
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} events never delivered", pending.len());
}

#[tokio::test]
async fn retries_carry_the_same_webhook_id() {
    let rx = Receiver::start(&[NEW], Mode::FailFirst(3, 500)).await;
    let mut cfg = config(&rx.url(), &[NEW]);
    cfg.concurrency = 1;
    let mut s = sink(&cfg);
    let b = batch(vec![event(7, 1), event(8, 1)]);
    until_settled(&mut s, b.clone()).await;
    let attempts = rx.attempts();
    let first_id = b[0].1.event_json()["id"].as_str().unwrap().to_string();
    // One lane: event 7 is tried alone three times (500), then both go.
    let ids: Vec<&str> = attempts.iter().map(|a| a.webhook_id.as_str()).collect();
    assert_eq!(ids[..4], [first_id.as_str(); 4], "{ids:?}");
    assert_eq!(attempts.len(), 5, "{ids:?}");
    for a in &attempts {
        assert_eq!(a.webhook_id, a.json()["id"], "webhook-id is the event id");
    }
    let delivered: HashSet<String> = rx.accepted().iter().map(|a| a.webhook_id.clone()).collect();
    assert_eq!(delivered.len(), 2);
}

#[tokio::test]
async fn lanes_keep_each_records_order_and_run_concurrently() {
    let rx = Receiver::start(&[NEW], Mode::FailEvery(5, Duration::from_millis(30))).await;
    let mut s = sink(&config(&rx.url(), &[NEW]));
    // Six records, eight versions each, interleaved as the outbox has them.
    let b = batch(
        (1..=8)
            .flat_map(|v| (1..=6).map(move |r| event(r, v)))
            .collect(),
    );
    // One round by hand: what failed must be a suffix of its record.
    let out = s.deliver(&b).await;
    let mut failed: HashSet<String> = HashSet::new();
    let mut pending = Vec::new();
    for (p, o) in b.iter().zip(&out) {
        match o {
            Ok(()) => assert!(
                !failed.contains(&p.1.key),
                "record {} overtook a failure",
                p.1.key
            ),
            Err(SinkError::Transient(_)) => {
                failed.insert(p.1.key.clone());
                pending.push(p.clone());
            }
            Err(SinkError::Permanent(m) | SinkError::Fatal(m)) => panic!("{m}"),
        }
    }
    assert!(!failed.is_empty(), "every 5th request fails");
    until_settled(&mut s, pending).await;
    let mut last: HashMap<u64, u64> = HashMap::new();
    for a in rx.accepted() {
        let j = a.json();
        let (r, v) = (
            j["data"]["id"].as_u64().unwrap(),
            j["data"]["custom-seq"].as_u64().unwrap(),
        );
        let prev = last.insert(r, v).unwrap_or(0);
        assert_eq!(v, prev + 1, "record {r}: version {v} after {prev}");
    }
    assert_eq!(last.len(), 6);
    assert!(last.values().all(|v| *v == 8));
    let max = rx.state.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=4).contains(&max), "in flight at once: {max}");
}

// ------------------------------------------------------------------ config

fn settings_with(sink_body: &str) -> Result<Settings, coupa_changefeed::config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    Settings::from_toml(
        &TestConfig::new("http://127.0.0.1:1", dir.path())
            .objects(&["purchase_orders"])
            .sink(sink_body)
            .toml(),
    )
}

#[test]
fn config_errors_name_the_key_and_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets");
    std::fs::write(&file, format!("{NEW}\n\n{OLD}\n")).unwrap();
    let bad_file = dir.path().join("bad");
    std::fs::write(&bad_file, format!("{NEW}\nMfKQ9r8GKYqrTwjU\n")).unwrap();
    let url = "url = \"https://hooks.example.com/in\"";
    let cases = [
        (url.to_string(), "sinks[0].secret"),
        (
            format!("{url}\nsecret = \"MfKQ9r8GKYqrTwjU\""),
            "sinks[0].secret",
        ),
        (
            format!("{url}\nsecret = \"whsec_%%%notbase64\""),
            "sinks[0].secret",
        ),
        (format!("{url}\nsecret = \"whsec_\""), "sinks[0].secret"),
        (
            format!("{url}\nsecret = [\"{NEW}\", \"whsec_%%%bad\"]"),
            "sinks[0].secret[1]",
        ),
        (
            format!(
                "{url}\nsecret = \"{NEW}\"\nsecret_file = \"{}\"",
                file.display()
            ),
            "sinks[0].secret_file",
        ),
        (
            format!(
                "{url}\nsecret_file = \"{}\"",
                dir.path().join("missing").display()
            ),
            "sinks[0].secret_file",
        ),
        (
            format!("{url}\nsecret_file = \"{}\"", bad_file.display()),
            "sinks[0].secret_file",
        ),
        (
            format!("url = \"ftp://hooks.example.com/\"\nsecret = \"{NEW}\""),
            "sinks[0].url",
        ),
        (
            format!("{url}\nsecret = \"{NEW}\"\nconcurrency = 0"),
            "sinks[0].concurrency",
        ),
        (
            format!("{url}\nsecret = \"{NEW}\"\ntimeout = \"0s\""),
            "sinks[0].timeout",
        ),
        (
            format!("{url}\nsecret = \"{NEW}\"\nheaders = {{ \"Content-Type\" = \"text/plain\" }}"),
            "sinks[0].headers.Content-Type",
        ),
        (
            format!("{url}\nsecret = \"{NEW}\"\nheaders = {{ \"webhook-id\" = \"x\" }}"),
            "sinks[0].headers.webhook-id",
        ),
        (
            format!("{url}\nsecret = \"{NEW}\"\nheaders = {{ \"bad name\" = \"x\" }}"),
            "sinks[0].headers.bad name",
        ),
        (
            format!("{url}\nsecret = \"{NEW}\"\nheaders = {{ \"x-token\" = \"line\\nbreak\" }}"),
            "sinks[0].headers.x-token",
        ),
    ];
    for (body, key) in cases {
        let e = settings_with(&format!("type = \"webhook\"\n{body}"))
            .err()
            .unwrap_or_else(|| panic!("accepted: {body}"));
        assert_eq!(e.key, key, "{body}: {e}");
        let text = e.to_string();
        for s in [&NEW[6..], "MfKQ9r8GKYqrTwjU", "%%%"] {
            assert!(!text.contains(s), "{text}");
        }
    }
    // A file of two keys rotates like a list.
    let s = settings_with(&format!(
        "type = \"webhook\"\n{url}\nsecret_file = \"{}\"",
        file.display()
    ))
    .unwrap();
    let SinkSettings::Webhook(c) = &s.sinks[0] else {
        panic!("not a webhook sink");
    };
    assert_eq!(c.secret.clone().map(|s| s.into_vec().len()), Some(2));
    assert_eq!(c.timeout, Duration::from_secs(15), "default timeout");
    assert_eq!(c.concurrency, 4);
    assert_eq!(c.max_retry_age, Duration::from_secs(24 * 3600));
}

#[tokio::test]
async fn a_secret_file_with_two_keys_signs_with_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets");
    std::fs::write(&file, format!("{NEW}\n{OLD}\n")).unwrap();
    let rx = Receiver::start(&[OLD], Mode::Ok).await;
    let s = settings_with(&format!(
        "type = \"webhook\"\nurl = \"{}\"\nsecret_file = \"{}\"",
        rx.url(),
        file.display()
    ))
    .unwrap();
    let SinkSettings::Webhook(c) = &s.sinks[0] else {
        panic!("not a webhook sink");
    };
    let mut sk = sink(c);
    assert_eq!(sk.deliver(&batch(vec![event(1, 1)])).await, vec![Ok(())]);
}

// -------------------------------------------------------------- end to end

/// The daemon running against `sim` with one webhook sink, and its state dir.
fn start_daemon(sim: &Simulator, sink_lines: &str) -> (support::Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .poll("settle = \"1s\"")
        .sink(&format!(
            "type = \"webhook\"\nmax_backoff = \"200ms\"\n{sink_lines}"
        ))
        .settings();
    (support::Daemon::start(&settings), dir)
}

/// Stops the daemon; it must stop cleanly within 60 s.
async fn stop(d: support::Daemon) {
    tokio::time::timeout(Duration::from_secs(60), d.stop())
        .await
        .expect("daemon stops within 60 s")
        .unwrap();
}

/// Polls `done` every 50 ms until it holds; panics after `secs` seconds.
async fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the receiver has accepted every record's final version.
fn has_finals(sim: &Simulator, rx: &Receiver) -> bool {
    let got: HashSet<(u64, DateTime<Utc>)> = rx
        .seen()
        .iter()
        .filter_map(|s| Some((s.id, s.updated_at?)))
        .collect();
    let mut finals = BTreeMap::new();
    for v in sim.versions("purchase_orders") {
        finals.insert(v.id, v.updated_at);
    }
    !finals.is_empty() && finals.into_iter().all(|f| got.contains(&f))
}

fn sink_lines(rx_url: &str, extra: &str) -> String {
    format!("url = \"{rx_url}\"\nsecret = \"{NEW}\"\n{extra}")
}

#[tokio::test]
async fn e2e_server_errors_are_retried_with_the_same_webhook_id_until_all_arrive() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    let rx = Receiver::start(&[NEW], Mode::FailFirst(4, 500)).await;
    for _ in 0..5 {
        sim.create("purchase_orders", json!({}));
    }
    let (d, _dir) = start_daemon(&sim, &sink_lines(&rx.url(), ""));
    wait_until("the first records", 60, || has_finals(&sim, &rx)).await;
    let first = sim.versions("purchase_orders")[0].id;
    sim.update("purchase_orders", first, json!({"status": "closed"}));
    sim.create("purchase_orders", json!({}));
    wait_until("every final version", 60, || has_finals(&sim, &rx)).await;
    stop(d).await;

    let delivered = rx.seen();
    check(&sim, "purchase_orders", &delivered);
    let attempts = rx.attempts();
    let accepted: HashSet<&str> = attempts
        .iter()
        .filter(|a| a.accepted())
        .map(|a| a.webhook_id.as_str())
        .collect();
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.status == 500).collect();
    assert_eq!(failed.len(), 4);
    for a in &attempts {
        assert_eq!(a.webhook_id, a.json()["id"], "webhook-id is the event id");
    }
    for f in failed {
        assert!(
            accepted.contains(f.webhook_id.as_str()),
            "event {} failed, and no retry with its id was accepted",
            f.webhook_id
        );
    }
}

#[tokio::test]
async fn e2e_a_400_dead_letters_the_event_and_replay_delivers_it() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    let rx = Receiver::start(&[NEW], Mode::Always(400)).await;
    let a = sim.create("purchase_orders", json!({}))["id"]
        .as_u64()
        .unwrap();
    let b = sim.create("purchase_orders", json!({}))["id"]
        .as_u64()
        .unwrap();
    let (d, _dir) = start_daemon(&sim, &sink_lines(&rx.url(), ""));
    let store = d.handles.store.clone();
    wait_until("two dead letters", 60, || {
        store.dead_letters(Some("webhook")).unwrap().len() == 2
    })
    .await;
    let dead = store.dead_letters(Some("webhook")).unwrap();
    let keys: HashSet<String> = dead.iter().map(|d| d.entry.key.clone()).collect();
    assert_eq!(keys, HashSet::from([a.to_string(), b.to_string()]));
    for dl in &dead {
        assert!(dl.error.contains("400"), "{}", dl.error);
        assert_clean(&dl.error);
    }
    assert!(rx.accepted().is_empty());
    assert_eq!(rx.attempts().len(), 2, "a permanent failure is not retried");

    rx.set_mode(Mode::Ok);
    assert_eq!(store.replay_dead(Some("webhook"), &[]).await.unwrap(), 2);
    wait_until("the replayed events", 60, || rx.accepted().len() == 2).await;
    assert!(store.dead_letters(Some("webhook")).unwrap().is_empty());
    let ids: HashSet<String> = rx.accepted().iter().map(|a| a.webhook_id.clone()).collect();
    let dead_ids: HashSet<String> = dead
        .iter()
        .map(|d| d.entry.event_json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, dead_ids);
    stop(d).await;
    check(&sim, "purchase_orders", &rx.seen());
}

/// Issue 13.4: the receiver answers 401 to v1 (dead-lettered), the secret
/// is fixed, it answers 200 to v2; `dlq replay` must not deliver v1 after
/// v2 (the consumer would end on the stale version, under another id).
#[tokio::test]
async fn e2e_a_replayed_dead_letter_never_lands_after_a_newer_version() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    let rx = Receiver::start(&[NEW], Mode::Always(401)).await;
    let id = sim.create("purchase_orders", json!({}))["id"]
        .as_u64()
        .unwrap();
    let (d, _dir) = start_daemon(&sim, &sink_lines(&rx.url(), ""));
    let store = d.handles.store.clone();
    wait_until("v1 dead-lettered", 60, || {
        store.dead_letters(Some("webhook")).unwrap().len() == 1
    })
    .await;
    rx.set_mode(Mode::Ok);
    sim.update("purchase_orders", id, json!({"status": "closed"}));
    wait_until("v1 superseded by the delivered v2", 60, || {
        store.dead_letters(Some("webhook")).unwrap()[0]
            .superseded_by
            .is_some()
    })
    .await;
    assert!(has_finals(&sim, &rx), "v2 arrived");
    assert_eq!(
        store.replay_dead(Some("webhook"), &[]).await.unwrap(),
        0,
        "a superseded dead letter is not replayed"
    );
    // Replays go before new events: once a later record arrives, anything
    // replayed would have too.
    sim.create("purchase_orders", json!({}));
    wait_until("the next record", 60, || has_finals(&sim, &rx)).await;
    assert_eq!(d.sink("webhook").superseded, 1);
    let kept = store.dead_letters(Some("webhook")).unwrap();
    stop(d).await;

    let finals: BTreeMap<u64, DateTime<Utc>> = sim
        .versions("purchase_orders")
        .iter()
        .map(|v| (v.id, v.updated_at))
        .collect();
    let arrivals: Vec<Option<DateTime<Utc>>> = rx
        .seen()
        .iter()
        .filter(|s| s.id == id)
        .map(|s| s.updated_at)
        .collect();
    assert_eq!(
        arrivals.last().copied().flatten(),
        Some(finals[&id]),
        "the consumer ends on the newest version: {arrivals:?}"
    );
    // What reached the sink or its dead letters (the guarantee).
    let received: Vec<coupa_sim::verify::Received> = rx
        .accepted()
        .iter()
        .map(|a| a.json())
        .chain(kept.iter().map(|d| d.entry.event_json()))
        .map(|e| coupa_sim::verify::Received::from_event(&e).unwrap())
        .collect();
    let v = coupa_sim::verify::verify(
        &sim.versions("purchase_orders"),
        &received,
        Duration::from_secs(1),
    );
    println!("{}", coupa_sim::verify::TABLE_HEADER);
    println!(
        "{}",
        v.row("webhook 401 on v1, 200 on v2, dlq replay (v1 kept as superseded)")
    );
    assert!(v.is_clean(), "{v}");
    check(&sim, "purchase_orders", &rx.seen());
}

#[tokio::test]
async fn e2e_events_wait_while_the_receiver_is_down_then_arrive() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    for _ in 0..3 {
        sim.create("purchase_orders", json!({}));
    }
    let (d, _dir) = start_daemon(&sim, &sink_lines(&url, ""));
    let store = d.handles.store.clone();
    wait_until("events in the outbox", 60, || store.outbox_len() >= 3).await;
    // Let several attempts fail (max_backoff is 200 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(store.dead_letters(Some("webhook")).unwrap().is_empty());
    assert!(
        store.outbox_len() >= 3,
        "nothing is released while undelivered"
    );
    sim.create("purchase_orders", json!({}));
    let rx = Receiver::start_on(port, &[NEW], Mode::Ok).await;
    wait_until("every final version", 60, || has_finals(&sim, &rx)).await;
    stop(d).await;
    support::check_exact(&sim, "purchase_orders", &rx.seen());
}

#[tokio::test]
async fn e2e_each_records_versions_arrive_in_order_with_concurrency_4() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    // Every 4th request fails and each takes 20 ms: backlog and retries.
    let rx = Receiver::start(&[NEW], Mode::FailEvery(4, Duration::from_millis(20))).await;
    let ids: Vec<u64> = (0..4)
        .map(|_| {
            sim.create("purchase_orders", json!({}))["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let (d, _dir) = start_daemon(&sim, &sink_lines(&rx.url(), "concurrency = 4"));
    // The creations first, so every record has at least two versions.
    wait_until("the created records", 60, || has_finals(&sim, &rx)).await;
    let editor = {
        let sim = sim.clone_handle();
        let ids = ids.clone();
        tokio::spawn(async move {
            for n in 1..=15u64 {
                for id in &ids {
                    sim.update("purchase_orders", *id, json!({"custom-seq": n}));
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    editor.await.unwrap();
    wait_until("every final version", 90, || has_finals(&sim, &rx)).await;
    stop(d).await;

    let delivered = rx.seen();
    check(&sim, "purchase_orders", &delivered);
    let mut last: HashMap<u64, (u64, DateTime<Utc>)> = HashMap::new();
    let mut per_record = HashMap::<u64, usize>::new();
    for a in rx.accepted() {
        let j = a.json();
        let id = j["data"]["id"].as_u64().unwrap();
        let seq = j["data"]["custom-seq"].as_u64().unwrap_or(0);
        let time = parse_timestamp(j["time"].as_str().unwrap()).unwrap();
        if let Some((s0, t0)) = last.get(&id) {
            assert!(
                seq >= *s0 && time >= *t0,
                "record {id} went back from version {s0} ({t0}) to {seq} ({time})"
            );
        }
        last.insert(id, (seq, time));
        *per_record.entry(id).or_default() += 1;
    }
    assert_eq!(last.len(), 4);
    assert!(last.values().all(|(s, _)| *s == 15), "{last:?}");
    assert!(
        per_record.values().all(|n| *n >= 2),
        "several versions per record: {per_record:?}"
    );
}

/// kill -9 of the real daemon while deliveries are in flight: after a
/// restart every version arrives, and a repeat carries the same event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_delivery_loses_nothing_and_repeats_keep_their_ids() {
    let sim = Simulator::start(coupa_sim::SimConfig {
        initial_records: 0,
        ..sim_config()
    })
    .await
    .unwrap();
    for i in 0..60 {
        sim.create("purchase_orders", json!({"po-number": format!("PO-{i}")}));
    }
    // Slow answers keep several requests in flight when the kill lands.
    let rx = Receiver::start(&[NEW], Mode::Slow(Duration::from_millis(60))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .poll("settle = \"1s\"")
        .sink(&format!(
            "type = \"webhook\"\nmax_backoff = \"200ms\"\nconcurrency = 4\n{}",
            sink_lines(&rx.url(), "")
        ))
        .toml();
    std::fs::write(&config, text).unwrap();
    let start = || support::spawn_run(&config, std::process::Stdio::null());
    let mut daemon = start();
    wait_until("some deliveries", 60, || rx.accepted().len() >= 10).await;
    let in_flight = rx.state.in_flight.load(Ordering::SeqCst);
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    let before = rx.accepted().len();
    assert!(
        before < 60,
        "killed mid-delivery ({before} of 60 arrived, {in_flight} in flight)"
    );

    let mut daemon = start();
    wait_until("every version after the restart", 90, || {
        has_finals(&sim, &rx)
    })
    .await;
    support::sigterm(&daemon.0);
    assert!(support::wait_exit(&mut daemon.0, Duration::from_secs(40)).success());

    let mut ids: HashMap<(u64, Option<DateTime<Utc>>), HashSet<String>> = HashMap::new();
    for s in rx.seen() {
        ids.entry((s.id, s.updated_at))
            .or_default()
            .insert(s.event_id);
    }
    assert_eq!(ids.len(), 60, "every version arrived");
    for (version, set) in &ids {
        assert_eq!(
            set.len(),
            1,
            "a repeat of {version:?} changed its event id: {set:?}"
        );
    }
    let versions: HashSet<(u64, Option<DateTime<Utc>>)> = sim
        .versions("purchase_orders")
        .iter()
        .map(|v| (v.id, Some(v.updated_at)))
        .collect();
    assert_eq!(ids.keys().cloned().collect::<HashSet<_>>(), versions);
}

/// `dlq list|replay` against a running daemon (which holds the state dir):
/// the CLI goes through its `/admin/dlq`, behind the API token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_work_beside_a_running_daemon() {
    const TOKEN: &str = "admin-token-0123456789abcdef";
    let sim = Simulator::start(coupa_sim::SimConfig {
        initial_records: 2,
        ..sim_config()
    })
    .await
    .unwrap();
    let rx = Receiver::start(&[NEW], Mode::Always(400)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let port = support::free_port();
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .listen(&format!("127.0.0.1:{port}"))
        .sink(&format!(
            "type = \"webhook\"\nname = \"erp\"\nmax_backoff = \"200ms\"\n{}",
            sink_lines(&rx.url(), "")
        ))
        .raw(&format!("[api]\ntoken = \"{TOKEN}\""))
        .toml();
    std::fs::write(&config, &text).unwrap();
    let cli = |args: &[&str]| support::cli(args, &config);
    let mut daemon = support::spawn_run(&config, std::process::Stdio::null());
    // The CLI would take the state dir's lock if it came first.
    wait_until("the daemon serves", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = cli(&["dlq", "list", "--sink", "erp"]);
        if ok && out.contains("2 dead letter(s)") {
            assert!(out.contains("400"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "no dead letters listed: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rx.set_mode(Mode::Ok);
    let (ok, out) = cli(&["dlq", "replay", "--sink", "erp"]);
    assert!(ok && out.contains("2 dead letter(s) queued"), "{out}");
    wait_until("the replays arrive", 60, || rx.accepted().len() == 2).await;
    let (ok, out) = cli(&["dlq", "list"]);
    assert!(ok && out.contains("0 dead letter(s)"), "{out}");
    assert!(!out.contains(TOKEN));

    // Without the token configured, the CLI says how to proceed.
    std::fs::write(
        &config,
        text.replace(&format!("[api]\ntoken = \"{TOKEN}\""), ""),
    )
    .unwrap();
    let (ok, out) = cli(&["dlq", "list"]);
    assert!(
        !ok && out.contains("in use by another process") && out.contains("[api] token"),
        "{out}"
    );
    support::sigterm(&daemon.0);
    assert!(support::wait_exit(&mut daemon.0, Duration::from_secs(40)).success());
}

/// SIGTERM waits for a delivery in flight (bounded by shutdown_timeout);
/// a second signal exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let sim = Simulator::start(coupa_sim::SimConfig {
        initial_records: 1,
        ..sim_config()
    })
    .await
    .unwrap();
    // The receiver sits on every request far longer than the test runs.
    let rx = Receiver::start(&[NEW], Mode::Slow(Duration::from_secs(120))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .sink(&format!(
            "type = \"webhook\"\ntimeout = \"300s\"\n{}",
            sink_lines(&rx.url(), "")
        ))
        .raw("[delivery]\nshutdown_timeout = \"300s\"")
        .toml();
    std::fs::write(&config, text).unwrap();
    let mut daemon = support::spawn_run(&config, std::process::Stdio::null());
    wait_until("a delivery in flight", 60, || {
        rx.state.in_flight.load(Ordering::SeqCst) > 0
    })
    .await;
    support::sigterm(&daemon.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the first signal waits for the delivery in flight"
    );
    support::sigterm(&daemon.0);
    let status = support::wait_exit(&mut daemon.0, Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(130),
        "the second signal exits at once: {status}"
    );
}
