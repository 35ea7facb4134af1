//! Misbehaviour on demand: the fault rules tests inject (error statuses,
//! delays, trimmed pages, broken bodies, dropped connections) and the
//! leaky bucket behind rate-limit 429s. Decides *what* goes wrong and
//! builds the broken responses; `http.rs` decides *when* to ask.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::RateLimit;

/// One kind of misbehaviour. Over HTTP (serde, externally tagged):
/// `{"status":{"status":503,"retry_after":"2"}}`, `{"delay":"1500ms"}`,
/// `{"trim_page":{"max":10}}`, `"malformed_json"`, `"html_page"`,
/// `"reset_connection"`, `{"status_after_handling":{"status":500}}`,
/// `{"echo":{"status":500,"pad":150,"json":true}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answer this status instead (429, 500, 502, 503, 401, 403, ...).
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<String>,
        /// Body to send; default: a Coupa-style JSON error naming the status.
        #[serde(default)]
        body: Option<String>,
    },
    /// Sleep this long before answering normally (client timeouts).
    Delay(#[serde(with = "humantime_serde")] Duration),
    /// List responses carry at most `max` records although more match.
    TrimPage { max: usize },
    /// List requests are answered as if these query parameters (decoded
    /// names, e.g. `id[gt]`, `order_by`) were absent: a server that does
    /// not support them.
    IgnoreParams { names: Vec<String> },
    /// 200 with the real JSON body cut in half.
    MalformedJson,
    /// 200, `text/html`: a load balancer's error page.
    HtmlPage,
    /// The request is handled in full (a write takes effect), then this
    /// status is answered instead: the response lost on its way back,
    /// which is why writes are not retried blindly.
    StatusAfterHandling { status: u16 },
    /// 200 and half the body, then the connection drops.
    ResetConnection,
    /// Answered normally, but every `every`-th matching response carries
    /// a `Date` this many seconds off the sim clock (records keep the real
    /// clock): a broken front end's clock.
    SkewDate { seconds: i64, every: usize },
    /// Answers `status` with a body quoting the request back (headers,
    /// body, decoded form fields) after `pad` filler characters, as some
    /// proxies and error pages do: the daemon must redact what it sent.
    /// `json`: inside a JSON error (`"` and `\` escaped), else plain text.
    Echo {
        status: u16,
        #[serde(default)]
        pad: usize,
        #[serde(default)]
        json: bool,
    },
}

/// A fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    pub fault: Fault,
    /// How many matching requests it affects; `usize::MAX` (the serde
    /// default) = until cleared.
    #[serde(default = "forever")]
    pub times: usize,
    /// Only requests whose `path?query` contains this. `None` matches every
    /// `/api/` request but not `/oauth2/token` (name that explicitly), so a
    /// blanket 503 does not also eat the token fetch.
    #[serde(default)]
    pub path_contains: Option<String>,
}

fn forever() -> usize {
    usize::MAX
}

impl FaultRule {
    /// A rule affecting every API request until cleared.
    pub fn always(fault: Fault) -> FaultRule {
        FaultRule {
            fault,
            times: usize::MAX,
            path_contains: None,
        }
    }

    /// A rule affecting the next `times` API requests.
    pub fn times(fault: Fault, times: usize) -> FaultRule {
        FaultRule {
            fault,
            times,
            path_contains: None,
        }
    }

    fn matches(&self, path_and_query: &str) -> bool {
        match &self.path_contains {
            Some(s) => path_and_query.contains(s.as_str()),
            None => path_and_query.starts_with("/api/"),
        }
    }
}

/// Picks the first live rule matching the request and uses up one of its
/// `times`; spent rules are dropped.
pub(crate) fn take(rules: &mut Vec<FaultRule>, path_and_query: &str) -> Option<Fault> {
    let i = rules
        .iter()
        .position(|r| r.times > 0 && r.matches(path_and_query))?;
    let fault = rules[i].fault.clone();
    if rules[i].times != usize::MAX {
        rules[i].times -= 1;
        if rules[i].times == 0 {
            rules.remove(i);
        }
    }
    Some(fault)
}

/// Leaky bucket: each admitted request adds one unit; the bucket drains at
/// `per_second`; a request that would overflow `burst` is refused (and
/// adds nothing, so calls succeed again as it drains).
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    level: f64,
    last: Option<Instant>,
}

impl Bucket {
    pub fn admit(&mut self, limit: &RateLimit, now: Instant) -> bool {
        if let Some(last) = self.last {
            let drained = now.duration_since(last).as_secs_f64() * limit.per_second;
            self.level = (self.level - drained).max(0.0);
        }
        self.last = Some(now);
        if self.level + 1.0 > limit.burst.max(1) as f64 {
            return false;
        }
        self.level += 1.0;
        true
    }
}

fn content_type_for(body: &str) -> &'static str {
    match body.trim_start().chars().next() {
        Some('{' | '[') => "application/json; charset=utf-8",
        Some('<') => "text/html; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// The response for [`Fault::Status`] (also used for rate-limit 429s).
pub(crate) fn status_response(
    status: u16,
    retry_after: Option<&str>,
    body: Option<&str>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = body.map(str::to_string).unwrap_or_else(|| {
        serde_json::json!({"errors": {"base": [status.canonical_reason().unwrap_or("Error")]}})
            .to_string()
    });
    let mut resp = Response::new(Body::from(body.clone()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_for(&body)),
    );
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(header::RETRY_AFTER, v);
    }
    resp
}

/// [`Fault::Echo`]: the request quoted back after `pad` filler characters.
pub(crate) async fn echo(
    req: axum::extract::Request,
    status: u16,
    pad: usize,
    json: bool,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut text = "x".repeat(pad);
    text += &format!("{} {}", parts.method, parts.uri);
    for (name, value) in &parts.headers {
        text += &format!("; {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    text += &format!("; body: {}", String::from_utf8_lossy(&body));
    for (k, v) in url::form_urlencoded::parse(&body) {
        text += &format!("; {k}={v}");
    }
    let body = if json {
        serde_json::json!({"errors": {"base": [text]}}).to_string()
    } else {
        text
    };
    status_response(status, None, Some(&body))
}

/// What a proxy in front of Coupa serves when the app behind it is sick.
pub(crate) fn html_page() -> Response {
    let body = "<!DOCTYPE html>\n<html><head><title>We'll be back soon</title></head>\
                <body><h1>Coupa is undergoing maintenance</h1><p>Please try again later.</p></body></html>\n";
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// Keeps the head of a buffered body: half, but at least one byte short.
fn half(body: &Bytes) -> Bytes {
    body.slice(..(body.len() / 2).min(body.len().saturating_sub(1)))
}

/// [`Fault::MalformedJson`]: the real response with its body cut in half.
pub(crate) fn malformed(parts: axum::http::response::Parts, body: Bytes) -> Response {
    let mut resp = Response::from_parts(parts, Body::from(half(&body)));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// [`Fault::ResetConnection`]: sends the head and half the body, pauses so
/// hyper flushes them, then fails the body stream; hyper aborts the
/// connection without the final chunk, which the client reads as a
/// connection reset mid-body (status 200 already received).
pub(crate) fn reset(parts: axum::http::response::Parts, body: Bytes) -> Response {
    let head = half(&body);
    let chunks = futures_util::stream::unfold(0u8, move |step| {
        let head = head.clone();
        async move {
            match step {
                0 => Some((Ok(head), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let reset = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "coupa-sim: injected reset",
                    );
                    Some((Err(reset), 2))
                }
                _ => None,
            }
        }
    });
    let mut resp = Response::from_parts(parts, Body::from_stream(chunks));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses_then_drains() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 5,
        };
        let mut b = Bucket::default();
        let t0 = Instant::now();
        assert!((0..5).all(|_| b.admit(&limit, t0)));
        assert!(!b.admit(&limit, t0));
        assert!(b.admit(&limit, t0 + Duration::from_millis(150)));
    }

    #[test]
    fn rules_count_down_and_match_paths() {
        let mut rules = vec![
            FaultRule {
                fault: Fault::HtmlPage,
                times: 1,
                path_contains: Some("/oauth2/token".into()),
            },
            FaultRule::times(Fault::MalformedJson, 2),
        ];
        assert_eq!(take(&mut rules, "/oauth2/token"), Some(Fault::HtmlPage));
        assert_eq!(
            take(&mut rules, "/oauth2/token"),
            None,
            "blanket rules skip the token endpoint"
        );
        assert_eq!(
            take(&mut rules, "/api/invoices?limit=1"),
            Some(Fault::MalformedJson)
        );
        assert_eq!(
            take(&mut rules, "/api/invoices"),
            Some(Fault::MalformedJson)
        );
        assert_eq!(take(&mut rules, "/api/invoices"), None);
    }

    #[test]
    fn faults_round_trip_as_json() {
        let rule: FaultRule = serde_json::from_str(r#"{"fault":{"delay":"1500ms"}}"#).unwrap();
        assert_eq!(rule.fault, Fault::Delay(Duration::from_millis(1500)));
        assert_eq!(rule.times, usize::MAX);
        let s: Fault = serde_json::from_str(r#"{"status":{"status":503}}"#).unwrap();
        assert!(matches!(
            s,
            Fault::Status {
                status: 503,
                retry_after: None,
                body: None
            }
        ));
        let back: FaultRule = serde_json::from_str(&serde_json::to_string(&rule).unwrap()).unwrap();
        assert_eq!(back, rule);
    }
}
