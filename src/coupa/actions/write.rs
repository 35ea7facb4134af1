//! Writes over the catalogue: create, update, a catalogue action
//! (`PUT .../<id>/<action>`) and Coupa's `exported` flag. Retried only
//! where Coupa cannot have acted (`RetryPolicy::Write`).

use reqwest::Method;
use serde_json::Value;

use super::target::{resolve, Op, Target};
use super::Actions;
use crate::coupa::error::CoupaError;
use crate::coupa::record::Record;

impl Actions {
    /// `POST /api/<object>`: creates a record; returns it as Coupa does.
    pub async fn create(
        &self,
        target: impl Into<Target>,
        body: &Value,
    ) -> Result<Record, CoupaError> {
        let (_, path) = resolve(&target.into(), Op::Create)?;
        self.write(Method::POST, &path, &[], Some(body)).await
    }

    /// `PUT /api/<object>/<id>`: changes the fields in `body`, only those.
    pub async fn update(
        &self,
        target: impl Into<Target>,
        id: u64,
        body: &Value,
    ) -> Result<Record, CoupaError> {
        let (_, path) = resolve(&target.into(), Op::Update)?;
        self.write(Method::PUT, &format!("{path}/{id}"), &[], Some(body))
            .await
    }

    /// `PUT /api/<object>/<id>/<action>`: one of the object's catalogue
    /// actions (`close`, `resolve`, `void`, ...), with an optional body.
    pub async fn perform(
        &self,
        target: impl Into<Target>,
        id: u64,
        action: &str,
        body: Option<&Value>,
    ) -> Result<Record, CoupaError> {
        let (_, path) = resolve(&target.into(), Op::Action(action))?;
        self.write(Method::PUT, &format!("{path}/{id}/{action}"), &[], body)
            .await
    }

    /// `PUT /api/<object>/<id>?exported=true`, no body: Coupa's "exported"
    /// flag, which the ERP's own pull (`exported=false`) filters on. A
    /// single global flag per record: only for middleware that owns it.
    pub async fn mark_exported(
        &self,
        target: impl Into<Target>,
        id: u64,
    ) -> Result<Record, CoupaError> {
        let (_, path) = resolve(&target.into(), Op::Update)?;
        let q = [("exported".to_string(), "true".to_string())];
        self.write(Method::PUT, &format!("{path}/{id}"), &q, None)
            .await
    }
}
