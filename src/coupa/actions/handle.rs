//! The [`Actions`] handle over one [`CoupaClient`], and the shape check
//! every single-record read and write response passes.

use reqwest::Method;
use serde_json::Value;

use crate::coupa::client::CoupaClient;
use crate::coupa::error::{CoupaError, MalformedKind};
use crate::coupa::exchange::{endpoint, RetryPolicy};
use crate::coupa::record::Record;
use crate::redact::display_url;

/// The actions over one Coupa client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Actions {
    pub(super) client: CoupaClient,
}

impl Actions {
    pub fn new(client: CoupaClient) -> Actions {
        Actions { client }
    }

    /// The client underneath (shared rate limit and counters).
    pub fn client(&self) -> &CoupaClient {
        &self.client
    }

    pub(super) async fn write(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Record, CoupaError> {
        let v = self
            .client
            .send(method, path, query, body, RetryPolicy::Write)
            .await?;
        self.record(path, v)
    }

    /// A single-record response; anything else is a wrong shape.
    pub(super) fn record(&self, path: &str, v: Value) -> Result<Record, CoupaError> {
        match v {
            Value::Object(m) => Ok(m),
            other => Err(CoupaError::Malformed {
                url: endpoint(self.client.base_url(), path)
                    .map(|u| display_url(&u))
                    .unwrap_or_else(|_| path.to_string()),
                kind: MalformedKind::WrongShape,
                detail: format!("expected a record object, got {}", short(&other)),
            }),
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
