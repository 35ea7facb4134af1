//! The Coupa client against tiny HTTP servers on 127.0.0.1: auth (API key,
//! OAuth minting, caching, re-minting), retries and their bounds, the rate
//! limit, the clock, and that no secret reaches an error or a log line.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{any, post};
use axum::{Form, Router};
use coupa_changefeed::coupa::error::{MalformedKind, TransportKind};
use coupa_changefeed::coupa::settings::{CoupaSettings, OAuthSettings};
use coupa_changefeed::coupa::{CoupaClient, CoupaError};
use secrecy::SecretString;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

const API_KEY: &str = "APIKEY0123456789abcdefghijklmnopqrstuvwx";
const CLIENT_SECRET: &str = "cs+SECRET/value=42";
const CLIENT_ID: &str = "changefeed-client";

// ---------- servers ----------

/// One request as the server saw it.
#[derive(Clone)]
struct Hit {
    at: Instant,
    uri: String,
    headers: HeaderMap,
}

type Hits = Arc<Mutex<Vec<Hit>>>;

fn count(h: &Hits) -> usize {
    h.lock().unwrap().len()
}

/// A canned response.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
        delay: Duration::ZERO,
    }
}

impl Reply {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }
    fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
    fn into_response(self) -> Response {
        let mut b = Response::builder().status(StatusCode::from_u16(self.status).unwrap());
        for (n, v) in &self.headers {
            b = b.header(*n, v);
        }
        b.body(Body::from(self.body)).unwrap()
    }
}

async fn serve(app: Router) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Url::parse(&format!("http://{addr}")).unwrap()
}

fn record(hits: &Hits, req: &Request) -> usize {
    let mut h = hits.lock().unwrap();
    h.push(Hit {
        at: Instant::now(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
    });
    h.len() - 1
}

/// Answers every request with `replies[n]` (the last one repeats).
async fn scripted(replies: Vec<Reply>) -> (Url, Hits) {
    let hits: Hits = Default::default();
    let h = hits.clone();
    let replies = Arc::new(replies);
    let app = Router::new().fallback(any(move |req: Request| {
        let (h, replies) = (h.clone(), replies.clone());
        async move {
            let i = record(&h, &req);
            let r = replies[i.min(replies.len() - 1)].clone();
            tokio::time::sleep(r.delay).await;
            r.into_response()
        }
    }));
    (serve(app).await, hits)
}

/// A token endpoint minting `tok-1`, `tok-2`, … (recording each form), and
/// an API answering `api(authorization header, call index)`.
struct OAuthServer {
    url: Url,
    mints: Arc<Mutex<Vec<HashMap<String, String>>>>,
    hits: Hits,
}

type ApiFn = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

async fn oauth_server(
    token_reply: Option<Reply>,
    expires_in: u64,
    mint_delay: Duration,
    api: ApiFn,
) -> OAuthServer {
    let mints: Arc<Mutex<Vec<HashMap<String, String>>>> = Default::default();
    let hits: Hits = Default::default();
    let m = mints.clone();
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/oauth2/token",
            post(move |Form(form): Form<HashMap<String, String>>| {
                let (m, token_reply) = (m.clone(), token_reply.clone());
                async move {
                    let n = {
                        let mut m = m.lock().unwrap();
                        m.push(form);
                        m.len()
                    };
                    tokio::time::sleep(mint_delay).await;
                    token_reply
                        .unwrap_or_else(|| {
                            reply(200, json!({"access_token": format!("tok-{n}"), "token_type": "bearer", "expires_in": expires_in}).to_string())
                        })
                        .into_response()
                }
            }),
        )
        .fallback(any(move |req: Request| {
            let (h, api) = (h.clone(), api.clone());
            async move {
                let i = record(&h, &req);
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                api(&auth, i).into_response()
            }
        }));
    OAuthServer {
        url: serve(app).await,
        mints,
        hits,
    }
}

/// A raw HTTP/1.1 server for what axum will not do (omit `Date`, cut a
/// body short): answers connection n with `responses[n]` and closes it.
async fn raw_server(responses: Vec<&'static str>) -> (Url, Hits) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Hits = Default::default();
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let line = String::from_utf8_lossy(&buf)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let i = {
                let mut h = h.lock().unwrap();
                h.push(Hit {
                    at: Instant::now(),
                    uri: line.split(' ').nth(1).unwrap_or("").to_string(),
                    headers: HeaderMap::new(),
                });
                h.len() - 1
            };
            let r = responses[i.min(responses.len() - 1)];
            let _ = sock.write_all(r.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (Url::parse(&format!("http://{addr}")).unwrap(), hits)
}

// ---------- settings ----------

fn api_key_settings(base: &Url) -> CoupaSettings {
    CoupaSettings {
        base_url: base.clone(),
        api_key: Some(SecretString::from(API_KEY)),
        api_key_file: None,
        oauth: None,
        requests_per_second: 100,
        timeout: Duration::from_secs(2),
        max_attempts: 4,
        max_backoff: Duration::from_millis(50),
        max_clock_jump: Duration::from_secs(300),
        max_clock_skew: Duration::from_secs(900),
        max_response_bytes: 32 << 20,
    }
}

fn oauth_settings(base: &Url, scopes: &[&str]) -> CoupaSettings {
    CoupaSettings {
        api_key: None,
        oauth: Some(OAuthSettings {
            client_id: CLIENT_ID.into(),
            client_secret: Some(SecretString::from(CLIENT_SECRET)),
            client_secret_file: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            token_url: None,
        }),
        ..api_key_settings(base)
    }
}

fn client(s: &CoupaSettings) -> CoupaClient {
    CoupaClient::new(s).unwrap()
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const PAGE: &str = r#"[{"id":1,"updated-at":"2026-11-30T03:15:02-07:00"},{"id":2}]"#;

// ---------- auth ----------

#[tokio::test]
async fn api_key_and_standard_headers_are_sent() {
    let (url, hits) = scripted(vec![reply(200, PAGE)]).await;
    let c = client(&api_key_settings(&url));
    let recs = c
        .list(
            "/api/purchase_orders",
            &q(&[
                ("updated_at[gt_or_eq]", "2026-11-30T10:15:02+00:00"),
                ("limit", "50"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["id"], 1);
    let h = hits.lock().unwrap()[0].clone();
    assert_eq!(h.headers["x-coupa-api-key"], API_KEY);
    assert_eq!(h.headers["accept"], "application/json");
    assert!(h.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("coupa-changefeed/"));
    assert!(h.headers.get("authorization").is_none());
    // `:` and `+` percent-encoded, as Coupa's date filters need.
    assert!(h.uri.starts_with("/api/purchase_orders?"), "{}", h.uri);
    assert!(
        h.uri.contains("2026-11-30T10%3A15%3A02%2B00%3A00"),
        "{}",
        h.uri
    );
    assert!(h.uri.contains("limit=50"));
}

fn ok_for(token: &'static str) -> ApiFn {
    Arc::new(move |auth: &str, _| {
        if auth == format!("Bearer {token}") {
            reply(200, PAGE)
        } else {
            reply(401, r#"{"error":"invalid_token"}"#)
        }
    })
}

#[tokio::test]
async fn oauth_token_minted_once_and_shared_by_concurrent_callers() {
    // A slow token endpoint: all five callers must wait for the one mint.
    let srv = oauth_server(None, 86399, Duration::from_millis(200), ok_for("tok-1")).await;
    let c = client(&oauth_settings(
        &srv.url,
        &["core.purchase_order.read", "core.supplier.read"],
    ));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.list("/api/purchase_orders", &[]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 2);
    }
    c.get_json("/api/purchase_orders/1", &[]).await.unwrap();
    let mints = srv.mints.lock().unwrap().clone();
    assert_eq!(mints.len(), 1, "one mint for six calls");
    let f = &mints[0];
    assert_eq!(f["grant_type"], "client_credentials");
    assert_eq!(f["client_id"], CLIENT_ID);
    assert_eq!(f["client_secret"], CLIENT_SECRET);
    assert_eq!(f["scope"], "core.purchase_order.read core.supplier.read");
    assert_eq!(count(&srv.hits), 6);
    assert_eq!(c.stats().token_mints, 1);
    assert!(c.stats().requests >= 7);
}

/// User info in `base_url` would make reqwest add a Basic `Authorization`
/// header beside the Bearer one: two headers, and Coupa refuses the call.
/// With OAuth it is ignored: every request carries exactly the Bearer token.
#[tokio::test]
async fn oauth_ignores_user_info_in_base_url() {
    let srv = oauth_server(None, 86399, Duration::ZERO, ok_for("tok-1")).await;
    let mut with_userinfo = srv.url.clone();
    with_userinfo.set_username("svc").unwrap();
    with_userinfo.set_password(Some("url-pass-1234")).unwrap();
    let c = client(&oauth_settings(&with_userinfo, &[]));
    assert_eq!(c.list("/api/users", &[]).await.unwrap().len(), 2);
    for h in srv.hits.lock().unwrap().iter() {
        let auth: Vec<_> = h.headers.get_all("authorization").iter().collect();
        assert_eq!(auth, ["Bearer tok-1"], "{}", h.uri);
    }
}

#[tokio::test]
async fn oauth_scope_omitted_when_none_configured() {
    let srv = oauth_server(None, 86399, Duration::ZERO, ok_for("tok-1")).await;
    let c = client(&oauth_settings(&srv.url, &[]));
    c.list("/api/users", &[]).await.unwrap();
    assert!(!srv.mints.lock().unwrap()[0].contains_key("scope"));
}

#[tokio::test]
async fn oauth_token_reminted_before_expiry() {
    // expires_in 1 s: re-minted before it runs out, without a 401.
    let api: ApiFn = Arc::new(|auth: &str, _| {
        assert!(auth.starts_with("Bearer tok-"));
        reply(200, "[]")
    });
    let srv = oauth_server(None, 1, Duration::ZERO, api).await;
    let c = client(&oauth_settings(&srv.url, &[]));
    c.list("/api/users", &[]).await.unwrap();
    c.list("/api/users", &[]).await.unwrap();
    assert_eq!(srv.mints.lock().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.list("/api/users", &[]).await.unwrap();
    assert_eq!(srv.mints.lock().unwrap().len(), 2);
    let last = srv.hits.lock().unwrap().last().unwrap().headers["authorization"].clone();
    assert_eq!(last, "Bearer tok-2");
}

#[tokio::test]
async fn oauth_401_remints_once_and_retries() {
    // tok-1 is revoked server-side; tok-2 works.
    let srv = oauth_server(None, 86399, Duration::ZERO, ok_for("tok-2")).await;
    let c = client(&oauth_settings(&srv.url, &[]));
    let started = Instant::now();
    assert_eq!(c.list("/api/invoices", &[]).await.unwrap().len(), 2);
    assert_eq!(srv.mints.lock().unwrap().len(), 2);
    assert_eq!(count(&srv.hits), 2);
    // Coupa wants ~5 s between minting and first use; honoured on this path.
    assert!(started.elapsed() >= Duration::from_millis(4900));
}

#[tokio::test]
async fn oauth_second_401_is_an_auth_error() {
    let api: ApiFn = Arc::new(|_: &str, _| reply(401, r#"{"error":"invalid_token"}"#));
    let srv = oauth_server(None, 86399, Duration::ZERO, api).await;
    let c = client(&oauth_settings(&srv.url, &[]));
    let e = c.list("/api/invoices", &[]).await.unwrap_err();
    assert!(matches!(e, CoupaError::Unauthorized { .. }), "{e:?}");
    assert!(!e.is_transient());
    assert_eq!(srv.mints.lock().unwrap().len(), 2);
    assert_eq!(count(&srv.hits), 2, "one call, one retry, no more");
}

#[tokio::test]
async fn invalid_scope_names_the_scopes() {
    let bad = reply(400, r#"{"error":"invalid_scope"}"#);
    let srv = oauth_server(Some(bad), 86399, Duration::ZERO, ok_for("tok-1")).await;
    let c = client(&oauth_settings(
        &srv.url,
        &["core.purchase_order.read", "core.nonsense.read"],
    ));
    let e = c.list("/api/purchase_orders", &[]).await.unwrap_err();
    assert!(matches!(e, CoupaError::InvalidScope { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("core.purchase_order.read core.nonsense.read"),
        "{msg}"
    );
    assert!(msg.contains("not granted"), "{msg}");
    assert!(msg.contains("/oauth2/token"), "{msg}");
    assert_eq!(srv.mints.lock().unwrap().len(), 1, "permanent: not retried");
    assert_eq!(count(&srv.hits), 0);
}

#[tokio::test]
async fn invalid_client_names_the_client_id() {
    let bad = reply(401, r#"{"error":"invalid_client"}"#);
    let srv = oauth_server(Some(bad), 86399, Duration::ZERO, ok_for("tok-1")).await;
    let c = client(&oauth_settings(&srv.url, &[]));
    let e = c.list("/api/purchase_orders", &[]).await.unwrap_err();
    assert!(matches!(e, CoupaError::Unauthorized { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains(&format!("client id `{CLIENT_ID}` rejected")),
        "{e}"
    );
    assert_eq!(srv.mints.lock().unwrap().len(), 1);
    assert_eq!(count(&srv.hits), 0);
}

#[tokio::test]
async fn token_endpoint_outage_is_retried() {
    let srv = oauth_server(
        Some(reply(503, "down")),
        86399,
        Duration::ZERO,
        ok_for("tok-1"),
    )
    .await;
    let c = client(&oauth_settings(&srv.url, &[]));
    let e = c.list("/api/purchase_orders", &[]).await.unwrap_err();
    assert!(
        matches!(e, CoupaError::RetriesExhausted { attempts: 4, .. }),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert_eq!(srv.mints.lock().unwrap().len(), 4);
}

// ---------- retries ----------

#[tokio::test]
async fn retry_after_seconds_is_honoured_by_every_caller() {
    let (url, hits) = scripted(vec![
        reply(429, "").header("retry-after", "1"),
        reply(200, "[]"),
    ])
    .await;
    let c = client(&patient(&url));
    let started = Instant::now();
    let a = {
        let c = c.clone();
        tokio::spawn(async move { c.list("/api/a", &[]).await })
    };
    // A second caller that did not get the 429 must hold off as well.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = c.list("/api/b", &[]).await;
    a.await.unwrap().unwrap();
    b.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let h = hits.lock().unwrap().clone();
    assert_eq!(h.len(), 3);
    for later in &h[1..] {
        assert!(
            later.at - h[0].at >= Duration::from_millis(950),
            "request {} sent during the pause",
            later.uri
        );
    }
    assert_eq!(c.stats().rate_limited, 1);
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let (url, hits) = scripted(vec![
        reply(503, "").header("retry-after", at),
        reply(200, "[]"),
    ])
    .await;
    let c = client(&patient(&url));
    let started = Instant::now();
    c.list("/api/a", &[]).await.unwrap();
    // Whole-second dates: somewhere in (1, 2] s.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(count(&hits), 2);
}

/// Settings whose backoff ceiling lets a server's `Retry-After` of a few
/// seconds stand.
fn patient(url: &Url) -> CoupaSettings {
    CoupaSettings {
        max_backoff: Duration::from_secs(5),
        ..api_key_settings(url)
    }
}

#[tokio::test]
async fn an_absurd_retry_after_is_capped_at_max_backoff() {
    let (url, hits) = scripted(vec![
        reply(429, "").header("retry-after", "99999999"),
        reply(200, "[]"),
    ])
    .await;
    let s = CoupaSettings {
        max_backoff: Duration::from_millis(300),
        ..api_key_settings(&url)
    };
    let c = client(&s);
    let started = Instant::now();
    c.list("/api/a", &[]).await.unwrap();
    // Before: every request paused for 10 minutes.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(count(&hits), 2);
    // And the pause it set for everyone is over as well.
    let started = Instant::now();
    c.list("/api/b", &[]).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn rate_limited_without_retry_after_backs_off_and_succeeds() {
    let (url, hits) = scripted(vec![reply(429, ""), reply(429, ""), reply(200, PAGE)]).await;
    let c = client(&api_key_settings(&url));
    assert_eq!(c.list("/api/a", &[]).await.unwrap().len(), 2);
    assert_eq!(count(&hits), 3);
    let s = c.stats();
    assert_eq!(
        (s.rate_limited, s.retries, s.responses_4xx, s.responses_2xx),
        (2, 2, 2, 1)
    );
}

#[tokio::test]
async fn server_error_then_success() {
    let (url, hits) = scripted(vec![
        reply(503, "<html>maintenance</html>"),
        reply(200, PAGE),
    ])
    .await;
    let c = client(&api_key_settings(&url));
    assert_eq!(c.list("/api/a", &[]).await.unwrap().len(), 2);
    assert_eq!(count(&hits), 2);
}

#[tokio::test]
async fn timeout_then_success() {
    let (url, hits) = scripted(vec![
        reply(200, PAGE).delay(Duration::from_secs(2)),
        reply(200, PAGE),
    ])
    .await;
    let mut s = api_key_settings(&url);
    s.timeout = Duration::from_millis(300);
    let c = client(&s);
    assert_eq!(c.list("/api/a", &[]).await.unwrap().len(), 2);
    assert_eq!(count(&hits), 2);
    assert_eq!(c.stats().transport_errors, 1);
}

#[tokio::test]
async fn malformed_json_then_good() {
    let (url, hits) = scripted(vec![reply(200, r#"[{"id":1},{"id""#), reply(200, PAGE)]).await;
    let c = client(&api_key_settings(&url));
    assert_eq!(c.list("/api/a", &[]).await.unwrap().len(), 2);
    assert_eq!(count(&hits), 2);
}

#[tokio::test]
async fn html_200_then_good() {
    let html = reply(200, "<!DOCTYPE html><html><body>Sign in</body></html>")
        .header("content-type", "text/html");
    let (url, hits) = scripted(vec![html, reply(200, PAGE)]).await;
    let c = client(&api_key_settings(&url));
    assert_eq!(c.list("/api/a", &[]).await.unwrap().len(), 2);
    assert_eq!(count(&hits), 2);
}

#[tokio::test]
async fn body_cut_short_then_good() {
    let (url, hits) = raw_server(vec![
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\nConnection: close\r\n\r\n[{\"id\":1},",
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\nConnection: close\r\n\r\n[{\"id\":7}]",
    ])
    .await;
    let c = client(&api_key_settings(&url));
    let recs = c.list("/api/a", &[]).await.unwrap();
    assert_eq!(recs[0]["id"], 7);
    assert_eq!(count(&hits), 2);
}

#[tokio::test]
async fn max_attempts_bounds_the_loop() {
    let (url, hits) = scripted(vec![reply(500, "boom")]).await;
    let mut s = api_key_settings(&url);
    s.max_attempts = 3;
    let c = client(&s);
    let e = c.list("/api/a", &[]).await.unwrap_err();
    match &e {
        CoupaError::RetriesExhausted { attempts, last } => {
            assert_eq!(*attempts, 3);
            assert!(matches!(**last, CoupaError::Status { status: 500, .. }));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_transient());
    assert!(e.to_string().contains("boom"), "{e}");
    assert_eq!(count(&hits), 3);
    assert_eq!(c.stats().retries, 2);
}

#[tokio::test]
async fn connection_refused_is_transient_and_bounded() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let mut s = api_key_settings(&url);
    s.max_attempts = 2;
    let e = client(&s).list("/api/a", &[]).await.unwrap_err();
    match &e {
        CoupaError::RetriesExhausted { attempts: 2, last } => {
            assert!(
                matches!(
                    **last,
                    CoupaError::Transport {
                        kind: TransportKind::Connect,
                        ..
                    }
                ),
                "{last:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

// ---------- permanent errors ----------

#[tokio::test]
async fn client_errors_are_not_retried() {
    let validation = json!({"errors": {"account": ["Segment 1 - Cost Center can't be blank"], "po-number": ["has already been taken"]}});
    let cases = vec![
        (reply(404, r#"{"errors":["not found"]}"#), "404"),
        (reply(403, "Forbidden"), "403"),
        (reply(400, validation.to_string()), "400"),
        (reply(422, "nope"), "422"),
        (
            reply(302, "").header("location", "http://169.254.169.254/latest"),
            "302",
        ),
        (reply(200, r#"{"id":1}"#), "object-for-list"),
    ];
    for (r, name) in cases {
        let (url, hits) = scripted(vec![r, reply(200, "[]")]).await;
        let e = client(&api_key_settings(&url))
            .list("/api/purchase_orders/9", &[])
            .await
            .unwrap_err();
        assert_eq!(count(&hits), 1, "{name} must not be retried");
        assert!(!e.is_transient(), "{name}");
        let msg = e.to_string();
        assert!(msg.contains("/api/purchase_orders/9"), "{name}: {msg}");
        match (name, &e) {
            ("404", CoupaError::NotFound { .. }) => {}
            ("403", CoupaError::Forbidden { .. }) => assert!(msg.contains("scope"), "{msg}"),
            (
                "400",
                CoupaError::Validation {
                    errors, messages, ..
                },
            ) => {
                assert_eq!(errors.as_ref(), &validation["errors"]);
                assert_eq!(
                    messages,
                    &[
                        "account: Segment 1 - Cost Center can't be blank",
                        "po-number: has already been taken"
                    ]
                );
                assert!(
                    msg.contains("account: Segment 1 - Cost Center can't be blank"),
                    "{msg}"
                );
            }
            ("422", CoupaError::Status { status: 422, .. }) => assert!(msg.contains("nope")),
            ("302", CoupaError::Redirect { location, .. }) => {
                assert!(location.contains("169.254.169.254"))
            }
            (
                "object-for-list",
                CoupaError::Malformed {
                    kind: MalformedKind::WrongShape,
                    ..
                },
            ) => {
                assert!(msg.contains("expected a JSON array"), "{msg}")
            }
            _ => panic!("{name}: unexpected {e:?}"),
        }
    }
}

#[tokio::test]
async fn get_json_returns_single_objects() {
    let (url, _) = scripted(vec![reply(200, r#"{"id":5,"po-number":"PO5"}"#)]).await;
    let v = client(&api_key_settings(&url))
        .get_json("/api/purchase_orders/5", &[])
        .await
        .unwrap();
    assert_eq!(v["po-number"], "PO5");
}

#[tokio::test]
async fn paths_cannot_leave_the_instance() {
    let (url, hits) = scripted(vec![reply(200, "[]")]).await;
    let c = client(&api_key_settings(&url));
    for p in ["https://evil.example/api/x", "api/x", "@evil.example/api"] {
        assert!(c.list(p, &[]).await.is_err(), "{p}");
    }
    c.list("/api/ok", &[]).await.unwrap();
    assert_eq!(count(&hits), 1);
    assert_eq!(hits.lock().unwrap()[0].uri, "/api/ok");
}

// ---------- rate limit ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_never_exceed_the_configured_rate() {
    let (url, hits) = scripted(vec![reply(200, "[]")]).await;
    let mut s = api_key_settings(&url);
    s.requests_per_second = 5;
    let c = client(&s);
    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    c.list(&format!("/api/t{t}/{i}"), &[]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let at: Vec<Instant> = hits.lock().unwrap().iter().map(|h| h.at).collect();
    assert_eq!(at.len(), 20);
    for (i, a) in at.iter().enumerate() {
        let in_window = at[i..]
            .iter()
            .filter(|b| **b - *a < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 6,
            "{in_window} requests within 1 s of request {i}"
        );
    }
    // Burst 1 at 5 rps: 20 requests need at least 19 intervals of 200 ms.
    assert!(elapsed >= Duration::from_millis(3750), "{elapsed:?}");
    assert!(c.stats().rate_limit_waits > 0);
}

#[tokio::test]
async fn token_mints_count_against_the_rate() {
    let srv = oauth_server(None, 86399, Duration::ZERO, ok_for("tok-1")).await;
    let mut s = oauth_settings(&srv.url, &[]);
    s.requests_per_second = 2;
    let c = client(&s);
    let started = Instant::now();
    c.list("/api/a", &[]).await.unwrap();
    // Mint, then the call: two requests at 2 rps, burst 1.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

// ---------- clock ----------

#[tokio::test]
async fn coupa_now_follows_the_date_header() {
    let skewed = SystemTime::now() - Duration::from_secs(5 * 3600);
    let (url, hits) = scripted(vec![
        reply(200, "[]").header("date", httpdate::fmt_http_date(skewed))
    ])
    .await;
    let c = client(&api_key_settings(&url));
    assert_eq!(c.coupa_now(), None);
    let t = c.clock("/api/users").await.unwrap();
    let expected = chrono::DateTime::<chrono::Utc>::from(skewed);
    assert!((t - expected).num_seconds().abs() <= 2, "{t} vs {expected}");
    // Trusted once three `Date` headers agreed, not on the first.
    assert_eq!(count(&hits), 3);
    assert_eq!(hits.lock().unwrap()[0].uri, "/api/users?limit=1");
    // Known now: no further probe, and it advances with the host's elapsed time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t2 = c.clock("/api/users").await.unwrap();
    assert_eq!(count(&hits), 3);
    assert!(t2 - t >= chrono::Duration::milliseconds(1000), "{t} {t2}");
    assert!((c.coupa_now().unwrap() - expected).num_seconds().abs() <= 3);
}

#[tokio::test]
async fn date_is_taken_from_error_responses_too() {
    let skewed = SystemTime::now() + Duration::from_secs(3 * 3600);
    let (url, _) = scripted(vec![
        reply(404, "").header("date", httpdate::fmt_http_date(skewed))
    ])
    .await;
    let c = client(&api_key_settings(&url));
    for _ in 0..3 {
        assert!(c.get_json("/api/nothing", &[]).await.is_err());
    }
    let now = c.coupa_now().unwrap();
    assert!(
        (now - chrono::DateTime::<chrono::Utc>::from(skewed))
            .num_seconds()
            .abs()
            <= 2
    );
}

#[tokio::test]
async fn one_date_a_year_ahead_moves_nothing_and_is_counted() {
    let now = SystemTime::now();
    let ahead = now + Duration::from_secs(365 * 86_400);
    let good = reply(200, "[]").header("date", httpdate::fmt_http_date(now));
    let (url, _) = scripted(vec![
        good.clone(),
        reply(200, "[]").header("date", httpdate::fmt_http_date(ahead)),
        good.clone(),
        good.clone(),
        good.clone(),
        reply(200, "[]").header("date", httpdate::fmt_http_date(ahead)),
        good,
    ])
    .await;
    let c = client(&api_key_settings(&url));
    let t = c.clock("/api/users").await.unwrap();
    assert!((t - chrono::Utc::now()).num_seconds().abs() <= 3, "{t}");
    c.get_json("/api/users", &[]).await.unwrap();
    c.get_json("/api/users", &[]).await.unwrap();
    let t = c.coupa_now().unwrap();
    assert!((t - chrono::Utc::now()).num_seconds().abs() <= 3, "{t}");
    assert_eq!(
        c.clock_rejected(),
        1,
        "the second year-ahead Date is rejected"
    );
    assert_eq!(c.clock_problem(), None);
}

#[tokio::test]
async fn dates_that_never_agree_fail_the_clock_instead_of_opening_a_window() {
    let now = SystemTime::now();
    let replies = (0..10u64)
        .map(|i| {
            reply(200, "[]").header(
                "date",
                httpdate::fmt_http_date(now + Duration::from_secs(i * 86_400)),
            )
        })
        .collect();
    let (url, hits) = scripted(replies).await;
    let c = client(&api_key_settings(&url));
    let err = c.clock("/api/users").await.unwrap_err();
    assert_eq!(err.kind(), "clock", "{err}");
    assert!(err.to_string().contains("disagree"), "{err}");
    assert_eq!(count(&hits), 6, "a bounded number of probes");
    assert_eq!(c.coupa_now(), None);
}

#[tokio::test]
async fn a_clock_beyond_max_clock_skew_is_a_named_problem() {
    let skewed = SystemTime::now() + Duration::from_secs(3600);
    let (url, _) = scripted(vec![
        reply(200, "[]").header("date", httpdate::fmt_http_date(skewed))
    ])
    .await;
    let c = client(&api_key_settings(&url));
    c.clock("/api/users").await.unwrap();
    let p = c
        .clock_problem()
        .expect("an hour is beyond the 15m default");
    assert!(
        p.contains("ahead of") && p.contains("coupa.max_clock_skew"),
        "{p}"
    );
}

#[tokio::test]
async fn clock_falls_back_to_host_when_coupa_sends_no_date() {
    let (url, hits) = raw_server(vec![
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
    ])
    .await;
    let c = client(&api_key_settings(&url));
    let t = c.clock("/api/users").await.unwrap();
    assert!((t - chrono::Utc::now()).num_seconds().abs() <= 2);
    c.clock("/api/users").await.unwrap();
    assert_eq!(count(&hits), 1, "probed once, not on every call");
    assert_eq!(c.coupa_now(), None);
}

// ---------- secrets ----------

/// A log sink for the current thread's tracing output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_secret(what: &str, text: &str) {
    let form_encoded: String =
        url::form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect();
    for s in [API_KEY, CLIENT_SECRET, form_encoded.as_str(), "tok-SECRET"] {
        assert!(!text.contains(s), "{what} leaks a secret: {text}");
    }
}

/// A hostile server that echoes the credentials it received into every
/// kind of error response; no error or log line may repeat them.
#[tokio::test] // current-thread: the log capture below sees every task
async fn no_secret_in_any_error_or_log_line() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let echo = |req: &Request| -> String {
        let key = req
            .headers()
            .get("x-coupa-api-key")
            .map(|v| v.to_str().unwrap().to_string());
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        format!("{} {}", key.unwrap_or_default(), auth.unwrap_or_default())
    };
    let app = Router::new()
        .route(
            "/oauth2/token",
            post(|body: String| async move {
                // Echo the form back (client_secret form-encoded) for the
                // failing scenarios; mint a secret-looking token otherwise.
                if body.contains("scope=core.fail.read") {
                    return reply(500, format!("cannot process {body}")).into_response();
                }
                if body.contains("scope=core.bad_scope.read") {
                    return reply(400, r#"{"error":"invalid_scope"}"#).into_response();
                }
                if body.contains("scope=core.bad_client.read") {
                    return reply(
                        401,
                        format!(r#"{{"error":"invalid_client","error_description":"{body}"}}"#),
                    )
                    .into_response();
                }
                reply(
                    200,
                    r#"{"access_token":"tok-SECRET-abc","expires_in":86399}"#,
                )
                .into_response()
            }),
        )
        .fallback(any(move |req: Request| async move {
            let e = echo(&req);
            let path = req.uri().path().to_string();
            let r = match path.as_str() {
                "/api/400" => reply(400, json!({"errors": {"header": [e]}}).to_string()),
                "/api/400plain" => reply(400, e),
                "/api/401" => reply(401, e),
                "/api/403" => reply(403, e),
                "/api/404" => reply(404, e),
                "/api/500" => reply(500, e),
                "/api/302" => reply(302, "").header(
                    "location",
                    format!(
                        "http://x/?k={}",
                        e.split(' ').find(|s| !s.is_empty()).unwrap_or("")
                    ),
                ),
                "/api/html" => {
                    reply(200, format!("<html>{e}</html>")).header("content-type", "text/html")
                }
                "/api/badjson" => reply(200, format!("[\"{e}")),
                "/api/object" => reply(200, json!({"echo": e}).to_string()),
                "/api/slow" => reply(200, "[]").delay(Duration::from_secs(2)),
                _ => reply(200, "[]"),
            };
            tokio::time::sleep(r.delay).await;
            r.into_response()
        }));
    let url = serve(app).await;

    let mut errors: Vec<CoupaError> = Vec::new();
    let mut key = api_key_settings(&url);
    key.max_attempts = 2;
    key.timeout = Duration::from_millis(300);
    let mut oauth = oauth_settings(&url, &[]);
    oauth.max_attempts = 2;
    oauth.timeout = Duration::from_millis(300);
    let paths = [
        "/api/400",
        "/api/400plain",
        "/api/401",
        "/api/403",
        "/api/404",
        "/api/500",
        "/api/302",
        "/api/html",
        "/api/badjson",
        "/api/object",
        "/api/slow",
    ];
    let with_key = client(&key);
    let with_token = client(&oauth);
    for c in [&with_key, &with_token] {
        for p in paths {
            errors.push(c.list(p, &[]).await.expect_err(p));
        }
        errors.push(c.list("https://elsewhere/", &[]).await.unwrap_err());
        assert_no_secret("client Debug", &format!("{c:?}"));
    }
    for scope in [
        "core.fail.read",
        "core.bad_scope.read",
        "core.bad_client.read",
    ] {
        errors.push(
            client(&oauth_settings(&url, &[scope]))
                .list("/api/x", &[])
                .await
                .unwrap_err(),
        );
    }
    let dead = Url::parse("http://127.0.0.1:9").unwrap();
    errors.push(
        client(&api_key_settings(&dead))
            .list("/api/x", &[])
            .await
            .unwrap_err(),
    );
    let mut bad = oauth_settings(&url, &[]);
    bad.requests_per_second = 0;
    errors.push(CoupaClient::new(&bad).unwrap_err());

    // Every variant is exercised.
    let mut seen: Vec<&str> = errors
        .iter()
        .flat_map(|e| {
            let mut v = vec![variant(e)];
            if let CoupaError::RetriesExhausted { last, .. } = e {
                v.push(variant(last));
            }
            v
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "Config",
            "Forbidden",
            "InvalidScope",
            "Malformed",
            "NotFound",
            "Redirect",
            "RetriesExhausted",
            "Status",
            "Transport",
            "Unauthorized",
            "Validation"
        ]
    );
    for e in &errors {
        assert_no_secret("Display", &e.to_string());
        assert_no_secret("Debug", &format!("{e:?}"));
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying Coupa request"),
        "retries are logged: {logs}"
    );
    assert_no_secret("logs", &logs);
    assert_no_secret(
        "settings Debug",
        &format!("{:?}", oauth_settings(&url, &[])),
    );
    assert_no_secret("settings Debug", &format!("{key:?}"));
}

fn variant(e: &CoupaError) -> &'static str {
    match e {
        CoupaError::Config(_) => "Config",
        CoupaError::Unauthorized { .. } => "Unauthorized",
        CoupaError::InvalidScope { .. } => "InvalidScope",
        CoupaError::Forbidden { .. } => "Forbidden",
        CoupaError::NotFound { .. } => "NotFound",
        CoupaError::Validation { .. } => "Validation",
        CoupaError::Refused { .. } => "Refused",
        CoupaError::Invalid(_) => "Invalid",
        CoupaError::Status { .. } => "Status",
        CoupaError::Transport { .. } => "Transport",
        CoupaError::Malformed { .. } => "Malformed",
        CoupaError::Redirect { .. } => "Redirect",
        CoupaError::RetriesExhausted { .. } => "RetriesExhausted",
        CoupaError::Clock(_) => "Clock",
    }
}
