//! The one table of action cases, run through every way in: the library
//! (`coupa::actions`, [`run_lib`]), the CLI (`cli::actions`) and the HTTP API
//! (`http::actions`),
//! each with its own executor turning an [`Act`] into a call and the
//! answer into an [`Outcome`]. The cases, the fixture and the checks live
//! here only, so the three ways in are held to the same expectations.
//!
//! Each case runs against a fresh simulator filled by [`seed`], so ids are
//! fixed: the constants below name them.
#![allow(dead_code)]

use coupa_changefeed::coupa::actions::{
    Actions, IntegrationRecord, IntegrationResponse, RunCounts, RunStatus, Target,
};
use coupa_changefeed::coupa::{CoupaClient, CoupaError};
use coupa_sim::SimHandle;
use futures_util::TryStreamExt;
use serde::Serialize;
use serde_json::{json, Value};

// ---- the fixture ----

pub const INTEGRATION_CODE: &str = "ERP-PO";
pub const SUPPLIER_ACME: u64 = 1;
pub const SUPPLIER_BOREALIS: u64 = 2;
pub const PO_ISSUED: u64 = 1;
pub const PO_ISSUED_2: u64 = 2;
pub const PO_CLOSED: u64 = 3;
pub const RUN_PENDING: u64 = 1;
pub const RUN_RUNNING: u64 = 2;
pub const RUN_SUCCESSFUL: u64 = 3;
pub const ERROR_OPEN: u64 = 1;
pub const ERROR_RESOLVED: u64 = 2;
pub const HISTORY_OPEN: u64 = 1;
pub const USER: u64 = 1;
pub const DEPARTMENTS: usize = 60;
/// An id no fixture object reaches.
pub const MISSING: u64 = 999;

/// Fills a fresh simulator with the records the cases name. Deterministic:
/// ids are the constants above.
pub fn seed(sim: &SimHandle) {
    sim.create(
        "integrations",
        json!({"code": INTEGRATION_CODE, "name": "PO export to NetSuite"}),
    );
    for (name, number) in [("Acme Supply", "S-ACME"), ("Borealis Freight", "S-BOR")] {
        sim.create("suppliers", json!({"name": name, "number": number}));
    }
    for (parent, code) in [(1, "RT-A1"), (1, "RT-A2"), (2, "RT-B1")] {
        sim.create(
            "remit_to_addresses",
            json!({"_parent_id": parent, "remit-to-code": code, "active": true}),
        );
        let site = code.replace("RT", "SITE");
        sim.create(
            "supplier_sites",
            json!({"_parent_id": parent, "code": site}),
        );
    }
    for (n, status) in [(1, "issued"), (2, "issued"), (3, "closed")] {
        sim.create(
            "purchase_orders",
            json!({"po-number": format!("PO-100{n}"), "status": status}),
        );
    }
    sim.create(
        "purchase_order_lines",
        json!({"order-header-id": PO_ISSUED}),
    );
    sim.create("inventory_transactions", json!({"status": "received"}));
    for status in ["pending", "running", "successful"] {
        sim.create(
            "integration_runs",
            json!({"integration": {"code": INTEGRATION_CODE}, "status": status,
                   "start-time": null, "end-time": null, "records-processed": 0}),
        );
    }
    for resolved in [false, true] {
        sim.create(
            "integration_errors",
            json!({"document-type": "OrderHeader", "document-id": PO_ISSUED, "resolved": resolved}),
        );
    }
    sim.create(
        "integration_history_records",
        json!({"document-type": "OrderHeader", "document-id": PO_ISSUED, "status": "Error", "resolved": false}),
    );
    // Generated users carry a legacy top-level custom field, `seg3default`.
    sim.create("users", json!({"login": "pat", "email": "pat@example.com"}));
    for i in 1..=DEPARTMENTS {
        sim.create("departments", json!({"name": format!("Dept {i:02}")}));
    }
}

// ---- the calls, as data ----

/// One library call, as data every executor can turn into its own form.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "act", rename_all = "snake_case")]
pub enum Act {
    Get {
        target: Target,
        id: u64,
    },
    Search {
        target: Target,
        filters: Vec<(String, String)>,
        limit: usize,
    },
    Create {
        target: Target,
        body: Value,
    },
    Update {
        target: Target,
        id: u64,
        body: Value,
    },
    Perform {
        target: Target,
        id: u64,
        action: String,
        body: Option<Value>,
    },
    MarkExported {
        target: Target,
        id: u64,
    },
    RemitToAddresses {
        supplier_id: u64,
    },
    SupplierSites {
        supplier_id: u64,
    },
    ClosePurchaseOrder {
        id: u64,
    },
    CancelPurchaseOrder {
        id: u64,
    },
    CreateIntegrationRun {
        code: String,
    },
    SetIntegrationRunStatus {
        id: u64,
        status: RunStatus,
        counts: RunCounts,
    },
    CreateIntegrationError {
        record: IntegrationRecord,
        alert: bool,
    },
    CreateIntegrationHistoryRecord {
        record: IntegrationRecord,
        alert: bool,
    },
    Resolve {
        object: String,
        id: u64,
    },
    Raw {
        method: String,
        path: String,
        query: Vec<(String, String)>,
        body: Option<Value>,
    },
}

impl Act {
    /// The variant's name; the match makes a new variant name itself.
    pub fn variant(&self) -> &'static str {
        match self {
            Act::Get { .. } => "get",
            Act::Search { .. } => "search",
            Act::Create { .. } => "create",
            Act::Update { .. } => "update",
            Act::Perform { .. } => "perform",
            Act::MarkExported { .. } => "mark_exported",
            Act::RemitToAddresses { .. } => "remit_to_addresses",
            Act::SupplierSites { .. } => "supplier_sites",
            Act::ClosePurchaseOrder { .. } => "close_purchase_order",
            Act::CancelPurchaseOrder { .. } => "cancel_purchase_order",
            Act::CreateIntegrationRun { .. } => "create_integration_run",
            Act::SetIntegrationRunStatus { .. } => "set_integration_run_status",
            Act::CreateIntegrationError { .. } => "create_integration_error",
            Act::CreateIntegrationHistoryRecord { .. } => "create_integration_history_record",
            Act::Resolve { .. } => "resolve",
            Act::Raw { .. } => "raw",
        }
    }

    /// Every variant name: the table must use each at least once.
    pub const VARIANTS: &'static [&'static str] = &[
        "get",
        "search",
        "create",
        "update",
        "perform",
        "mark_exported",
        "remit_to_addresses",
        "supplier_sites",
        "close_purchase_order",
        "cancel_purchase_order",
        "create_integration_run",
        "set_integration_run_status",
        "create_integration_error",
        "create_integration_history_record",
        "resolve",
        "raw",
    ];
}

// ---- what comes back, whatever the way in ----

/// What an executor got back, reduced to what the cases compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The JSON result: a record, a list of records (search), or raw JSON.
    Ok(Value),
    Err {
        /// [`CoupaError::kind`]: `refused`, `invalid`, `validation`, `not_found`, ...
        kind: String,
        /// The HTTP status Coupa answered, if it answered.
        status: Option<u16>,
        /// The one-line message shown to a person.
        message: String,
        /// `(field, message)` of a validation error.
        fields: Vec<(String, String)>,
    },
}

impl From<Result<Value, CoupaError>> for Outcome {
    fn from(r: Result<Value, CoupaError>) -> Outcome {
        match r {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err {
                kind: e.kind().into(),
                status: e.status(),
                message: e.to_string(),
                fields: e
                    .field_errors()
                    .iter()
                    .map(|f| (f.field.clone(), f.message.clone()))
                    .collect(),
            },
        }
    }
}

/// What a case expects.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Success; the result [`matches`] this JSON.
    Ok(Value),
    /// Success: a list of `count` records, each matching `each`, ids unique.
    Records { count: usize, each: Value },
    /// Failure of this kind, with this HTTP status (`None`: nothing was
    /// answered, e.g. refused up front) and a message containing `says`.
    Err {
        kind: &'static str,
        status: Option<u16>,
        says: &'static str,
    },
    /// A 400 listing exactly these fields, in order, each message
    /// containing the text given.
    Validation(Vec<(&'static str, String)>),
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub act: Act,
    pub expect: Expect,
    /// The simulator's record afterwards `(object, id, fields it must match)`:
    /// proof the write landed, whatever the way in reported.
    pub after: Option<(&'static str, u64, Value)>,
}

/// A value in an expectation that matches anything but null.
pub const ANY: &str = "<any>";

/// `expected` ⊆ `actual`: objects by the keys given, arrays element-wise
/// with equal length, [`ANY`] for any non-null value, else equality.
pub fn matches(expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::String(s), a) if s == ANY => {
            if a.is_null() {
                Err("expected a value, got null".into())
            } else {
                Ok(())
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let av = a.get(k).ok_or_else(|| format!("missing key `{k}`"))?;
                matches(ev, av).map_err(|m| format!("{k}: {m}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("expected {} elements, got {}", e.len(), a.len()));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                matches(ev, av).map_err(|m| format!("[{i}]: {m}"))?;
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("expected {e}, got {}", short(a))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}…", &s[..300])
    } else {
        s
    }
}

impl Case {
    /// Checks an outcome, and the simulator after it. `requests_before` is
    /// `sim.requests().len()` before the call: refused and invalid calls
    /// must not reach the simulator. Returns what is wrong.
    pub fn check(
        &self,
        outcome: &Outcome,
        sim: &SimHandle,
        requests_before: usize,
    ) -> Result<(), String> {
        match (&self.expect, outcome) {
            (Expect::Ok(e), Outcome::Ok(v)) => matches(e, v)?,
            (Expect::Records { count, each }, Outcome::Ok(Value::Array(list))) => {
                if list.len() != *count {
                    return Err(format!("expected {count} records, got {}", list.len()));
                }
                let mut ids: Vec<&Value> = list.iter().map(|r| &r["id"]).collect();
                ids.sort_by_key(|v| v.as_u64());
                ids.dedup();
                if ids.len() != list.len() {
                    return Err("a record came twice".into());
                }
                for (i, r) in list.iter().enumerate() {
                    matches(each, r).map_err(|m| format!("record {i}: {m}"))?;
                }
            }
            (
                Expect::Err { kind, status, says },
                Outcome::Err {
                    kind: k,
                    status: s,
                    message,
                    ..
                },
            ) => {
                if k != kind || s != status {
                    return Err(format!(
                        "expected {kind} ({status:?}), got {k} ({s:?}): {message}"
                    ));
                }
                if !message.contains(says) {
                    return Err(format!("message lacks {says:?}: {message}"));
                }
            }
            (
                Expect::Validation(want),
                Outcome::Err {
                    kind,
                    status,
                    fields,
                    message,
                },
            ) => {
                if kind != "validation" || *status != Some(400) {
                    return Err(format!(
                        "expected a 400 validation error, got {kind}: {message}"
                    ));
                }
                let ok = fields.len() == want.len()
                    && fields
                        .iter()
                        .zip(want)
                        .all(|((f, m), (wf, wm))| f == wf && m.contains(wm.as_str()));
                if !ok {
                    return Err(format!("expected fields {want:?}, got {fields:?}"));
                }
            }
            (e, o) => return Err(format!("expected {e:?}, got {o:?}")),
        }
        if let Expect::Err { kind, .. } = &self.expect {
            if matches!(*kind, "refused" | "invalid") {
                let sent = sim.requests().len() - requests_before;
                if sent != 0 {
                    return Err(format!(
                        "{kind} up front, yet {sent} requests reached Coupa"
                    ));
                }
            }
        }
        if let Some((object, id, want)) = &self.after {
            let rec = sim
                .get(object, *id)
                .ok_or_else(|| format!("after: no {object} {id} in the simulator"))?;
            matches(want, &Value::Object(rec)).map_err(|m| format!("after: {object} {id}: {m}"))?;
        }
        Ok(())
    }
}

// ---- the library executor ----

/// Runs one act through the library; lists come back as a JSON array.
pub async fn run_lib(client: &CoupaClient, act: &Act) -> Result<Value, CoupaError> {
    let a = Actions::new(client.clone());
    let rec = |r: coupa_changefeed::coupa::record::Record| Value::Object(r);
    let list = |l: Vec<coupa_changefeed::coupa::record::Record>| {
        Value::Array(l.into_iter().map(Value::Object).collect())
    };
    Ok(match act {
        Act::Get { target, id } => rec(a.get(target, *id).await?),
        Act::Search {
            target,
            filters,
            limit,
        } => list(a.search(target, filters, *limit)?.try_collect().await?),
        Act::Create { target, body } => rec(a.create(target, body).await?),
        Act::Update { target, id, body } => rec(a.update(target, *id, body).await?),
        Act::Perform {
            target,
            id,
            action,
            body,
        } => rec(a.perform(target, *id, action, body.as_ref()).await?),
        Act::MarkExported { target, id } => rec(a.mark_exported(target, *id).await?),
        Act::RemitToAddresses { supplier_id } => list(a.remit_to_addresses(*supplier_id).await?),
        Act::SupplierSites { supplier_id } => list(a.supplier_sites(*supplier_id).await?),
        Act::ClosePurchaseOrder { id } => rec(a.close_purchase_order(*id).await?),
        Act::CancelPurchaseOrder { id } => rec(a.cancel_purchase_order(*id).await?),
        Act::CreateIntegrationRun { code } => rec(a.create_integration_run(code).await?),
        Act::SetIntegrationRunStatus { id, status, counts } => {
            rec(a.set_integration_run_status(*id, *status, *counts).await?)
        }
        Act::CreateIntegrationError { record, alert } => {
            rec(a.create_integration_error(record, *alert).await?)
        }
        Act::CreateIntegrationHistoryRecord { record, alert } => {
            rec(a.create_integration_history_record(record, *alert).await?)
        }
        Act::Resolve { object, id } => rec(a.resolve(object, *id).await?),
        Act::Raw {
            method,
            path,
            query,
            body,
        } => {
            let m = method
                .parse()
                .map_err(|_| CoupaError::Invalid(format!("bad method {method}")))?;
            a.raw(m, path, query, body.as_ref()).await?
        }
    })
}

// ---- the table ----

fn top(object: &str) -> Target {
    Target::top(object)
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn case(name: &'static str, act: Act, expect: Expect) -> Case {
    Case {
        name,
        act,
        expect,
        after: None,
    }
}

fn err(kind: &'static str, status: Option<u16>, says: &'static str) -> Expect {
    Expect::Err { kind, status, says }
}

fn invalid(key: &'static str, msgs: &[&str]) -> Expect {
    Expect::Validation(msgs.iter().map(|m| (key, m.to_string())).collect())
}

impl Case {
    fn after(mut self, object: &'static str, id: u64, want: Value) -> Case {
        self.after = Some((object, id, want));
        self
    }
}

fn outcome_record(status: &str, id: u64, doc: u64, run: Option<u64>) -> IntegrationRecord {
    IntegrationRecord {
        document_type: "OrderHeader".into(),
        document_id: doc,
        document_status: Some("issued".into()),
        status: Some(status.into()),
        integration_code: run.is_none().then(|| INTEGRATION_CODE.into()),
        run_id: run,
        contact_alert_type: Some("Functional".into()),
        responses: vec![IntegrationResponse {
            code: format!("E-{id}"),
            message: "Vendor not found in ERP".into(),
        }],
    }
}

/// Every case. Names are unique and say what is shown.
pub fn cases() -> Vec<Case> {
    vec![
        // -- get --
        case(
            "get_a_purchase_order",
            Act::Get {
                target: top("purchase_orders"),
                id: PO_ISSUED,
            },
            Expect::Ok(
                json!({"id": PO_ISSUED, "po-number": "PO-1001", "status": "issued",
                              "custom-fields": {"cost-center": ANY}}),
            ),
        ),
        case(
            "get_a_missing_record_is_not_found",
            Act::Get {
                target: top("purchase_orders"),
                id: MISSING,
            },
            err("not_found", Some(404), "/api/purchase_orders/999"),
        ),
        case(
            "get_a_supplier_site_under_its_supplier",
            Act::Get {
                target: Target::nested("supplier_sites", SUPPLIER_ACME),
                id: 1,
            },
            Expect::Ok(json!({"id": 1, "code": "SITE-A1"})),
        ),
        case(
            "get_a_site_under_another_supplier_is_not_found",
            Act::Get {
                target: Target::nested("supplier_sites", SUPPLIER_BOREALIS),
                id: 1,
            },
            err("not_found", Some(404), "/api/suppliers/2/supplier_sites/1"),
        ),
        case(
            "get_a_nested_object_without_its_parent_is_invalid",
            Act::Get {
                target: top("supplier_sites"),
                id: 1,
            },
            err("invalid", None, "give the parent suppliers id"),
        ),
        case(
            "get_an_unknown_object_is_invalid",
            Act::Get {
                target: top("widgets"),
                id: 1,
            },
            err("invalid", None, "unknown object `widgets`"),
        ),
        // -- search --
        case(
            "search_with_a_filter",
            Act::Search {
                target: top("purchase_orders"),
                filters: q(&[("status", "issued")]),
                limit: 10,
            },
            Expect::Records {
                count: 2,
                each: json!({"status": "issued"}),
            },
        ),
        case(
            "search_pages_past_fifty_up_to_the_limit",
            Act::Search {
                target: top("departments"),
                filters: vec![],
                limit: 55,
            },
            Expect::Records {
                count: 55,
                each: json!({"name": ANY}),
            },
        ),
        case(
            "search_ends_with_the_results",
            Act::Search {
                target: top("departments"),
                filters: vec![],
                limit: 500,
            },
            Expect::Records {
                count: DEPARTMENTS,
                each: json!({}),
            },
        ),
        case(
            "search_in_an_order_of_ones_own_pages_by_offset",
            Act::Search {
                target: top("departments"),
                filters: q(&[("order_by", "name"), ("dir", "desc")]),
                limit: 55,
            },
            Expect::Records {
                count: 55,
                each: json!({}),
            },
        ),
        case(
            "search_under_a_parent",
            Act::Search {
                target: Target::nested("remit_to_addresses", SUPPLIER_ACME),
                filters: q(&[("active", "true")]),
                limit: 10,
            },
            Expect::Records {
                count: 2,
                each: json!({"active": true}),
            },
        ),
        case(
            "search_refuses_paging_parameters_of_its_own",
            Act::Search {
                target: top("departments"),
                filters: q(&[("offset", "5")]),
                limit: 5,
            },
            err("invalid", None, "`offset` is set by the search"),
        ),
        // -- create --
        case(
            "create_a_supplier_with_custom_fields",
            Act::Create {
                target: top("suppliers"),
                body: json!({"name": "Cascade Metals", "number": "S-CAS",
                             "custom-fields": {"erp-vendor-id": "V-77"}}),
            },
            Expect::Ok(json!({"id": 3, "name": "Cascade Metals",
                              "custom-fields": {"erp-vendor-id": "V-77"}})),
        )
        .after(
            "suppliers",
            3,
            json!({"number": "S-CAS", "custom-fields": {"erp-vendor-id": "V-77"}}),
        ),
        case(
            "create_with_blank_required_fields_lists_each",
            Act::Create {
                target: top("users"),
                body: json!({}),
            },
            invalid("user", &["Login can't be blank", "Email can't be blank"]),
        ),
        case(
            "create_with_a_taken_name",
            Act::Create {
                target: top("suppliers"),
                body: json!({"name": "Acme Supply"}),
            },
            invalid("supplier", &["Name has already been taken"]),
        ),
        case(
            "create_an_integration_error_without_its_document_lists_each_field",
            Act::Create {
                target: top("integration_errors"),
                body: json!({"status": "Error"}),
            },
            invalid(
                "integration_error",
                &["Document type can't be blank", "Document id can't be blank"],
            ),
        ),
        case(
            "create_a_native_purchase_order_is_a_400",
            Act::Create {
                target: top("purchase_orders"),
                body: json!({"po-number": "PO-2001", "supplier": {"id": SUPPLIER_ACME}}),
            },
            invalid("purchase_order", &["only external purchase orders"]),
        ),
        case(
            "create_an_external_purchase_order",
            Act::Create {
                target: top("purchase_orders"),
                body: json!({"po-number": "PO-2001", "type": "ExternalOrderHeader",
                             "supplier": {"id": SUPPLIER_ACME}}),
            },
            Expect::Ok(json!({"id": 4, "po-number": "PO-2001", "status": "issued"})),
        ),
        case(
            "create_a_remit_to_address_under_a_supplier",
            Act::Create {
                target: Target::nested("remit_to_addresses", SUPPLIER_BOREALIS),
                body: json!({"remit-to-code": "RT-B2", "street1": "9 Dock Rd", "city": "Toronto",
                             "country": {"code": "CA"}}),
            },
            Expect::Ok(json!({"id": 4, "remit-to-code": "RT-B2"})),
        )
        .after("remit_to_addresses", 4, json!({"city": "Toronto"})),
        case(
            "create_under_a_missing_parent_is_not_found",
            Act::Create {
                target: Target::nested("remit_to_addresses", MISSING),
                body: json!({"remit-to-code": "RT-X", "street1": "1 A St", "city": "Austin"}),
            },
            err("not_found", Some(404), "/api/suppliers/999/addresses"),
        ),
        case(
            "create_a_po_line_is_refused",
            Act::Create {
                target: top("purchase_order_lines"),
                body: json!({"quantity": "1"}),
            },
            err("refused", None, "through their purchase order"),
        ),
        case(
            "create_a_receipt_is_refused",
            Act::Create {
                target: top("inventory_transactions"),
                body: json!({}),
            },
            err(
                "refused",
                None,
                "inventory_transactions: create is not allowed",
            ),
        ),
        // -- update --
        case(
            "update_a_po_line_is_refused",
            Act::Update {
                target: top("purchase_order_lines"),
                id: 1,
                body: json!({"quantity": "2"}),
            },
            err("refused", None, "update purchase_orders with `order-lines`"),
        ),
        case(
            "update_merges_namespaced_custom_fields",
            Act::Update {
                target: top("purchase_orders"),
                id: PO_ISSUED,
                body: json!({"custom-fields": {"erp-reference": "ERP-0001"}}),
            },
            Expect::Ok(json!({"custom-fields": {"erp-reference": "ERP-0001", "cost-center": ANY}})),
        )
        .after(
            "purchase_orders",
            PO_ISSUED,
            json!({"custom-fields": {"erp-reference": "ERP-0001"}}),
        ),
        case(
            "update_a_legacy_custom_field_through_the_namespace",
            Act::Update {
                target: top("users"),
                id: USER,
                body: json!({"custom-fields": {"seg3default": "777"}}),
            },
            Expect::Ok(json!({"seg3default": "777"})),
        )
        .after("users", USER, json!({"seg3default": "777"})),
        case(
            "update_a_status_directly_is_a_400",
            Act::Update {
                target: top("purchase_orders"),
                id: PO_ISSUED,
                body: json!({"status": "closed"}),
            },
            invalid("purchase_order", &["Status can't be changed by an update"]),
        )
        .after("purchase_orders", PO_ISSUED, json!({"status": "issued"})),
        case(
            "update_a_missing_record_is_not_found",
            Act::Update {
                target: top("purchase_orders"),
                id: MISSING,
                body: json!({"po-number": "X"}),
            },
            err("not_found", Some(404), "/api/purchase_orders/999"),
        ),
        case(
            "mark_a_purchase_order_exported",
            Act::MarkExported {
                target: top("purchase_orders"),
                id: PO_ISSUED,
            },
            Expect::Ok(json!({"exported": true, "last-exported-at": ANY})),
        )
        .after("purchase_orders", PO_ISSUED, json!({"exported": true})),
        case(
            "mark_exported_a_po_line_is_refused",
            Act::MarkExported {
                target: top("purchase_order_lines"),
                id: 1,
            },
            err("refused", None, "purchase_order_lines"),
        ),
        // -- suppliers --
        case(
            "remit_to_addresses_of_a_supplier",
            Act::RemitToAddresses {
                supplier_id: SUPPLIER_ACME,
            },
            Expect::Records {
                count: 2,
                each: json!({"remit-to-code": ANY}),
            },
        ),
        case(
            "remit_to_addresses_of_a_missing_supplier",
            Act::RemitToAddresses {
                supplier_id: MISSING,
            },
            err("not_found", Some(404), "/api/suppliers/999/addresses"),
        ),
        case(
            "supplier_sites_of_a_supplier",
            Act::SupplierSites {
                supplier_id: SUPPLIER_BOREALIS,
            },
            Expect::Records {
                count: 1,
                each: json!({"code": "SITE-B1"}),
            },
        ),
        // -- purchase orders --
        case(
            "close_an_issued_po",
            Act::ClosePurchaseOrder { id: PO_ISSUED },
            Expect::Ok(json!({"id": PO_ISSUED, "status": "closed"})),
        )
        .after("purchase_orders", PO_ISSUED, json!({"status": "closed"})),
        case(
            "cancel_an_issued_po",
            Act::CancelPurchaseOrder { id: PO_ISSUED_2 },
            Expect::Ok(json!({"status": "cancelled"})),
        )
        .after(
            "purchase_orders",
            PO_ISSUED_2,
            json!({"status": "cancelled"}),
        ),
        case(
            "close_a_closed_po_is_a_400",
            Act::ClosePurchaseOrder { id: PO_CLOSED },
            invalid(
                "purchase_order",
                &["Cannot close purchase order 3: it is already closed"],
            ),
        ),
        case(
            "cancel_a_closed_po_is_an_illegal_transition",
            Act::CancelPurchaseOrder { id: PO_CLOSED },
            invalid(
                "purchase_order",
                &["Cannot cancel purchase order 3: status closed cannot change to cancelled"],
            ),
        )
        .after("purchase_orders", PO_CLOSED, json!({"status": "closed"})),
        case(
            "close_a_missing_po_is_not_found",
            Act::ClosePurchaseOrder { id: MISSING },
            err("not_found", Some(404), "/api/purchase_orders/999/close"),
        ),
        case(
            "reopen_a_closed_po_through_a_catalogue_action",
            Act::Perform {
                target: top("purchase_orders"),
                id: PO_CLOSED,
                action: "reopen".into(),
                body: None,
            },
            Expect::Ok(json!({"status": "issued"})),
        ),
        case(
            "an_action_the_catalogue_lacks_is_refused",
            Act::Perform {
                target: top("purchase_orders"),
                id: PO_ISSUED,
                action: "explode".into(),
                body: None,
            },
            err("refused", None, "its actions are: close, cancel"),
        ),
        // -- integration runs --
        case(
            "create_an_integration_run",
            Act::CreateIntegrationRun {
                code: INTEGRATION_CODE.into(),
            },
            Expect::Ok(
                json!({"id": 4, "status": "pending", "integration": {"code": INTEGRATION_CODE}}),
            ),
        ),
        case(
            "create_a_run_for_an_unknown_integration_is_a_400",
            Act::CreateIntegrationRun {
                code: "NOPE".into(),
            },
            invalid(
                "integration_run",
                &["Integration code \"NOPE\" matches no integration"],
            ),
        ),
        case(
            "start_a_run_with_its_total",
            Act::SetIntegrationRunStatus {
                id: RUN_PENDING,
                status: RunStatus::Running,
                counts: RunCounts {
                    total_records: Some(40),
                    records_processed: None,
                },
            },
            Expect::Ok(json!({"status": "running", "total-records": 40, "start-time": ANY})),
        ),
        case(
            "finish_a_run_successfully_with_its_count",
            Act::SetIntegrationRunStatus {
                id: RUN_RUNNING,
                status: RunStatus::Successful,
                counts: RunCounts {
                    total_records: None,
                    records_processed: Some(40),
                },
            },
            Expect::Ok(json!({"status": "successful", "records-processed": 40, "end-time": ANY})),
        )
        .after(
            "integration_runs",
            RUN_RUNNING,
            json!({"status": "successful", "records-processed": 40}),
        ),
        case(
            "fail_a_running_run",
            Act::SetIntegrationRunStatus {
                id: RUN_RUNNING,
                status: RunStatus::Failed,
                counts: RunCounts::default(),
            },
            Expect::Ok(json!({"status": "failed", "end-time": ANY})),
        ),
        case(
            "pause_a_pending_run",
            Act::SetIntegrationRunStatus {
                id: RUN_PENDING,
                status: RunStatus::Paused,
                counts: RunCounts::default(),
            },
            Expect::Ok(json!({"status": "paused"})),
        ),
        case(
            "put_a_running_run_back_to_pending",
            Act::SetIntegrationRunStatus {
                id: RUN_RUNNING,
                status: RunStatus::Pending,
                counts: RunCounts::default(),
            },
            Expect::Ok(json!({"status": "pending"})),
        ),
        case(
            "fail_a_finished_run_is_a_400",
            Act::SetIntegrationRunStatus {
                id: RUN_SUCCESSFUL,
                status: RunStatus::Failed,
                counts: RunCounts::default(),
            },
            invalid(
                "integration_run",
                &["Cannot fail integration run 3: status successful cannot change to failed"],
            ),
        ),
        // -- integration errors and history --
        case(
            "create_an_integration_error_with_an_alert",
            Act::CreateIntegrationError {
                record: outcome_record("Error", 1, PO_ISSUED, Some(RUN_RUNNING)),
                alert: true,
            },
            Expect::Ok(
                json!({"document-type": "OrderHeader", "document-id": PO_ISSUED, "resolved": false,
                              "alert-sent": true, "integration-run-id": RUN_RUNNING,
                              "responses": [{"response-code": "E-1", "response-message": "Vendor not found in ERP"}]}),
            ),
        ),
        case(
            "create_an_integration_error_for_a_missing_run_is_a_400",
            Act::CreateIntegrationError {
                record: outcome_record("Error", 1, PO_ISSUED, Some(MISSING)),
                alert: false,
            },
            invalid("integration_error", &["Integration run 999 not found"]),
        ),
        case(
            "create_an_integration_history_record",
            Act::CreateIntegrationHistoryRecord {
                record: outcome_record("Success", 2, PO_ISSUED, None),
                alert: false,
            },
            Expect::Ok(
                json!({"status": "Success", "integration": {"code": INTEGRATION_CODE}, "resolved": false}),
            ),
        ),
        case(
            "resolve_an_integration_error",
            Act::Resolve {
                object: "integration_errors".into(),
                id: ERROR_OPEN,
            },
            Expect::Ok(json!({"resolved": true})),
        )
        .after("integration_errors", ERROR_OPEN, json!({"resolved": true})),
        case(
            "resolve_a_resolved_error_is_a_400",
            Act::Resolve {
                object: "integration_errors".into(),
                id: ERROR_RESOLVED,
            },
            invalid("integration_error", &["it is already resolved"]),
        ),
        case(
            "resolve_a_history_record",
            Act::Resolve {
                object: "integration_history_records".into(),
                id: HISTORY_OPEN,
            },
            Expect::Ok(json!({"resolved": true})),
        ),
        case(
            "resolve_a_purchase_order_is_refused",
            Act::Resolve {
                object: "purchase_orders".into(),
                id: PO_ISSUED,
            },
            err("refused", None, "no `resolve` on purchase_orders"),
        ),
        // -- raw --
        case(
            "raw_get_with_a_query",
            Act::Raw {
                method: "GET".into(),
                path: format!("/api/purchase_orders/{PO_ISSUED}"),
                query: q(&[("fields", r#"["id","status"]"#)]),
                body: None,
            },
            Expect::Ok(json!({"id": PO_ISSUED, "status": "issued"})),
        ),
        case(
            "raw_put_an_action_the_library_does_not_name",
            Act::Raw {
                method: "PUT".into(),
                path: format!("/api/purchase_orders/{PO_CLOSED}/reopen"),
                query: vec![],
                body: None,
            },
            Expect::Ok(json!({"status": "issued"})),
        )
        .after("purchase_orders", PO_CLOSED, json!({"status": "issued"})),
        case(
            "raw_outside_the_api_is_invalid",
            Act::Raw {
                method: "POST".into(),
                path: "/oauth2/token".into(),
                query: vec![],
                body: None,
            },
            err("invalid", None, "must start with /api/"),
        ),
        case(
            "raw_climbing_out_of_the_api_is_invalid",
            Act::Raw {
                method: "GET".into(),
                path: "/api/../_sim/requests".into(),
                query: vec![],
                body: None,
            },
            err("invalid", None, "leaves /api/"),
        ),
        case(
            "raw_to_an_unknown_route_is_not_found",
            Act::Raw {
                method: "GET".into(),
                path: "/api/widgets".into(),
                query: vec![],
                body: None,
            },
            err("not_found", Some(404), "/api/widgets"),
        ),
    ]
}
