//! The simulator's HTTP surface: Coupa's API (`GET /api/...` for every
//! catalogue object; `POST`, `PUT`/`PATCH` and `PUT .../:id/<action>`
//! where the catalogue allows them), the OAuth token endpoint, the
//! `/_sim/` admin endpoints (`admin.rs`), and the gate every non-admin
//! request passes first (request log, rate limit, faults, latency). Every response,
//! errors included, carries a `Date` from the sim clock: the daemon reads
//! "Coupa now" from it. What a write does to the data is `writes.rs`'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{to_bytes, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::auth::Denied;
use super::faults::{self, Fault};
use super::query::Query;
use super::writes::{self, Write};
use super::{lock, Shared};
use coupa_model::objects::{ObjectSpec, CATALOGUE};

pub(super) type St = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(
            "/api/{*rest}",
            get(api_get).post(api_write).put(api_write).patch(api_write),
        )
        .route("/oauth2/token", post(token))
        .layer(middleware::from_fn_with_state(shared.clone(), gate));
    let admin = super::admin::routes();
    api.merge(admin)
        .layer(middleware::map_response_with_state(
            shared.clone(),
            date_header,
        ))
        .with_state(shared)
}

/// Coupa's JSON error shape: `{"errors":{"<key>":["<message>"]}}`.
pub(super) fn error(status: StatusCode, key: &str, msg: impl Into<String>) -> Response {
    (status, Json(json!({"errors": {key: [msg.into()]}}))).into_response()
}

/// Marks a response whose `Date` is skewed ([`Fault::SkewDate`]).
#[derive(Clone, Copy)]
struct SkewedDate(i64);

/// Sets `Date` from the sim clock; hyper only adds its own when absent.
async fn date_header(State(sh): St, mut resp: Response) -> Response {
    let skew = resp.extensions().get::<SkewedDate>().map_or(0, |s| s.0);
    let at = sh.now() + chrono::Duration::seconds(skew);
    let date = httpdate::fmt_http_date(SystemTime::from(at));
    if let Ok(v) = HeaderValue::from_str(&date) {
        resp.headers_mut().insert(header::DATE, v);
    }
    resp
}

/// Marks a request whose list response must be trimmed ([`Fault::TrimPage`]).
#[derive(Clone, Copy)]
struct Trim(usize);

/// Query parameters a request is answered without ([`Fault::IgnoreParams`]).
#[derive(Clone)]
struct Ignore(Vec<String>);

/// Runs before every API and token request: logs it, applies the rate
/// limit, then any matching fault, then the configured latency.
async fn gate(State(sh): St, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let idx = {
        let mut log = lock(&sh.requests);
        log.push(super::RequestLog {
            at: Instant::now(),
            method: req.method().to_string(),
            path: path.clone(),
            query: query.clone(),
            status: 0,
        });
        log.len() - 1
    };
    let path_and_query = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let resp = gated(&sh, req, next, &path_and_query).await;
    lock(&sh.requests)[idx].status = resp.status().as_u16();
    resp
}

async fn gated(sh: &Shared, mut req: Request, next: Next, path_and_query: &str) -> Response {
    let (latency, limit, retry_after) = {
        let s = lock(&sh.settings);
        (s.latency, s.rate_limit, s.retry_after_on_429)
    };
    let admitted = limit.is_none_or(|l| lock(&sh.bucket).admit(&l, Instant::now()));
    // A refused request consumes no fault: the fault is for one that got in.
    let fault = admitted
        .then(|| faults::take(&mut lock(&sh.faults), path_and_query))
        .flatten();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !admitted {
        return faults::status_response(429, retry_after.then_some("1"), None);
    }
    let Some(fault) = fault else {
        return next.run(req).await;
    };
    tracing::debug!(?fault, path_and_query, "coupa-sim: injecting fault");
    match fault {
        Fault::Status {
            status,
            retry_after,
            body,
        } => faults::status_response(status, retry_after.as_deref(), body.as_deref()),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Fault::TrimPage { max } => {
            req.extensions_mut().insert(Trim(max));
            next.run(req).await
        }
        Fault::IgnoreParams { names } => {
            req.extensions_mut().insert(Ignore(names));
            next.run(req).await
        }
        Fault::SkewDate { seconds, every } => {
            let n = lock(&sh.requests).len();
            let mut resp = next.run(req).await;
            if n % every.max(1) == 0 {
                resp.extensions_mut().insert(SkewedDate(seconds));
            }
            resp
        }
        Fault::HtmlPage => faults::html_page(),
        Fault::Echo { status, pad, json } => faults::echo(req, status, pad, json).await,
        Fault::StatusAfterHandling { status } => {
            let _handled = next.run(req).await;
            faults::status_response(status, None, None)
        }
        Fault::MalformedJson | Fault::ResetConnection => {
            let (parts, body) = next.run(req).await.into_parts();
            let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
            if fault == Fault::MalformedJson {
                faults::malformed(parts, bytes)
            } else {
                faults::reset(parts, bytes)
            }
        }
    }
}

/// What an `/api/...` path names: an object, its parent id for nested
/// objects, a record id (or collection action) one segment deeper, and a
/// member action two segments deeper.
struct Target {
    spec: &'static ObjectSpec,
    parent: Option<u64>,
    id: Option<String>,
    action: Option<String>,
}

/// Matches a request path against the catalogue's resource paths (the
/// catalogue is the only list of objects; placeholders match any segment).
/// The closest match wins: `/api/suppliers/5/supplier_sites` is the sites
/// of supplier 5, not action `supplier_sites` on supplier 5.
fn resolve(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    CATALOGUE
        .iter()
        .filter_map(|spec| {
            let pattern: Vec<&str> = spec.path.split('/').filter(|s| !s.is_empty()).collect();
            let extra = segs.len().checked_sub(pattern.len())?;
            if extra > 2 {
                return None;
            }
            let mut parent = None;
            for (p, s) in pattern.iter().zip(&segs) {
                match spec.parent {
                    Some(par) if *p == par.placeholder => parent = Some(s.parse().ok()?),
                    _ if p == s => {}
                    _ => return None,
                }
            }
            let target = Target {
                spec,
                parent,
                id: segs.get(pattern.len()).map(|s| s.to_string()),
                action: segs.get(pattern.len() + 1).map(|s| s.to_string()),
            };
            Some((extra, target))
        })
        .min_by_key(|(extra, _)| *extra)
        .map(|(_, t)| t)
}

fn no_route(method: &str, path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "base",
        format!("No route matches [{method}] \"{path}\""),
    )
}

/// The refusal, if any: 401 without credentials Coupa accepts, 403
/// without the scope.
fn unauthorized(sh: &Shared, headers: &HeaderMap, scope: &str) -> Option<Response> {
    match sh.auth.check(headers, scope) {
        Ok(()) => None,
        Err(Denied::Unauthenticated(why)) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "base",
                format!("Unauthorized: {why}"),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
        Err(Denied::MissingScope(scope)) => Some(error(
            StatusCode::FORBIDDEN,
            "base",
            format!("Forbidden: token lacks scope {scope}"),
        )),
    }
}

/// Real Coupa answers XML unless asked for JSON; the simulator only
/// speaks JSON, so it refuses loudly instead of answering something the
/// real service would not.
fn not_json(headers: &HeaderMap) -> Option<Response> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("application/json") {
        return None;
    }
    Some(error(
        StatusCode::NOT_ACCEPTABLE,
        "base",
        "send Accept: application/json (without it Coupa answers XML)",
    ))
}

/// A nested path whose parent record does not exist: 404, as Coupa
/// finds the parent before the children.
fn missing_parent(sh: &Shared, t: &Target) -> Option<Response> {
    let store = lock(&sh.store);
    if super::writes::parent_exists(&store, t.spec, t.parent) {
        return None;
    }
    let key = t.spec.parent.map(|p| p.object).unwrap_or("base");
    let singular = coupa_model::objects::lookup(key)
        .map(|s| s.singular)
        .unwrap_or(key);
    Some(error(StatusCode::NOT_FOUND, singular, "not found"))
}

/// `GET /api/<resource>[/<id>]`: auth, then a bare array or a bare object.
async fn api_get(State(sh): St, req: Request) -> Response {
    let headers = req.headers();
    let path = req.uri().path().to_string();
    let Some(t) = resolve(&path).filter(|t| t.action.is_none()) else {
        return no_route("GET", &path);
    };
    if let Some(r) = unauthorized(&sh, headers, &t.spec.read_scope()) {
        return r;
    }
    if let Some(r) = not_json(headers) {
        return r;
    }
    if let Some(r) = missing_parent(&sh, &t) {
        return r;
    }
    let raw = req.uri().query().unwrap_or("");
    let raw = match req.extensions().get::<Ignore>() {
        Some(Ignore(names)) => url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                url::form_urlencoded::parse(raw.as_bytes())
                    .filter(|(k, _)| !names.iter().any(|n| n == k)),
            )
            .finish(),
        None => raw.to_string(),
    };
    let q = match Query::parse(&raw) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "query", e),
    };
    let store = lock(&sh.store);
    match t.id {
        Some(id) => {
            let record = id
                .parse()
                .ok()
                .and_then(|id| store.get_under(t.spec, t.parent, id));
            match record {
                Some(r) => Json(q.project(&r)).into_response(),
                None => error(StatusCode::NOT_FOUND, t.spec.singular, "not found"),
            }
        }
        None => {
            let mut page = store.list(t.spec, t.parent, &q);
            drop(store);
            if let Some(Trim(max)) = req.extensions().get::<Trim>().copied() {
                page.truncate(max);
            }
            Json(page).into_response()
        }
    }
}

/// Largest write body read.
const MAX_BODY: usize = 8 << 20;

/// `POST /api/x[/create_alert]`, `PUT|PATCH /api/x/:id`, `PUT /api/x/:id/<action>`:
/// route by the catalogue (what it does not allow has no route, as on
/// Coupa), auth with the write scope, then `writes.rs` decides.
async fn api_write(State(sh): St, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let Some(t) = resolve(&path) else {
        return no_route(method.as_str(), &path);
    };
    let numeric_id = t.id.as_deref().and_then(|s| s.parse::<u64>().ok());
    let write = match (&method, t.id.as_deref(), numeric_id, t.action.as_deref()) {
        (&Method::POST, None, _, None) if t.spec.caps.create => Write::Create { alert: false },
        (&Method::POST, Some(a), None, None)
            if t.spec.caps.create && writes::collection_actions(t.spec).contains(&a) =>
        {
            Write::Create { alert: true }
        }
        (&Method::PUT | &Method::PATCH, Some(_), Some(_), None) if t.spec.caps.update => {
            let exported = url::form_urlencoded::parse(raw_query.as_bytes())
                .find(|(k, _)| k == "exported")
                .map(|(_, v)| v == "true");
            Write::Update { exported }
        }
        (&Method::PUT, Some(_), Some(_), Some(a)) if t.spec.actions.contains(&a) => {
            Write::Action(a)
        }
        _ => return no_route(method.as_str(), &path),
    };
    let headers = req.headers().clone();
    if let Some(r) = unauthorized(&sh, &headers, &t.spec.write_scope()) {
        return r;
    }
    if let Some(r) = not_json(&headers) {
        return r;
    }
    if let Some(r) = missing_parent(&sh, &t) {
        return r;
    }
    let bytes = match to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "base",
                format!("unreadable body: {e}"),
            )
        }
    };
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        // Coupa: Content-Type and Accept must name the same type.
        let json_body = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        if !json_body {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "base",
                "send Content-Type: application/json with a JSON body",
            );
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "base",
                    "the body must be a JSON object",
                )
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "base",
                    format!("malformed JSON: {e}"),
                )
            }
        }
    };
    let q = match Query::parse(&raw_query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "query", e),
    };
    let now = sh.now();
    let result = {
        let mut store = lock(&sh.store);
        match write {
            Write::Create { alert } => {
                writes::create(&mut store, t.spec, t.parent, body, alert, now)
            }
            _ => {
                let id = numeric_id.expect("matched above");
                // A child is only reachable under its own parent.
                if t.spec.parent.is_some() && store.parent_of(t.spec, id) != t.parent {
                    Err(writes::Rejection {
                        status: 404,
                        key: t.spec.singular.into(),
                        messages: vec!["not found".into()],
                    })
                } else {
                    writes::update(&mut store, t.spec, id, body, write, now)
                }
            }
        }
    };
    let record = match result {
        Ok(r) => r,
        Err(rej) => {
            let status = StatusCode::from_u16(rej.status).unwrap_or(StatusCode::BAD_REQUEST);
            return (status, Json(rej.body())).into_response();
        }
    };
    let status = if matches!(write, Write::Create { .. }) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let return_object = url::form_urlencoded::parse(raw_query.as_bytes())
        .find(|(k, _)| k == "return_object")
        .map(|(_, v)| v.into_owned());
    match return_object.as_deref() {
        Some("none") => status.into_response(),
        Some("limited") => (status, Json(json!({"id": record.get("id")}))).into_response(),
        _ => (status, Json(q.project(&record))).into_response(),
    }
}

/// `POST /oauth2/token`: the client-credentials grant.
async fn token(State(sh): St, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    match sh.auth.grant(&headers, &form) {
        Ok(g) => Json(json!({
            "access_token": g.access_token, "token_type": "bearer",
            "expires_in": g.expires_in, "scope": g.scope,
        }))
        .into_response(),
        Err((status, code)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            Json(json!({"error": code})),
        )
            .into_response(),
    }
}
