//! The simulator's write side: what POST, PUT/PATCH and the member
//! actions do to records, as coupa-api.md describes Coupa. Validation
//! 400s (`{"errors": {"<record>": ["Name can't be blank", ...]}}`), the PO
//! state machine (`close`, `cancel`, `reopen`, `issue`, ...), integration
//! run statuses, resolve/unresolve, `?exported=true`, custom fields in both
//! placements. Every accepted write is a new version, so `updated-at`
//! moves and the poller sees it.
//!
//! Works on the store under its lock; knows nothing of HTTP (routing,
//! auth and rendering are `http.rs`'s).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::store::{record_key, Record, Store};
use coupa_model::objects::{self, ObjectSpec};

/// A write Coupa would refuse: the status and its JSON error body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejection {
    pub status: u16,
    /// The key Coupa files the messages under: the record's name.
    pub key: String,
    pub messages: Vec<String>,
}

impl Rejection {
    fn invalid(spec: &ObjectSpec, messages: Vec<String>) -> Rejection {
        Rejection {
            status: 400,
            key: spec.singular.into(),
            messages,
        }
    }

    fn not_found(key: &str) -> Rejection {
        Rejection {
            status: 404,
            key: key.into(),
            messages: vec!["not found".into()],
        }
    }

    /// Coupa's JSON error shape.
    pub fn body(&self) -> Value {
        json!({"errors": {self.key.clone(): self.messages}})
    }
}

/// What a write asks for, once `http.rs` has matched the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write<'a> {
    /// `POST /api/x`; `alert` for `POST /api/x/create_alert`.
    Create { alert: bool },
    /// `PUT /api/x/:id`; `exported` from `?exported=true|false`.
    Update { exported: Option<bool> },
    /// `PUT /api/x/:id/<action>`, an action the catalogue lists.
    Action(&'a str),
}

/// Collection-level POST actions (`POST /api/x/<name>`) the simulator models.
pub(crate) fn collection_actions(spec: &ObjectSpec) -> &'static [&'static str] {
    match spec.name {
        "integration_errors" | "integration_history_records" => &["create_alert"],
        _ => &[],
    }
}

/// Keys Coupa sets itself; a write that sends them (a GET'd record PUT
/// back whole) does not change them.
const SERVER_SET: &[&str] = &[
    "id",
    "created-at",
    "updated-at",
    "created-by",
    "updated-by",
    "version",
    "internal-revision",
];

/// Fields a create must carry, per object (hyphenated; either spelling is accepted).
fn required(object: &str) -> &'static [&'static str] {
    match object {
        "accounts" => &["code"],
        "addresses" => &["street1", "city"],
        "contracts" => &["name", "supplier"],
        "departments" => &["name"],
        "exchange_rates" => &["from-currency", "to-currency", "rate"],
        "expense_reports" => &["title"],
        "expense_lines" => &["amount"],
        "integrations" => &["code", "name"],
        "integration_runs" => &["integration"],
        "integration_errors" => &["document-type", "document-id"],
        "integration_history_records" => &["document-type", "document-id", "status"],
        "invoices" => &["invoice-number", "supplier"],
        "items" => &["name"],
        "lookup_values" => &["name", "lookup"],
        "purchase_orders" => &["po-number", "supplier"],
        "remit_to_addresses" => &["remit-to-code", "street1", "city"],
        "supplier_information" => &["name"],
        "supplier_items" => &["item", "supplier", "price"],
        "supplier_sites" => &["code", "name"],
        "suppliers" => &["name"],
        "users" => &["login", "email"],
        _ => &[],
    }
}

/// Fields no two records of an object may share (coupa-api.md §5 "unique").
fn unique(object: &str) -> &'static [&'static str] {
    match object {
        "addresses" => &["location-code"],
        "contracts" => &["number"],
        "departments" => &["name"],
        "integrations" => &["code"],
        "items" => &["item-number"],
        "purchase_orders" => &["po-number"],
        "remit_to_addresses" => &["remit-to-code"],
        "supplier_sites" => &["code"],
        "suppliers" => &["name", "number"],
        "users" => &["login", "email", "employee-number"],
        _ => &[],
    }
}

/// Statuses only actions change (a plain update may resend, not change, them).
fn action_owned_status(object: &str) -> bool {
    matches!(object, "purchase_orders" | "integration_runs")
}

/// `(from-statuses, to-status)` of a status-changing action.
fn transition(object: &str, action: &str) -> Option<(&'static [&'static str], &'static str)> {
    const PO_OPEN: &[&str] = &[
        "draft",
        "buyer_hold",
        "currency_hold",
        "supplier_hold",
        "supplier_window_hold",
        "issued",
        "error",
    ];
    const PO_HELD: &[&str] = &[
        "draft",
        "buyer_hold",
        "currency_hold",
        "supplier_window_hold",
    ];
    const RUN_LIVE: &[&str] = &["pending", "running", "paused"];
    Some(match (object, action) {
        ("purchase_orders", "close") => (&["issued", "soft_closed", "supplier_hold"], "closed"),
        ("purchase_orders", "cancel") => (PO_OPEN, "cancelled"),
        ("purchase_orders", "reopen") => (&["closed", "soft_closed"], "issued"),
        ("purchase_orders", "issue" | "issue_without_send") => (PO_HELD, "issued"),
        ("purchase_orders", "release_from_buyer_hold") => (&["buyer_hold"], "issued"),
        ("integration_runs", "run") => (&["pending", "paused"], "running"),
        ("integration_runs", "success") => (RUN_LIVE, "successful"),
        ("integration_runs", "fail") => (RUN_LIVE, "failed"),
        ("integration_runs", "pause") => (&["pending", "running"], "paused"),
        ("integration_runs", "pending") => (&["running", "paused"], "pending"),
        ("inventory_transactions", "void") => (&["created", "received"], "voided"),
        _ => return None,
    })
}

/// A field in either spelling.
fn field<'a>(m: &'a Record, key: &str) -> Option<&'a Value> {
    m.get(key)
        .or_else(|| m.get(&key.replace('-', "_")))
        .or_else(|| m.get(&key.replace('_', "-")))
}

fn take(m: &mut Record, key: &str) -> Option<Value> {
    m.remove(key)
        .or_else(|| m.remove(&key.replace('-', "_")))
        .or_else(|| m.remove(&key.replace('_', "-")))
}

fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// Rails' `humanize`: `po-number` → `Po number`.
fn humanize(key: &str) -> String {
    let words = key.replace(['-', '_'], " ");
    let mut c = words.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => words,
    }
}

/// `purchase_order` → `purchase order`, for messages.
fn human_singular(spec: &ObjectSpec) -> String {
    spec.singular.replace('_', " ")
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "1"),
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

/// Drops what the caller may not set, and the legacy `_flags`.
fn clean(body: &mut Record) {
    for k in SERVER_SET {
        take(body, k);
    }
    body.retain(|k, _| !k.starts_with('_'));
}

/// Uniqueness and blank checks for the fields a write sets.
fn check_fields(
    store: &Store,
    spec: &ObjectSpec,
    self_id: Option<u64>,
    body: &Record,
    creating: bool,
    errors: &mut Vec<String>,
) {
    for key in required(spec.name) {
        let v = field(body, key);
        if (creating || v.is_some()) && is_blank(v) {
            errors.push(format!("{} can't be blank", humanize(key)));
        }
    }
    for key in unique(spec.name) {
        let Some(v) = field(body, key).filter(|v| !is_blank(Some(v))) else {
            continue;
        };
        let taken = store
            .table(spec.name)
            .iter()
            .any(|(id, row)| Some(*id) != self_id && field(&row.record, key) == Some(v));
        if taken {
            errors.push(format!("{} has already been taken", humanize(key)));
        }
    }
    // Referenced data must already exist (coupa-api.md §1, HTTP verbs).
    let code = field(body, "integration").and_then(|i| i.get("code")?.as_str());
    if spec.name == "integration_runs" && creating && code.is_some_and(|c| c.trim().is_empty()) {
        errors.push("Integration can't be blank".into());
    }
    if let Some(code) = code.filter(|c| !c.trim().is_empty()) {
        let known = store
            .table("integrations")
            .values()
            .any(|row| row.record.get("code").and_then(Value::as_str) == Some(code));
        if !known {
            errors.push(format!("Integration code {code:?} matches no integration"));
        }
    }
    if let Some(run) = field(body, "integration-run-id").filter(|v| !v.is_null()) {
        let id = run.as_u64().or_else(|| run.as_str()?.trim().parse().ok());
        if !id.is_some_and(|id| store.table("integration_runs").contains_key(&id)) {
            errors.push(format!("Integration run {run} not found"));
        }
    }
}

/// Lays `body` over `record` in the record's key spelling; custom fields
/// are merged key by key, and a namespaced value for a legacy top-level
/// custom field lands on the top-level key (Coupa accepts the namespaced
/// form for every field; if both forms are sent, the namespaced one wins).
fn merge(record: &mut Record, mut body: Record) {
    let custom = take(&mut body, "custom-fields");
    for (k, v) in body {
        let key = record_key(&k, record);
        record.insert(key, v);
    }
    let Some(Value::Object(custom)) = custom else {
        return;
    };
    let mut cf = match record.remove("custom-fields") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in custom {
        let key = record_key(&k, &cf);
        let legacy = record_key(&k, record);
        if !cf.contains_key(&key) && record.contains_key(&legacy) {
            record.insert(legacy, v);
        } else {
            cf.insert(key, v);
        }
    }
    record.insert("custom-fields".into(), Value::Object(cf));
}

/// `POST`: validates, then creates with the object's defaults.
pub(crate) fn create(
    store: &mut Store,
    spec: &'static ObjectSpec,
    parent: Option<u64>,
    mut body: Record,
    alert: bool,
    now: DateTime<Utc>,
) -> Result<Record, Rejection> {
    clean(&mut body);
    let mut errors = Vec::new();
    // POST creates only "external" POs; native ones come from requisitions.
    if spec.name == "purchase_orders"
        && field(&body, "type").and_then(Value::as_str) != Some("ExternalOrderHeader")
    {
        errors.push(
            "Type must be ExternalOrderHeader: only external purchase orders can be created through the API"
                .into(),
        );
    }
    check_fields(store, spec, None, &body, true, &mut errors);
    if !errors.is_empty() {
        return Err(Rejection::invalid(spec, errors));
    }
    let mut fields = Map::new();
    if let Some(p) = parent {
        fields.insert("_parent_id".into(), p.into());
    }
    let name = spec.name;
    let created = store.create_with(spec, fields, now, move |record| {
        // Start from what a new record of this kind holds, then the body.
        match name {
            "integration_runs" => {
                for (k, v) in [
                    ("status", json!("pending")),
                    ("start-time", Value::Null),
                    ("end-time", Value::Null),
                    ("total-records", Value::Null),
                    ("records-processed", json!(0)),
                    ("integration-errors", json!([])),
                ] {
                    record.insert(k.into(), v);
                }
            }
            "integration_errors" | "integration_history_records" => {
                record.insert("resolved".into(), false.into());
                record.insert("responses".into(), json!([]));
                record.insert("creation-method".into(), "api".into());
                record.insert("integration-run".into(), Value::Null);
            }
            "purchase_orders" => {
                record.insert("status".into(), "issued".into());
                record.insert("exported".into(), false.into());
            }
            _ => {}
        }
        // Fields the caller did not send are empty, not generated.
        record.insert("custom-fields".into(), json!({}));
        let run_status = record.get("status").cloned();
        merge(record, body);
        if name == "integration_runs" {
            // Created pending whatever the body says; statuses are actions.
            if let Some(s) = run_status {
                record.insert("status".into(), s);
            }
        }
        if alert {
            record.insert("alert-sent".into(), true.into());
        }
    });
    created.map_err(|e| Rejection {
        status: 400,
        key: "base".into(),
        messages: vec![e.to_string()],
    })
}

/// `PUT`/`PATCH` on one record, or one of its actions.
pub(crate) fn update(
    store: &mut Store,
    spec: &'static ObjectSpec,
    id: u64,
    mut body: Record,
    write: Write<'_>,
    now: DateTime<Utc>,
) -> Result<Record, Rejection> {
    let Some(mut record) = store.get(spec, id) else {
        return Err(Rejection::not_found(spec.singular));
    };
    let commit = |store: &mut Store, record: Record| {
        store
            .replace(spec, id, record, now)
            .ok_or_else(|| Rejection::not_found(spec.singular))
    };
    match write {
        Write::Create { .. } => unreachable!("creates go to create()"),
        Write::Action(action) => {
            act(store, spec, id, &mut record, action, &mut body, now)?;
            commit(store, record)
        }
        Write::Update { exported } if exported.is_some() && record.contains_key("exported") => {
            // Coupa ignores other changes sent with the exported flag.
            let flag = exported.unwrap_or(false);
            record.insert("exported".into(), flag.into());
            if flag {
                record.insert("last-exported-at".into(), store.stamp(id, now).into());
            }
            commit(store, record)
        }
        Write::Update { .. } => {
            // The older body flags for the PO actions.
            if spec.name == "purchase_orders" {
                for (flag, action) in [("_close", "close"), ("_cancel", "cancel")] {
                    if truthy(body.get(flag)) {
                        act(store, spec, id, &mut record, action, &mut Map::new(), now)?;
                    }
                }
            }
            clean(&mut body);
            let mut errors = Vec::new();
            if action_owned_status(spec.name) {
                let (new, old) = (field(&body, "status"), record.get("status"));
                if new.is_some() && new != old {
                    errors.push(format!(
                        "Status can't be changed by an update; use the {} actions",
                        spec.actions.join(", ")
                    ));
                }
            }
            check_fields(store, spec, Some(id), &body, false, &mut errors);
            if !errors.is_empty() {
                return Err(Rejection::invalid(spec, errors));
            }
            merge(&mut record, body);
            commit(store, record)
        }
    }
}

/// Applies a catalogue action to `record` (not yet committed). An action
/// the simulator does not model changes nothing but still makes a version:
/// Coupa did something.
fn act(
    store: &Store,
    spec: &ObjectSpec,
    id: u64,
    record: &mut Record,
    action: &str,
    body: &mut Record,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    let what = format!("{} {id}", human_singular(spec));
    if let Some((from, to)) = transition(spec.name, action) {
        let status = record
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if status == to {
            return Err(Rejection::invalid(
                spec,
                vec![format!("Cannot {action} {what}: it is already {to}")],
            ));
        }
        if !from.contains(&status.as_str()) {
            return Err(Rejection::invalid(
                spec,
                vec![format!(
                    "Cannot {action} {what}: status {status} cannot change to {to}"
                )],
            ));
        }
        record.insert("status".into(), to.into());
        if spec.name == "integration_runs" {
            let stamp = store.stamp(id, now);
            match action {
                "run" if is_blank(record.get("start-time")) => {
                    record.insert("start-time".into(), stamp.into());
                }
                "success" | "fail" => {
                    record.insert("end-time".into(), stamp.into());
                }
                _ => {}
            }
            for key in ["total-records", "records-processed"] {
                if let Some(v) = take(body, key) {
                    record.insert(key.into(), v);
                }
            }
        }
        return Ok(());
    }
    match action {
        "resolve" | "unresolve" => {
            let want = action == "resolve";
            if truthy(record.get("resolved")) == want {
                let state = if want {
                    "already resolved"
                } else {
                    "not resolved"
                };
                return Err(Rejection::invalid(
                    spec,
                    vec![format!("Cannot {action} {what}: it is {state}")],
                ));
            }
            record.insert("resolved".into(), want.into());
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether `spec` may have a record `id` under `parent` (nested routes).
pub(crate) fn parent_exists(store: &Store, spec: &ObjectSpec, parent: Option<u64>) -> bool {
    match (spec.parent, parent) {
        (Some(p), Some(pid)) => {
            objects::lookup(p.object).is_some_and(|ps| store.table(ps.name).contains_key(&pid))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coupa_model::objects::lookup;

    fn rec(v: Value) -> Record {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn custom_fields_merge_and_legacy_keys_stay_top_level() {
        let mut r = rec(
            json!({"seg3default": "1", "custom-fields": {"cost-center": "CC-1", "erp-reference": null}}),
        );
        merge(
            &mut r,
            rec(
                json!({"seg3default": "2", "custom_fields": {"erp_reference": "E-9", "seg3default": "3", "new-one": true}}),
            ),
        );
        assert_eq!(
            Value::Object(r),
            json!({"seg3default": "3", "custom-fields": {"cost-center": "CC-1", "erp-reference": "E-9", "new-one": true}})
        );
    }

    #[test]
    fn po_transitions_follow_the_state_machine() {
        let mut store = Store::new(1, vec![]);
        let spec = lookup("purchase_orders").unwrap();
        let now = Utc::now();
        store
            .create(spec, rec(json!({"status": "issued"})), now)
            .unwrap();
        let closed = update(&mut store, spec, 1, Map::new(), Write::Action("close"), now).unwrap();
        assert_eq!(closed["status"], "closed");
        let e = update(
            &mut store,
            spec,
            1,
            Map::new(),
            Write::Action("cancel"),
            now,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.key, "purchase_order");
        assert!(
            e.messages[0].contains("closed cannot change to cancelled"),
            "{e:?}"
        );
        let e = update(&mut store, spec, 1, Map::new(), Write::Action("close"), now).unwrap_err();
        assert!(e.messages[0].contains("already closed"), "{e:?}");
        assert_eq!(
            store.versions("purchase_orders").len(),
            2,
            "refusals make no version"
        );
    }

    #[test]
    fn humanized_labels_read_like_rails() {
        assert_eq!(humanize("po-number"), "Po number");
        assert_eq!(humanize("document_type"), "Document type");
    }
}
