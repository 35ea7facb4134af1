//! The write-back "actions" the ERP middleware calls: generic get, search,
//! create and update over the object catalogue, the named operations
//! (supplier remit-to addresses and sites, PO close/cancel, integration
//! runs, errors and history records) and a raw escape hatch under `/api/`.
//!
//! Owns: refusing, before any request, what the catalogue says Coupa does
//! not allow; the paths and bodies Coupa expects for each operation
//! (coupa-api.md §6); bounded, streaming search paging. Every call goes
//! through the one [`CoupaClient`] (same auth, rate limit and counters);
//! reads retry like the poller's, writes only where Coupa cannot have
//! acted (see `RetryPolicy::Write` in client.rs).
//!
//! Records go in and come out as Coupa shapes them: bodies are sent as
//! given and responses returned untouched, so custom fields travel in
//! both placements (the `custom-fields` object and legacy top-level keys)
//! without this module knowing which keys they are.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use futures_util::stream::{self, Stream, TryStreamExt};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::client::{endpoint, CoupaClient, RetryPolicy};
use super::error::{CoupaError, MalformedKind};
use super::objects::{self, ObjectSpec};
use super::record::{self, Record};
use crate::redact::display_url;

/// Coupa's hard page size.
const PAGE_SIZE: usize = 50;

/// Most records [`Actions::remit_to_addresses`] and
/// [`Actions::supplier_sites`] collect: a supplier has a handful; this
/// only keeps a runaway list from growing memory without bound.
pub const NESTED_LIMIT: usize = 1000;

/// Which object an action addresses: a catalogue name, plus the parent
/// record id for objects Coupa nests under a parent (supplier sites and
/// remit-to addresses live under `/api/suppliers/:id/...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub object: String,
    #[serde(default)]
    pub parent: Option<u64>,
}

impl Target {
    /// A top-level object, e.g. `purchase_orders`.
    pub fn top(object: &str) -> Target {
        Target {
            object: object.into(),
            parent: None,
        }
    }

    /// A nested object under its parent record, e.g. `supplier_sites` of supplier 42.
    pub fn nested(object: &str, parent: u64) -> Target {
        Target {
            object: object.into(),
            parent: Some(parent),
        }
    }
}

impl From<&str> for Target {
    fn from(object: &str) -> Target {
        Target::top(object)
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Target {
        t.clone()
    }
}

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

/// What an action does to an object, for capability checks and messages.
#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    Get,
    List,
    Create,
    Update,
    Action(&'a str),
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get => f.write_str("get"),
            Op::List => f.write_str("search"),
            Op::Create => f.write_str("create"),
            Op::Update => f.write_str("update"),
            Op::Action(a) => write!(f, "action `{a}`"),
        }
    }
}

/// The actions over one Coupa client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Actions {
    client: CoupaClient,
}

impl Actions {
    pub fn new(client: CoupaClient) -> Actions {
        Actions { client }
    }

    /// The client underneath (shared rate limit and counters).
    pub fn client(&self) -> &CoupaClient {
        &self.client
    }

    /// `GET /api/<object>/<id>`: one record.
    pub async fn get(&self, target: impl Into<Target>, id: u64) -> Result<Record, CoupaError> {
        let (_, path) = resolve(&target.into(), Op::Get)?;
        let path = format!("{path}/{id}");
        let v = self
            .client
            .send(Method::GET, &path, &[], None, RetryPolicy::Read)
            .await?;
        self.record(&path, v)
    }

    /// Records matching `filters` (Coupa's `attr[op]=value` pairs, sent as
    /// given), at most `limit` of them, fetched a page at a time as the
    /// stream is read.
    ///
    /// A stream rather than a callback or a `Vec`: memory stays at one
    /// page whatever the limit, the next page is only requested when the
    /// consumer wants more (a slow printer or HTTP client is backpressure,
    /// not a growing buffer), and dropping the stream stops the paging.
    ///
    /// Paging is by `id[gt]` in ascending id order, so a record edited
    /// while we page does not shift the others out of reach, and ends at
    /// the first empty page (a short page proves nothing on Coupa). If the
    /// filters set their own `order_by`, `dir`, `id[...]` bound, or a
    /// `fields` list without `id`, paging falls back to `offset`, which can
    /// skip records edited mid-search. `limit` and `offset` are the
    /// stream's to set and are refused in `filters`.
    ///
    /// Bounded: pages of at most 50 (the last one shrunk to what the limit
    /// leaves), so normally `ceil(limit / 50) + 1` requests; never more
    /// than `limit + 1`, since every page brings a new record or ends the
    /// stream (a server ignoring `id[gt]` is an error, not a loop).
    pub fn search(
        &self,
        target: impl Into<Target>,
        filters: &[(String, String)],
        limit: usize,
    ) -> Result<impl Stream<Item = Result<Record, CoupaError>> + Send + 'static, CoupaError> {
        let target = target.into();
        let (spec, path) = resolve(&target, Op::List)?;
        if limit == 0 {
            return Err(CoupaError::Invalid(format!(
                "{}: search limit must be at least 1",
                spec.name
            )));
        }
        if let Some((k, _)) = filters.iter().find(|(k, _)| k == "limit" || k == "offset") {
            return Err(CoupaError::Invalid(format!(
                "{}: `{k}` is set by the search itself (pass the limit argument; pages follow)",
                spec.name
            )));
        }
        let by_offset = filters.iter().any(|(k, v)| {
            k == "order_by"
                || k == "dir"
                || k.starts_with("id[")
                || (k == "fields" && !fields_name_id(v))
        });
        let pager = Pager {
            client: self.client.clone(),
            path,
            filters: filters.to_vec(),
            by_offset,
            last_id: None,
            offset: 0,
            remaining: limit,
            buffered: VecDeque::new(),
            done: false,
        };
        Ok(stream::try_unfold(pager, |mut p| async move {
            let next = p.next().await?;
            Ok(next.map(|r| (r, p)))
        }))
    }

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

    /// A supplier's remit-to addresses (`/api/suppliers/:id/addresses`),
    /// at most [`NESTED_LIMIT`].
    pub async fn remit_to_addresses(&self, supplier_id: u64) -> Result<Vec<Record>, CoupaError> {
        self.search(
            Target::nested("remit_to_addresses", supplier_id),
            &[],
            NESTED_LIMIT,
        )?
        .try_collect()
        .await
    }

    /// A supplier's sites (`/api/suppliers/:id/supplier_sites`), at most
    /// [`NESTED_LIMIT`].
    pub async fn supplier_sites(&self, supplier_id: u64) -> Result<Vec<Record>, CoupaError> {
        self.search(
            Target::nested("supplier_sites", supplier_id),
            &[],
            NESTED_LIMIT,
        )?
        .try_collect()
        .await
    }

    /// `PUT /api/purchase_orders/:id/close`. Coupa applies its UI
    /// validations: closing a cancelled or closed PO is a 400.
    pub async fn close_purchase_order(&self, id: u64) -> Result<Record, CoupaError> {
        self.perform("purchase_orders", id, "close", None).await
    }

    /// `PUT /api/purchase_orders/:id/cancel`.
    pub async fn cancel_purchase_order(&self, id: u64) -> Result<Record, CoupaError> {
        self.perform("purchase_orders", id, "cancel", None).await
    }

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

    /// Any call under `/api/` the named actions do not cover. `GET`
    /// retries like a read; every other method like a write. The path
    /// (no query: pass `query`) must stay under `/api/` once `.`/`..` are
    /// resolved. Returns the response's JSON (`null` for an empty body).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value, CoupaError> {
        if ![
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ]
        .contains(&method)
        {
            return Err(CoupaError::Invalid(format!(
                "raw: method {method} is not one Coupa's API uses (GET, POST, PUT, PATCH, DELETE)"
            )));
        }
        check_api_path(self.client.base_url(), path)?;
        let policy = if method == Method::GET {
            RetryPolicy::Read
        } else {
            RetryPolicy::Write
        };
        self.client.send(method, path, query, body, policy).await
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

    async fn write(
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
    fn record(&self, path: &str, v: Value) -> Result<Record, CoupaError> {
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

/// Looks the target up in the catalogue, refuses what Coupa does not
/// allow on it, and returns its collection path.
fn resolve(target: &Target, op: Op<'_>) -> Result<(&'static ObjectSpec, String), CoupaError> {
    let spec = objects::lookup(&target.object).ok_or_else(|| {
        CoupaError::Invalid(format!(
            "unknown object `{}`; known: {}",
            target.object,
            objects::names().join(", ")
        ))
    })?;
    let allowed = match op {
        Op::Get => spec.caps.get,
        Op::List => spec.caps.list,
        Op::Create => spec.caps.create,
        Op::Update => spec.caps.update,
        Op::Action(a) => spec.actions.contains(&a),
    };
    if !allowed {
        return Err(CoupaError::Refused {
            object: spec.name.into(),
            operation: op.to_string(),
            reason: refusal(spec, op),
        });
    }
    let path = match (spec.parent, target.parent) {
        (Some(_), Some(pid)) => spec.list_path(Some(&pid.to_string())),
        (Some(p), None) => {
            return Err(CoupaError::Invalid(format!(
                "{} live under {}: give the parent {} id",
                spec.name, p.object, p.object
            )))
        }
        (None, Some(_)) => {
            return Err(CoupaError::Invalid(format!(
                "{} is not nested under a parent; drop the parent id",
                spec.name
            )))
        }
        (None, None) => spec.path.to_string(),
    };
    Ok((spec, path))
}

/// Why the catalogue refuses `op` on `spec`, with the way round it where
/// coupa-api.md §5 gives one.
fn refusal(spec: &ObjectSpec, op: Op<'_>) -> String {
    match (spec.name, op) {
        ("purchase_order_lines", Op::Create | Op::Update) => {
            "PO lines are added and changed through their purchase order: update purchase_orders with `order-lines` in the body".into()
        }
        ("inventory_transactions", Op::Create | Op::Update) => {
            "Coupa's receipts API is read-only here (writes moved to /api/receiving_transactions; use raw)".into()
        }
        (_, Op::Action(a)) => {
            if spec.actions.is_empty() {
                format!("Coupa offers no `{a}` on {}; it has no actions", spec.name)
            } else {
                format!(
                    "Coupa offers no `{a}` on {}; its actions are: {}",
                    spec.name,
                    spec.actions.join(", ")
                )
            }
        }
        _ => format!("Coupa's API does not offer it on {}", spec.name),
    }
}

/// Whether a `fields=[...]` value asks for `id` at the top level (paging
/// by id needs it).
fn fields_name_id(raw: &str) -> bool {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some("id")),
        _ => false,
    }
}

/// Refuses raw paths that are not under `/api/` once resolved (`..`,
/// `%2e%2e`) or that carry their own query or fragment.
fn check_api_path(base: &url::Url, path: &str) -> Result<(), CoupaError> {
    let bad = |why: &str| CoupaError::Invalid(format!("raw: path `{path}` {why}"));
    if !path.starts_with("/api/") {
        return Err(bad("must start with /api/"));
    }
    if path.contains(['?', '#']) {
        return Err(bad("must not carry a query or fragment (pass query pairs)"));
    }
    let url = endpoint(base, path).map_err(|e| bad(&e.to_string()))?;
    let api_root = format!("{}/api/", base.path().trim_end_matches('/'));
    if !url.path().starts_with(&api_root) {
        return Err(bad("leaves /api/ once `.` and `..` are resolved"));
    }
    Ok(())
}

/// The paging state behind [`Actions::search`].
struct Pager {
    client: CoupaClient,
    path: String,
    filters: Vec<(String, String)>,
    by_offset: bool,
    /// Highest id yielded so far (id paging).
    last_id: Option<u64>,
    /// Records consumed so far (offset paging).
    offset: usize,
    /// Records still allowed by the limit.
    remaining: usize,
    /// The rest of the current page.
    buffered: VecDeque<Record>,
    done: bool,
}

impl Pager {
    /// The next record, fetching a page when the buffer is empty.
    async fn next(&mut self) -> Result<Option<Record>, CoupaError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if self.buffered.is_empty() && !self.done {
            self.fetch().await?;
        }
        let Some(r) = self.buffered.pop_front() else {
            return Ok(None);
        };
        self.remaining -= 1;
        Ok(Some(r))
    }

    async fn fetch(&mut self) -> Result<(), CoupaError> {
        let size = self.remaining.min(PAGE_SIZE);
        let mut q = self.filters.clone();
        q.push(("limit".into(), size.to_string()));
        if self.by_offset {
            if self.offset > 0 {
                q.push(("offset".into(), self.offset.to_string()));
            }
        } else {
            q.push(("order_by".into(), "id".into()));
            q.push(("dir".into(), "asc".into()));
            if let Some(id) = self.last_id {
                q.push(("id[gt]".into(), id.to_string()));
            }
        }
        let page = self.client.list(&self.path, &q).await?;
        if page.is_empty() {
            self.done = true;
            return Ok(());
        }
        if self.by_offset {
            self.offset += page.len();
            self.buffered.extend(page);
            return Ok(());
        }
        let before = self.last_id;
        for r in page {
            let Some(id) = record::numeric_id(&r) else {
                return Err(self.protocol("a record without a numeric id"));
            };
            // A server that ignores `id[gt]` resends what we yielded.
            if before.is_some_and(|b| id <= b) {
                continue;
            }
            self.last_id = Some(self.last_id.map_or(id, |l| l.max(id)));
            self.buffered.push_back(r);
        }
        if self.buffered.is_empty() {
            return Err(self.protocol(
                "a page with no id above the last one (the server ignores id[gt]); set order_by to page by offset",
            ));
        }
        Ok(())
    }

    fn protocol(&self, what: &str) -> CoupaError {
        CoupaError::Malformed {
            url: endpoint(self.client.base_url(), &self.path)
                .map(|u| display_url(&u))
                .unwrap_or_else(|_| self.path.clone()),
            kind: MalformedKind::WrongShape,
            detail: format!("search paging by id got {what}"),
        }
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
    fn refusals_follow_the_catalogue() {
        let e = resolve(&"purchase_order_lines".into(), Op::Create).unwrap_err();
        assert!(
            e.to_string().contains("through their purchase order"),
            "{e}"
        );
        assert_eq!(e.kind(), "refused");
        let e = resolve(&"purchase_orders".into(), Op::Action("resolve")).unwrap_err();
        assert!(e.to_string().contains("close, cancel"), "{e}");
        assert!(resolve(&"purchase_orders".into(), Op::Action("close")).is_ok());
        let e = resolve(&"supplier_sites".into(), Op::List).unwrap_err();
        assert_eq!(e.kind(), "invalid");
        let (_, path) = resolve(&Target::nested("supplier_sites", 4), Op::List).unwrap();
        assert_eq!(path, "/api/suppliers/4/supplier_sites");
        assert_eq!(
            resolve(&"nope".into(), Op::Get).unwrap_err().kind(),
            "invalid"
        );
    }

    #[test]
    fn raw_paths_stay_under_api() {
        let base = url::Url::parse("https://acme.coupahost.com").unwrap();
        assert!(check_api_path(&base, "/api/purchase_orders/1/reopen").is_ok());
        for bad in [
            "/oauth2/token",
            "/api/../oauth2/token",
            "/api/%2e%2e/oauth2/token",
            "/api/x?y=1",
            "api/x",
        ] {
            assert!(check_api_path(&base, bad).is_err(), "{bad}");
        }
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
