//! coupa-sim: the Coupa API simulator and the ground-truth checker, used by
//! the daemon's tests, benches and `coupa-changefeed demo`. It depends on
//! `coupa-model` (the object catalogue, record timestamps), never on the
//! daemon.
//!
//! The simulator is an in-process (or `coupa-sim` binary) HTTP
//! server that behaves like Coupa's Core REST API as `coupa-api.md`
//! describes it, awkward parts included (bare arrays, 50-record pages,
//! hyphenated keys, whole-second timestamps in mixed UTC offsets, live
//! offset paging, 429s without `Retry-After`, 400s on illegal writes),
//! plus the knobs tests need:
//! a movable clock, injected faults, a change generator and the ground
//! truth of every record version ever shown.
//!
//! This file owns the public face (config, handle, the types that also
//! travel over the `/_sim/` admin endpoints) and the shared state. It must
//! not know HTTP details (`http.rs`), record storage and querying
//! (`store.rs`, `query.rs`) or what records look like (`data.rs`).
//!
//! # Layout
//! - `store.rs`: the tables, ids, the version log, create/update/list.
//! - `query.rs`: Coupa's query-string language (filters, paging, `fields`).
//! - `data.rs`: realistic generated fields per object, and mutations.
//! - `http.rs`: the axum router: API, OAuth token endpoint, gate.
//! - `admin.rs`: the `/_sim/` admin endpoints (records, versions, faults,
//!   clock, request log, settings).
//! - `writes.rs`: what API writes do: validation 400s, the PO and
//!   integration-run state machines, custom-field merging.
//! - `auth.rs`: OAuth clients, issued tokens, the API key.
//! - `faults.rs`: injectable faults and the rate-limit bucket.
//! - `generator.rs`: the background change generator.
//! - [`verify`]: the ground-truth checker — the simulator's versions against
//!   what a sink received: lost, duplicate and phantom events.
//! - [`cli`]: the `coupa-sim` command line (serve, `check`).

mod admin;
mod auth;
pub mod cli;
mod data;
mod faults;
mod generator;
mod http;
mod query;
mod store;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_admin;
#[cfg(test)]
mod tests_writes;
pub mod verify;
mod writes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use coupa_model::objects::{self, ObjectSpec};

pub use faults::{Fault, FaultRule};

/// How to run a simulator. `Default` gives a quiet, empty instance with
/// Coupa's documented rate limit and no credentials: set `api_key` or
/// `oauth_clients`, or every API call answers 401.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free one (see [`Simulator::base_url`]).
    pub listen: SocketAddr,
    /// Accepted `X-COUPA-API-KEY` value (legacy auth; grants every scope).
    pub api_key: Option<String>,
    /// Clients allowed the client-credentials grant at `/oauth2/token`.
    pub oauth_clients: Vec<OAuthClient>,
    /// Token lifetime, sent as `expires_in` (Coupa sends 86399).
    pub token_ttl: Duration,
    /// Makes generated data reproducible.
    pub seed: u64,
    /// Records generated per top-level object at start; nested objects get
    /// one to three per parent record.
    pub initial_records: usize,
    /// UTC offsets timestamps are rendered in, rotating by record id
    /// (Coupa renders the instance's zone, never `Z`).
    pub utc_offsets: Vec<FixedOffset>,
    /// Sim clock = host clock + this; lets tests put "Coupa" minutes off.
    pub clock_offset: chrono::Duration,
    /// Leaky bucket; beyond it the API answers 429. `None` = unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Send `Retry-After: 1` on rate-limit 429s (real Coupa does not).
    pub retry_after_on_429: bool,
    /// Added before every API response.
    pub latency: Duration,
    /// Background creates+updates per second across `change_objects`.
    pub change_rate: f64,
    /// Catalogue names the change generator touches.
    pub change_objects: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            oauth_clients: Vec::new(),
            token_ttl: Duration::from_secs(86399),
            seed: 0,
            initial_records: 0,
            utc_offsets: vec![FixedOffset::west_opt(7 * 3600).expect("valid offset")],
            clock_offset: chrono::Duration::zero(),
            rate_limit: Some(RateLimit {
                per_second: 25.0,
                burst: 20,
            }),
            retry_after_on_429: false,
            latency: Duration::ZERO,
            change_rate: 0.0,
            change_objects: ["purchase_orders", "invoices", "suppliers"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// An OAuth client-credentials client, as an admin would set one up in Coupa.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    /// Scopes granted to the client; a token may carry any subset.
    pub scopes: Vec<String>,
}

impl OAuthClient {
    /// A client granted the read and write scope of every catalogue object.
    pub fn with_all_scopes(client_id: &str, client_secret: &str) -> OAuthClient {
        let mut scopes: Vec<String> = objects::CATALOGUE
            .iter()
            .flat_map(|o| [o.read_scope(), o.write_scope()])
            .collect();
        scopes.sort();
        scopes.dedup();
        OAuthClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scopes,
        }
    }
}

/// Coupa's documented limit is 25 requests/s with a burst of 20.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// One version of one record: the ground truth tests compare delivered
/// events against, by `(object, id, updated_at)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub object: String,
    pub id: u64,
    pub updated_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The record exactly as the API rendered it while this version was
    /// current (shared with the live table while it is).
    pub record: Arc<Map<String, Value>>,
    /// Sim clock when the version became visible (differs from
    /// `updated_at` for late commits).
    pub appeared_at: DateTime<Utc>,
    /// Sim clock when the next version replaced it.
    pub superseded_at: Option<DateTime<Utc>>,
}

/// One API request as the simulator saw it (admin `/_sim/` calls excluded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// Arrival time. Over HTTP: milliseconds since a process-wide epoch,
    /// only meaningful relative to other entries.
    #[serde(with = "instant_ms")]
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Raw (still percent-encoded) query string.
    pub query: String,
    /// Status sent; 0 if the client went away before the answer.
    pub status: u16,
}

/// Parses a UTC offset as written in Coupa timestamps and on the command
/// line: `-07:00`, `+0530`, `+05`, `Z`.
pub fn parse_offset(s: &str) -> Option<FixedOffset> {
    match s.trim() {
        "Z" | "z" => FixedOffset::east_opt(0),
        t => t.parse().ok(),
    }
}

/// Why a simulator operation was refused (admin endpoints turn these into
/// 4xx; the in-process API panics on them, as a test bug).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown object {0:?}; known: {known}", known = objects::names().join(", "))]
    UnknownObject(String),
    #[error("{0} is nested under a parent: fields must carry \"_parent_id\"")]
    MissingParent(String),
    #[error("field {field:?} is not a timestamp: {value}")]
    BadTimestamp { field: String, value: String },
    #[error("fields must be a JSON object")]
    NotAnObject,
}

/// Settings that can change while the simulator runs.
#[derive(Debug, Clone)]
struct Settings {
    latency: Duration,
    change_rate: f64,
    change_objects: Vec<String>,
    rate_limit: Option<RateLimit>,
    retry_after_on_429: bool,
}

/// State shared by the handle, the HTTP handlers and the generator.
/// Every lock is a std mutex held only for a few statements, never across
/// an await.
struct Shared {
    store: Mutex<store::Store>,
    /// Sim clock offset from the host clock, in milliseconds.
    clock_offset_ms: AtomicI64,
    settings: Mutex<Settings>,
    bucket: Mutex<faults::Bucket>,
    faults: Mutex<Vec<FaultRule>>,
    requests: Mutex<Vec<RequestLog>>,
    auth: auth::Auth,
}

/// Locks a mutex, shrugging off poisoning: a panicking test thread must not
/// take the simulator down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    fn spec(object: &str) -> Result<&'static ObjectSpec, SimError> {
        objects::lookup(object).ok_or_else(|| SimError::UnknownObject(object.to_string()))
    }

    fn create(&self, object: &str, fields: Value) -> Result<Map<String, Value>, SimError> {
        let spec = Self::spec(object)?;
        let Value::Object(fields) = fields else {
            return Err(SimError::NotAnObject);
        };
        let now = self.now();
        lock(&self.store).create(spec, fields, now)
    }

    fn update(
        &self,
        object: &str,
        id: u64,
        patch: Value,
    ) -> Result<Option<Map<String, Value>>, SimError> {
        let spec = Self::spec(object)?;
        let Value::Object(patch) = patch else {
            return Err(SimError::NotAnObject);
        };
        let now = self.now();
        lock(&self.store).update(spec, id, patch, now)
    }
}

/// A running simulator. Dropping it (or [`Simulator::shutdown`]) stops the
/// server and the change generator. Every control method lives on
/// [`SimHandle`], which `Simulator` derefs to.
pub struct Simulator {
    handle: SimHandle,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    generator: Option<JoinHandle<()>>,
}

/// A cheap, cloneable, `Send` handle to a running simulator's data and
/// knobs, for tasks that edit records while a test drives the daemon.
/// Holding one does not keep the server alive.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl std::ops::Deref for Simulator {
    type Target = SimHandle;
    fn deref(&self) -> &SimHandle {
        &self.handle
    }
}

impl Simulator {
    /// Binds, seeds the initial records and starts serving.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<Simulator> {
        instant_ms::start_epoch();
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new(cfg.seed, cfg.utc_offsets.clone())),
            clock_offset_ms: AtomicI64::new(cfg.clock_offset.num_milliseconds()),
            settings: Mutex::new(Settings {
                latency: cfg.latency,
                change_rate: cfg.change_rate,
                change_objects: cfg.change_objects.clone(),
                rate_limit: cfg.rate_limit,
                retry_after_on_429: cfg.retry_after_on_429,
            }),
            bucket: Mutex::new(faults::Bucket::default()),
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            auth: auth::Auth::new(
                cfg.api_key.clone(),
                cfg.oauth_clients.clone(),
                cfg.token_ttl,
            ),
        });
        let now = shared.now();
        lock(&shared.store).seed_initial(cfg.initial_records, now);

        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| anyhow::anyhow!("coupa-sim: cannot listen on {}: {e}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let app = http::router(shared.clone());
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!("coupa-sim server stopped: {e}");
            }
        });
        let generator = tokio::spawn(generator::run(shared.clone()));
        Ok(Simulator {
            handle: SimHandle { shared, addr },
            stop,
            server: Some(server),
            generator: Some(generator),
        })
    }

    /// A handle to move into another task (see [`SimHandle`]).
    pub fn clone_handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Stops the server (waiting up to 2 s for in-flight requests) and the generator.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(g) = self.generator.take() {
            g.abort();
        }
        if let Some(mut s) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(2), &mut s)
                .await
                .is_err()
            {
                s.abort();
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(g) = self.generator.take() {
            g.abort();
        }
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The sim clock (host clock + offset). Record timestamps use its whole seconds.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    pub fn set_clock_offset(&self, d: chrono::Duration) {
        self.shared
            .clock_offset_ms
            .store(d.num_milliseconds(), Ordering::Relaxed);
    }

    /// Creates a record: the next id, generated fields under `fields`,
    /// `created-at` = `updated-at` = now unless `fields` sets them (only
    /// `updated-at` given: a late commit, `created-at` follows it).
    /// Nested objects need `"_parent_id"`. Panics on an unknown object or
    /// a missing parent: that is a bug in the calling test. See
    /// [`SimHandle::try_create`].
    pub fn create(&self, object: &str, fields: Value) -> Map<String, Value> {
        self.try_create(object, fields)
            .unwrap_or_else(|e| panic!("Simulator::create: {e}"))
    }

    /// [`SimHandle::create`] without the panic.
    pub fn try_create(&self, object: &str, fields: Value) -> Result<Map<String, Value>, SimError> {
        self.shared.create(object, fields)
    }

    /// Merges `patch` into the record and makes a new version
    /// (`updated-at` = now unless the patch sets it). `None` if no such record.
    pub fn update(&self, object: &str, id: u64, patch: Value) -> Option<Map<String, Value>> {
        self.shared
            .update(object, id, patch)
            .unwrap_or_else(|e| panic!("Simulator::update: {e}"))
    }

    pub fn get(&self, object: &str, id: u64) -> Option<Map<String, Value>> {
        let spec = objects::lookup(object)?;
        lock(&self.shared.store).get(spec, id)
    }

    /// Every version of `object` ever created, in creation order.
    pub fn versions(&self, object: &str) -> Vec<Version> {
        lock(&self.shared.store).versions(object)
    }

    pub fn inject(&self, rule: FaultRule) {
        lock(&self.shared.faults).push(rule);
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every API request received, in arrival order.
    pub fn requests(&self) -> Vec<RequestLog> {
        lock(&self.shared.requests).clone()
    }

    pub fn set_latency(&self, d: Duration) {
        lock(&self.shared.settings).latency = d;
    }

    pub fn set_change_rate(&self, per_sec: f64) {
        lock(&self.shared.settings).change_rate = per_sec;
    }

    pub fn set_rate_limit(&self, r: Option<RateLimit>) {
        lock(&self.shared.settings).rate_limit = r;
        *lock(&self.shared.bucket) = faults::Bucket::default();
    }

    /// Offsets for versions written from now on (existing versions keep theirs).
    pub fn set_utc_offsets(&self, offsets: Vec<FixedOffset>) {
        lock(&self.shared.store).set_offsets(offsets);
    }

    /// Invalidates every issued OAuth token (the next call with one gets 401).
    pub fn revoke_tokens(&self) {
        self.shared.auth.revoke_all();
    }
}

/// Serialises an `Instant` as milliseconds since a process-wide epoch, so
/// request logs can cross the admin endpoint and still be compared.
mod instant_ms {
    use super::*;
    use serde::{Deserializer, Serializer};

    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

    /// Fixes the epoch before any request is logged, so offsets are positive.
    pub fn start_epoch() {
        LazyLock::force(&EPOCH);
    }

    pub fn serialize<S: Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
        let ms = match at.checked_duration_since(*EPOCH) {
            Some(d) => d.as_secs_f64() * 1000.0,
            None => -(EPOCH.duration_since(*at).as_secs_f64() * 1000.0),
        };
        s.serialize_f64(ms)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let ms = f64::deserialize(d)?;
        let span = Duration::from_secs_f64(ms.abs() / 1000.0);
        Ok(if ms >= 0.0 {
            *EPOCH + span
        } else {
            *EPOCH - span
        })
    }
}
