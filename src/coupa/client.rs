//! The Coupa HTTP client: one shared rate limiter (plus a global pause after
//! a 429), bounded retries with backoff, status-to-error mapping, JSON
//! parsing, and Coupa's clock from the `Date` header. Every request,
//! including token mints, goes through `Inner::exchange`, so nothing
//! bypasses the rate limit. Credentials live in `auth.rs`; what the
//! records mean is the poller's business, not this module's.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, DATE, LOCATION};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::auth::Auth;
use super::clock::Clock;
use super::error::{
    field_errors, validation_messages, CoupaError, FieldError, MalformedKind, TransportKind,
};
use super::record::{self, Listed, Record, RejectReason, Rejected};
use crate::coupa::settings::CoupaSettings;
use crate::net::{error_chain, http_date, retry_after};
use crate::redact::display_url;

const USER_AGENT: &str = concat!("coupa-changefeed/", env!("CARGO_PKG_VERSION"));
/// First backoff ceiling; doubles per attempt up to `max_backoff`.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Probes (`limit=1` lists) a window may send to learn Coupa's clock
/// before several `Date` headers agree on it.
const CLOCK_PROBES: u32 = 6;
/// Coupa: wait at least 5 s between minting a token and its first use.
/// Applied before retrying with a token re-minted after a 401, where using
/// it too early would turn a recoverable expiry into an auth error.
const FRESH_TOKEN_SETTLE: Duration = Duration::from_secs(5);

/// A cheap, cloneable handle to one Coupa instance. All clones share the
/// rate limiter, the token, the clock and the counters.
#[derive(Clone)]
pub struct CoupaClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for CoupaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoupaClient")
            .field("base_url", &display_url(&self.inner.base))
            .field("auth", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

/// Shared state behind every clone.
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    auth: Auth,
    /// The configured rate, burst 1: the one gate every request passes.
    limiter: DefaultDirectRateLimiter,
    /// Set by a 429: the instance's bucket is full, so every caller holds off.
    pause_until: Mutex<Option<Instant>>,
    /// Coupa's clock, from `Date` headers that agree.
    clock: Clock,
    /// `Date` headers received (trusted or not).
    dates: AtomicU64,
    /// `coupa.max_clock_skew`: readiness fails beyond it.
    max_clock_skew: Duration,
    /// A response came without a `Date`: fall back to the host clock (warned once).
    no_date: AtomicBool,
    pub(crate) stats: Counters,
    max_attempts: u32,
    max_backoff: Duration,
    /// Per-request timeout (named in timeout errors).
    timeout: Duration,
    /// `coupa.max_response_bytes`: a longer body is refused while it streams.
    max_body: u64,
}

/// Counters behind [`ClientStats`].
#[derive(Default)]
pub(crate) struct Counters {
    requests: Counter,
    responses_2xx: Counter,
    responses_3xx: Counter,
    responses_4xx: Counter,
    responses_5xx: Counter,
    transport_errors: Counter,
    retries: Counter,
    rate_limited: Counter,
    rate_limit_waits: Counter,
    pub(crate) token_mints: Counter,
    /// Request latency by status class, exported by `metrics`.
    latency: Latency,
}

/// [`crate::metrics::LatencyFamily`] with a `Default` (the family has none).
struct Latency(crate::metrics::LatencyFamily);

impl Default for Latency {
    fn default() -> Self {
        Latency(crate::metrics::latency_family())
    }
}

impl std::ops::Deref for Latency {
    type Target = crate::metrics::LatencyFamily;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A snapshot of the client's counters (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientStats {
    /// Requests sent, token mints and retries included.
    pub requests: u64,
    pub responses_2xx: u64,
    pub responses_3xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    /// Requests that got no usable response (connect, timeout, broken body).
    pub transport_errors: u64,
    /// Attempts repeated after a transient failure or a 401.
    pub retries: u64,
    /// 429 responses received.
    pub rate_limited: u64,
    /// Requests that had to wait for the rate limiter or a 429 pause.
    pub rate_limit_waits: u64,
    /// Token requests sent.
    pub token_mints: u64,
}

/// Which failures a call may repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryPolicy {
    /// Idempotent reads: every transient failure.
    Read,
    /// Writes: only where Coupa cannot have acted: no connection, a
    /// failure before the request was sent (e.g. minting the token), or a
    /// 429/503, by which the server says it did not handle the request
    /// (RFC 9110; the client cannot see whether the body was read, so it
    /// takes the server's word). A 500, 502, 504, a timeout or a reset may
    /// follow a write that took effect: repeating it could act twice.
    Write,
}

impl RetryPolicy {
    fn retries(self, f: &Failure) -> bool {
        match self {
            RetryPolicy::Read => f.err.is_transient(),
            RetryPolicy::Write => {
                (f.before_send && f.err.is_transient())
                    || matches!(
                        f.err,
                        CoupaError::Transport {
                            kind: TransportKind::Connect,
                            ..
                        } | CoupaError::Status {
                            status: 429 | 503,
                            ..
                        }
                    )
            }
        }
    }
}

/// A response read in full.
pub(crate) struct Received {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A failed attempt, with what the retry loop needs to know about it.
pub(crate) struct Failure {
    pub err: CoupaError,
    /// The server's `Retry-After`, capped.
    pub retry_after: Option<Duration>,
    /// A 401 answered the OAuth token of this generation.
    pub stale_token: Option<u64>,
    /// Failed before the request itself was sent (e.g. while minting).
    pub before_send: bool,
}

impl From<CoupaError> for Failure {
    fn from(err: CoupaError) -> Self {
        Failure {
            err,
            retry_after: None,
            stale_token: None,
            before_send: false,
        }
    }
}

impl CoupaClient {
    /// Builds the client (no request is sent until the first call).
    pub fn new(settings: &CoupaSettings) -> Result<Self, CoupaError> {
        let rps = NonZeroU32::new(settings.requests_per_second).ok_or_else(|| {
            CoupaError::Config(
                "cannot build the Coupa client: coupa.requests_per_second must be at least 1"
                    .into(),
            )
        })?;
        let auth = Auth::from_settings(settings)?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            // SSRF guard: a redirect would carry our credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .build()
            .map_err(|e| {
                CoupaError::Config(format!(
                    "cannot build the Coupa HTTP client: {}",
                    error_chain(&e)
                ))
            })?;
        let mut base = settings.base_url.clone();
        base.set_query(None);
        base.set_fragment(None);
        Ok(CoupaClient {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(NonZeroU32::MIN)),
                pause_until: Mutex::new(None),
                clock: Clock::new(settings.max_clock_jump),
                dates: AtomicU64::new(0),
                max_clock_skew: settings.max_clock_skew,
                no_date: AtomicBool::new(false),
                stats: Counters::default(),
                max_attempts: settings.max_attempts.max(1),
                max_backoff: settings.max_backoff,
                timeout: settings.timeout,
                max_body: settings.max_response_bytes,
            }),
        })
    }

    /// The instance root.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// GET a list endpoint; the body must be a bare JSON array of objects,
    /// every one readable (see [`CoupaClient::list_page`] for the tolerant form).
    pub async fn list(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Vec<Record>, CoupaError> {
        let url = self.inner.url(path, query)?;
        let shown = display_url(&url);
        self.list_page(path, query)
            .await?
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                item.map_err(|r| CoupaError::Malformed {
                    url: shown.clone(),
                    kind: MalformedKind::WrongShape,
                    detail: format!("element {i} is {}", r.detail),
                })
            })
            .collect()
    }

    /// GET a list endpoint, element by element: the body must be a JSON
    /// array (else the whole page is an error), but an element that is not
    /// a readable object (bad UTF-8, an unreadable number, not an object)
    /// comes back as a [`Rejected`] in its place, so one bad record cannot
    /// stall a page on every poll.
    pub async fn list_page(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Vec<Listed>, CoupaError> {
        let url = self.inner.url(path, query)?;
        self.inner
            .send(
                Method::GET,
                &url,
                None,
                RetryPolicy::Read,
                Inner::parse_list,
            )
            .await
    }

    /// `text` with the credentials this client holds masked (for logs of
    /// what Coupa sent).
    pub fn redact(&self, text: &str) -> String {
        self.inner.auth.redact(text)
    }

    /// A one-line excerpt of `body`, redacted before it is cut.
    pub fn snippet(&self, body: &[u8]) -> String {
        self.inner.auth.snippet(body)
    }

    /// The request latency histograms (shared with every clone).
    pub fn latency(&self) -> crate::metrics::LatencyFamily {
        self.inner.stats.latency.0.clone()
    }

    /// Any GET returning JSON.
    pub async fn get_json(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Value, CoupaError> {
        self.send(Method::GET, path, query, None, RetryPolicy::Read)
            .await
    }

    /// The seam every call goes through: `path` + `query` under base_url,
    /// an optional JSON body, and the retry policy (writes will pass
    /// `RetryPolicy::Write`). Returns the response's JSON.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
        policy: RetryPolicy,
    ) -> Result<Value, CoupaError> {
        let url = self.inner.url(path, query)?;
        self.inner
            .send(method, &url, body, policy, Inner::parse_value)
            .await
    }

    /// Coupa's clock: the host clock plus the offset several `Date`
    /// headers agreed on (`None` until they have).
    pub fn coupa_now(&self) -> Option<DateTime<Utc>> {
        self.inner.clock.now()
    }

    /// Coupa − host, once trusted (metrics, readiness).
    pub fn clock_offset(&self) -> Option<chrono::Duration> {
        self.inner.clock.offset()
    }

    /// `Date` headers ignored because they jumped beyond `coupa.max_clock_jump`.
    pub fn clock_rejected(&self) -> u64 {
        self.inner.clock.rejected()
    }

    /// Why Coupa's clock cannot be squared with the host's, if it cannot:
    /// they differ by more than `coupa.max_clock_skew`.
    pub fn clock_problem(&self) -> Option<String> {
        let off = self.clock_offset()?;
        let skew = chrono::Duration::from_std(self.inner.max_clock_skew).ok()?;
        (off.abs() > skew).then(|| {
            format!(
                "Coupa's clock is {}s {} the host's (coupa.max_clock_skew = {}); check the host's NTP sync or Coupa's Date headers",
                off.num_seconds().abs(),
                if off > chrono::Duration::zero() { "ahead of" } else { "behind" },
                humantime::format_duration(self.inner.max_clock_skew)
            )
        })
    }

    /// `coupa_now()`, probing `probe_path?limit=1` (a few times at most)
    /// until several `Date` headers agree; the host clock (warned once)
    /// if Coupa sends no `Date` at all. Headers that keep disagreeing are
    /// an error: a window must not rest on one of them.
    pub async fn clock(&self, probe_path: &str) -> Result<DateTime<Utc>, CoupaError> {
        if let Some(t) = self.coupa_now() {
            return Ok(t);
        }
        if !self.inner.no_date.load(Ordering::Relaxed) {
            for _ in 0..CLOCK_PROBES {
                let probe = self
                    .get_json(probe_path, &[("limit".into(), "1".into())])
                    .await;
                if let Some(t) = self.coupa_now() {
                    return Ok(t);
                }
                // Nothing answered at all: we learnt nothing about the clock.
                probe?;
                if self.inner.dates.load(Ordering::Relaxed) == 0 {
                    break;
                }
            }
            if self.inner.dates.load(Ordering::Relaxed) > 0 {
                return Err(CoupaError::Clock(format!(
                    "{}: Coupa's Date headers disagree by more than 2 s across {CLOCK_PROBES} responses; no poll window rests on one of them",
                    display_url(&self.inner.base)
                )));
            }
            self.inner.no_date.store(true, Ordering::Relaxed);
            tracing::warn!(
                base_url = %display_url(&self.inner.base),
                "Coupa sends no Date header; using the host clock for poll windows (keep it NTP-synced)"
            );
        }
        Ok(Utc::now())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            requests: s.requests.get(),
            responses_2xx: s.responses_2xx.get(),
            responses_3xx: s.responses_3xx.get(),
            responses_4xx: s.responses_4xx.get(),
            responses_5xx: s.responses_5xx.get(),
            transport_errors: s.transport_errors.get(),
            retries: s.retries.get(),
            rate_limited: s.rate_limited.get(),
            rate_limit_waits: s.rate_limit_waits.get(),
            token_mints: s.token_mints.get(),
        }
    }
}

impl Inner {
    /// `base_url` + `path` + query pairs. `path` is appended (never resolved
    /// as a URL), so it cannot point the client at another host.
    fn url(&self, path: &str, query: &[(String, String)]) -> Result<Url, CoupaError> {
        let mut url = endpoint(&self.base, path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// One call with retries (`body` is sent as JSON; `policy` decides
    /// which failures repeat; a 401 on a token re-mints and retries once).
    async fn send<T>(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        policy: RetryPolicy,
        parse: fn(&Inner, &Method, &str, &Received) -> Result<T, CoupaError>,
    ) -> Result<T, CoupaError> {
        let shown = display_url(url);
        let mut budget = self.max_attempts;
        let mut attempts = 0;
        let mut reminted = false;
        let mut settle_fresh = false;
        loop {
            attempts += 1;
            let f = match self
                .attempt(&method, url, &shown, body, settle_fresh)
                .await
                .and_then(|r| parse(self, &method, &shown, &r).map_err(Failure::from))
            {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            settle_fresh = false;
            // A 401 on a token: mint a new one and retry once, outside the budget.
            if let (Some(generation), false) = (f.stale_token, reminted) {
                reminted = true;
                settle_fresh = true;
                budget += 1;
                self.auth.invalidate(generation).await;
                self.stats.retries.inc();
                tracing::warn!(
                    path = url.path(),
                    "401 from Coupa: minting a new token and retrying once"
                );
                continue;
            }
            if !policy.retries(&f) {
                return Err(f.err);
            }
            if attempts >= budget {
                return Err(CoupaError::RetriesExhausted {
                    attempts,
                    last: Box::new(f.err),
                });
            }
            let delay = f.retry_after.unwrap_or_else(|| {
                crate::backoff::full_jitter(attempts, BASE_BACKOFF, self.max_backoff)
            });
            if matches!(f.err, CoupaError::Status { status: 429, .. }) {
                self.pause_all(delay);
            }
            self.stats.retries.inc();
            tracing::warn!(
                path = url.path(),
                attempt = attempts,
                of = budget,
                delay_ms = delay.as_millis() as u64,
                reason = %f.err,
                "retrying Coupa request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: credential, request, a success response or a failure.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        shown: &str,
        body: Option<&Value>,
        settle_fresh: bool,
    ) -> Result<Received, Failure> {
        let cred = self.auth.credential(self).await.map_err(|mut f| {
            f.before_send = true;
            f
        })?;
        if let (true, Some(minted)) = (settle_fresh, cred.minted_at) {
            tokio::time::sleep_until(minted + FRESH_TOKEN_SETTLE).await;
        }
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(cred.name, cred.value);
        if let Some(b) = body {
            req = req.json(b); // sets Content-Type: application/json
        }
        let r = self.exchange(req, shown, true).await?;
        if r.status.is_success() {
            return Ok(r);
        }
        let mut f = status_error(self, shown, &r);
        if r.status == StatusCode::UNAUTHORIZED {
            f.stale_token = cred.generation;
        }
        Err(f)
    }

    /// Paces, sends and reads one request in full; records stats and the
    /// clock. Every request to Coupa (token mints too) goes through here.
    pub(crate) async fn exchange(
        &self,
        req: RequestBuilder,
        shown: &str,
        track_clock: bool,
    ) -> Result<Received, Failure> {
        self.pace().await;
        self.stats.requests.inc();
        let started = std::time::Instant::now();
        let observe = |class: &str| {
            self.stats
                .latency
                .get_or_create(&vec![("status".to_string(), class.to_string())])
                .observe(started.elapsed().as_secs_f64());
        };
        let resp = req.send().await.map_err(|e| {
            self.stats.transport_errors.inc();
            observe("transport_error");
            Failure::from(self.transport(shown, &e, false))
        })?;
        let status = resp.status();
        match status.as_u16() {
            200..=299 => &self.stats.responses_2xx,
            300..=399 => &self.stats.responses_3xx,
            400..=499 => &self.stats.responses_4xx,
            _ => &self.stats.responses_5xx,
        }
        .inc();
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.stats.rate_limited.inc();
        }
        let headers = resp.headers().clone();
        if track_clock {
            self.observe_date(&headers);
        }
        let body = self.read_body(resp, shown).await.map_err(|f| {
            if matches!(f.err, CoupaError::Transport { .. }) {
                self.stats.transport_errors.inc();
                observe("transport_error");
            }
            f
        })?;
        observe(match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        });
        Ok(Received {
            status,
            headers,
            body,
        })
    }

    /// Reads a body chunk by chunk, refusing it (before reading on, so
    /// memory stays bounded) once it would pass `max_body`: by its
    /// `Content-Length` up front, or by the running total.
    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        shown: &str,
    ) -> Result<Vec<u8>, Failure> {
        let limit = self.max_body;
        let too_large = |what: String| {
            Failure::from(CoupaError::Malformed {
                url: shown.to_string(),
                kind: MalformedKind::TooLarge,
                detail: format!("{what}, over coupa.max_response_bytes = {limit} bytes"),
            })
        };
        let declared = resp.content_length();
        if let Some(n) = declared.filter(|n| *n > limit) {
            return Err(too_large(format!("Content-Length is {n} bytes")));
        }
        // Trust a declared length only as far as the limit.
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Failure::from(self.transport(shown, &e, true)))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large(format!(
                    "the body passed {} bytes",
                    body.len() + chunk.len()
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Waits for any 429 pause and then for the rate limiter.
    async fn pace(&self) {
        let mut waited = false;
        loop {
            if let Some(until) = self.paused_until() {
                waited = true;
                tokio::time::sleep_until(until).await;
                continue;
            }
            if self.limiter.check().is_err() {
                waited = true;
                self.limiter.until_ready().await;
            }
            // A 429 that arrived while we queued holds us off too.
            if self.paused_until().is_none() {
                break;
            }
        }
        if waited {
            self.stats.rate_limit_waits.inc();
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        lock(&self.pause_until).filter(|t| *t > Instant::now())
    }

    fn pause_all(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut p = lock(&self.pause_until);
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }

    fn transport(&self, shown: &str, e: &reqwest::Error, reading_body: bool) -> CoupaError {
        let (kind, detail) = if e.is_timeout() {
            let t = self.timeout;
            (
                TransportKind::Timeout,
                format!("no complete response within {t:?} (coupa.timeout)"),
            )
        } else if e.is_connect() {
            (TransportKind::Connect, error_chain(e))
        } else if reading_body || e.is_body() || e.is_decode() {
            (TransportKind::Body, error_chain(e))
        } else {
            (TransportKind::Other, error_chain(e))
        };
        CoupaError::Transport {
            url: shown.to_string(),
            kind,
            detail,
        }
    }

    fn observe_date(&self, headers: &HeaderMap) {
        if let Some(at) = http_date(headers.get(DATE)) {
            self.dates.fetch_add(1, Ordering::Relaxed);
            self.clock.observe(at.into(), Utc::now());
        }
    }

    /// A success body as JSON. A write may answer with no body
    /// (`return_object=none`); a read never legitimately does.
    fn parse_value(&self, method: &Method, shown: &str, r: &Received) -> Result<Value, CoupaError> {
        if *method != Method::GET && r.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        self.parse_json(shown, r)
    }

    /// A list body, element by element ([`split_array`]): a body that is
    /// not one whole JSON array fails as [`Inner::parse_json`] says; an
    /// element that does not parse to an object is rejected in its place.
    fn parse_list(&self, _: &Method, shown: &str, r: &Received) -> Result<Vec<Listed>, CoupaError> {
        let Some(elements) = split_array(&r.body) else {
            // Not an array: say why as a whole-body parse would.
            let value = self.parse_json(shown, r)?;
            return Err(CoupaError::Malformed {
                url: shown.to_string(),
                kind: MalformedKind::WrongShape,
                detail: format!("expected a JSON array of records, got {}", kind_of(&value)),
            });
        };
        Ok(elements
            .into_iter()
            .enumerate()
            .map(|(i, raw)| match serde_json::from_slice::<Value>(raw) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(other) => {
                    Err(self.reject(i, raw, RejectReason::NotObject, kind_of(&other).to_string()))
                }
                Err(e) => Err(self.reject(i, raw, RejectReason::Unreadable, e.to_string())),
            })
            .collect())
    }

    /// A list element that is no record: what the logs and `/status` show.
    fn reject(&self, index: usize, raw: &[u8], reason: RejectReason, detail: String) -> Rejected {
        Rejected {
            reason,
            detail: format!("element {index}: {detail}"),
            updated_at: record::raw_field(raw, "updated-at")
                .or_else(|| record::raw_field(raw, "updated_at"))
                .map(|s| self.auth.redact(&s)),
            excerpt: self.auth.snippet(raw),
        }
    }

    /// A success body as JSON; a broken or non-JSON body is a (transient) `Malformed`.
    pub(crate) fn parse_json(&self, shown: &str, r: &Received) -> Result<Value, CoupaError> {
        if r.status == StatusCode::NO_CONTENT && r.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&r.body).map_err(|e| {
            let content_type = r
                .headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let first = r.body.iter().find(|b| !b.is_ascii_whitespace()).copied();
            let json_like =
                (content_type.is_empty() || content_type.contains("json")) && first != Some(b'<');
            if json_like {
                CoupaError::Malformed {
                    url: shown.to_string(),
                    kind: MalformedKind::BadJson,
                    detail: format!("{e} ({} bytes)", r.body.len()),
                }
            } else {
                CoupaError::Malformed {
                    url: shown.to_string(),
                    kind: MalformedKind::NotJson,
                    detail: format!(
                        "expected JSON, got `{}`: {}",
                        if content_type.is_empty() {
                            "no content type"
                        } else {
                            content_type
                        },
                        self.auth.snippet(&r.body)
                    ),
                }
            }
        })
    }
}

/// The error for a non-2xx response (and its `Retry-After`).
pub(crate) fn status_error(inner: &Inner, shown: &str, r: &Received) -> Failure {
    let url = shown.to_string();
    let text = || inner.auth.snippet(&r.body);
    let err = match r.status.as_u16() {
        status @ 300..=399 => CoupaError::Redirect {
            url,
            status,
            location: r
                .headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| inner.auth.redact(l))
                .unwrap_or_else(|| "(no Location)".into()),
        },
        400 => match serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|mut v| v.get_mut("errors").map(Value::take))
        {
            Some(errors) => {
                let errors = inner.auth.redact_json(errors);
                let mut messages = validation_messages(&errors);
                let mut fields = field_errors(&errors);
                if messages.is_empty() {
                    messages.push(text());
                }
                // A 400 always names at least one reason.
                if fields.is_empty() {
                    fields.push(FieldError {
                        field: "base".into(),
                        message: messages.join("; "),
                    });
                }
                CoupaError::Validation {
                    url,
                    errors: Box::new(errors),
                    messages,
                    fields,
                }
            }
            None => CoupaError::Status { url, status: 400, snippet: text() },
        },
        401 => CoupaError::Unauthorized {
            url,
            detail: match inner.auth {
                Auth::ApiKey { .. } => "Coupa rejected the API key (X-COUPA-API-KEY; keys are deprecated since R35, consider [coupa.oauth])".into(),
                Auth::OAuth(_) => "Coupa rejected the OAuth access token, also one freshly minted".into(),
            },
        },
        403 => CoupaError::Forbidden { url, snippet: text() },
        404 => CoupaError::NotFound { url },
        status => CoupaError::Status { url, status, snippet: text() },
    };
    Failure {
        err,
        // A server's wait is honoured up to our own backoff ceiling: one
        // absurd `Retry-After` must not pause every request for hours.
        retry_after: retry_after(&r.headers).map(|d| d.min(inner.max_backoff)),
        stale_token: None,
        before_send: false,
    }
}

/// `base` + `path`, refusing anything that leaves `base`'s origin.
pub(crate) fn endpoint(base: &Url, path: &str) -> Result<Url, CoupaError> {
    if !path.starts_with('/') {
        return Err(CoupaError::Config(format!(
            "request path `{path}` must start with `/` (it is appended to {})",
            display_url(base)
        )));
    }
    let mut root = base.clone();
    root.set_query(None);
    root.set_fragment(None);
    let url =
        Url::parse(&format!("{}{path}", root.as_str().trim_end_matches('/'))).map_err(|e| {
            CoupaError::Config(format!(
                "request path `{path}` under {}: {e}",
                display_url(base)
            ))
        })?;
    if url.origin() != base.origin() {
        return Err(CoupaError::Config(format!(
            "request path `{path}` leaves the Coupa instance {}",
            display_url(base)
        )));
    }
    Ok(url)
}

/// The raw elements of a JSON array, split without parsing them (strings
/// and nesting tracked, nothing validated), so each can be parsed on its
/// own. `None` unless the body is one array closed at the end: a body cut
/// short fails as a whole, never as a page missing its tail.
pub(crate) fn split_array(body: &[u8]) -> Option<Vec<&[u8]>> {
    let ws = |b: &u8| b.is_ascii_whitespace();
    let start = body.iter().position(|b| !ws(b))?;
    if body[start] != b'[' {
        return None;
    }
    let mut elements = Vec::new();
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut from = start + 1;
    for i in start + 1..body.len() {
        let b = body[i];
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b']' if depth > 0 => depth -= 1,
            b',' | b']' if depth == 0 => {
                let el = body[from..i].trim_ascii();
                let last = b == b']';
                if el.is_empty() {
                    // `[]` is an empty page; `[,` or `[1,]` is no array.
                    if !(last && elements.is_empty()) {
                        return None;
                    }
                } else {
                    elements.push(el);
                }
                if last {
                    return body[i + 1..].iter().all(ws).then_some(elements);
                }
                from = i + 1;
            }
            _ => {}
        }
    }
    None
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Locks a std mutex, ignoring poisoning (the data are plain values).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
