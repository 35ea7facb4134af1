//! One request to Coupa, start to finish: the URL under the instance
//! root, pacing (the shared rate limiter and the pause after a 429), the
//! credential, sending, reading the body within `coupa.max_response_bytes`,
//! the counters and latency, and the retry loop with its [`RetryPolicy`]
//! (a 401 re-mints the token and retries once). Every request, token mints
//! included, goes through [`Inner::exchange`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::{HeaderMap, DATE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::client::Inner;
use super::error::{CoupaError, MalformedKind, TransportKind};
use super::response::status_error;
use crate::net::{error_chain, http_date};
use crate::redact::display_url;

/// First backoff ceiling; doubles per attempt up to `max_backoff`.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Coupa: wait at least 5 s between minting a token and its first use.
/// Applied before retrying with a token re-minted after a 401, where using
/// it too early would turn a recoverable expiry into an auth error.
const FRESH_TOKEN_SETTLE: Duration = Duration::from_secs(5);

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

impl Inner {
    /// `base_url` + `path` + query pairs. `path` is appended (never resolved
    /// as a URL), so it cannot point the client at another host.
    pub(super) fn url(&self, path: &str, query: &[(String, String)]) -> Result<Url, CoupaError> {
        let mut url = endpoint(&self.base, path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// One call with retries (`body` is sent as JSON; `policy` decides
    /// which failures repeat; a 401 on a token re-mints and retries once).
    pub(super) async fn send<T>(
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
        crate::sync::lock(&self.pause_until).filter(|t| *t > Instant::now())
    }

    fn pause_all(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut p = crate::sync::lock(&self.pause_until);
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
