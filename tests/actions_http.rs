//! The write-back actions through the daemon's HTTP API: the shared case
//! table against a whole daemon per case (each on a fresh simulator), the
//! HTTP status of every failure, refusals across the catalogue, the
//! bearer token (missing, wrong, right), the API's absence without a
//! token (and the log saying so), the generated OpenAPI document against
//! the routes, a search that fails midway, and the `[api]` settings.

#[path = "common/actions_cases.rs"]
mod actions_cases;
#[path = "common/actions_exec.rs"]
mod actions_exec;
mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use actions_cases::{cases, seed, Act, Outcome};
use actions_exec::{error_outcome, unreadable};
use common::{free_port, sim_config, wait_for, Daemon, TestConfig};
use coupa_changefeed::config::Settings;
use coupa_changefeed::coupa::actions::Target;
use coupa_changefeed::coupa::body::ErrorEnvelope;
use coupa_changefeed::coupa::objects::CATALOGUE;
use coupa_changefeed::sim::{Fault, FaultRule, Simulator};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const LIMIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "test-api-token-3f9a1c7e5b";

/// Every route of the API, as the OpenAPI document must list them.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/openapi.json"),
    ("get", "/v1/objects/{object}"),
    ("post", "/v1/objects/{object}"),
    ("get", "/v1/objects/{object}/{id}"),
    ("put", "/v1/objects/{object}/{id}"),
    ("post", "/v1/objects/{object}/{id}/mark_exported"),
    ("post", "/v1/objects/{object}/{id}/{action}"),
    ("get", "/v1/suppliers/{supplier_id}/{object}"),
    ("post", "/v1/suppliers/{supplier_id}/{object}"),
    ("get", "/v1/suppliers/{supplier_id}/{object}/{id}"),
    ("put", "/v1/suppliers/{supplier_id}/{object}/{id}"),
    (
        "post",
        "/v1/suppliers/{supplier_id}/{object}/{id}/mark_exported",
    ),
    ("post", "/v1/suppliers/{supplier_id}/{object}/{id}/{action}"),
    ("post", "/v1/purchase_orders/{id}/close"),
    ("post", "/v1/purchase_orders/{id}/cancel"),
    ("post", "/v1/integration_runs"),
    ("put", "/v1/integration_runs/{id}/status"),
    ("post", "/v1/integration_errors"),
    ("post", "/v1/integration_history_records"),
    ("post", "/v1/http"),
];

/// A route template with sample values filled in.
fn fill(template: &str) -> String {
    template
        .replace("{object}", "purchase_orders")
        .replace("{supplier_id}", "1")
        .replace("{id}", "1")
        .replace("{action}", "close")
}

/// A seeded simulator and a daemon over it, its API on when `token` is.
/// The daemon polls one small object once, at start (its schedule next
/// fires on a 29 February): the cases then own the simulator's request log.
struct Rig {
    sim: Simulator,
    daemon: Daemon,
    base: String,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(token: Option<&str>) -> Rig {
        let sim = Simulator::start(sim_config()).await.unwrap();
        seed(&sim);
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
            .objects(&["integrations"])
            .poll("schedule = \"0 0 0 29 2 *\"")
            .file_sink(&dir.path().join("events.jsonl"))
            .raw("[delivery]\nshutdown_timeout = \"2s\"");
        if let Some(t) = token {
            cfg = cfg.raw(&format!("[api]\ntoken = \"{t}\""));
        }
        let daemon = Daemon::start(&cfg.settings());
        let status = daemon.handles.pollers["integrations"].clone();
        wait_for("the daemon's first poll", LIMIT, || {
            status.lock().unwrap().last_poll.is_some()
        })
        .await;
        let base = format!("http://{}", daemon.handles.server_addr.unwrap());
        Rig {
            sim,
            daemon,
            base,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.daemon.stop().await.unwrap();
        self.sim.shutdown().await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(LIMIT).build().unwrap()
}

/// One request of the API: the route it uses and what it sends.
struct Call {
    method: Method,
    template: &'static str,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
}

/// The route and request for an act.
fn call_for(act: &Act) -> Call {
    let call = |method: Method, template: &'static str, path: String, body: Option<Value>| Call {
        method,
        template,
        path,
        query: Vec::new(),
        body,
    };
    // `(template, path)` of a target's collection, top-level or nested.
    let coll = |t: &Target| match t.parent {
        None => ("/v1/objects/{object}", format!("/v1/objects/{}", t.object)),
        Some(p) => (
            "/v1/suppliers/{supplier_id}/{object}",
            format!("/v1/suppliers/{p}/{}", t.object),
        ),
    };
    let one = |t: &Target, id: u64| match t.parent {
        None => (
            "/v1/objects/{object}/{id}",
            format!("/v1/objects/{}/{id}", t.object),
        ),
        Some(p) => (
            "/v1/suppliers/{supplier_id}/{object}/{id}",
            format!("/v1/suppliers/{p}/{}/{id}", t.object),
        ),
    };
    match act {
        Act::Get { target, id } => {
            let (t, p) = one(target, *id);
            call(Method::GET, t, p, None)
        }
        Act::Search {
            target,
            filters,
            limit,
        } => {
            let (t, p) = coll(target);
            let mut c = call(Method::GET, t, p, None);
            c.query = filters.clone();
            c.query.push(("limit".into(), limit.to_string()));
            c
        }
        Act::Create { target, body } => {
            let (t, p) = coll(target);
            call(Method::POST, t, p, Some(body.clone()))
        }
        Act::Update { target, id, body } => {
            let (t, p) = one(target, *id);
            call(Method::PUT, t, p, Some(body.clone()))
        }
        Act::Perform {
            target,
            id,
            action,
            body,
        } => {
            let t = match target.parent {
                None => "/v1/objects/{object}/{id}/{action}",
                Some(_) => "/v1/suppliers/{supplier_id}/{object}/{id}/{action}",
            };
            let p = format!("{}/{action}", one(target, *id).1);
            call(Method::POST, t, p, body.clone())
        }
        Act::MarkExported { target, id } => {
            let t = match target.parent {
                None => "/v1/objects/{object}/{id}/mark_exported",
                Some(_) => "/v1/suppliers/{supplier_id}/{object}/{id}/mark_exported",
            };
            call(
                Method::POST,
                t,
                format!("{}/mark_exported", one(target, *id).1),
                None,
            )
        }
        Act::RemitToAddresses { supplier_id } => call(
            Method::GET,
            "/v1/suppliers/{supplier_id}/{object}",
            format!("/v1/suppliers/{supplier_id}/remit_to_addresses"),
            None,
        ),
        Act::SupplierSites { supplier_id } => call(
            Method::GET,
            "/v1/suppliers/{supplier_id}/{object}",
            format!("/v1/suppliers/{supplier_id}/supplier_sites"),
            None,
        ),
        Act::ClosePurchaseOrder { id } => call(
            Method::POST,
            "/v1/purchase_orders/{id}/close",
            format!("/v1/purchase_orders/{id}/close"),
            None,
        ),
        Act::CancelPurchaseOrder { id } => call(
            Method::POST,
            "/v1/purchase_orders/{id}/cancel",
            format!("/v1/purchase_orders/{id}/cancel"),
            None,
        ),
        Act::CreateIntegrationRun { code } => call(
            Method::POST,
            "/v1/integration_runs",
            "/v1/integration_runs".into(),
            Some(json!({ "integration_code": code })),
        ),
        Act::SetIntegrationRunStatus { id, status, counts } => call(
            Method::PUT,
            "/v1/integration_runs/{id}/status",
            format!("/v1/integration_runs/{id}/status"),
            Some(
                json!({"status": status, "total_records": counts.total_records,
                        "records_processed": counts.records_processed}),
            ),
        ),
        Act::CreateIntegrationError { record, alert }
        | Act::CreateIntegrationHistoryRecord { record, alert } => {
            let t = if matches!(act, Act::CreateIntegrationError { .. }) {
                "/v1/integration_errors"
            } else {
                "/v1/integration_history_records"
            };
            let mut c = call(Method::POST, t, t.into(), Some(json!(record)));
            if *alert {
                c.query.push(("alert".into(), "true".into()));
            }
            c
        }
        Act::Resolve { object, id } => call(
            Method::POST,
            "/v1/objects/{object}/{id}/{action}",
            format!("/v1/objects/{object}/{id}/resolve"),
            None,
        ),
        Act::Raw {
            method,
            path,
            query,
            body,
        } => call(
            Method::POST,
            "/v1/http",
            "/v1/http".into(),
            Some(json!({"method": method, "path": path, "query": query, "body": body})),
        ),
    }
}

/// What the API answered.
struct HttpReply {
    outcome: Outcome,
    status: u16,
}

/// Runs one act through the API.
async fn run_http(http: &reqwest::Client, base: &str, token: &str, act: &Act) -> HttpReply {
    let c = call_for(act);
    let mut req = http
        .request(c.method, format!("{base}{}", c.path))
        .bearer_auth(token);
    if !c.query.is_empty() {
        req = req.query(&c.query);
    }
    if let Some(b) = &c.body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let outcome = if (200..300).contains(&status) {
        match serde_json::from_str(&text) {
            Ok(v) => Outcome::Ok(v),
            Err(e) => unreadable(&format!("{status}: body is not JSON ({e}): {text}")),
        }
    } else {
        error_outcome(&text, &format!("HTTP {status}"))
    };
    HttpReply { outcome, status }
}

/// The HTTP status the API documents for an outcome.
fn documented_status(o: &Outcome) -> u16 {
    match o {
        Outcome::Ok(_) => 200,
        Outcome::Err { kind, .. } => match kind.as_str() {
            "invalid" | "validation" => 400,
            "refused" => 422,
            "not_found" => 404,
            other => panic!("no status documented here for `{other}`"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_through_the_http_api() {
    let http = http();
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let rig = Rig::start(Some(TOKEN)).await;
        let before = rig.sim.requests().len();
        let r = run_http(&http, &rig.base, TOKEN, &case.act).await;
        if let Err(why) = case.check(&r.outcome, &rig.sim, before) {
            failures.push(format!("{}: {why}", case.name));
        } else if r.status != documented_status(&r.outcome) {
            failures.push(format!(
                "{}: HTTP {}, documented {} for {:?}",
                case.name,
                r.status,
                documented_status(&r.outcome),
                r.outcome
            ));
        }
        rig.stop().await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_capabilities_never_reach_coupa() {
    let rig = Rig::start(Some(TOKEN)).await;
    let http = http();
    let before = rig.sim.requests().len();
    let mut refused = 0;
    for spec in CATALOGUE {
        let coll = match spec.parent {
            Some(_) => format!("/v1/suppliers/1/{}", spec.name),
            None => format!("/v1/objects/{}", spec.name),
        };
        let mut calls = vec![(Method::POST, format!("{coll}/1/no_such_action"))];
        if !spec.caps.create {
            calls.push((Method::POST, coll.clone()));
        }
        if !spec.caps.update {
            calls.push((Method::PUT, format!("{coll}/1")));
            calls.push((Method::POST, format!("{coll}/1/mark_exported")));
        }
        for (method, path) in calls {
            let resp = http
                .request(method.clone(), format!("{}{path}", rig.base))
                .bearer_auth(TOKEN)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 422, "{method} {path}");
            let env: ErrorEnvelope = resp.json().await.unwrap();
            assert_eq!(env.error.kind, "refused", "{method} {path}");
            assert_eq!(env.error.status, None);
            assert!(
                env.error.message.starts_with(spec.name),
                "{}",
                env.error.message
            );
            refused += 1;
        }
    }
    assert!(refused > CATALOGUE.len());
    assert_eq!(rig.sim.requests().len(), before, "no refusal reached Coupa");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_come_back_per_field() {
    let rig = Rig::start(Some(TOKEN)).await;
    let resp = http()
        .post(format!("{}/v1/objects/suppliers", rig.base))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "Acme Supply", "number": "S-BOR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert_eq!(e["kind"], "validation");
    assert_eq!(e["status"], 400);
    assert_eq!(
        e["fields"],
        json!([{"field": "supplier", "message": "Name has already been taken"},
               {"field": "supplier", "message": "Number has already been taken"}])
    );
    assert!(e["message"].as_str().unwrap().contains("/api/suppliers"));
    assert_eq!(
        rig.sim.versions("suppliers").len(),
        2,
        "nothing was created"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_rejects_a_missing_or_wrong_token() {
    let rig = Rig::start(Some(TOKEN)).await;
    let http = http();
    let before = rig.sim.requests().len();
    let wrong = [
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Bearer {}", TOKEN.to_uppercase()),
        "Bearer ".to_string(),
        format!("Basic {TOKEN}"),
        TOKEN.to_string(),
    ];
    for (method, template) in ROUTES {
        let url = format!("{}{}", rig.base, fill(template));
        let method: Method = method.to_uppercase().parse().unwrap();
        let mut headers: Vec<Option<String>> = vec![None];
        headers.extend(wrong.iter().cloned().map(Some));
        for auth in headers {
            let mut req = http.request(method.clone(), &url).json(&json!({}));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{method} {url} with {auth:?}");
            let challenge = resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(challenge.starts_with("Bearer "), "{challenge}");
            let body = resp.text().await.unwrap();
            let env: ErrorEnvelope = serde_json::from_str(&body).unwrap();
            assert_eq!(env.error.kind, "unauthorized");
            assert!(
                !body.contains(TOKEN) && !body.contains(&TOKEN.to_uppercase()),
                "{body}"
            );
            if auth
                .as_deref()
                .is_some_and(|a| a.starts_with("Bearer ") && a.len() > 7)
            {
                assert!(challenge.contains("invalid_token"), "{challenge}");
            }
        }
    }
    assert_eq!(rig.sim.requests().len(), before, "nothing reached Coupa");
    // The right token passes (and is taken case-insensitively as `bearer`).
    let resp = http
        .get(format!("{}/v1/objects/purchase_orders/1", rig.base))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_absent_without_a_token() {
    let rig = Rig::start(None).await;
    let http = http();
    for (method, template) in ROUTES {
        let url = format!("{}{}", rig.base, fill(template));
        let method: Method = method.to_uppercase().parse().unwrap();
        for auth in [None, Some(TOKEN)] {
            let mut req = http.request(method.clone(), &url).json(&json!({}));
            if let Some(t) = auth {
                req = req.bearer_auth(t);
            }
            let status = req.send().await.unwrap().status().as_u16();
            assert_eq!(status, 404, "{method} {url}");
        }
    }
    let health = http
        .get(format!("{}/healthz", rig.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let rig = Rig::start(Some(TOKEN)).await;
    let http = http();
    let doc: Value = http
        .get(format!("{}/v1/openapi.json", rig.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routes);
    // Every route the case table runs through is one of them.
    for case in cases() {
        let c = call_for(&case.act);
        let route = (c.method.as_str().to_lowercase(), c.template.to_string());
        assert!(routes.contains(&route), "{}: {route:?}", case.name);
    }
    // Every documented route is served: without a token it is a 401, not a 404.
    for (method, path) in &documented {
        let status = http
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{}", rig.base, fill(path)),
            )
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 401, "{method} {path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    for schema in [
        "ErrorEnvelope",
        "RunStatusRequest",
        "IntegrationRecord",
        "RawRequest",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_failing_midway_aborts_the_response() {
    let rig = Rig::start(Some(TOKEN)).await;
    rig.sim.inject(FaultRule {
        fault: Fault::Status {
            status: 403,
            retry_after: None,
            body: None,
        },
        times: 1,
        path_contains: Some("id%5Bgt%5D=50".into()),
    });
    let resp = http()
        .get(format!("{}/v1/objects/departments", rig.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the first page came through");
    match resp.bytes().await {
        Err(_) => {}
        Ok(body) => assert!(
            serde_json::from_slice::<Value>(&body).is_err(),
            "a partial list passed for a whole one: {} bytes",
            body.len()
        ),
    }
    // Without the fault the same search is one whole array.
    let all: Value = http()
        .get(format!("{}/v1/objects/departments", rig.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), actions_cases::DEPARTMENTS);
    rig.stop().await;
}

/// The real binary logs whether the API is on, and never the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_says_whether_the_api_is_on_and_never_shows_the_token() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    seed(&sim);
    let http = http();
    for token in [None, Some(TOKEN)] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
            .listen(&format!("127.0.0.1:{port}"))
            .objects(&["integrations"])
            .file_sink(&dir.path().join("events.jsonl"));
        if let Some(t) = token {
            let file = dir.path().join("token");
            std::fs::write(&file, format!("{t}\n")).unwrap();
            cfg = cfg.raw(&format!("[api]\ntoken_file = \"{}\"", file.display()));
        }
        let config = dir.path().join("daemon.toml");
        std::fs::write(&config, cfg.toml()).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coupa-changefeed"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let want = if token.is_some() {
            "actions API on"
        } else {
            "actions API off"
        };
        let mut log = String::new();
        tokio::time::timeout(LIMIT, async {
            while let Some(l) = lines.next_line().await.unwrap() {
                log += &l;
                log.push('\n');
                if l.contains(want) {
                    return;
                }
            }
            panic!("the daemon ended without saying `{want}`:\n{log}");
        })
        .await
        .unwrap_or_else(|_| panic!("no `{want}` within {LIMIT:?}:\n{log}"));
        let url = format!("http://127.0.0.1:{port}/v1/openapi.json");
        let status = |auth: bool| {
            let mut r = http.get(&url);
            if auth {
                r = r.bearer_auth(TOKEN);
            }
            async move { r.send().await.unwrap().status().as_u16() }
        };
        if token.is_some() {
            assert_eq!(status(false).await, 401);
            assert_eq!(status(true).await, 200);
        } else {
            assert_eq!(status(true).await, 404);
        }
        let pid = child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        tokio::time::timeout(LIMIT, async {
            while let Some(l) = lines.next_line().await.unwrap() {
                log += &l;
                log.push('\n');
            }
        })
        .await
        .expect("the daemon stops on SIGTERM");
        let exit = tokio::time::timeout(LIMIT, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(exit.success(), "{exit}:\n{log}");
        assert!(!log.contains(TOKEN), "the token was logged:\n{log}");
        if token.is_some() {
            // The authenticated call is in the audit log; the refused one is not.
            let audit: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("actions API call"))
                .collect();
            assert_eq!(audit.len(), 1, "{log}");
            assert!(
                audit[0].contains("/v1/openapi.json") && audit[0].contains("200"),
                "{log}"
            );
        }
    }
    sim.shutdown().await;
}

#[test]
fn api_settings_read_the_token_file_and_keep_the_token_secret() {
    let base = "[coupa]\nbase_url = \"https://acme.coupahost.com\"\napi_key = \"k\"\n[[objects]]\nname = \"users\"\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let s = Settings::from_toml(&format!(
        "{base}[api]\ntoken_file = \"{}\"\n",
        file.display()
    ))
    .unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(s.api.token.as_ref().unwrap().expose_secret(), TOKEN);
    assert!(!format!("{s:?}").contains(TOKEN), "Debug shows the token");

    let e = Settings::from_toml(&format!(
        "{base}[api]\ntoken = \"{TOKEN}\"\ntoken_file = \"{}\"\n",
        file.display()
    ))
    .unwrap_err();
    assert_eq!(e.key, "api.token_file");

    let e = Settings::from_toml(&format!("{base}[api]\ntoken = \"short-secret\"\n")).unwrap_err();
    assert_eq!(e.key, "api.token");
    assert!(!e.to_string().contains("short-secret"), "{e}");

    // No [api]: off.
    assert!(Settings::from_toml(base).unwrap().api.token.is_none());
    // The action commands' loader needs no [[objects]] and ignores [api].
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[coupa]\nbase_url = \"https://acme.coupahost.com\"\napi_key = \"k\"\n",
    )
    .unwrap();
    assert!(Settings::load(Some(&p)).is_err());
    assert!(Settings::load_for_actions(Some(&p)).is_ok());
}
