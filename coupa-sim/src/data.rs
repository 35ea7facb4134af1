//! What simulated records look like: realistic, deterministic (from the
//! seed, object and id) field sets per object following coupa-api.md §5,
//! and the random edits the change generator makes. Keys are hyphenated,
//! ids numbers, amounts decimal strings, timestamps in the record's offset.
//! The store adds `id`, `created-at` and `updated-at`; this module adds
//! everything else and never touches storage.

use chrono::{DateTime, Duration, FixedOffset};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::store::{Record, Store};
use coupa_model::objects::ObjectSpec;

/// A generator seeded by (seed, object, id), so a record's generated
/// fields do not depend on the order records were made in.
pub(crate) fn rng_for(seed: u64, object: &str, id: u64) -> StdRng {
    // FNV-1a over the object name: stable across runs and platforms.
    let h = object.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    StdRng::seed_from_u64(seed ^ h ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Status values per object (repeats weight the common ones); empty for
/// objects without a status.
pub(crate) fn statuses(object: &str) -> &'static [&'static str] {
    match object {
        "purchase_orders" => &[
            "draft",
            "buyer_hold",
            "issued",
            "issued",
            "issued",
            "closed",
            "soft_closed",
            "cancelled",
            "supplier_hold",
        ],
        "purchase_order_lines" => &[
            "created",
            "received",
            "partially_received",
            "soft_closed_for_receiving",
            "closed",
        ],
        "invoices" => &[
            "draft",
            "pending_approval",
            "approved",
            "approved",
            "pending_receipt",
            "on_hold",
            "disputed",
            "voided",
        ],
        "suppliers" => &["active", "active", "active", "inactive", "draft"],
        "supplier_information" => &[
            "draft",
            "pending_approval",
            "approved",
            "active",
            "inactive",
        ],
        "contracts" => &[
            "draft",
            "pending_approval",
            "published",
            "published",
            "expired",
            "inactive",
        ],
        "expense_reports" => &[
            "draft",
            "pending_approval",
            "approved",
            "approved_for_payment",
            "paid",
            "rejected",
        ],
        "expense_lines" => &["draft", "pending_approval", "approved", "accounted"],
        "integration_runs" => &[
            "pending",
            "running",
            "successful",
            "successful",
            "failed",
            "paused",
        ],
        "integration_errors" => &["Error", "Warning"],
        "integration_history_records" => &["Success", "Success", "Error"],
        "inventory_transactions" => &["created", "received", "voided"],
        _ => &[],
    }
}

const FIRST: &[&str] = &[
    "Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kira",
    "Liam",
];
const LAST: &[&str] = &[
    "Alvarez", "Brooks", "Chen", "Dubois", "Eriksen", "Fischer", "Gupta", "Hughes", "Ito",
    "Jensen", "Kowalski", "Lopez",
];
const ADJ: &[&str] = &[
    "Northwind",
    "Blue Ridge",
    "Summit",
    "Harbor",
    "Granite",
    "Silverline",
    "Pioneer",
    "Redwood",
    "Apex",
    "Meridian",
    "Cobalt",
    "Evergreen",
    "Lakeside",
    "Ironbridge",
    "Sunrise",
    "Atlas",
];
const NOUN: &[&str] = &[
    "Supply",
    "Industrial",
    "Logistics",
    "Office Products",
    "Components",
    "Packaging",
    "Electronics",
    "Services",
    "Chemicals",
    "Foods",
    "Tools",
    "Textiles",
    "Paper",
    "Medical",
    "Freight",
    "Software",
];
const SUFFIX: &[&str] = &["Inc.", "LLC", "Ltd.", "GmbH", "Co.", "S.A."];
const GOODS: &[&str] = &[
    "Copy paper A4, 80gsm (box of 5 reams)",
    "Nitrile gloves, size M (case of 1000)",
    "Laptop docking station USB-C",
    "Hydraulic hose 1/2in x 10ft",
    "Safety glasses, clear lens",
    "Printer toner cartridge black",
    "Pallet wrap 18in x 1500ft",
    "Industrial shelving unit 72in",
    "Consulting services - implementation",
    "Annual software subscription",
    "Stainless steel fasteners M8 (bag of 100)",
    "Ergonomic office chair",
];
const CITIES: &[(&str, &str, &str, &str)] = &[
    ("San Mateo", "CA", "US", "94404"),
    ("Austin", "TX", "US", "78701"),
    ("London", "", "GB", "EC1A 1BB"),
    ("Pune", "MH", "IN", "411001"),
    ("Berlin", "BE", "DE", "10115"),
    ("Toronto", "ON", "CA", "M5H 2N2"),
];
const CURRENCIES: &[(u64, &str)] = &[
    (1, "USD"),
    (1, "USD"),
    (1, "USD"),
    (2, "EUR"),
    (3, "GBP"),
    (4, "INR"),
    (5, "CAD"),
];
const UOMS: &[&str] = &["EA", "BX", "CS", "HR", "PK"];

fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs.choose(rng).copied().unwrap_or("")
}

/// Coupa's timestamp rendering: whole seconds, numeric offset.
fn ts(t: DateTime<FixedOffset>) -> Value {
    t.format("%Y-%m-%dT%H:%M:%S%:z").to_string().into()
}

/// Decimal amounts travel as strings.
fn money(x: f64) -> Value {
    format!("{x:.2}").into()
}

/// A company name that is the same wherever supplier `k` is referenced.
pub(crate) fn company(k: u64) -> String {
    let k = k.saturating_sub(1) as usize;
    let name = format!(
        "{} {} {}",
        ADJ[k % ADJ.len()],
        NOUN[(k / ADJ.len()) % NOUN.len()],
        SUFFIX[k % SUFFIX.len()]
    );
    match k / (ADJ.len() * NOUN.len()) {
        0 => name,
        n => format!("{name} {}", n + 1),
    }
}

fn user_ref(rng: &mut StdRng) -> Value {
    let n = rng.random_range(0..FIRST.len() * 2) as u64;
    let (f, l) = (
        FIRST[n as usize % FIRST.len()],
        LAST[(n as usize * 7) % LAST.len()],
    );
    json!({"id": n + 1, "login": format!("{}{}", &f[..1], l).to_lowercase(),
           "email": format!("{}.{}@example.com", f, l).to_lowercase()})
}

fn currency(rng: &mut StdRng) -> Value {
    let (id, code) = *CURRENCIES.choose(rng).expect("non-empty");
    json!({"id": id, "code": code})
}

fn account(rng: &mut StdRng) -> Value {
    let (gl, dept, cc) = (
        rng.random_range(40..70) * 100,
        rng.random_range(100..130),
        rng.random_range(10..40),
    );
    json!({"id": rng.random_range(1..500), "name": format!("{gl}-{dept}-{cc}"), "code": format!("{gl}-{dept}-{cc}"),
           "active": true, "account-type": {"id": 1, "name": "Acme Corp US"}})
}

fn address(rng: &mut StdRng) -> Map<String, Value> {
    let (city, state, country, postal) = *CITIES.choose(rng).expect("non-empty");
    json!({"street1": format!("{} {} Street", rng.random_range(1..999), pick(rng, &["Market", "Main", "Oak", "Harbor", "King"])),
           "street2": Value::Null, "city": city, "state": state, "postal-code": postal,
           "country": {"id": rng.random_range(1..250), "code": country, "name": country}})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// A supplier reference: a real supplier when the store has some, else a
/// synthetic one whose name is still stable per id.
fn supplier_ref(rng: &mut StdRng, store: &Store) -> Value {
    let table = store.table("suppliers");
    if !table.is_empty() {
        let nth = rng.random_range(0..table.len());
        if let Some(row) = table.values().nth(nth) {
            let r = &row.record;
            return json!({"id": r.get("id"), "name": r.get("name"), "number": r.get("number")});
        }
    }
    let k = rng.random_range(1..=200u64);
    json!({"id": k, "name": company(k), "number": format!("S{k:05}")})
}

/// `custom-fields` every object carries (namespaced, the R21+ default).
fn custom_fields(rng: &mut StdRng) -> Value {
    json!({
        "integration-status": pick(rng, &["pending", "pending", "synced", "error"]),
        "cost-center": format!("CC-{}", rng.random_range(100..160)),
        "erp-reference": if rng.random_bool(0.5) { Value::from(format!("ERP-{:07}", rng.random_range(0..10_000_000))) } else { Value::Null },
        "requires-review": rng.random_bool(0.2),
    })
}

/// One PO/invoice line; returns it with its amount.
fn line(
    rng: &mut StdRng,
    id: u64,
    num: u64,
    at: DateTime<FixedOffset>,
    cur: &Value,
    kind: &str,
) -> (Value, f64) {
    let qty = rng.random_range(1..40) as f64;
    let price = (rng.random_range(100..50_000) as f64) / 100.0;
    let total = qty * price;
    let v = json!({
        "id": id, "line-num": num, "type": kind, "description": pick(rng, GOODS),
        "quantity": format!("{qty:.1}"), "price": money(price), "total": money(total),
        "status": "created", "need-by-date": ts(at + Duration::days(rng.random_range(7..45))),
        "uom": {"code": pick(rng, UOMS)}, "currency": cur.clone(), "account": account(rng),
        "commodity": {"name": pick(rng, &["IT Hardware", "MRO", "Office Supplies", "Professional Services"])},
        "created-at": ts(at), "updated-at": ts(at), "custom-fields": {"gl-override": Value::Null},
    });
    (v, total)
}

/// The generated fields of a new record (everything but `id`,
/// `created-at`, `updated-at`). `at` is the creation time in the record's offset.
pub(crate) fn generate(
    spec: &ObjectSpec,
    id: u64,
    parent: Option<u64>,
    at: DateTime<FixedOffset>,
    rng: &mut StdRng,
    store: &Store,
) -> Record {
    let status = pick(rng, statuses(spec.name));
    let name = format!("{} {}", pick(rng, ADJ), pick(rng, NOUN));
    let mut v = match spec.name {
        "purchase_orders" => {
            let cur = currency(rng);
            let (mut lines, mut total) = (Vec::new(), 0.0);
            for n in 1..=rng.random_range(1..=3) {
                let (l, t) = line(rng, id * 100 + n, n, at, &cur, "OrderQuantityLine");
                lines.push(l);
                total += t;
            }
            let mut ship = address(rng);
            ship.insert("id".into(), rng.random_range(1..50).into());
            ship.insert("name".into(), "Headquarters".into());
            json!({
                "po-number": format!("{}", 10_000 + id), "status": status, "version": 1, "internal-revision": 1,
                "type": "OrderHeader", "change-type": "change", "supplier": supplier_ref(rng, store),
                "supplier-site": Value::Null, "ship-to-address": ship, "currency": cur, "total": money(total),
                "payment-term": {"id": 1, "code": pick(rng, &["Net 30", "Net 45", "Net 60"])},
                "order-lines": lines, "requisition-header": {"id": rng.random_range(1..5000)},
                "acknowledged-flag": false, "exported": false, "last-exported-at": Value::Null,
                "ship-to-user": user_ref(rng), "transmission-status": "sent_via_email",
            })
        }
        "invoices" => {
            let cur = currency(rng);
            let (mut lines, mut total) = (Vec::new(), 0.0);
            for n in 1..=rng.random_range(1..=3) {
                let (l, t) = line(rng, id * 100 + n, n, at, &cur, "InvoiceQuantityLine");
                lines.push(l);
                total += t;
            }
            json!({
                "invoice-number": format!("INV-{:06}", rng.random_range(0..1_000_000)), "invoice-date": ts(at - Duration::days(2)),
                "status": status, "document-type": if rng.random_bool(0.9) { "Invoice" } else { "Credit Note" },
                "supplier": supplier_ref(rng, store), "currency": cur, "gross-total": money(total),
                "total-with-taxes": money(total * 1.08), "invoice-lines": lines,
                "payment-term": {"id": 1, "code": "Net 30"}, "exported": false, "last-exported-at": Value::Null,
            })
        }
        "purchase_order_lines" => {
            let cur = currency(rng);
            let num = rng.random_range(1..4);
            let (mut l, _) = line(rng, id, num, at, &cur, "OrderQuantityLine");
            let header = rng.random_range(1..=store.table("purchase_orders").len().max(1) as u64);
            l["order-header-id"] = header.into();
            l["order-header-number"] = format!("{}", 10_000 + header).into();
            l["status"] = status.into();
            l
        }
        "suppliers" => {
            let mut primary = address(rng);
            primary.insert("id".into(), rng.random_range(1..5000).into());
            let contact = user_ref(rng);
            json!({
                "name": company(id), "display-name": company(id), "number": format!("S{id:05}"), "status": status,
                "po-method": pick(rng, &["email", "cxml", "prompt", "mark_as_sent", "buy_online"]),
                "po-email": format!("orders{id}@supplier.example.com"), "invoice-matching-level": pick(rng, &["2-way", "3-way", "none"]),
                "payment-term": {"id": 1, "code": "Net 30"}, "primary-address": primary,
                "primary-contact": {"email": contact["email"], "name-given": "Pat", "name-family": "Supplier"},
                "remit-to-addresses": [], "on-hold": false, "tax-id": format!("{:02}-{:07}", rng.random_range(10..99), rng.random_range(0..9_999_999)),
                "account-number": format!("AC{:06}", rng.random_range(0..999_999)),
            })
        }
        "supplier_sites" => json!({
            "code": format!("SITE-{id}"), "name": format!("{} site", pick(rng, &["Main", "East", "West", "Warehouse"])),
            "active": true, "addresses": [address(rng)], "contacts": [], "buyer-hold": false, "supplier": {"id": parent},
        }),
        "remit_to_addresses" => {
            let mut a = address(rng);
            a.extend(json!({"remit-to-code": format!("RT-{id}"), "name": "Remit to", "active": true,
                            "vat-number": Value::Null, "external-src-name": "erp", "external-src-ref": format!("R{id}")})
                .as_object().cloned().unwrap_or_default());
            a.into()
        }
        "supplier_information" => json!({
            "supplier-id": rng.random_range(1..500), "name": company(id), "display-name": company(id),
            "supplier-number": format!("S{id:05}"), "status": status, "po-method": "email",
            "supplier-information-addresses": [address(rng)],
        }),
        "supplier_items" => json!({
            "item": {"id": rng.random_range(1..500), "name": pick(rng, GOODS)}, "supplier": supplier_ref(rng, store),
            "price": money(rng.random_range(100..90_000) as f64 / 100.0), "currency": currency(rng),
            "lead-time": rng.random_range(1..30), "availability": "in_stock", "catalog": Value::Null,
        }),
        "items" => json!({
            "name": pick(rng, GOODS), "description": pick(rng, GOODS), "item-number": format!("ITM-{id:06}"), "active": true,
            "uom": {"code": pick(rng, UOMS)}, "commodity": {"name": "MRO"}, "manufacturer-name": company(id % 40 + 1),
            "manufacturer-part-number": format!("MPN-{}", rng.random_range(1000..99999)),
        }),
        "contracts" => json!({
            "name": format!("{name} MSA"), "number": format!("CT-{id:05}"), "status": status,
            "start-date": ts(at), "end-date": ts(at + Duration::days(365)), "supplier": supplier_ref(rng, store),
            "type": "MasterContract", "version": 1,
        }),
        "users" => {
            let (f, l) = (pick(rng, FIRST), pick(rng, LAST));
            json!({
                "login": format!("{}{}{id}", &f[..1], l).to_lowercase(), "email": format!("{f}.{l}{id}@example.com").to_lowercase(),
                "firstname": f, "lastname": l, "fullname": format!("{f} {l}"), "employee-number": format!("E{id:05}"),
                "active": true, "purchasing-user": true, "expense-user": rng.random_bool(0.7), "api-user": false,
                "default-locale": "en", "roles": [{"id": 1, "name": "User"}],
                // A legacy global-namespace custom field: a top-level key.
                "seg3default": format!("{}", rng.random_range(100..999)),
            })
        }
        "accounts" => {
            let a = account(rng);
            json!({"name": a["name"], "code": a["code"], "active": true, "account-type": a["account-type"], "account-type-id": 1,
                   "segment-1": a["code"].as_str().unwrap_or("").split('-').next(), "segment-2": "100", "segment-3": "20"})
        }
        "addresses" => {
            let mut a = address(rng);
            a.extend(json!({"name": name, "location-code": format!("LOC-{id}"), "attention": Value::Null, "active": true})
                .as_object().cloned().unwrap_or_default());
            a.into()
        }
        "departments" => {
            json!({"name": format!("{} {id}", pick(rng, &["Finance", "IT", "Operations", "Marketing", "Legal"])), "active": true})
        }
        "exchange_rates" => {
            let (from, to) = (pick(rng, &["EUR", "GBP", "INR", "CAD"]), "USD");
            json!({"from-currency": {"code": from}, "to-currency": {"code": to},
                   "rate": format!("{:.6}", rng.random_range(10_000..1_400_000) as f64 / 1_000_000.0), "rate-date": ts(at)})
        }
        "expense_reports" => {
            let total = rng.random_range(1_000..500_000) as f64 / 100.0;
            json!({"title": format!("Trip to {}", pick(rng, &["Austin", "London", "Pune", "Berlin"])), "status": status,
                   "total": money(total), "currency": currency(rng), "expensed-by": user_ref(rng), "submitted-at": ts(at),
                   "exported": false, "last-exported-at": Value::Null, "start-date": ts(at - Duration::days(5)),
                   "end-date": ts(at - Duration::days(2)), "expense-lines": []})
        }
        "expense_lines" => json!({
            "expense-report-id": rng.random_range(1..500), "description": pick(rng, &["Taxi", "Hotel", "Dinner", "Flight"]),
            "amount": money(rng.random_range(500..90_000) as f64 / 100.0), "expense-date": ts(at - Duration::days(3)),
            "expense-category": {"name": pick(rng, &["Travel", "Meals", "Lodging"])}, "merchant": company(id % 30 + 1),
            "status": status, "type": "ExpenseLine", "currency": currency(rng), "account": account(rng),
        }),
        "integrations" => json!({
            "code": format!("INT-{id}"), "name": format!("{name} export"), "direction": pick(rng, &["from_coupa", "to_coupa"]),
            "business-object": pick(rng, &["OrderHeader", "InvoiceHeader", "Supplier"]), "end-system": "NetSuite",
            "end-system-type": "erp", "integration-type": "api", "standard": false,
        }),
        "integration_runs" => json!({
            "integration": {"code": format!("INT-{}", rng.random_range(1..20))}, "status": status, "start-time": ts(at),
            "end-time": Value::Null, "total-records": rng.random_range(0..500), "records-processed": 0,
            "integration-errors": [], "flow": "outbound",
        }),
        "integration_errors" | "integration_history_records" => json!({
            "document-type": pick(rng, &["OrderHeader", "InvoiceHeader", "Supplier", "ExpenseReport"]),
            "document-id": rng.random_range(1..5000), "document-status": "issued", "document-revision": 1,
            "status": status, "resolved": false, "contact-alert-type": "Functional",
            "responses": [{"response-code": "E100", "response-message": "Vendor not found in ERP"}],
            "integration-run": {"id": rng.random_range(1..100)}, "integration": {"code": format!("INT-{}", rng.random_range(1..20))},
            "external-id": Value::Null, "creation-method": "api",
        }),
        "inventory_transactions" => {
            let (qty, price) = (
                rng.random_range(1..20) as f64,
                rng.random_range(100..20_000) as f64 / 100.0,
            );
            json!({"type": "InventoryReceipt", "status": status, "quantity": format!("{qty:.1}"), "price": money(price),
                   "total": money(qty * price), "transaction-date": ts(at),
                   "order-line": {"id": rng.random_range(100..500_000), "line-num": 1, "order-header-id": rng.random_range(1..5000)},
                   "item": {"id": rng.random_range(1..500), "name": pick(rng, GOODS)}, "account": account(rng),
                   "currency": currency(rng), "exported": false, "last-exported-at": Value::Null})
        }
        "lookup_values" => json!({
            "name": name, "description": name, "external-ref-num": format!("LV{id}"), "external-ref-code": format!("ROOT|LV{id}"),
            "active": true, "lookup": {"id": 1, "name": "Cost Centers"}, "lookup-id": 1, "parent": Value::Null,
            "parent-id": Value::Null, "depth": 1, "is-default": false,
        }),
        // An object the catalogue gained after this generator was written:
        // still a plausible record.
        _ => json!({"name": name, "active": true}),
    };
    let obj = v.as_object_mut().expect("generators build objects");
    obj.insert("created-by".into(), user_ref(rng));
    obj.insert("updated-by".into(), obj["created-by"].clone());
    obj.entry("custom-fields")
        .or_insert_with(|| custom_fields(rng));
    std::mem::take(obj)
}

/// A plausible edit for the change generator: a status move, new amounts,
/// or a custom-field change; never empty.
pub(crate) fn mutate(spec: &ObjectSpec, record: &Record, rng: &mut StdRng) -> Record {
    let mut patch = Map::new();
    let sts = statuses(spec.name);
    if !sts.is_empty() && rng.random_bool(0.5) {
        patch.insert("status".into(), pick(rng, sts).into());
    }
    for (lines_key, total_key) in [("order-lines", "total"), ("invoice-lines", "gross-total")] {
        let Some(Value::Array(lines)) = record.get(lines_key) else {
            continue;
        };
        if !rng.random_bool(0.4) || lines.is_empty() {
            continue;
        }
        let mut lines = lines.clone();
        let i = rng.random_range(0..lines.len());
        let qty = rng.random_range(1..40) as f64;
        let price: f64 = lines[i]["price"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or(1.0);
        lines[i]["quantity"] = format!("{qty:.1}").into();
        lines[i]["total"] = money(qty * price);
        let total: f64 = lines
            .iter()
            .filter_map(|l| l["total"].as_str()?.parse::<f64>().ok())
            .sum();
        patch.insert(lines_key.into(), lines.into());
        patch.insert(total_key.into(), money(total));
        if total_key == "gross-total" {
            patch.insert("total-with-taxes".into(), money(total * 1.08));
        }
    }
    if patch.is_empty() || rng.random_bool(0.3) {
        let mut cf = record
            .get("custom-fields")
            .cloned()
            .unwrap_or_else(|| json!({}));
        cf["integration-status"] = pick(rng, &["pending", "synced", "error"]).into();
        cf["cost-center"] = format!("CC-{}", rng.random_range(100..160)).into();
        patch.insert("custom-fields".into(), cf);
    }
    patch.insert("updated-by".into(), user_ref(rng));
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use coupa_model::objects::{lookup, CATALOGUE};

    #[test]
    fn every_object_generates_hyphenated_deterministic_records() {
        let store = Store::new(1, vec![]);
        let at = chrono::Utc::now().fixed_offset();
        for spec in CATALOGUE {
            let a = generate(spec, 3, Some(1), at, &mut rng_for(7, spec.name, 3), &store);
            let b = generate(spec, 3, Some(1), at, &mut rng_for(7, spec.name, 3), &store);
            assert_eq!(a, b, "{}", spec.name);
            assert!(
                a.contains_key("custom-fields") && a.contains_key("created-by"),
                "{}",
                spec.name
            );
            assert!(
                a.keys().all(|k| !k.contains('_') || k == "seg3default"),
                "{}: {:?}",
                spec.name,
                a.keys()
            );
        }
    }

    #[test]
    fn a_purchase_order_is_about_two_kilobytes() {
        let store = Store::new(1, vec![]);
        let at = chrono::Utc::now().fixed_offset();
        let spec = lookup("purchase_orders").unwrap();
        let sizes: Vec<usize> = (1..20)
            .map(|id| {
                serde_json::to_string(&generate(
                    spec,
                    id,
                    None,
                    at,
                    &mut rng_for(1, spec.name, id),
                    &store,
                ))
                .unwrap()
                .len()
            })
            .collect();
        let avg = sizes.iter().sum::<usize>() / sizes.len();
        assert!((1200..4000).contains(&avg), "avg PO size {avg}");
    }
}
