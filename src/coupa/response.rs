//! What a response means: a non-2xx status as the [`CoupaError`] it
//! stands for ([`status_error`], with its `Retry-After`), a success body as
//! JSON, and a list page split element by element ([`split_array`]) so one
//! unreadable record is rejected in its place, not the page.

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::auth::Auth;
use super::client::Inner;
use super::error::{field_errors, validation_messages, CoupaError, FieldError, MalformedKind};
use super::exchange::{Failure, Received};
use super::record::{self, Listed, RejectReason, Rejected};
use crate::net::retry_after;

impl Inner {
    /// A success body as JSON. A write may answer with no body
    /// (`return_object=none`); a read never legitimately does.
    pub(super) fn parse_value(
        &self,
        method: &Method,
        shown: &str,
        r: &Received,
    ) -> Result<Value, CoupaError> {
        if *method != Method::GET && r.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        self.parse_json(shown, r)
    }

    /// A list body, element by element ([`split_array`]): a body that is
    /// not one whole JSON array fails as [`Inner::parse_json`] says; an
    /// element that does not parse to an object is rejected in its place.
    pub(super) fn parse_list(
        &self,
        _: &Method,
        shown: &str,
        r: &Received,
    ) -> Result<Vec<Listed>, CoupaError> {
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
