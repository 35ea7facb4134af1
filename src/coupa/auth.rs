//! Coupa credentials: the legacy `X-COUPA-API-KEY` header, or an OAuth2
//! client-credentials token that is minted, cached, re-minted before expiry
//! and invalidated on a 401. Owns the token endpoint's protocol and its
//! error messages, and the redaction of every secret it knows from text.
//! Sending, pacing and retrying belong to `exchange.rs`; this module never
//! logs or formats a secret.

use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::client::Inner;
use super::error::{CoupaError, MalformedKind};
use super::exchange::{endpoint, Failure, Received};
use super::response::status_error;
use crate::coupa::settings::CoupaSettings;
use crate::redact::display_url;
use crate::redact::Secrets as Redactor;

/// Coupa recommends minting a new token about every 20 h (tokens live 24 h).
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(20 * 3600);
/// Re-mint this long before `expires_in` runs out (less for short-lived tokens).
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// Used when the token response carries no `expires_in`: a 401 still re-mints.
const DEFAULT_TOKEN_LIFE: Duration = MAX_TOKEN_LIFE;

/// How requests are authenticated.
pub(crate) enum Auth {
    /// Legacy API key, sent as `X-COUPA-API-KEY`.
    ApiKey {
        header: HeaderValue,
        key: SecretString,
        /// User info of `base_url` (reqwest sends it as Basic auth).
        userinfo: Redactor,
    },
    /// OAuth2 client credentials.
    OAuth(Box<OAuth>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::ApiKey { .. } => f.write_str("ApiKey([redacted])"),
            Auth::OAuth(o) => f
                .debug_struct("OAuth")
                .field("client_id", &o.client_id)
                .field("scopes", &o.scopes)
                .field("token_url", &display_url(&o.token_url))
                .finish_non_exhaustive(),
        }
    }
}

/// The header a request carries, and for OAuth the token generation it
/// used (so a 401 invalidates that token only, not a newer one).
pub(crate) struct Credential {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub generation: Option<u64>,
    /// When the token was minted (Coupa wants ~5 s before first use).
    pub minted_at: Option<Instant>,
}

/// OAuth2 client-credentials state.
pub(crate) struct OAuth {
    client_id: String,
    client_secret: SecretString,
    scopes: Vec<String>,
    token_url: Url,
    /// Held across a mint, so only one mint is in flight and concurrent
    /// callers wait for its token instead of minting their own.
    state: tokio::sync::Mutex<TokenState>,
    /// The latest token's text, for redaction (read synchronously).
    latest: RwLock<Option<SecretString>>,
    /// User info of `base_url` and `token_url`.
    userinfo: Redactor,
}

#[derive(Default)]
struct TokenState {
    current: Option<Token>,
    generation: u64,
}

#[derive(Clone)]
struct Token {
    header: HeaderValue,
    generation: u64,
    minted_at: Instant,
    refresh_at: Instant,
}

impl Auth {
    /// Builds the credential from settings (config validation already
    /// ensured exactly one of api_key / oauth is present).
    pub(crate) fn from_settings(s: &CoupaSettings) -> Result<Auth, CoupaError> {
        let mut userinfo = Redactor::new();
        userinfo.add_userinfo(&s.base_url);
        if let Some(key) = &s.api_key {
            let header = sensitive(key.expose_secret())
                .ok_or_else(|| CoupaError::Config("cannot build the Coupa client: coupa.api_key holds characters not allowed in an HTTP header".into()))?;
            return Ok(Auth::ApiKey {
                header,
                key: key.clone(),
                userinfo,
            });
        }
        let o = s.oauth.as_ref().ok_or_else(|| {
            CoupaError::Config("cannot build the Coupa client: no credentials (set coupa.api_key or [coupa.oauth])".into())
        })?;
        let client_secret = o.client_secret.clone().ok_or_else(|| {
            CoupaError::Config(
                "cannot build the Coupa client: coupa.oauth.client_secret is missing".into(),
            )
        })?;
        let token_url = match &o.token_url {
            Some(u) => u.clone(),
            None => endpoint(&s.base_url, "/oauth2/token")?,
        };
        userinfo.add_userinfo(&token_url);
        Ok(Auth::OAuth(Box::new(OAuth {
            client_id: o.client_id.clone(),
            client_secret,
            scopes: o.scopes.clone(),
            token_url,
            state: Default::default(),
            latest: RwLock::new(None),
            userinfo,
        })))
    }

    /// The header for the next request, minting a token when needed.
    pub(crate) async fn credential(&self, inner: &Inner) -> Result<Credential, Failure> {
        match self {
            Auth::ApiKey { header, .. } => Ok(Credential {
                name: HeaderName::from_static("x-coupa-api-key"),
                value: header.clone(),
                generation: None,
                minted_at: None,
            }),
            Auth::OAuth(o) => {
                let t = o.token(inner).await?;
                Ok(Credential {
                    name: AUTHORIZATION,
                    value: t.header,
                    generation: Some(t.generation),
                    minted_at: Some(t.minted_at),
                })
            }
        }
    }

    /// Forgets the token of `generation` after a 401, unless a newer one
    /// has replaced it already.
    pub(crate) async fn invalidate(&self, generation: u64) {
        if let Auth::OAuth(o) = self {
            let mut st = o.state.lock().await;
            if st
                .current
                .as_ref()
                .is_some_and(|t| t.generation == generation)
            {
                st.current = None;
            }
        }
    }

    /// Every secret this credential knows, for [`Redactor::redact`].
    fn secrets(&self) -> Redactor {
        match self {
            Auth::ApiKey { key, userinfo, .. } => {
                let mut r = userinfo.clone();
                r.add(key.expose_secret());
                r
            }
            Auth::OAuth(o) => {
                let mut r = o.userinfo.clone();
                r.add(o.client_secret.expose_secret());
                if let Some(t) = o.latest.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    r.add(t.expose_secret());
                }
                r
            }
        }
    }

    /// Replaces every secret this credential knows, in any encoding (see
    /// `crate::redact`), in `text`: error bodies may echo what we sent.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.secrets().redact(text)
    }

    /// A short one-line excerpt of a body for an error: redacted before it
    /// is cut, so a secret straddling the cut is hidden whole.
    pub(crate) fn snippet(&self, body: &[u8]) -> String {
        super::error::snippet(body, &self.secrets())
    }

    /// `redact` applied to every string (and key) of a JSON value.
    pub(crate) fn redact_json(&self, v: Value) -> Value {
        fn walk(r: &Redactor, v: Value) -> Value {
            match v {
                Value::String(s) => Value::String(r.redact(&s)),
                Value::Array(a) => Value::Array(a.into_iter().map(|v| walk(r, v)).collect()),
                Value::Object(m) => Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (r.redact(&k), walk(r, v)))
                        .collect(),
                ),
                other => other,
            }
        }
        walk(&self.secrets(), v)
    }
}

impl OAuth {
    /// The cached token, or a fresh one once it is due for renewal.
    async fn token(&self, inner: &Inner) -> Result<Token, Failure> {
        let mut st = self.state.lock().await;
        if let Some(t) = &st.current {
            if Instant::now() < t.refresh_at {
                return Ok(t.clone());
            }
        }
        let t = self.mint(inner, st.generation + 1).await?;
        st.generation = t.generation;
        st.current = Some(t.clone());
        Ok(t)
    }

    /// One token request (paced like any other request by `exchange`).
    async fn mint(&self, inner: &Inner, generation: u64) -> Result<Token, Failure> {
        let shown = display_url(&self.token_url);
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("client_secret", self.client_secret.expose_secret()),
        ];
        let scope = self.scopes.join(" ");
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        let started = Instant::now();
        let req = inner.http.post(self.token_url.clone()).form(&form);
        inner.stats.token_mints.inc();
        let same_host = self.token_url.origin() == inner.base.origin();
        let r = inner.exchange(req, &shown, same_host).await?;
        let token = self.read_token_response(&shown, &r, inner)?;
        let life = token.1.unwrap_or(DEFAULT_TOKEN_LIFE);
        // Margin: 5 min, or a quarter of a short lifetime.
        let margin = EXPIRY_MARGIN.min(life / 4);
        let refresh_at = started + (life - margin).min(MAX_TOKEN_LIFE);
        let header =
            sensitive(&format!("Bearer {}", token.0.expose_secret())).ok_or_else(|| {
                Failure::from(CoupaError::Malformed {
                    url: shown.clone(),
                    kind: MalformedKind::WrongShape,
                    detail: "access_token holds characters not allowed in an HTTP header".into(),
                })
            })?;
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(token.0);
        tracing::debug!(token_url = %shown, generation, lifetime_s = life.as_secs(), "minted OAuth token");
        Ok(Token {
            header,
            generation,
            minted_at: Instant::now(),
            refresh_at,
        })
    }

    /// Access token and lifetime out of a token endpoint response, or an
    /// error that says what to fix.
    fn read_token_response(
        &self,
        shown: &str,
        r: &Received,
        inner: &Inner,
    ) -> Result<(SecretString, Option<Duration>), Failure> {
        let code = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|j| j.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        let status = r.status.as_u16();
        if status == 400 && code == "invalid_scope" {
            return Err(CoupaError::InvalidScope {
                url: shown.to_string(),
                scopes: self.scopes.clone(),
            }
            .into());
        }
        if status == 401 || code == "invalid_client" {
            return Err(CoupaError::Unauthorized {
                url: shown.to_string(),
                detail: format!(
                    "client id `{}` rejected by the token endpoint: check coupa.oauth.client_id and its secret",
                    self.client_id
                ),
            }
            .into());
        }
        if code == "unauthorized_client" {
            return Err(CoupaError::Unauthorized {
                url: shown.to_string(),
                detail: format!(
                    "client id `{}` may not use the client_credentials grant: set its grant type to Client credentials in Coupa",
                    self.client_id
                ),
            }
            .into());
        }
        if !r.status.is_success() {
            return Err(status_error(inner, shown, r));
        }
        let json = inner.parse_json(shown, r)?;
        let access = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Failure::from(CoupaError::Malformed {
                    url: shown.to_string(),
                    kind: MalformedKind::WrongShape,
                    detail: "token response has no access_token".into(),
                })
            })?;
        // Coupa sends a number; tolerate a numeric string.
        let expires = match json.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        Ok((
            SecretString::from(access.to_string()),
            expires.map(Duration::from_secs),
        ))
    }
}

/// A header value marked sensitive (hidden from reqwest/hyper Debug).
fn sensitive(text: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(text).ok()?;
    v.set_sensitive(true);
    Some(v)
}
