//! The simulator's ground truth and admin side over real HTTP: the version
//! log, the change generator, and the `/_sim/` endpoints driving the same
//! operations as the in-process handle. Helpers are `tests.rs`'s.

use std::time::Duration;

use chrono::{FixedOffset, SubsecRound};
use serde_json::{json, Value};

use super::tests::{get, start};
use super::*;

#[tokio::test]
async fn version_log_is_the_ground_truth() {
    let sim = start(|c| {
        c.utc_offsets = vec![
            FixedOffset::west_opt(7 * 3600).unwrap(),
            FixedOffset::east_opt(5 * 3600 + 1800).unwrap(),
        ];
    })
    .await;
    let a = sim.create("purchase_orders", json!({"po_number": "A1"}));
    assert_eq!(
        a["po-number"], "A1",
        "caller keys are hyphenated to the record's spelling"
    );
    let b = sim.create("purchase_orders", json!({}));
    assert!(a["updated-at"].as_str().unwrap().ends_with("-07:00"));
    assert!(
        b["updated-at"].as_str().unwrap().ends_with("+05:30"),
        "offsets rotate per record"
    );
    // A late commit: visible now, stamped in the past.
    let past = sim.now().trunc_subsecs(0) - chrono::Duration::minutes(30);
    let late = sim.create("purchase_orders", json!({"updated-at": past.to_rfc3339()}));
    assert_eq!(late["id"], 3);
    let updated = sim
        .update("purchase_orders", 1, json!({"status": "closed"}))
        .unwrap();
    assert_eq!(updated["internal-revision"], 2);
    assert!(sim.update("purchase_orders", 99, json!({})).is_none());

    let v = sim.versions("purchase_orders");
    assert_eq!(v.iter().map(|v| v.id).collect::<Vec<_>>(), vec![1, 2, 3, 1]);
    assert!(v[0].superseded_at.is_some() && v[3].superseded_at.is_none());
    assert_eq!(v[2].updated_at, past);
    assert_eq!(
        v[2].created_at, past,
        "a late create is created when it claims"
    );
    assert!(v[2].appeared_at > past + chrono::Duration::minutes(29));
    assert_eq!(*v[3].record, sim.get("purchase_orders", 1).unwrap());
    assert_eq!(v[3].record["status"], "closed");
    assert!(sim.versions("invoices").is_empty());
}

#[tokio::test]
async fn change_generator_makes_versions() {
    let sim = start(|c| {
        c.initial_records = 2;
        c.change_rate = 200.0;
        c.change_objects = vec!["invoices".into(), "supplier_sites".into()];
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.set_change_rate(0.0);
    let n = sim.versions("invoices").len() + sim.versions("supplier_sites").len();
    assert!(n > 20, "only {n} versions");
    assert!(
        sim.versions("invoices")
            .iter()
            .any(|v| v.superseded_at.is_some()),
        "some updates"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let settled = sim.versions("invoices").len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.versions("invoices").len(), settled, "rate 0 stops it");
}

#[tokio::test]
async fn admin_endpoints_drive_the_same_operations() {
    let sim = start(|_| {}).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/_sim/{p}", sim.base_url());
    let created: Value = http
        .post(url("records/invoices"))
        .json(&json!({"status": "draft"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["id"], 1);
    let patched: Value = http
        .patch(url("records/invoices/1"))
        .json(&json!({"status": "approved"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["status"], "approved");
    let missing = http
        .post(url("records/supplier_sites"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400, "nested objects need _parent_id");
    assert_eq!(
        http.post(url("records/nope"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let versions: Vec<Version> = http
        .get(url("versions/invoices"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);

    let rule = FaultRule::times(
        Fault::Status {
            status: 502,
            retry_after: None,
            body: None,
        },
        1,
    );
    assert!(http
        .post(url("faults"))
        .json(&rule)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    assert_eq!(get(&sim, "/api/invoices").await.0, 502);
    http.post(url("faults"))
        .json(&FaultRule::always(Fault::HtmlPage))
        .send()
        .await
        .unwrap();
    http.delete(url("faults")).send().await.unwrap();
    assert_eq!(get(&sim, "/api/invoices").await.0, 200);

    let clock: Value = http
        .put(url("clock"))
        .json(&json!({"offset_seconds": 600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clock["offset_seconds"], 600);
    assert!(
        (sim.now() - chrono::Utc::now() - chrono::Duration::minutes(10))
            .num_seconds()
            .abs()
            <= 1
    );

    let s: Value = http
        .put(url("settings"))
        .json(&json!({"latency_ms": 5, "change_rate": 0.0, "no_rate_limit": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (s["latency_ms"].as_u64(), s["no_rate_limit"].as_bool()),
        (Some(5), Some(true))
    );

    let log: Vec<RequestLog> = http
        .get(url("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![502, 200],
        "admin calls are not logged"
    );
    assert_eq!(log[0].path, "/api/invoices");
    assert!(log[0].at <= log[1].at);
    assert!(http
        .post(url("revoke_tokens"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
}
