//! Integrations: runs and their statuses ([`RunStatus`], [`RunCounts`]),
//! and the integration errors and history records the ERP reports back
//! ([`IntegrationRecord`]), with the bodies Coupa expects for each.

use std::fmt;
use std::str::FromStr;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::target::{resolve, Op};
use super::Actions;
use crate::coupa::error::CoupaError;
use crate::coupa::record::Record;

/// An integration run's status, as Coupa names it; each is reached with
/// its own `PUT /api/integration_runs/:id/<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Running,
    Successful,
    Failed,
    Paused,
}

impl RunStatus {
    /// Every status, for help texts.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Successful,
        RunStatus::Failed,
        RunStatus::Paused,
    ];

    /// The status value Coupa shows on the run.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Successful => "successful",
            RunStatus::Failed => "failed",
            RunStatus::Paused => "paused",
        }
    }

    /// The action segment that moves a run into this status.
    pub fn action(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "run",
            RunStatus::Successful => "success",
            RunStatus::Failed => "fail",
            RunStatus::Paused => "pause",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    /// Accepts the status (`successful`) or its action name (`success`).
    fn from_str(s: &str) -> Result<RunStatus, String> {
        let s = s.trim().to_ascii_lowercase();
        RunStatus::ALL
            .into_iter()
            .find(|r| r.as_str() == s || r.action() == s)
            .ok_or_else(|| {
                format!(
                    "unknown integration run status `{s}`; expected one of {}",
                    RunStatus::ALL.map(RunStatus::as_str).join(", ")
                )
            })
    }
}

/// Counters reported with a run's status; `None` leaves Coupa's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    #[serde(default)]
    pub total_records: Option<u64>,
    #[serde(default)]
    pub records_processed: Option<u64>,
}

impl RunCounts {
    fn body(&self) -> Option<Value> {
        let mut m = Map::new();
        if let Some(n) = self.total_records {
            m.insert("total-records".into(), n.into());
        }
        if let Some(n) = self.records_processed {
            m.insert("records-processed".into(), n.into());
        }
        (!m.is_empty()).then_some(Value::Object(m))
    }
}

/// One response line of an integration error or history record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationResponse {
    pub code: String,
    pub message: String,
}

/// The outcome of one document in the ERP, reported back to Coupa as an
/// integration error (tied to a run) or an integration history record
/// (tied to an integration). Our own field names; [`Self::to_body`]
/// builds Coupa's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationRecord {
    /// Coupa's document type, e.g. `OrderHeader`, `InvoiceHeader`, `Supplier`.
    pub document_type: String,
    /// The Coupa id of the document.
    pub document_id: u64,
    /// The document's status as the ERP saw it, e.g. `issued`.
    #[serde(default)]
    pub document_status: Option<String>,
    /// `Success` or `Error` (Coupa's spelling).
    #[serde(default)]
    pub status: Option<String>,
    /// The integration's code (history records name it).
    #[serde(default)]
    pub integration_code: Option<String>,
    /// The integration run (errors belong to one).
    #[serde(default)]
    pub run_id: Option<u64>,
    /// Who is alerted, e.g. `Functional` or `Technical`.
    #[serde(default)]
    pub contact_alert_type: Option<String>,
    #[serde(default)]
    pub responses: Vec<IntegrationResponse>,
}

impl IntegrationRecord {
    /// The JSON body Coupa takes (hyphenated keys, `integration{code}`,
    /// `responses[{response-code, response-message}]`).
    pub fn to_body(&self) -> Value {
        let mut m = Map::new();
        m.insert("document-type".into(), self.document_type.clone().into());
        m.insert("document-id".into(), self.document_id.into());
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        };
        opt("document-status", &self.document_status);
        opt("status", &self.status);
        opt("contact-alert-type", &self.contact_alert_type);
        if let Some(code) = &self.integration_code {
            m.insert("integration".into(), json!({ "code": code }));
        }
        if let Some(run) = self.run_id {
            m.insert("integration-run-id".into(), run.into());
        }
        if !self.responses.is_empty() {
            let rs: Vec<Value> = self
                .responses
                .iter()
                .map(|r| json!({"response-code": r.code, "response-message": r.message}))
                .collect();
            m.insert("responses".into(), rs.into());
        }
        Value::Object(m)
    }
}

impl Actions {
    /// `POST /api/integration_runs` for the integration with this code;
    /// Coupa creates the run as `pending`.
    pub async fn create_integration_run(
        &self,
        integration_code: &str,
    ) -> Result<Record, CoupaError> {
        let body = json!({"integration": {"code": integration_code}});
        self.create("integration_runs", &body).await
    }

    /// Moves a run to `status` (`PUT /api/integration_runs/:id/<action>`),
    /// first writing any `counts` with a plain `PUT /:id`: that is the
    /// documented way to set counters, where only `run` is documented to
    /// take one (`total_records`) in its body. Two writes then; if the
    /// second fails the counters are set and the status is not, and the
    /// error says so.
    pub async fn set_integration_run_status(
        &self,
        id: u64,
        status: RunStatus,
        counts: RunCounts,
    ) -> Result<Record, CoupaError> {
        // Refuse before the first write if the status step would be refused.
        resolve(&"integration_runs".into(), Op::Action(status.action()))?;
        if let Some(body) = counts.body() {
            self.update("integration_runs", id, &body).await?;
        }
        self.perform("integration_runs", id, status.action(), None)
            .await
    }

    /// `POST /api/integration_errors`, or `/create_alert` to also alert
    /// the integration's contacts.
    pub async fn create_integration_error(
        &self,
        rec: &IntegrationRecord,
        alert: bool,
    ) -> Result<Record, CoupaError> {
        self.create_log("integration_errors", rec, alert).await
    }

    /// `POST /api/integration_history_records`, or `/create_alert` to also
    /// alert the integration's contacts.
    pub async fn create_integration_history_record(
        &self,
        rec: &IntegrationRecord,
        alert: bool,
    ) -> Result<Record, CoupaError> {
        self.create_log("integration_history_records", rec, alert)
            .await
    }

    /// `PUT /api/<object>/:id/resolve` on an object whose catalogue entry
    /// has that action (integration errors and history records).
    pub async fn resolve(&self, object: &str, id: u64) -> Result<Record, CoupaError> {
        self.perform(object, id, "resolve", None).await
    }

    /// `POST /api/<object>[/create_alert]` for the two integration log
    /// objects (`integration_errors`, `integration_history_records`).
    pub async fn create_log(
        &self,
        object: &str,
        rec: &IntegrationRecord,
        alert: bool,
    ) -> Result<Record, CoupaError> {
        let (_, path) = resolve(&object.into(), Op::Create)?;
        let path = if alert {
            format!("{path}/create_alert")
        } else {
            path
        };
        self.write(Method::POST, &path, &[], Some(&rec.to_body()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_status_parses_status_or_action() {
        assert_eq!("successful".parse(), Ok(RunStatus::Successful));
        assert_eq!("success".parse(), Ok(RunStatus::Successful));
        assert_eq!("RUN".parse(), Ok(RunStatus::Running));
        assert!("done".parse::<RunStatus>().unwrap_err().contains("paused"));
    }

    #[test]
    fn integration_record_body_uses_coupa_keys() {
        let rec = IntegrationRecord {
            document_type: "OrderHeader".into(),
            document_id: 7,
            document_status: Some("issued".into()),
            status: Some("Error".into()),
            integration_code: Some("ERP-PO".into()),
            run_id: Some(3),
            contact_alert_type: None,
            responses: vec![IntegrationResponse {
                code: "E1".into(),
                message: "Vendor missing".into(),
            }],
        };
        assert_eq!(
            rec.to_body(),
            json!({"document-type": "OrderHeader", "document-id": 7, "document-status": "issued",
                   "status": "Error", "integration": {"code": "ERP-PO"}, "integration-run-id": 3,
                   "responses": [{"response-code": "E1", "response-message": "Vendor missing"}]})
        );
    }
}
