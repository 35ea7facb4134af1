//! The Coupa HTTP client: the [`CoupaClient`] handle and its public calls
//! (list pages, JSON reads, Coupa's clock from the `Date` header, the
//! counters) and the state every clone shares. The request machinery (one
//! shared rate limiter plus a global pause after a 429, bounded retries
//! with backoff) is `exchange.rs`, through which every request, token
//! mints included, goes, so nothing bypasses the rate limit; what a
//! response means (status-to-error mapping, JSON and list-page parsing) is
//! `response.rs`. Credentials live in `auth.rs`; what the records mean is
//! the poller's business, not this module's.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::auth::Auth;
use super::clock::Clock;
use super::error::{CoupaError, MalformedKind};
use super::exchange::RetryPolicy;
use super::record::{Listed, Record};
use crate::coupa::settings::CoupaSettings;
use crate::net::error_chain;
use crate::redact::display_url;

const USER_AGENT: &str = concat!("coupa-changefeed/", env!("CARGO_PKG_VERSION"));
/// Probes (`limit=1` lists) a window may send to learn Coupa's clock
/// before several `Date` headers agree on it.
const CLOCK_PROBES: u32 = 6;

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
    pub(super) auth: Auth,
    /// The configured rate, burst 1: the one gate every request passes.
    pub(super) limiter: DefaultDirectRateLimiter,
    /// Set by a 429: the instance's bucket is full, so every caller holds off.
    pub(super) pause_until: Mutex<Option<Instant>>,
    /// Coupa's clock, from `Date` headers that agree.
    pub(super) clock: Clock,
    /// `Date` headers received (trusted or not).
    pub(super) dates: AtomicU64,
    /// `coupa.max_clock_skew`: readiness fails beyond it.
    pub(super) max_clock_skew: Duration,
    /// A response came without a `Date`: fall back to the host clock (warned once).
    pub(super) no_date: AtomicBool,
    pub(crate) stats: Counters,
    pub(super) max_attempts: u32,
    pub(super) max_backoff: Duration,
    /// Per-request timeout (named in timeout errors).
    pub(super) timeout: Duration,
    /// `coupa.max_response_bytes`: a longer body is refused while it streams.
    pub(super) max_body: u64,
}

/// Counters behind [`ClientStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(super) requests: Counter,
    pub(super) responses_2xx: Counter,
    pub(super) responses_3xx: Counter,
    pub(super) responses_4xx: Counter,
    pub(super) responses_5xx: Counter,
    pub(super) transport_errors: Counter,
    pub(super) retries: Counter,
    pub(super) rate_limited: Counter,
    pub(super) rate_limit_waits: Counter,
    pub(crate) token_mints: Counter,
    /// Request latency by status class, exported by `metrics`.
    pub(super) latency: Latency,
}

/// [`crate::metrics::LatencyFamily`] with a `Default` (the family has none).
pub(super) struct Latency(crate::metrics::LatencyFamily);

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
        // reqwest turns URL user info into a Basic `Authorization` header,
        // which beside OAuth's Bearer header makes two: Coupa rejects the
        // request. With OAuth the user info has no use, so it is dropped.
        let has_userinfo = !base.username().is_empty() || base.password().is_some();
        if has_userinfo && matches!(auth, Auth::OAuth(_)) {
            tracing::warn!(
                base_url = %crate::redact::display_url(&base),
                "coupa.base_url carries user info, which [coupa.oauth] does not use; ignoring it"
            );
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
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
