//! The simulator's `/_sim/` admin endpoints: records, versions (the ground
//! truth), faults, the clock, the request log, settings, token revocation.
//! No auth, not logged, no faults; `http.rs` mounts them beside the API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::faults::{self, FaultRule};
use super::http::{error, St};
use super::{lock, parse_offset, RateLimit, Shared, SimError};

/// The admin routes, mounted by [`super::http::router`].
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/records/{object}", post(admin_create))
        .route(
            "/_sim/records/{object}/{id}",
            patch(admin_update).get(admin_get),
        )
        .route("/_sim/versions/{object}", get(admin_versions))
        .route(
            "/_sim/faults",
            post(admin_inject).delete(admin_clear_faults),
        )
        .route("/_sim/clock", put(admin_set_clock).get(admin_clock))
        .route("/_sim/requests", get(admin_requests))
        .route("/_sim/settings", put(admin_settings))
        .route("/_sim/revoke_tokens", post(admin_revoke))
}

fn sim_error(e: SimError) -> Response {
    let status = match e {
        SimError::UnknownObject(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, "sim", e.to_string())
}

async fn admin_create(
    State(sh): St,
    Path(object): Path<String>,
    Json(fields): Json<Value>,
) -> Response {
    match sh.create(&object, fields) {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(e) => sim_error(e),
    }
}

async fn admin_update(
    State(sh): St,
    Path((object, id)): Path<(String, u64)>,
    Json(patch): Json<Value>,
) -> Response {
    match sh.update(&object, id, patch) {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "sim", format!("no {object} {id}")),
        Err(e) => sim_error(e),
    }
}

async fn admin_get(State(sh): St, Path((object, id)): Path<(String, u64)>) -> Response {
    let spec = match Shared::spec(&object) {
        Ok(s) => s,
        Err(e) => return sim_error(e),
    };
    match lock(&sh.store).get(spec, id) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, "sim", format!("no {object} {id}")),
    }
}

async fn admin_versions(State(sh): St, Path(object): Path<String>) -> Response {
    if let Err(e) = Shared::spec(&object) {
        return sim_error(e);
    }
    Json(lock(&sh.store).versions(&object)).into_response()
}

async fn admin_inject(State(sh): St, Json(rule): Json<FaultRule>) -> StatusCode {
    lock(&sh.faults).push(rule);
    StatusCode::NO_CONTENT
}

async fn admin_clear_faults(State(sh): St) -> StatusCode {
    lock(&sh.faults).clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct ClockBody {
    offset_seconds: i64,
}

async fn admin_set_clock(State(sh): St, Json(b): Json<ClockBody>) -> Json<Value> {
    sh.clock_offset_ms.store(
        b.offset_seconds.saturating_mul(1000),
        std::sync::atomic::Ordering::Relaxed,
    );
    admin_clock(State(sh)).await
}

async fn admin_clock(State(sh): St) -> Json<Value> {
    let ms = sh
        .clock_offset_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({"offset_seconds": ms / 1000, "now": sh.now().to_rfc3339()}))
}

async fn admin_requests(State(sh): St) -> Json<Vec<super::RequestLog>> {
    Json(lock(&sh.requests).clone())
}

/// `PUT /_sim/settings`: every field optional; answers the settings now in force.
#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
struct SettingsBody {
    latency_ms: Option<u64>,
    change_rate: Option<f64>,
    change_objects: Option<Vec<String>>,
    rate_limit: Option<RateLimit>,
    /// `true` turns rate limiting off (`rate_limit: null` cannot be told
    /// apart from an absent field).
    no_rate_limit: Option<bool>,
    retry_after_on_429: Option<bool>,
    /// Offsets like `"-07:00"`, `"+05:30"`, for versions written from now on.
    utc_offsets: Option<Vec<String>>,
}

async fn admin_settings(State(sh): St, Json(b): Json<SettingsBody>) -> Response {
    if let Some(list) = &b.utc_offsets {
        let parsed: Option<Vec<_>> = list.iter().map(|s| parse_offset(s)).collect();
        match parsed {
            Some(o) => lock(&sh.store).set_offsets(o),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "utc_offsets",
                    format!("not UTC offsets: {list:?}"),
                )
            }
        }
    }
    let mut s = lock(&sh.settings);
    if let Some(ms) = b.latency_ms {
        s.latency = Duration::from_millis(ms);
    }
    if let Some(r) = b.change_rate {
        s.change_rate = r;
    }
    if let Some(o) = b.change_objects {
        s.change_objects = o;
    }
    if b.rate_limit.is_some() || b.no_rate_limit == Some(true) {
        s.rate_limit = if b.no_rate_limit == Some(true) {
            None
        } else {
            b.rate_limit
        };
        *lock(&sh.bucket) = faults::Bucket::default();
    }
    if let Some(r) = b.retry_after_on_429 {
        s.retry_after_on_429 = r;
    }
    Json(SettingsBody {
        latency_ms: Some(s.latency.as_millis() as u64),
        change_rate: Some(s.change_rate),
        change_objects: Some(s.change_objects.clone()),
        rate_limit: s.rate_limit,
        no_rate_limit: Some(s.rate_limit.is_none()),
        retry_after_on_429: Some(s.retry_after_on_429),
        utc_offsets: None,
    })
    .into_response()
}

async fn admin_revoke(State(sh): St) -> StatusCode {
    sh.auth.revoke_all();
    StatusCode::NO_CONTENT
}
