//! The actions over HTTP: `/v1/...` on the daemon's server, each route one
//! call of [`Actions`], answering with Coupa's JSON or a structured error.
//!
//! Off unless `[api] token` (or `token_file`) is set: then no `/v1` route
//! exists at all. Every route, the OpenAPI document included, needs
//! `Authorization: Bearer <token>`; the token is compared as a SHA-256
//! digest in constant time (`subtle`), so neither its content nor its
//! length leaks through timing, and only the digest is kept.
//!
//! Owns: the routes, the token check, the request bodies of the named
//! operations, and the error body and its HTTP status (shared with the
//! CLI, [`crate::cli::actions`], so scripts read one shape). Must not know
//! Coupa's paths or rules (that is [`Actions`]), nor log a token or a
//! request body. The OpenAPI document at `/v1/openapi.json` is generated
//! from the `#[utoipa::path]` annotations below, not written by hand.
//!
//! Status codes: success is 200 with Coupa's JSON. Errors carry
//! `{"error": {"kind", "status", "message", "fields"}}` where `status` is
//! the HTTP status *Coupa* answered (null if it was not asked) and the
//! response status is chosen by [`http_status`]: `invalid` 400,
//! `validation` 400 (Coupa's own, with `fields`), `refused` 422,
//! `not_found` 404, our own missing or wrong token 401; Coupa-side
//! failures are gateway errors: 502 (Coupa failed or refused the daemon's
//! credentials), 503 (unreachable or rate-limited: nothing was done, retry
//! later), 504 (timed out: Coupa may have acted, check before retrying).

use super::token::{require_token, ApiToken};
use crate::config::ApiSettings;
use crate::coupa::actions::{Actions, IntegrationRecord, IntegrationResponse, Target};
use crate::coupa::body::{
    CreateRunRequest, ErrorBody, ErrorEnvelope, FieldMessage, RawRequest, RunStatusRequest,
    DEFAULT_LIMIT,
};
use crate::coupa::error::TransportKind;
use crate::coupa::{CoupaClient, CoupaError};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::{stream, StreamExt, TryStreamExt};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::Arc;
use tracing::{info, warn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

/// The parent object nested objects are addressed under
/// (`/v1/suppliers/{supplier_id}/{object}`); the catalogue has no other.
pub const PARENT: &str = "suppliers";

// ---- the error body, shared with the CLI ----

/// The HTTP status the API answers a failed action with (see the module
/// documentation for the reasoning).
pub fn http_status(e: &CoupaError) -> StatusCode {
    match e {
        CoupaError::Invalid(_) | CoupaError::Validation { .. } => StatusCode::BAD_REQUEST,
        CoupaError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        CoupaError::NotFound { .. } => StatusCode::NOT_FOUND,
        CoupaError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        CoupaError::Transport { kind, .. } => match kind {
            TransportKind::Connect => StatusCode::SERVICE_UNAVAILABLE,
            TransportKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            TransportKind::Body | TransportKind::Other => StatusCode::BAD_GATEWAY,
        },
        CoupaError::Status { status: 429, .. } => StatusCode::SERVICE_UNAVAILABLE,
        // Coupa's other 4xx say something about the request: pass them on.
        CoupaError::Status { status, .. } if (400..500).contains(status) => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        CoupaError::RetriesExhausted { last, .. } => http_status(last),
        CoupaError::Unauthorized { .. }
        | CoupaError::InvalidScope { .. }
        | CoupaError::Forbidden { .. }
        | CoupaError::Status { .. }
        | CoupaError::Malformed { .. }
        | CoupaError::Redirect { .. }
        | CoupaError::Clock(_) => StatusCode::BAD_GATEWAY,
    }
}

/// A failed API call: its status and body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody::own("invalid", message),
        }
    }
}

impl From<CoupaError> for ApiError {
    fn from(e: CoupaError) -> ApiError {
        let status = http_status(&e);
        if status.is_server_error() {
            warn!(kind = e.kind(), error = %e, "API action failed on Coupa's side");
        }
        ApiError {
            status,
            body: ErrorBody::from(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorEnvelope { error: self.body })).into_response()
    }
}

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

// ---- request bodies of the named operations ----

/// What the API routes share: the actions (over the daemon's one client,
/// so rate limit and counters are shared with the pollers) and the token.
pub struct ApiState {
    actions: Actions,
    /// The bearer token's digest; `/admin` routes check the same one.
    pub(super) token: Arc<ApiToken>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

impl ApiState {
    /// The API's state if `[api]` has a token, else `None` (logged: the
    /// API is off).
    pub fn from_settings(settings: &ApiSettings, client: CoupaClient) -> Option<Arc<ApiState>> {
        let Some(token) = &settings.token else {
            info!("actions API off: set [api] token or token_file to serve /v1");
            return None;
        };
        info!("actions API on under /v1 (bearer token required)");
        Some(Arc::new(ApiState {
            actions: Actions::new(client),
            token: Arc::new(ApiToken::new(token.expose_secret())),
        }))
    }
}

/// The `/v1` routes, each behind the token check.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/objects/{object}", get(search).post(create))
        .route("/v1/objects/{object}/{id}", get(get_one).put(update))
        .route(
            "/v1/objects/{object}/{id}/mark_exported",
            post(mark_exported),
        )
        .route("/v1/objects/{object}/{id}/{action}", post(perform))
        .route(
            "/v1/suppliers/{supplier_id}/{object}",
            get(search_nested).post(create_nested),
        )
        .route(
            "/v1/suppliers/{supplier_id}/{object}/{id}",
            get(get_nested).put(update_nested),
        )
        .route(
            "/v1/suppliers/{supplier_id}/{object}/{id}/mark_exported",
            post(mark_exported_nested),
        )
        .route(
            "/v1/suppliers/{supplier_id}/{object}/{id}/{action}",
            post(perform_nested),
        )
        .route("/v1/purchase_orders/{id}/close", post(close_po))
        .route("/v1/purchase_orders/{id}/cancel", post(cancel_po))
        .route("/v1/integration_runs", post(create_run))
        .route("/v1/integration_runs/{id}/status", put(set_run_status))
        .route("/v1/integration_errors", post(create_integration_error))
        .route(
            "/v1/integration_history_records",
            post(create_integration_history_record),
        )
        .route("/v1/http", post(raw))
        .layer(middleware::from_fn(audit))
        .layer(middleware::from_fn_with_state(
            state.token.clone(),
            require_token,
        ))
        .with_state(state)
}

/// One log line per authenticated call (method, path, status, time), so
/// writes made through the API can be traced; bodies are not logged.
async fn audit(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    info!(
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "actions API call"
    );
    resp
}

// ---- argument helpers ----

fn parse_id(what: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(format!("{what} `{raw}` is not a record id")))
}

fn nested(object: &str, supplier_id: &str) -> Result<Target, ApiError> {
    Ok(Target::nested(
        object,
        parse_id("supplier id", supplier_id)?,
    ))
}

/// A required JSON body.
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("body is not JSON: {e}")))
}

/// An optional JSON body (empty means none).
fn optional_body(body: &Bytes) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    json_body(body).map(Some)
}

/// A required body of a named operation's type.
fn typed_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let v = json_body(body)?;
    serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("body: {e}")))
}

/// Splits a search query into `limit` and Coupa's filters, order kept.
fn search_query(raw: Option<&str>) -> Result<(usize, Vec<(String, String)>), ApiError> {
    let mut limit = None;
    let mut filters = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k == "limit" {
            if limit.is_some() {
                return Err(ApiError::invalid("`limit` is given twice"));
            }
            limit =
                Some(v.parse::<usize>().map_err(|_| {
                    ApiError::invalid(format!("limit `{v}` is not a whole number"))
                })?);
        } else {
            filters.push((k.into_owned(), v.into_owned()));
        }
    }
    Ok((limit.unwrap_or(DEFAULT_LIMIT), filters))
}

/// `?alert=true|false` on the integration error and history routes.
fn alert_param(raw: Option<&str>) -> Result<bool, ApiError> {
    let mut alert = false;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match (k.as_ref(), v.as_ref()) {
            ("alert", "true" | "1" | "") => alert = true,
            ("alert", "false" | "0") => alert = false,
            ("alert", other) => {
                return Err(ApiError::invalid(format!(
                    "alert `{other}` is not true or false"
                )))
            }
            (other, _) => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{other}` (only `alert`)"
                )))
            }
        }
    }
    Ok(alert)
}

fn record(r: crate::coupa::record::Record) -> Json<Value> {
    Json(Value::Object(r))
}

// ---- handlers ----

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", body = Object)))]

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Records of an object matching the query's filters, as one JSON array
/// streamed a page at a time. Errors before the first record get their
/// status; a failure after records were sent aborts the response, leaving
/// the array unterminated, so a partial list never passes for a whole one.
async fn run_search(
    state: &ApiState,
    target: Target,
    query: Option<String>,
) -> Result<Response, ApiError> {
    let (limit, filters) = search_query(query.as_deref())?;
    let object = target.object.clone();
    let mut records = Box::pin(state.actions.search(target, &filters, limit)?);
    let Some(first) = records.try_next().await? else {
        return Ok(Json(Value::Array(Vec::new())).into_response());
    };
    let head = stream::once(async move {
        Ok::<_, CoupaError>(Bytes::from(format!("[{}", Value::Object(first))))
    });
    let rest = records.map_ok(|r| Bytes::from(format!(",{}", Value::Object(r))));
    let tail = stream::once(async { Ok(Bytes::from_static(b"]")) });
    let body = head.chain(rest).chain(tail).map_err(move |e| {
        warn!(object = %object, error = %e, "search failed midway; response aborted");
        std::io::Error::other(e.to_string())
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Search: records matching the filters.
#[utoipa::path(get, path = "/v1/objects/{object}", tag = "objects",
    params(
        ("object" = String, Path, description = "Catalogue name, e.g. `purchase_orders` (`coupa-changefeed objects`)"),
        ("limit" = Option<usize>, Query, description = "Most records returned (default 1000); pages of 50 are fetched as the response is read"),
        ("filters" = Option<std::collections::HashMap<String, String>>, Query, style = Form, explode,
            description = "Any other query pair is a Coupa filter sent as given, e.g. `status=issued`, `updated_at[gt]=2024-01-01`, `order_by=name`"),
    ),
    responses(
        (status = 200, description = "The records, in id order unless `order_by` is given", body = Vec<Object>),
        (status = 400, description = "Unknown object or bad filter", body = ErrorEnvelope),
        (status = 422, description = "Coupa offers no search on this object", body = ErrorEnvelope),
    ))]

async fn search(
    State(s): State<Arc<ApiState>>,
    Path(object): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    run_search(&s, Target::top(&object), q).await
}

/// Search under a supplier: its `supplier_sites` or `remit_to_addresses`.
#[utoipa::path(get, path = "/v1/suppliers/{supplier_id}/{object}", tag = "suppliers",
    params(
        ("supplier_id" = u64, Path, description = "The supplier's id"),
        ("object" = String, Path, description = "`supplier_sites` or `remit_to_addresses`"),
        ("limit" = Option<usize>, Query, description = "Most records returned (default 1000)"),
        ("filters" = Option<std::collections::HashMap<String, String>>, Query, style = Form, explode,
            description = "Coupa filters, e.g. `active=true`"),
    ),
    responses(
        (status = 200, description = "The supplier's records", body = Vec<Object>),
        (status = 404, description = "No such supplier", body = ErrorEnvelope),
    ))]

async fn search_nested(
    State(s): State<Arc<ApiState>>,
    Path((supplier_id, object)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    run_search(&s, nested(&object, &supplier_id)?, q).await
}

/// One record.
#[utoipa::path(get, path = "/v1/objects/{object}/{id}", tag = "objects",
    params(("object" = String, Path, description = "Catalogue name"), ("id" = u64, Path, description = "Record id")),
    responses(
        (status = 200, description = "The record as Coupa returns it", body = Object),
        (status = 404, description = "No such record", body = ErrorEnvelope),
    ))]

async fn get_one(
    State(s): State<Arc<ApiState>>,
    Path((object, id)): Path<(String, String)>,
) -> ApiResult {
    Ok(record(
        s.actions
            .get(Target::top(&object), parse_id("id", &id)?)
            .await?,
    ))
}

/// One record under a supplier.
#[utoipa::path(get, path = "/v1/suppliers/{supplier_id}/{object}/{id}", tag = "suppliers",
    params(("supplier_id" = u64, Path), ("object" = String, Path), ("id" = u64, Path)),
    responses(
        (status = 200, description = "The record", body = Object),
        (status = 404, description = "No such record under this supplier", body = ErrorEnvelope),
    ))]

async fn get_nested(
    State(s): State<Arc<ApiState>>,
    Path((supplier_id, object, id)): Path<(String, String, String)>,
) -> ApiResult {
    let target = nested(&object, &supplier_id)?;
    Ok(record(s.actions.get(target, parse_id("id", &id)?).await?))
}

/// Creates a record; the body is sent to Coupa as given.
#[utoipa::path(post, path = "/v1/objects/{object}", tag = "objects",
    params(("object" = String, Path, description = "Catalogue name")),
    request_body(content = Object, description = "The record in Coupa's shape (hyphenated keys, `custom-fields`)"),
    responses(
        (status = 200, description = "The created record", body = Object),
        (status = 400, description = "Coupa's validation errors, per field", body = ErrorEnvelope),
        (status = 422, description = "Coupa offers no create on this object", body = ErrorEnvelope),
    ))]

async fn create(
    State(s): State<Arc<ApiState>>,
    Path(object): Path<String>,
    body: Bytes,
) -> ApiResult {
    let body = json_body(&body)?;
    Ok(record(s.actions.create(Target::top(&object), &body).await?))
}

/// Creates a record under a supplier.
#[utoipa::path(post, path = "/v1/suppliers/{supplier_id}/{object}", tag = "suppliers",
    params(("supplier_id" = u64, Path), ("object" = String, Path)),
    request_body(content = Object, description = "The record in Coupa's shape"),
    responses(
        (status = 200, description = "The created record", body = Object),
        (status = 400, description = "Coupa's validation errors", body = ErrorEnvelope),
    ))]

async fn create_nested(
    State(s): State<Arc<ApiState>>,
    Path((supplier_id, object)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let target = nested(&object, &supplier_id)?;
    let body = json_body(&body)?;
    Ok(record(s.actions.create(target, &body).await?))
}

/// Changes the fields in the body, only those.
#[utoipa::path(put, path = "/v1/objects/{object}/{id}", tag = "objects",
    params(("object" = String, Path), ("id" = u64, Path)),
    request_body(content = Object, description = "The fields to change, in Coupa's shape"),
    responses(
        (status = 200, description = "The record after the change", body = Object),
        (status = 400, description = "Coupa's validation errors", body = ErrorEnvelope),
        (status = 404, description = "No such record", body = ErrorEnvelope),
        (status = 422, description = "Coupa offers no update on this object", body = ErrorEnvelope),
    ))]

async fn update(
    State(s): State<Arc<ApiState>>,
    Path((object, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id("id", &id)?;
    let body = json_body(&body)?;
    Ok(record(
        s.actions.update(Target::top(&object), id, &body).await?,
    ))
}

/// Changes a record under a supplier.
#[utoipa::path(put, path = "/v1/suppliers/{supplier_id}/{object}/{id}", tag = "suppliers",
    params(("supplier_id" = u64, Path), ("object" = String, Path), ("id" = u64, Path)),
    request_body(content = Object, description = "The fields to change"),
    responses((status = 200, description = "The record after the change", body = Object)))]

async fn update_nested(
    State(s): State<Arc<ApiState>>,
    Path((supplier_id, object, id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let target = nested(&object, &supplier_id)?;
    let id = parse_id("id", &id)?;
    let body = json_body(&body)?;
    Ok(record(s.actions.update(target, id, &body).await?))
}

/// Sets Coupa's `exported` flag (`PUT ...?exported=true`, no body).
#[utoipa::path(post, path = "/v1/objects/{object}/{id}/mark_exported", tag = "objects",
    params(("object" = String, Path), ("id" = u64, Path)),
    responses((status = 200, description = "The record, `exported` true", body = Object)))]

async fn mark_exported(
    State(s): State<Arc<ApiState>>,
    Path((object, id)): Path<(String, String)>,
) -> ApiResult {
    let id = parse_id("id", &id)?;
    Ok(record(
        s.actions.mark_exported(Target::top(&object), id).await?,
    ))
}

/// Sets the `exported` flag of a record under a supplier.
#[utoipa::path(post, path = "/v1/suppliers/{supplier_id}/{object}/{id}/mark_exported", tag = "suppliers",
    params(("supplier_id" = u64, Path), ("object" = String, Path), ("id" = u64, Path)),
    responses((status = 200, description = "The record", body = Object)))]

async fn mark_exported_nested(
    State(s): State<Arc<ApiState>>,
    Path((supplier_id, object, id)): Path<(String, String, String)>,
) -> ApiResult {
    let target = nested(&object, &supplier_id)?;
    let id = parse_id("id", &id)?;
    Ok(record(s.actions.mark_exported(target, id).await?))
}

/// One of the object's catalogue actions (`close`, `reopen`, `resolve`,
/// `void`, ...), with an optional JSON body.
#[utoipa::path(post, path = "/v1/objects/{object}/{id}/{action}", tag = "objects",
    params(("object" = String, Path), ("id" = u64, Path),
        ("action" = String, Path, description = "An action the catalogue lists for the object")),
    request_body(content = Option<Object>, description = "Optional body Coupa's action takes"),
    responses(
        (status = 200, description = "The record after the action", body = Object),
        (status = 400, description = "Coupa refused the transition", body = ErrorEnvelope),
        (status = 422, description = "Coupa offers no such action on the object", body = ErrorEnvelope),
    ))]

async fn perform(
    State(s): State<Arc<ApiState>>,
    Path((object, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id("id", &id)?;
    let body = optional_body(&body)?;
    Ok(record(
        s.actions
            .perform(Target::top(&object), id, &action, body.as_ref())
            .await?,
    ))
}

/// A catalogue action on a record under a supplier.
#[utoipa::path(post, path = "/v1/suppliers/{supplier_id}/{object}/{id}/{action}", tag = "suppliers",
    params(("supplier_id" = u64, Path), ("object" = String, Path), ("id" = u64, Path), ("action" = String, Path)),
    request_body(content = Option<Object>),
    responses((status = 200, description = "The record after the action", body = Object)))]

async fn perform_nested(
    State(s): State<Arc<ApiState>>,
    Path((supplier_id, object, id, action)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let target = nested(&object, &supplier_id)?;
    let id = parse_id("id", &id)?;
    let body = optional_body(&body)?;
    Ok(record(
        s.actions
            .perform(target, id, &action, body.as_ref())
            .await?,
    ))
}

/// Closes a purchase order.
#[utoipa::path(post, path = "/v1/purchase_orders/{id}/close", tag = "purchase_orders",
    params(("id" = u64, Path)),
    responses(
        (status = 200, description = "The PO, `closed`", body = Object),
        (status = 400, description = "Coupa refused, e.g. already closed", body = ErrorEnvelope),
        (status = 404, description = "No such PO", body = ErrorEnvelope),
    ))]

async fn close_po(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    Ok(record(
        s.actions.close_purchase_order(parse_id("id", &id)?).await?,
    ))
}

/// Cancels a purchase order.
#[utoipa::path(post, path = "/v1/purchase_orders/{id}/cancel", tag = "purchase_orders",
    params(("id" = u64, Path)),
    responses(
        (status = 200, description = "The PO, `cancelled`", body = Object),
        (status = 400, description = "Coupa refused the transition", body = ErrorEnvelope),
    ))]

async fn cancel_po(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    Ok(record(
        s.actions
            .cancel_purchase_order(parse_id("id", &id)?)
            .await?,
    ))
}

/// Starts an integration run (Coupa creates it `pending`).
#[utoipa::path(post, path = "/v1/integration_runs", tag = "integrations",
    request_body = CreateRunRequest,
    responses(
        (status = 200, description = "The run", body = Object),
        (status = 400, description = "E.g. no integration has the code", body = ErrorEnvelope),
    ))]

async fn create_run(State(s): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let req: CreateRunRequest = typed_body(&body)?;
    Ok(record(
        s.actions
            .create_integration_run(&req.integration_code)
            .await?,
    ))
}

/// Moves a run to a status, first writing any counters given.
#[utoipa::path(put, path = "/v1/integration_runs/{id}/status", tag = "integrations",
    params(("id" = u64, Path)),
    request_body = RunStatusRequest,
    responses(
        (status = 200, description = "The run", body = Object),
        (status = 400, description = "Coupa refused the transition, or an unknown status", body = ErrorEnvelope),
    ))]

async fn set_run_status(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id("id", &id)?;
    let req: RunStatusRequest = typed_body(&body)?;
    let (status, counts) = req.parts().map_err(ApiError::invalid)?;
    Ok(record(
        s.actions
            .set_integration_run_status(id, status, counts)
            .await?,
    ))
}

/// Reports a document's failure in the ERP, tied to a run.
#[utoipa::path(post, path = "/v1/integration_errors", tag = "integrations",
    params(("alert" = Option<bool>, Query, description = "Also alert the integration's contacts (`/create_alert`)")),
    request_body = IntegrationRecord,
    responses(
        (status = 200, description = "The integration error", body = Object),
        (status = 400, description = "Coupa's validation errors", body = ErrorEnvelope),
    ))]

async fn create_integration_error(
    State(s): State<Arc<ApiState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let alert = alert_param(q.as_deref())?;
    let rec: IntegrationRecord = typed_body(&body)?;
    Ok(record(
        s.actions.create_integration_error(&rec, alert).await?,
    ))
}

/// Records a document's outcome in the ERP, tied to an integration.
#[utoipa::path(post, path = "/v1/integration_history_records", tag = "integrations",
    params(("alert" = Option<bool>, Query, description = "Also alert the integration's contacts (`/create_alert`)")),
    request_body = IntegrationRecord,
    responses(
        (status = 200, description = "The history record", body = Object),
        (status = 400, description = "Coupa's validation errors", body = ErrorEnvelope),
    ))]

async fn create_integration_history_record(
    State(s): State<Arc<ApiState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let alert = alert_param(q.as_deref())?;
    let rec: IntegrationRecord = typed_body(&body)?;
    Ok(record(
        s.actions
            .create_integration_history_record(&rec, alert)
            .await?,
    ))
}

/// Any call under Coupa's `/api/` the named routes do not cover.
#[utoipa::path(post, path = "/v1/http", tag = "raw",
    request_body = RawRequest,
    responses(
        (status = 200, description = "Coupa's JSON response (null for an empty body)", body = serde_json::Value),
        (status = 400, description = "A path outside /api/ or a method Coupa's API does not use", body = ErrorEnvelope),
    ))]

async fn raw(State(s): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let req: RawRequest = typed_body(&body)?;
    let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ApiError::invalid(format!("`{}` is not an HTTP method", req.method)))?;
    Ok(Json(
        s.actions
            .raw(method, &req.path, &req.query, req.body.as_ref())
            .await?,
    ))
}

// ---- the OpenAPI document ----

#[derive(OpenApi)]
#[openapi(
    info(
        title = "coupa-changefeed actions API",
        description = "Reads and writes Coupa through the daemon's client (its credentials, rate limit and retries). Every route needs `Authorization: Bearer <[api] token>`. Errors are `{\"error\": {kind, status, message, fields}}`: 400 invalid or Coupa validation (per field), 401 token, 404 not found, 422 refused (Coupa offers no such operation on the object), 502/503/504 Coupa failing, unreachable or timing out."
    ),
    paths(
        openapi, search, create, get_one, update, mark_exported, perform,
        search_nested, create_nested, get_nested, update_nested, mark_exported_nested, perform_nested,
        close_po, cancel_po, create_run, set_run_status,
        create_integration_error, create_integration_history_record, raw,
    ),
    components(schemas(
        ErrorEnvelope, ErrorBody, FieldMessage, CreateRunRequest, RunStatusRequest,
        IntegrationRecord, IntegrationResponse, RawRequest,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]

pub struct ApiDoc;

/// Adds the bearer security scheme the `security` requirement names.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupa::objects::CATALOGUE;

    #[test]
    fn every_nested_object_lives_under_the_one_parent_routed() {
        for spec in CATALOGUE {
            if let Some(p) = spec.parent {
                assert_eq!(
                    p.object, PARENT,
                    "{} needs a /v1/{}/... route",
                    spec.name, p.object
                );
            }
        }
    }

    #[test]
    fn status_follows_the_documented_mapping() {
        let url = "http://x/api/y".to_string();
        let cases = [
            (CoupaError::Invalid("x".into()), 400),
            (
                CoupaError::Refused {
                    object: "a".into(),
                    operation: "b".into(),
                    reason: "c".into(),
                },
                422,
            ),
            (CoupaError::NotFound { url: url.clone() }, 404),
            (
                CoupaError::Status {
                    url: url.clone(),
                    status: 500,
                    snippet: String::new(),
                },
                502,
            ),
            (
                CoupaError::Status {
                    url: url.clone(),
                    status: 409,
                    snippet: String::new(),
                },
                409,
            ),
            (
                CoupaError::RetriesExhausted {
                    attempts: 3,
                    last: Box::new(CoupaError::Status {
                        url: url.clone(),
                        status: 429,
                        snippet: String::new(),
                    }),
                },
                503,
            ),
            (
                CoupaError::Transport {
                    url: url.clone(),
                    kind: TransportKind::Timeout,
                    detail: String::new(),
                },
                504,
            ),
            (
                CoupaError::Unauthorized {
                    url,
                    detail: String::new(),
                },
                502,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(http_status(&e).as_u16(), want, "{e:?}");
        }
    }

    #[test]
    fn search_query_takes_limit_and_keeps_filters_in_order() {
        let (limit, f) = search_query(Some("status%5Bin%5D=a,b&limit=5&x=1&x=2")).unwrap();
        assert_eq!(limit, 5);
        assert_eq!(
            f,
            [
                ("status[in]".to_string(), "a,b".to_string()),
                ("x".into(), "1".into()),
                ("x".into(), "2".into())
            ]
        );
        assert_eq!(search_query(None).unwrap().0, DEFAULT_LIMIT);
        assert!(search_query(Some("limit=x")).is_err());
        assert!(search_query(Some("limit=1&limit=2")).is_err());
    }
}
