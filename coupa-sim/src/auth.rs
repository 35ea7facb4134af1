//! Who may call the simulated API: the OAuth client-credentials grant
//! (`/oauth2/token`, form or HTTP Basic credentials), the opaque bearer
//! tokens it issues (scoped, expiring, revocable) and the legacy
//! `X-COUPA-API-KEY`. Pure decisions; `http.rs` turns them into responses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::Rng;

use super::{lock, OAuthClient};

struct Token {
    scopes: Vec<String>,
    expires: Instant,
}

pub(crate) struct Auth {
    api_key: Option<String>,
    clients: Vec<OAuthClient>,
    ttl: Duration,
    tokens: Mutex<HashMap<String, Token>>,
}

/// A refused token request, as `(status, OAuth error code)`.
pub(crate) type TokenError = (u16, &'static str);

/// A granted token: what `/oauth2/token` answers.
pub(crate) struct Grant {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// Why an API call is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No, unknown, expired or revoked credentials: 401.
    Unauthenticated(&'static str),
    /// A valid token without the object's read scope: 403.
    MissingScope(String),
}

impl Auth {
    pub fn new(api_key: Option<String>, clients: Vec<OAuthClient>, ttl: Duration) -> Auth {
        Auth {
            api_key,
            clients,
            ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The client-credentials grant. `form` is the decoded body; the client
    /// id and secret come from it or from HTTP Basic auth (PostHog's way).
    pub fn grant(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<Grant, TokenError> {
        match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") => {}
            Some(_) => return Err((400, "unsupported_grant_type")),
            None => return Err((400, "invalid_request")),
        }
        let (id, secret) = basic_credentials(headers)
            .or_else(|| {
                Some((
                    form.get("client_id")?.clone(),
                    form.get("client_secret")?.clone(),
                ))
            })
            .ok_or((401, "invalid_client"))?;
        let client = self
            .clients
            .iter()
            .find(|c| c.client_id == id && c.client_secret == secret)
            .ok_or((401, "invalid_client"))?;
        // No scope parameter: every granted scope (PostHog's fallback).
        let scopes: Vec<String> = match form
            .get("scope")
            .map(|s| s.split_whitespace().map(String::from).collect::<Vec<_>>())
        {
            Some(asked) if !asked.is_empty() => {
                if asked.iter().any(|s| !client.scopes.contains(s)) {
                    return Err((400, "invalid_scope"));
                }
                asked
            }
            _ => client.scopes.clone(),
        };
        let access_token = hex::encode(rand::rng().random::<[u8; 32]>());
        let scope = scopes.join(" ");
        let mut tokens = lock(&self.tokens);
        let now = Instant::now();
        tokens.retain(|_, t| t.expires > now);
        tokens.insert(
            access_token.clone(),
            Token {
                scopes,
                expires: now + self.ttl,
            },
        );
        Ok(Grant {
            access_token,
            expires_in: self.ttl.as_secs(),
            scope,
        })
    }

    /// Checks an API call's credentials against the scope it needs.
    pub fn check(&self, headers: &HeaderMap, scope: &str) -> Result<(), Denied> {
        if let Some(key) = headers.get("x-coupa-api-key").and_then(|v| v.to_str().ok()) {
            return match &self.api_key {
                Some(k) if k == key => Ok(()),
                _ => Err(Denied::Unauthenticated("invalid API key")),
            };
        }
        let auth = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(Denied::Unauthenticated("missing credentials"))?;
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .ok_or(Denied::Unauthenticated("expected a Bearer token"))?
            .trim();
        let tokens = lock(&self.tokens);
        let t = tokens
            .get(token)
            .ok_or(Denied::Unauthenticated("invalid or revoked token"))?;
        if t.expires <= Instant::now() {
            return Err(Denied::Unauthenticated("token expired"));
        }
        if !t.scopes.iter().any(|s| s == scope) {
            return Err(Denied::MissingScope(scope.to_string()));
        }
        Ok(())
    }

    pub fn revoke_all(&self) {
        lock(&self.tokens).clear();
    }
}

/// `Authorization: Basic base64(id:secret)`, if present and well-formed.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let text = String::from_utf8(base64_decode(b64.trim())?).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Standard base64 (padding optional); no crate for twelve lines.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        acc = (acc << 6) | val(c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(base64_decode("aWQ6c2VjcmV0").unwrap(), b"id:secret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("!!"), None);
    }
}
