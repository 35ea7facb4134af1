//! The bodies of the actions as both the HTTP API and the CLI speak them:
//! the error body (`{"error": {"kind", "status", "message", "fields"}}`),
//! the request bodies of the named operations, and the default search
//! limit. Data only; the HTTP status of an error is `http::api`'s.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::coupa::actions::{RunCounts, RunStatus};
use crate::coupa::CoupaError;

/// Records a search returns when no `limit` is given (HTTP and CLI).
pub const DEFAULT_LIMIT: usize = crate::coupa::actions::NESTED_LIMIT;

/// One per-field message of a Coupa validation error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldMessage {
    /// The key Coupa filed it under (`supplier`, `order-lines[0].price`, `base`).
    pub field: String,
    pub message: String,
}

/// What went wrong, the same for the HTTP API and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable label: `invalid`, `refused`, `validation`, `not_found`,
    /// `unauthorized`, `forbidden`, `transport`, `status`, `malformed`, `config`, ...
    pub kind: String,
    /// The HTTP status Coupa answered; null when Coupa was not asked
    /// (refused or invalid up front, or a transport failure).
    pub status: Option<u16>,
    /// One line for a person; names the Coupa URL, never a secret.
    pub message: String,
    /// Per-field messages of a `validation` error; empty otherwise.
    pub fields: Vec<FieldMessage>,
}

/// `{"error": {...}}`: every error response and CLI error line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorBody {
    /// An error of our own (not Coupa's), e.g. a malformed body.
    pub fn own(kind: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            kind: kind.into(),
            status: None,
            message: message.into(),
            fields: Vec::new(),
        }
    }
}

impl From<&CoupaError> for ErrorBody {
    fn from(e: &CoupaError) -> ErrorBody {
        ErrorBody {
            kind: e.kind().into(),
            status: e.status(),
            message: e.to_string(),
            fields: e
                .field_errors()
                .iter()
                .map(|f| FieldMessage {
                    field: f.field.clone(),
                    message: f.message.clone(),
                })
                .collect(),
        }
    }
}

/// `POST /v1/integration_runs`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// The integration's code in Coupa, e.g. `ERP-PO`.
    pub integration_code: String,
}

/// `PUT /v1/integration_runs/{id}/status`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStatusRequest {
    /// `pending`, `running`, `successful`, `failed` or `paused` (or
    /// Coupa's action name: `run`, `success`, `fail`, `pause`).
    pub status: String,
    /// Written first, with a plain update, if given.
    #[serde(default)]
    pub total_records: Option<u64>,
    /// Written first, with a plain update, if given.
    #[serde(default)]
    pub records_processed: Option<u64>,
}

impl RunStatusRequest {
    /// The status and counters, or why the status is unknown.
    pub fn parts(&self) -> Result<(RunStatus, RunCounts), String> {
        Ok((
            self.status.parse()?,
            RunCounts {
                total_records: self.total_records,
                records_processed: self.records_processed,
            },
        ))
    }
}

/// `POST /v1/http`: any call under Coupa's `/api/`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// Under `/api/`, without a query string, e.g. `/api/purchase_orders/1/reopen`.
    pub path: String,
    /// Query pairs in order, e.g. `[["fields", "[\"id\"]"]]`.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
    pub query: Vec<(String, String)>,
    /// JSON body to send, if any.
    #[serde(default)]
    pub body: Option<Value>,
}
