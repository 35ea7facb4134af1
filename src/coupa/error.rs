//! `CoupaError`: every way a Coupa call can fail, each naming the URL and
//! saying what happened in one line, and `is_transient` (what a retry or
//! the next poll may cure). Owns the turning of an error response body into
//! a readable message. Must never carry a secret: URLs are shown without
//! userinfo, and body snippets pass through the client's redaction first.

use serde_json::Value;

/// What kind of transport failure happened (the write retry policy needs
/// to know whether the request can have reached Coupa).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection was made: Coupa cannot have seen the request.
    Connect,
    /// The per-request timeout elapsed (request may have been processed).
    Timeout,
    /// The response body broke off mid-read.
    Body,
    /// Anything else (reset, protocol error).
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Body => "response body broke off",
            TransportKind::Other => "transport error",
        })
    }
}

/// Why a response body was unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedKind {
    /// Looked like JSON but did not parse (truncated, garbled): transient.
    BadJson,
    /// Not JSON at all, e.g. an HTML error page from a proxy: transient.
    NotJson,
    /// Valid JSON of the wrong shape (an object where a list was expected):
    /// a retry returns the same, so permanent.
    WrongShape,
    /// Longer than `coupa.max_response_bytes`; not read on, not retried
    /// at once (the next poll tries again).
    TooLarge,
}

impl std::fmt::Display for MalformedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MalformedKind::BadJson => "invalid JSON",
            MalformedKind::NotJson => "not JSON",
            MalformedKind::WrongShape => "unexpected JSON shape",
            MalformedKind::TooLarge => "response too large",
        })
    }
}

/// One message of a 400 validation error, under the key Coupa filed it
/// under: usually the record's name (`{"account": ["Segment 1 - Cost
/// Center can't be blank"]}`), sometimes an attribute, `base` when Coupa
/// gave no key. Nested keys are joined with `.`, array positions as `[i]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A failed Coupa call.
#[derive(Debug, thiserror::Error)]
pub enum CoupaError {
    /// The client cannot be built from the settings, or a request path is
    /// unusable (not under the instance): a bug or config fault, not Coupa's.
    #[error("{0}")]
    Config(String),

    /// 401 from the API (after one re-mint), or rejected client credentials.
    #[error("{url}: unauthorized: {detail}")]
    Unauthorized { url: String, detail: String },

    /// The token endpoint refused the requested scopes.
    #[error("{url}: invalid_scope: the OAuth client is not granted one of the requested scopes [{}]; grant them to the client in Coupa (Setup > Oauth2/OpenID Connect Clients) or remove them from coupa.oauth.scopes", scopes.join(" "))]
    InvalidScope { url: String, scopes: Vec<String> },

    /// 403: authenticated but not allowed.
    #[error("{url}: 403 forbidden: the credentials lack permission for this resource (an OAuth scope may be missing){}", snippet_suffix(snippet))]
    Forbidden { url: String, snippet: String },

    /// 404.
    #[error("{url}: 404 not found")]
    NotFound { url: String },

    /// 400 with Coupa's `{"errors": {...}}` body.
    #[error("{url}: 400 rejected by Coupa: {}", messages.join("; "))]
    Validation {
        url: String,
        /// The `errors` value as Coupa sent it (boxed: keeps every
        /// `Result<_, CoupaError>` small).
        errors: Box<Value>,
        /// Readable `field: message` lines (warnings included).
        messages: Vec<String>,
        /// Each message with its key, for callers that act per field.
        /// Messages under Coupa's `warnings` key did not cause the 400 and
        /// are left out (they stay in `messages` and `errors`).
        fields: Vec<FieldError>,
    },

    /// Refused before any request: the catalogue says Coupa does not allow
    /// this operation on this object (e.g. PO lines change through their PO).
    #[error("{object}: {operation} is not allowed: {reason}")]
    Refused {
        object: String,
        operation: String,
        reason: String,
    },

    /// An action's arguments are unusable (unknown object, missing parent
    /// id, a raw path outside `/api/`); nothing was sent.
    #[error("{0}")]
    Invalid(String),

    /// Any other unexpected status.
    #[error("{url}: HTTP {status}{}", snippet_suffix(snippet))]
    Status {
        url: String,
        status: u16,
        snippet: String,
    },

    /// No usable response: connect failure, timeout, reset, broken body.
    #[error("{url}: {kind}: {detail}")]
    Transport {
        url: String,
        kind: TransportKind,
        detail: String,
    },

    /// A response body we cannot use.
    #[error("{url}: malformed response ({kind}): {detail}")]
    Malformed {
        url: String,
        kind: MalformedKind,
        detail: String,
    },

    /// A 3xx: redirects are never followed (SSRF guard; Coupa does not redirect API calls).
    #[error("{url}: HTTP {status} redirect to `{location}` not followed (check coupa.base_url)")]
    Redirect {
        url: String,
        status: u16,
        location: String,
    },

    /// Coupa's `Date` headers cannot be trusted for a poll window.
    #[error("{0}")]
    Clock(String),

    /// Every allowed attempt failed transiently.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<CoupaError>,
    },
}

fn snippet_suffix(snippet: &str) -> String {
    if snippet.is_empty() {
        String::new()
    } else {
        format!(": {snippet}")
    }
}

impl CoupaError {
    /// Whether the same call may succeed later (retry now, or next poll).
    pub fn is_transient(&self) -> bool {
        match self {
            CoupaError::Transport { .. } => true,
            CoupaError::Malformed { kind, .. } => {
                !matches!(kind, MalformedKind::WrongShape | MalformedKind::TooLarge)
            }
            CoupaError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            CoupaError::RetriesExhausted { last, .. } => last.is_transient(),
            _ => false,
        }
    }

    /// A short, stable label of the variant (CLI exit reasons, HTTP error
    /// bodies, metrics); `RetriesExhausted` answers for its last error.
    pub fn kind(&self) -> &'static str {
        match self {
            CoupaError::Config(_) => "config",
            CoupaError::Unauthorized { .. } => "unauthorized",
            CoupaError::InvalidScope { .. } => "invalid_scope",
            CoupaError::Forbidden { .. } => "forbidden",
            CoupaError::NotFound { .. } => "not_found",
            CoupaError::Validation { .. } => "validation",
            CoupaError::Refused { .. } => "refused",
            CoupaError::Invalid(_) => "invalid",
            CoupaError::Status { .. } => "status",
            CoupaError::Transport { .. } => "transport",
            CoupaError::Malformed { .. } => "malformed",
            CoupaError::Redirect { .. } => "redirect",
            CoupaError::Clock(_) => "clock",
            CoupaError::RetriesExhausted { last, .. } => last.kind(),
        }
    }

    /// The per-field messages of a validation error (also behind
    /// `RetriesExhausted`); empty for every other error.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            CoupaError::Validation { fields, .. } => fields,
            CoupaError::RetriesExhausted { last, .. } => last.field_errors(),
            _ => &[],
        }
    }

    /// The HTTP status behind this error, when one was received.
    pub fn status(&self) -> Option<u16> {
        match self {
            CoupaError::Unauthorized { .. } => Some(401),
            CoupaError::Forbidden { .. } => Some(403),
            CoupaError::NotFound { .. } => Some(404),
            CoupaError::Validation { .. } => Some(400),
            CoupaError::Status { status, .. } | CoupaError::Redirect { status, .. } => {
                Some(*status)
            }
            CoupaError::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }
}

/// Longest body excerpt kept in an error.
const SNIPPET_CHARS: usize = 200;

/// A short one-line excerpt of a body for an error message, `secrets`
/// replaced before the cut (a secret across the cut would show its start).
pub(crate) fn snippet(body: &[u8], secrets: &crate::redact::Secrets) -> String {
    secrets.excerpt(&String::from_utf8_lossy(body), SNIPPET_CHARS)
}

/// Every message in Coupa's `errors` value with the key path it sits
/// under: `{"account":["x"]}` gives `(Some("account"), "x")`; a bare
/// string or array of strings has no key; arrays of objects add `[i]`.
fn walk_errors(errors: &Value) -> Vec<(Option<String>, String)> {
    fn walk(prefix: Option<&str>, v: &Value, out: &mut Vec<(Option<String>, String)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = match prefix {
                        Some(p) => format!("{p}.{k}"),
                        None => k.clone(),
                    };
                    walk(Some(&key), v, out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    match (v, prefix) {
                        (Value::Object(_), Some(p)) => walk(Some(&format!("{p}[{i}]")), v, out),
                        _ => walk(prefix, v, out),
                    }
                }
            }
            Value::Null => {}
            other => {
                let msg = match other {
                    Value::String(s) => s.clone(),
                    _ => other.to_string(),
                };
                out.push((prefix.map(str::to_string), msg));
            }
        }
    }
    let mut out = Vec::new();
    walk(None, errors, &mut out);
    out
}

/// Flattens Coupa's `errors` value into readable lines: `{"account":["x"]}`
/// gives `account: x`; arrays and strings are taken as they are.
pub(crate) fn validation_messages(errors: &Value) -> Vec<String> {
    walk_errors(errors)
        .into_iter()
        .map(|(key, msg)| match key {
            Some(k) => format!("{k}: {msg}"),
            None => msg,
        })
        .collect()
}

/// The per-field messages in Coupa's `errors` value, without those under
/// `warnings` (which did not cause the rejection).
pub(crate) fn field_errors(errors: &Value) -> Vec<FieldError> {
    walk_errors(errors)
        .into_iter()
        .filter(|(key, _)| {
            !key.as_deref().is_some_and(|k| {
                k == "warnings" || k.starts_with("warnings.") || k.starts_with("warnings[")
            })
        })
        .map(|(key, message)| FieldError {
            field: key.unwrap_or_else(|| "base".into()),
            message,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_messages_read_like_coupa_wrote_them() {
        let m = validation_messages(
            &json!({"account": ["Segment 1 - Cost Center can't be blank", "x"], "warnings": []}),
        );
        assert_eq!(
            m,
            [
                "account: Segment 1 - Cost Center can't be blank",
                "account: x"
            ]
        );
        assert_eq!(validation_messages(&json!(["plain"])), ["plain"]);
    }

    #[test]
    fn field_errors_keep_keys_and_leave_out_warnings() {
        let fields = field_errors(&json!({
            "supplier": ["Name can't be blank"],
            "order-lines": [{"price": ["must be positive"]}],
            "warnings": ["Budget exceeded"],
        }));
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.field.as_str(), f.message.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("order-lines[0].price", "must be positive"),
                ("supplier", "Name can't be blank")
            ]
        );
        let fields = field_errors(&json!(["plain"]));
        assert_eq!(fields[0].field, "base");
    }

    #[test]
    fn snippets_are_short_and_one_line() {
        let none = crate::redact::Secrets::new();
        let s = snippet("a\n\n  b".repeat(300).as_bytes(), &none);
        assert!(!s.contains('\n'));
        assert!(s.chars().count() <= SNIPPET_CHARS + 1);
    }

    /// Issue 12: 20 of a 25-character secret showed when it straddled the cut.
    #[test]
    fn snippets_redact_before_they_cut() {
        let secret = "cs-0123456789abcdefghijkl";
        let mut secrets = crate::redact::Secrets::new();
        secrets.add(secret);
        let body = format!("{}{secret}", "x".repeat(SNIPPET_CHARS - 20));
        let s = snippet(body.as_bytes(), &secrets);
        assert!(!s.contains(&secret[..8]), "{s}");
        assert!(s.starts_with("xxx"), "{s}");
    }
}
