//! The bearer token every `/v1` and `/admin` route needs: kept only as a
//! SHA-256 digest and compared in constant time (`subtle`), so neither its
//! content nor its length leaks through timing.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::warn;

use crate::coupa::body::{ErrorBody, ErrorEnvelope};

/// The `[api] token`'s digest.
pub struct ApiToken {
    sha256: [u8; 32],
}

impl ApiToken {
    /// Keeps the digest of `token`, not the token.
    pub(super) fn new(token: &str) -> ApiToken {
        ApiToken {
            sha256: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token, in time independent of both.
    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.sha256).into()
    }
}

/// Lets the request through only with the right bearer token.
pub(super) async fn require_token(
    State(token): State<Arc<ApiToken>>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(t) if token.matches(t) => next.run(req).await,
        other => {
            let challenge = if other.is_some() {
                warn!(method = %req.method(), path = %req.uri().path(), "API request with a wrong bearer token refused");
                r#"Bearer realm="coupa-changefeed", error="invalid_token""#
            } else {
                r#"Bearer realm="coupa-changefeed""#
            };
            let body = ErrorEnvelope {
                error: ErrorBody::own(
                    "unauthorized",
                    "missing or wrong bearer token: send `Authorization: Bearer <[api] token>`",
                ),
            };
            let mut resp = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_check_is_exact() {
        let token = ApiToken::new("0123456789abcdef");
        assert!(token.matches("0123456789abcdef"));
        for wrong in [
            "",
            "0123456789abcde",
            "0123456789abcdeF",
            "0123456789abcdef ",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
    }
}
