//! The OpenAPI document at `/v1/openapi.json`, generated from the
//! `#[utoipa::path]` annotations on the handlers, with the bearer scheme.

use super::routes;
use crate::coupa::actions::{IntegrationRecord, IntegrationResponse};
use crate::coupa::body::{
    CreateRunRequest, ErrorBody, ErrorEnvelope, FieldMessage, RawRequest, RunStatusRequest,
};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", body = Object)))]
pub(super) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "coupa-changefeed actions API",
        description = "Reads and writes Coupa through the daemon's client (its credentials, rate limit and retries). Every route needs `Authorization: Bearer <[api] token>`. Errors are `{\"error\": {kind, status, message, fields}}`: 400 invalid or Coupa validation (per field), 401 token, 404 not found, 422 refused (Coupa offers no such operation on the object), 502/503/504 Coupa failing, unreachable or timing out."
    ),
    paths(
        openapi,
        routes::search,
        routes::create,
        routes::get_one,
        routes::update,
        routes::mark_exported,
        routes::perform,
        routes::search_nested,
        routes::create_nested,
        routes::get_nested,
        routes::update_nested,
        routes::mark_exported_nested,
        routes::perform_nested,
        routes::close_po,
        routes::cancel_po,
        routes::create_run,
        routes::set_run_status,
        routes::create_integration_error,
        routes::create_integration_history_record,
        routes::raw,
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
