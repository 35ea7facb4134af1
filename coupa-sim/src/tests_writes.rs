//! The simulator's write side over real HTTP: routes per the catalogue,
//! write scopes, Coupa's error shape, the PO and integration-run state
//! machines, custom fields, `exported`, `return_object`, and that every
//! accepted write is a new version.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::*;

const KEY: &str = "test-api-key";

async fn start() -> Simulator {
    Simulator::start(SimConfig {
        api_key: Some(KEY.into()),
        rate_limit: None,
        oauth_clients: vec![OAuthClient {
            client_id: "reader".into(),
            client_secret: "secret".into(),
            scopes: vec!["core.purchase_order.read".into()],
        }],
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// A JSON request with the API key; `body: None` sends no body.
async fn call(
    sim: &Simulator,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.base_url()))
        .header("X-COUPA-API-KEY", KEY)
        .header(ACCEPT, "application/json");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn issued_po(sim: &Simulator) -> u64 {
    sim.create("purchase_orders", json!({"status": "issued"}))["id"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn post_creates_with_201_and_put_updates_each_a_version() {
    let sim = start().await;
    let (status, created) = call(
        &sim,
        Method::POST,
        "/api/departments",
        Some(json!({"name": "Treasury", "custom_fields": {"erp-code": "T1"}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "Treasury");
    assert_eq!(created["custom-fields"], json!({"erp-code": "T1"}));
    assert_eq!(created["created-at"], created["updated-at"]);
    let ts = created["updated-at"].as_str().unwrap();
    assert!(ts.ends_with("-07:00"), "Coupa-style offset: {ts}");

    sim.set_clock_offset(chrono::Duration::seconds(3));
    let (status, updated) = call(
        &sim,
        Method::PUT,
        "/api/departments/1",
        Some(json!({"active": false, "updated-at": "2000-01-01T00:00:00Z", "id": 9})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["active"], false);
    assert_eq!(updated["id"], 1, "server-set keys are not the caller's");
    assert_ne!(updated["updated-at"], created["updated-at"]);
    assert_ne!(updated["updated-at"], "2000-01-01T00:00:00Z");
    let versions = sim.versions("departments");
    assert_eq!(versions.len(), 2);
    assert!(versions[1].updated_at > versions[0].updated_at);
}

#[tokio::test]
async fn validation_errors_are_coupa_shaped_and_change_nothing() {
    let sim = start().await;
    sim.create("suppliers", json!({"name": "Acme", "number": "S1"}));
    let (status, body) = call(
        &sim,
        Method::POST,
        "/api/suppliers",
        Some(json!({"name": "Acme", "number": "S1"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"errors": {"supplier": ["Name has already been taken", "Number has already been taken"]}})
    );
    let (status, body) = call(&sim, Method::POST, "/api/users", Some(json!({}))).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"errors": {"user": ["Login can't be blank", "Email can't be blank"]}})
    );
    let (status, body) = call(
        &sim,
        Method::POST,
        "/api/purchase_orders",
        Some(json!({"po-number": "X1", "supplier": {"id": 1}})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["errors"]["purchase_order"][0]
        .as_str()
        .unwrap()
        .contains("ExternalOrderHeader"));
    assert_eq!(sim.versions("suppliers").len(), 1);
    assert!(sim.versions("users").is_empty());
}

#[tokio::test]
async fn po_state_machine_and_legacy_flags() {
    let sim = start().await;
    let po = issued_po(&sim);
    let (status, closed) = call(
        &sim,
        Method::PUT,
        &format!("/api/purchase_orders/{po}/close"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["status"], "closed");
    let (status, body) = call(
        &sim,
        Method::PUT,
        &format!("/api/purchase_orders/{po}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"errors": {"purchase_order": [format!("Cannot cancel purchase order {po}: status closed cannot change to cancelled")]}})
    );
    let (status, reopened) = call(
        &sim,
        Method::PUT,
        &format!("/api/purchase_orders/{po}/reopen"),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), &reopened["status"]),
        (200, &json!("issued"))
    );
    // The older form: a body flag on a plain PUT.
    let (status, cancelled) = call(
        &sim,
        Method::PUT,
        &format!("/api/purchase_orders/{po}"),
        Some(json!({"_cancel": true})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), &cancelled["status"]),
        (200, &json!("cancelled"))
    );
    // A status is changed only by the actions.
    let (status, body) = call(
        &sim,
        Method::PUT,
        &format!("/api/purchase_orders/{po}"),
        Some(json!({"status": "issued"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let revisions: Vec<u64> = sim
        .versions("purchase_orders")
        .iter()
        .map(|v| v.record["internal-revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [1, 2, 3, 4], "each accepted write is a revision");
}

#[tokio::test]
async fn integration_runs_move_through_their_statuses() {
    let sim = start().await;
    sim.create(
        "integrations",
        json!({"code": "ERP-PO", "name": "PO export"}),
    );
    let (status, run) = call(
        &sim,
        Method::POST,
        "/api/integration_runs",
        Some(json!({"integration": {"code": "ERP-PO"}, "status": "successful"})),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(
        run["status"], "pending",
        "created pending whatever the body says"
    );
    let (status, running) = call(
        &sim,
        Method::PUT,
        "/api/integration_runs/1/run",
        Some(json!({"total_records": 12})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(running["status"], "running");
    assert_eq!(running["total-records"], 12);
    assert!(running["start-time"].is_string());
    let (_, done) = call(&sim, Method::PUT, "/api/integration_runs/1/success", None).await;
    assert_eq!(done["status"], "successful");
    assert!(done["end-time"].is_string());
    let (status, body) = call(&sim, Method::PUT, "/api/integration_runs/1/fail", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        &sim,
        Method::POST,
        "/api/integration_runs",
        Some(json!({"integration": {"code": "NOPE"}})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"errors": {"integration_run": ["Integration code \"NOPE\" matches no integration"]}})
    );
}

#[tokio::test]
async fn integration_errors_alert_and_resolve_once() {
    let sim = start().await;
    let (status, err) = call(
        &sim,
        Method::POST,
        "/api/integration_errors/create_alert",
        Some(json!({"document-type": "OrderHeader", "document-id": 4})),
    )
    .await;
    assert_eq!(status, 201, "{err}");
    assert_eq!(err["resolved"], false);
    assert_eq!(err["alert-sent"], true);
    let (status, r) = call(&sim, Method::PUT, "/api/integration_errors/1/resolve", None).await;
    assert_eq!((status.as_u16(), &r["resolved"]), (200, &json!(true)));
    let (status, _) = call(&sim, Method::PUT, "/api/integration_errors/1/resolve", None).await;
    assert_eq!(status, 400);
    let (status, r) = call(
        &sim,
        Method::PUT,
        "/api/integration_errors/1/unresolve",
        None,
    )
    .await;
    assert_eq!((status.as_u16(), &r["resolved"]), (200, &json!(false)));
}

#[tokio::test]
async fn routes_follow_the_catalogue() {
    let sim = start().await;
    sim.create("purchase_order_lines", json!({}));
    for (method, path) in [
        (Method::POST, "/api/purchase_order_lines"),
        (Method::PUT, "/api/purchase_order_lines/1"),
        (Method::PUT, "/api/purchase_orders/1/explode"),
        (Method::POST, "/api/suppliers/create_alert"),
        (Method::POST, "/api/nonsense"),
    ] {
        let (status, body) = call(&sim, method.clone(), path, Some(json!({}))).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(body["errors"]["base"][0]
            .as_str()
            .unwrap()
            .starts_with("No route matches"));
    }
    // A catalogue action the sim does not model still makes a version.
    let (status, _) = call(
        &sim,
        Method::PUT,
        "/api/purchase_order_lines/1/soft_close_for_receiving",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sim.versions("purchase_order_lines").len(), 2);
    let (status, _) = call(&sim, Method::PUT, "/api/purchase_orders/77/close", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn nested_writes_need_their_parent() {
    let sim = start().await;
    let supplier = sim.create("suppliers", json!({"name": "A"}))["id"]
        .as_u64()
        .unwrap();
    let (status, addr) = call(
        &sim,
        Method::POST,
        &format!("/api/suppliers/{supplier}/addresses"),
        Some(json!({"remit-to-code": "RT-9", "street1": "1 Main St", "city": "Austin"})),
    )
    .await;
    assert_eq!(status, 201, "{addr}");
    let (status, page) = call(
        &sim,
        Method::GET,
        &format!("/api/suppliers/{supplier}/addresses"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page.as_array().unwrap().len(), 1);
    let (status, body) = call(&sim, Method::GET, "/api/suppliers/99/addresses", None).await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"errors": {"supplier": ["not found"]}}));
    let (status, _) = call(
        &sim,
        Method::PUT,
        "/api/suppliers/99/addresses/1",
        Some(json!({"city": "x"})),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn writes_need_the_write_scope_json_and_honour_return_object() {
    let sim = start().await;
    let po = issued_po(&sim);
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/oauth2/token", sim.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "reader"),
            ("client_secret", "secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = http
        .put(format!("{}/api/purchase_orders/{po}/close", sim.base_url()))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("core.purchase_order.write"));

    let resp = http
        .put(format!("{}/api/purchase_orders/{po}", sim.base_url()))
        .header("X-COUPA-API-KEY", KEY)
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/xml")
        .body("<order-header/>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);

    let (status, body) = call(
        &sim,
        Method::PUT,
        &format!("/api/purchase_orders/{po}?exported=true&return_object=limited"),
        Some(json!({"po-number": "ignored"})),
    )
    .await;
    assert_eq!((status.as_u16(), body), (200, json!({"id": po})));
    let rec = sim.get("purchase_orders", po).unwrap();
    assert_eq!(rec["exported"], true);
    assert!(rec["last-exported-at"].is_string());
    assert_ne!(
        rec["po-number"], "ignored",
        "other changes beside exported are ignored"
    );

    let (status, body) = call(
        &sim,
        Method::PUT,
        &format!("/api/purchase_orders/{po}?return_object=none"),
        Some(json!({"custom-fields": {"erp-reference": "E1"}})),
    )
    .await;
    assert_eq!((status.as_u16(), body), (200, json!("")));
    let (_, body) = call(
        &sim,
        Method::PUT,
        &format!(
            "/api/purchase_orders/{po}?fields=%5B%22id%22%2C%7B%22custom_fields%22%3A%7B%7D%7D%5D"
        ),
        Some(json!({})),
    )
    .await;
    assert_eq!(body["custom-fields"]["erp-reference"], "E1");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn a_response_lost_after_handling_still_wrote() {
    let sim = start().await;
    sim.inject(FaultRule::times(
        Fault::StatusAfterHandling { status: 500 },
        1,
    ));
    let (status, _) = call(
        &sim,
        Method::POST,
        "/api/departments",
        Some(json!({"name": "X"})),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        sim.versions("departments").len(),
        1,
        "the write took effect"
    );
}
