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
use crate::coupa::actions::Actions;
use crate::coupa::body::{ErrorBody, ErrorEnvelope};
use crate::coupa::error::TransportKind;
use crate::coupa::{CoupaClient, CoupaError};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::Arc;
use tracing::{info, warn};

mod openapi;
mod routes;
#[cfg(test)]
mod tests;

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
        .route("/v1/openapi.json", get(openapi::openapi))
        .route(
            "/v1/objects/{object}",
            get(routes::search).post(routes::create),
        )
        .route(
            "/v1/objects/{object}/{id}",
            get(routes::get_one).put(routes::update),
        )
        .route(
            "/v1/objects/{object}/{id}/mark_exported",
            post(routes::mark_exported),
        )
        .route("/v1/objects/{object}/{id}/{action}", post(routes::perform))
        .route(
            "/v1/suppliers/{supplier_id}/{object}",
            get(routes::search_nested).post(routes::create_nested),
        )
        .route(
            "/v1/suppliers/{supplier_id}/{object}/{id}",
            get(routes::get_nested).put(routes::update_nested),
        )
        .route(
            "/v1/suppliers/{supplier_id}/{object}/{id}/mark_exported",
            post(routes::mark_exported_nested),
        )
        .route(
            "/v1/suppliers/{supplier_id}/{object}/{id}/{action}",
            post(routes::perform_nested),
        )
        .route("/v1/purchase_orders/{id}/close", post(routes::close_po))
        .route("/v1/purchase_orders/{id}/cancel", post(routes::cancel_po))
        .route("/v1/integration_runs", post(routes::create_run))
        .route(
            "/v1/integration_runs/{id}/status",
            put(routes::set_run_status),
        )
        .route(
            "/v1/integration_errors",
            post(routes::create_integration_error),
        )
        .route(
            "/v1/integration_history_records",
            post(routes::create_integration_history_record),
        )
        .route("/v1/http", post(routes::raw))
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
