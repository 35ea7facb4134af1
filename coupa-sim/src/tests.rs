//! End-to-end tests of the simulator's HTTP surface: a real server on
//! 127.0.0.1 driven with reqwest, as the daemon will drive it.

use std::time::Duration;

use chrono::{FixedOffset, SubsecRound};
use reqwest::header::{HeaderMap, ACCEPT, DATE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::*;

const KEY: &str = "test-api-key";

pub(super) async fn start(tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut cfg = SimConfig {
        api_key: Some(KEY.into()),
        rate_limit: None,
        oauth_clients: vec![OAuthClient {
            client_id: "cid".into(),
            client_secret: "secret".into(),
            scopes: vec!["core.invoice.read".into(), "core.supplier.read".into()],
        }],
        ..SimConfig::default()
    };
    tweak(&mut cfg);
    Simulator::start(cfg).await.unwrap()
}

/// GET with the API key and `Accept: application/json`.
pub(super) async fn get(sim: &Simulator, path_and_query: &str) -> (StatusCode, HeaderMap, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path_and_query}", sim.base_url()))
        .header("X-COUPA-API-KEY", KEY)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("a bare JSON array")
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

/// Percent-encodes a query value the way a careful client does.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn every_filter_operator() {
    let sim = start(|_| {}).await;
    let base = sim.now().trunc_subsecs(0) - chrono::Duration::hours(1);
    for (i, (status, number)) in [
        ("approved", "INV-1"),
        ("voided", "INV-22"),
        ("draft", "X-3"),
        ("approved", "INV-4"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = (base + chrono::Duration::minutes(i as i64)).to_rfc3339();
        sim.create("invoices", json!({"status": status, "invoice-number": number, "updated-at": at, "gross-total": format!("{}.50", (i + 1) * 100)}));
    }
    sim.update("invoices", 3, json!({"last-exported-at": null}));
    let t1 = enc(&(base + chrono::Duration::minutes(1))
        .with_timezone(&FixedOffset::east_opt(5 * 3600 + 1800).unwrap())
        .to_rfc3339());
    let cases: Vec<(String, Vec<u64>)> = vec![
        ("status=approved".into(), vec![1, 4]),
        ("status[not_eq]=approved".into(), vec![2, 3]),
        ("status[in]=voided,draft".into(), vec![2, 3]),
        ("status[not_in]=voided,draft".into(), vec![1, 4]),
        ("invoice_number[contains]=NV-2".into(), vec![2]),
        ("invoice-number[starts_with]=INV".into(), vec![1, 2, 4]),
        ("invoice_number[ends_with]=-3".into(), vec![3]),
        ("gross_total[gt]=200.5".into(), vec![3, 4]),
        ("gross_total[gt_or_eq]=200.5".into(), vec![2, 3, 4]),
        ("gross_total[lt]=200.5".into(), vec![1]),
        ("gross_total[lt_or_eq]=200.5".into(), vec![1, 2]),
        ("id[gt]=2".into(), vec![3, 4]),
        (format!("updated_at[gt]={t1}"), vec![3, 4]),
        (format!("updated_at[lt_or_eq]={t1}"), vec![1, 2]),
        (
            format!(
                "created_at[gt_or_eq]={}",
                enc(&base.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            ),
            vec![1, 2, 3, 4],
        ),
        ("updated_at[gt]=2000-01-01".into(), vec![1, 2, 3, 4]),
        ("last_exported_at[blank]=true".into(), vec![1, 2, 3, 4]),
        ("status[blank]=false".into(), vec![1, 2, 3, 4]),
        ("status=approved&id[gt]=1".into(), vec![4]),
        ("supplier[name][blank]=false".into(), vec![1, 2, 3, 4]),
        (
            "fields=[\"id\"]&return_object=shallow&status=voided".into(),
            vec![2],
        ),
    ];
    for (q, want) in cases {
        let (status, _, body) = get(&sim, &format!("/api/invoices?{q}")).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(ids(&body), want, "{q}");
    }
    // An unencoded `+` arrives as a space: a clear 400, not silent nothing.
    let (status, _, body) = get(
        &sim,
        "/api/invoices?updated_at[gt]=2026-01-01T00:00:00+05:30",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // fields= selects top-level keys, keeping Coupa's spelling.
    let (_, _, body) = get(
        &sim,
        "/api/invoices?fields=%5B%22id%22%2C%22invoice_number%22%5D&id=1",
    )
    .await;
    assert_eq!(body, json!([{"id": 1, "invoice-number": "INV-1"}]));
}

#[tokio::test]
async fn pages_are_bare_arrays_of_at_most_fifty_then_empty() {
    let sim = start(|c| c.initial_records = 60).await;
    let (status, headers, page) = get(&sim, "/api/purchase_orders?limit=500").await;
    assert_eq!(status, 200);
    assert!(headers[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        ids(&page),
        (1..=50).collect::<Vec<_>>(),
        "default order is ascending id, clamped to 50"
    );
    let (_, _, page) = get(&sim, "/api/purchase_orders?offset=50").await;
    assert_eq!(ids(&page), (51..=60).collect::<Vec<_>>());
    let (_, _, page) = get(&sim, "/api/purchase_orders?offset=60").await;
    assert_eq!(page, json!([]));
    let (_, _, page) = get(&sim, "/api/purchase_orders?limit=3&order_by=id&dir=desc").await;
    assert_eq!(ids(&page), vec![60, 59, 58]);
    // Records look like Coupa's: hyphenated keys, decimal strings, offsets.
    let po = &page[0];
    assert!(
        po["po-number"].is_string() && po["order-lines"].as_array().is_some_and(|l| !l.is_empty())
    );
    assert!(po["total"].as_str().unwrap().contains('.'));
    assert!(po["updated-at"].as_str().unwrap().ends_with("-07:00"));
    // Single record: a bare object, or a Coupa-style 404.
    let (status, _, one) = get(&sim, "/api/purchase_orders/7").await;
    assert_eq!((status, one["id"].as_u64()), (StatusCode::OK, Some(7)));
    let (status, _, body) = get(&sim, "/api/purchase_orders/999").await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"errors": {"purchase_order": ["not found"]}}));
}

#[tokio::test]
async fn nested_objects_live_under_their_parent() {
    let sim = start(|c| c.initial_records = 3).await;
    let site = sim.create("supplier_sites", json!({"_parent_id": 2, "code": "MINE"}));
    let (_, _, page) = get(&sim, "/api/suppliers/2/supplier_sites").await;
    assert!(ids(&page).contains(&site["id"].as_u64().unwrap()));
    let (_, _, other) = get(&sim, "/api/suppliers/1/supplier_sites").await;
    assert!(!ids(&other).contains(&site["id"].as_u64().unwrap()));
    let (status, _, _) = get(
        &sim,
        &format!("/api/suppliers/1/supplier_sites/{}", site["id"]),
    )
    .await;
    assert_eq!(status, 404, "a child is only visible under its own parent");
    let (status, _, addrs) = get(&sim, "/api/suppliers/3/addresses").await;
    assert_eq!(status, 200);
    assert!(
        !addrs.as_array().unwrap().is_empty(),
        "seeded remit-to addresses"
    );
    assert_eq!(get(&sim, "/api/nonsense").await.0, 404);
}

#[tokio::test]
async fn offset_paging_over_a_moving_set_skips_a_record() {
    let sim = start(|_| {}).await;
    let t0 = sim.now().trunc_subsecs(0) - chrono::Duration::minutes(10);
    for _ in 0..6 {
        sim.create("suppliers", json!({"updated-at": t0.to_rfc3339()}));
    }
    let window = format!(
        "updated_at[lt_or_eq]={}&limit=3",
        enc(&(t0 + chrono::Duration::minutes(1)).to_rfc3339())
    );
    let (_, _, first) = get(&sim, &format!("/api/suppliers?{window}")).await;
    assert_eq!(ids(&first), vec![1, 2, 3]);
    // Record 2 is edited: it leaves the window, so every later record shifts left.
    sim.update("suppliers", 2, json!({"status": "inactive"}));
    let (_, _, second) = get(&sim, &format!("/api/suppliers?{window}&offset=3")).await;
    assert_eq!(
        ids(&second),
        vec![5, 6],
        "record 4 slid into the first page and is skipped"
    );
    // Paging by id instead does not skip.
    let (_, _, by_id) = get(&sim, &format!("/api/suppliers?{window}&id[gt]=3")).await;
    assert_eq!(ids(&by_id), vec![4, 5, 6]);
}

#[tokio::test]
async fn date_header_follows_the_sim_clock() {
    let sim = start(|c| c.clock_offset = chrono::Duration::minutes(-7)).await;
    let date_of = |h: &HeaderMap| {
        let t = httpdate::parse_http_date(h[DATE].to_str().unwrap()).unwrap();
        chrono::DateTime::<chrono::Utc>::from(t)
    };
    let (_, h, _) = get(&sim, "/api/invoices").await;
    let skew = chrono::Utc::now() - date_of(&h);
    assert!(
        (skew - chrono::Duration::minutes(7)).num_seconds().abs() <= 2,
        "{skew}"
    );
    // Errors too, and the clock moves at run time.
    sim.set_clock_offset(chrono::Duration::hours(3));
    let (status, h, _) = get(&sim, "/api/purchase_orders/1").await;
    assert_eq!(status, 404);
    let ahead = date_of(&h) - chrono::Utc::now();
    assert!(
        (ahead - chrono::Duration::hours(3)).num_seconds().abs() <= 2,
        "{ahead}"
    );
    // Created records use the sim clock's whole seconds.
    let r = sim.create("invoices", json!({}));
    let t = coupa_model::record::parse_timestamp(r["created-at"].as_str().unwrap()).unwrap();
    assert!((t - sim.now()).num_seconds().abs() <= 1);
    assert_eq!(r["created-at"], r["updated-at"]);
}

#[tokio::test]
async fn oauth_tokens_scopes_expiry_and_revocation() {
    let sim = start(|c| c.token_ttl = Duration::from_millis(400)).await;
    let http = reqwest::Client::new();
    let token_url = format!("{}/oauth2/token", sim.base_url());
    let mint = |form: Vec<(&'static str, &'static str)>| http.post(&token_url).form(&form).send();

    let bad = mint(vec![
        ("grant_type", "client_credentials"),
        ("client_id", "cid"),
        ("client_secret", "nope"),
    ])
    .await
    .unwrap();
    assert_eq!(bad.status(), 401);
    assert_eq!(
        bad.json::<Value>().await.unwrap(),
        json!({"error": "invalid_client"})
    );
    let scope = mint(vec![
        ("grant_type", "client_credentials"),
        ("client_id", "cid"),
        ("client_secret", "secret"),
        ("scope", "core.invoice.read core.user.read"),
    ])
    .await
    .unwrap();
    assert_eq!(scope.status(), 400);
    assert_eq!(
        scope.json::<Value>().await.unwrap(),
        json!({"error": "invalid_scope"})
    );

    // HTTP Basic credentials, one scope.
    let ok: Value = http
        .post(&token_url)
        .basic_auth("cid", Some("secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "core.invoice.read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            ok["token_type"].as_str(),
            ok["expires_in"].as_u64(),
            ok["scope"].as_str()
        ),
        (Some("bearer"), Some(0), Some("core.invoice.read"))
    );
    let token = ok["access_token"].as_str().unwrap().to_string();
    let call = |path: &str, token: &str| {
        http.get(format!("{}{path}", sim.base_url()))
            .bearer_auth(token)
            .header(ACCEPT, "application/json")
            .send()
    };
    assert_eq!(call("/api/invoices", &token).await.unwrap().status(), 200);
    assert_eq!(
        call("/api/suppliers", &token).await.unwrap().status(),
        403,
        "token lacks core.supplier.read"
    );
    assert_eq!(
        call("/api/invoices", "made-up").await.unwrap().status(),
        401
    );
    let none = http
        .get(format!("{}/api/invoices", sim.base_url()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let xml = http
        .get(format!("{}/api/invoices", sim.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), 406, "no Accept: application/json");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        call("/api/invoices", &token).await.unwrap().status(),
        401,
        "expired"
    );

    // No scope parameter: every granted scope. Then revocation.
    let all: Value = mint(vec![
        ("grant_type", "client_credentials"),
        ("client_id", "cid"),
        ("client_secret", "secret"),
    ])
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(all["scope"], "core.invoice.read core.supplier.read");
    let token = all["access_token"].as_str().unwrap().to_string();
    assert_eq!(call("/api/suppliers", &token).await.unwrap().status(), 200);
    sim.revoke_tokens();
    assert_eq!(call("/api/suppliers", &token).await.unwrap().status(), 401);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_only_if_asked() {
    let limit = Some(RateLimit {
        // Slow enough that a loaded machine still sends 5 requests in one slot.
        per_second: 1.0,
        burst: 3,
    });
    let sim = start(|c| c.rate_limit = limit).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (s, h, _) = get(&sim, "/api/invoices").await;
        statuses.push((s.as_u16(), h.contains_key("retry-after")));
    }
    assert_eq!(
        statuses,
        vec![
            (200, false),
            (200, false),
            (200, false),
            (429, false),
            (429, false)
        ]
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&sim, "/api/invoices").await.0, 200, "drains at 1/s");
    sim.shutdown().await;

    let sim = start(|c| {
        c.rate_limit = limit;
        c.retry_after_on_429 = true;
    })
    .await;
    for _ in 0..3 {
        get(&sim, "/api/invoices").await;
    }
    let (s, h, _) = get(&sim, "/api/invoices").await;
    assert_eq!(
        (
            s.as_u16(),
            h.get("retry-after").map(|v| v.to_str().unwrap())
        ),
        (429, Some("1"))
    );
    let log = sim.requests();
    assert_eq!(log.len(), 4, "429s are logged too");
    assert_eq!(log[3].status, 429);
}

#[tokio::test]
async fn each_fault_kind() {
    let sim = start(|c| c.initial_records = 10).await;
    // Status, counted down, with Retry-After and a custom body.
    sim.inject(FaultRule {
        fault: Fault::Status {
            status: 503,
            retry_after: Some("2".into()),
            body: Some("<html>down</html>".into()),
        },
        times: 2,
        path_contains: Some("purchase_orders".into()),
    });
    assert_eq!(get(&sim, "/api/invoices").await.0, 200, "path filter");
    for _ in 0..2 {
        let (s, h, body) = get(&sim, "/api/purchase_orders").await;
        assert_eq!((s.as_u16(), h["retry-after"].to_str().unwrap()), (503, "2"));
        assert_eq!(body, Value::String("<html>down</html>".into()));
    }
    assert_eq!(
        get(&sim, "/api/purchase_orders").await.0,
        200,
        "spent after 2"
    );

    // TrimPage: a short page although more match.
    sim.inject(FaultRule::times(Fault::TrimPage { max: 4 }, 1));
    assert_eq!(
        ids(&get(&sim, "/api/purchase_orders").await.2),
        vec![1, 2, 3, 4]
    );
    assert_eq!(ids(&get(&sim, "/api/purchase_orders").await.2).len(), 10);

    // MalformedJson: 200 with a body that does not parse.
    sim.inject(FaultRule::times(Fault::MalformedJson, 1));
    let (s, _, body) = get(&sim, "/api/purchase_orders").await;
    assert_eq!(s, 200);
    assert!(
        matches!(body, Value::String(ref t) if t.starts_with("[{")),
        "{body}"
    );

    // HtmlPage.
    sim.inject(FaultRule::times(Fault::HtmlPage, 1));
    let (s, h, _) = get(&sim, "/api/purchase_orders").await;
    assert_eq!(
        (s.as_u16(), h["content-type"].to_str().unwrap()),
        (200, "text/html; charset=utf-8")
    );

    // ResetConnection: headers arrive, the body breaks off.
    sim.inject(FaultRule::times(Fault::ResetConnection, 1));
    let resp = reqwest::Client::new()
        .get(format!("{}/api/purchase_orders", sim.base_url()))
        .header("X-COUPA-API-KEY", KEY)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "body must fail mid-way");

    // Delay: the client's timeout fires.
    sim.inject(FaultRule::times(
        Fault::Delay(Duration::from_millis(800)),
        1,
    ));
    let slow = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .get(format!("{}/api/purchase_orders", sim.base_url()))
        .header("X-COUPA-API-KEY", KEY)
        .header(ACCEPT, "application/json")
        .send()
        .await;
    assert!(slow.is_err_and(|e| e.is_timeout()));

    // Blanket rules spare the token endpoint; clear_faults ends "forever" rules.
    sim.inject(FaultRule::always(Fault::Status {
        status: 500,
        retry_after: None,
        body: None,
    }));
    let tok = reqwest::Client::new()
        .post(format!("{}/oauth2/token", sim.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "cid"),
            ("client_secret", "secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tok.status(), 200);
    assert_eq!(get(&sim, "/api/invoices").await.0, 500);
    sim.clear_faults();
    assert_eq!(get(&sim, "/api/invoices").await.0, 200);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(|_| {}).await;
    let base = sim.base_url();
    sim.shutdown().await;
    assert!(reqwest::Client::new()
        .get(format!("{base}/api/invoices"))
        .send()
        .await
        .is_err());
}
