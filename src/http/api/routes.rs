//! The `/v1` handlers, one per operation (top-level and under
//! `/v1/suppliers/{supplier_id}/...`), and the argument helpers they share.
//! Each makes one call of [`Actions`] and answers Coupa's JSON.

use super::{ApiError, ApiResult, ApiState};
use crate::coupa::actions::{IntegrationRecord, Target};
use crate::coupa::body::{
    CreateRunRequest, ErrorEnvelope, RawRequest, RunStatusRequest, DEFAULT_LIMIT,
};
use crate::coupa::CoupaError;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::Value;
use std::sync::Arc;
use tracing::warn;

pub(super) fn parse_id(what: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(format!("{what} `{raw}` is not a record id")))
}

pub(super) fn nested(object: &str, supplier_id: &str) -> Result<Target, ApiError> {
    Ok(Target::nested(
        object,
        parse_id("supplier id", supplier_id)?,
    ))
}

/// A required JSON body.
pub(super) fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("body is not JSON: {e}")))
}

/// An optional JSON body (empty means none).
pub(super) fn optional_body(body: &Bytes) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    json_body(body).map(Some)
}

/// A required body of a named operation's type.
pub(super) fn typed_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let v = json_body(body)?;
    serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("body: {e}")))
}

/// Splits a search query into `limit` and Coupa's filters, order kept.
pub(super) fn search_query(raw: Option<&str>) -> Result<(usize, Vec<(String, String)>), ApiError> {
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
pub(super) fn alert_param(raw: Option<&str>) -> Result<bool, ApiError> {
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

pub(super) fn record(r: crate::coupa::record::Record) -> Json<Value> {
    Json(Value::Object(r))
}

/// Records of an object matching the query's filters, as one JSON array
/// streamed a page at a time. Errors before the first record get their
/// status; a failure after records were sent aborts the response, leaving
/// the array unterminated, so a partial list never passes for a whole one.
pub(super) async fn run_search(
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

pub(super) async fn search(
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

pub(super) async fn search_nested(
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

pub(super) async fn get_one(
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

pub(super) async fn get_nested(
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

pub(super) async fn create(
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

pub(super) async fn create_nested(
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

pub(super) async fn update(
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

pub(super) async fn update_nested(
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

pub(super) async fn mark_exported(
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

pub(super) async fn mark_exported_nested(
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

pub(super) async fn perform(
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

pub(super) async fn perform_nested(
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

pub(super) async fn close_po(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
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

pub(super) async fn cancel_po(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
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

pub(super) async fn create_run(State(s): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
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

pub(super) async fn set_run_status(
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

pub(super) async fn create_integration_error(
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

pub(super) async fn create_integration_history_record(
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

pub(super) async fn raw(State(s): State<Arc<ApiState>>, body: Bytes) -> ApiResult {
    let req: RawRequest = typed_body(&body)?;
    let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ApiError::invalid(format!("`{}` is not an HTTP method", req.method)))?;
    Ok(Json(
        s.actions
            .raw(method, &req.path, &req.query, req.body.as_ref())
            .await?,
    ))
}
