//! What HTTP code shares, one copy each: reading `Retry-After` and `Date`,
//! and an error chain on one line without the request URL (callers name
//! the URL themselves, through [`crate::redact::display_url`] or
//! [`crate::redact::display_endpoint`]). Imports nothing from the crate.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, DATE, RETRY_AFTER};

/// `Retry-After` as delta-seconds or an HTTP-date (measured against the
/// response's own `Date`, so a skewed host clock does not distort it; the
/// host clock when there is none); callers cap it.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            let now = http_date(headers.get(DATE)).unwrap_or_else(SystemTime::now);
            at.duration_since(now).unwrap_or_default()
        }
    };
    Some(d)
}

/// A `Date` (or any HTTP-date) header's time.
pub fn http_date(v: Option<&HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(v?.to_str().ok()?).ok()
}

/// An error and its sources on one line, without reqwest's URL (it may
/// carry a token in its query; callers name the URL themselves, redacted).
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let mut s = err.to_string();
        if let Some(url) = e.url() {
            s = s
                .replace(&format!(" for url ({url})"), "")
                .replace(url.as_str(), "");
        }
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}
