//! Dead-letter administration over HTTP (`/admin/dlq`), so an operator can
//! list, replay and drop dead letters without stopping the daemon (which
//! holds the state dir's lock). Served only when the actions API is on,
//! behind the same bearer token; `coupa-changefeed dlq` falls back to it
//! when the state dir is locked.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::token::{require_token, ApiToken};
use crate::store::{DeadLetter, Store};

/// Which dead letters a request is about.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Only this sink's (default: every sink's).
    #[serde(default)]
    pub sink: Option<String>,
    /// These sequence numbers (default: all, for replay; drop needs `all`).
    #[serde(default)]
    pub seqs: Vec<u64>,
    /// Drop: every selected dead letter.
    #[serde(default)]
    pub all: bool,
}

/// The routes, behind the actions API's token check.
pub fn router(token: Arc<ApiToken>, store: Store) -> Router {
    Router::new()
        .route("/admin/dlq", get(list))
        .route("/admin/dlq/replay", post(replay))
        .route("/admin/dlq/drop", post(drop_dead))
        .layer(middleware::from_fn_with_state(token, require_token))
        .with_state(store)
}

fn failed(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": {"kind": "store", "message": e.to_string()}})),
    )
        .into_response()
}

async fn list(State(store): State<Store>, Query(sel): Query<Selection>) -> Response {
    match store.dead_letters(sel.sink.as_deref()) {
        Ok(dead) => Json(dead.iter().map(DeadLetter::to_json).collect::<Vec<_>>()).into_response(),
        Err(e) => failed(e),
    }
}

async fn replay(State(store): State<Store>, Json(sel): Json<Selection>) -> Response {
    match store.replay_dead(sel.sink.as_deref(), &sel.seqs).await {
        Ok(n) => Json(json!({"replayed": n})).into_response(),
        Err(e) => failed(e),
    }
}

async fn drop_dead(State(store): State<Store>, Json(sel): Json<Selection>) -> Response {
    if sel.seqs.is_empty() && !sel.all {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"kind": "invalid", "message": "name the seqs to drop, or set all"}})),
        )
            .into_response();
    }
    match store.drop_dead(sel.sink.as_deref(), &sel.seqs).await {
        Ok(n) => Json(json!({"dropped": n})).into_response(),
        Err(e) => failed(e),
    }
}
