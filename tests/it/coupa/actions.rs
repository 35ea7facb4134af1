//! The write-back actions through the library against the simulator: the
//! shared case table, refusals that never reach Coupa, validation errors
//! per field, the PO state machine, which write failures are retried, and
//! a write made through an action coming back from the poller as an
//! `updated` event.

use crate::support;

use std::time::Duration;

use crate::support::actions_cases::{self, cases, run_lib, seed, Act, Outcome};
use crate::support::{outbox, sim_config, Rig, TestConfig};
use coupa_changefeed::coupa::actions::{Actions, RunCounts, RunStatus, Target};
use coupa_changefeed::coupa::error::TransportKind;
use coupa_changefeed::coupa::objects::CATALOGUE;
use coupa_changefeed::coupa::{CoupaClient, CoupaError};
use coupa_sim::{Fault, FaultRule, OAuthClient, SimConfig, Simulator};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;

/// A client for `base_url` with the test defaults, adjusted by
/// `coupa_lines` (the config needs an object to poll; actions ignore it).
fn client_at(base_url: &str, coupa_lines: &str, oauth: Option<(&str, &str)>) -> CoupaClient {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TestConfig::new(base_url, dir.path())
        .objects(&["purchase_orders"])
        .coupa(coupa_lines);
    if let Some((id, secret)) = oauth {
        cfg = cfg.oauth(id, secret);
    }
    CoupaClient::new(&cfg.settings().coupa).unwrap()
}

fn client(sim: &Simulator, coupa_lines: &str) -> CoupaClient {
    client_at(&sim.base_url(), coupa_lines, None)
}

async fn seeded() -> (Simulator, Actions) {
    let sim = Simulator::start(sim_config()).await.unwrap();
    seed(&sim);
    let a = Actions::new(client(&sim, ""));
    (sim, a)
}

/// `(method, path)` of every API request so far.
fn sent(sim: &Simulator) -> Vec<(String, String)> {
    sim.requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

#[tokio::test]
async fn every_case_through_the_library() {
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let sim = Simulator::start(sim_config()).await.unwrap();
        seed(&sim);
        let c = client(&sim, "");
        let before = sim.requests().len();
        let outcome = Outcome::from(run_lib(&c, &case.act).await);
        if let Err(why) = case.check(&outcome, &sim, before) {
            failures.push(format!("{}: {why}", case.name));
        }
        sim.shutdown().await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_checks_are_not_vacuous() {
    let (sim, a) = seeded().await;
    let all = cases();
    let find = |name: &str| all.iter().find(|c| c.name == name).unwrap();
    let close = find("close_an_issued_po");
    let before = sim.requests().len();
    let wrong = Outcome::Ok(json!({"id": 1, "status": "issued"}));
    assert!(close.check(&wrong, &sim, before).is_err());
    // Right answer, but the simulator was never written to.
    let right = Outcome::Ok(json!({"id": 1, "status": "closed"}));
    assert!(close
        .check(&right, &sim, before)
        .unwrap_err()
        .contains("after"));
    // A refusal that reached Coupa anyway is a failure.
    let refused = find("create_a_po_line_is_refused");
    let before = sim.requests().len();
    let e = a
        .create("purchase_order_lines", &json!({}))
        .await
        .unwrap_err();
    a.get("purchase_orders", 1).await.unwrap();
    let outcome = Outcome::from(Err::<serde_json::Value, _>(e));
    assert!(refused
        .check(&outcome, &sim, before)
        .unwrap_err()
        .contains("reached Coupa"));
}

#[test]
fn the_table_uses_every_action_and_names_each_case_once() {
    let all = cases();
    let mut names: Vec<&str> = all.iter().map(|c| c.name).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "case names must be unique");
    for v in Act::VARIANTS {
        assert!(
            all.iter().any(|c| c.act.variant() == *v),
            "no case exercises {v}"
        );
    }
}

#[tokio::test]
async fn refused_capabilities_never_reach_coupa() {
    let (sim, a) = seeded().await;
    let before = sim.requests().len();
    let mut refused = 0;
    for spec in CATALOGUE {
        let target = match spec.parent {
            Some(_) => Target::nested(spec.name, 1),
            None => Target::top(spec.name),
        };
        let mut results = Vec::new();
        if !spec.caps.create {
            results.push(a.create(&target, &json!({})).await.map(|_| ()));
        }
        if !spec.caps.update {
            results.push(a.update(&target, 1, &json!({})).await.map(|_| ()));
            results.push(a.mark_exported(&target, 1).await.map(|_| ()));
        }
        results.push(
            a.perform(&target, 1, "no_such_action", None)
                .await
                .map(|_| ()),
        );
        for r in results {
            let e = r.expect_err("refused");
            assert!(
                matches!(&e, CoupaError::Refused { object, .. } if object == spec.name),
                "{}: {e:?}",
                spec.name
            );
            assert!(e.to_string().starts_with(spec.name), "{e}");
            refused += 1;
        }
    }
    assert!(
        refused > CATALOGUE.len(),
        "some capability refusals were tried"
    );
    let e = a
        .set_integration_run_status(1, RunStatus::Running, RunCounts::default())
        .await;
    assert!(e.is_ok(), "a listed action goes through: {e:?}");
    assert_eq!(
        sim.requests().len() - before,
        1,
        "only the allowed call reached the simulator: {:?}",
        &sent(&sim)[before..]
    );
}

#[tokio::test]
async fn validation_errors_surface_per_field() {
    let (sim, a) = seeded().await;
    let e = a
        .create(
            "suppliers",
            &json!({"name": "Acme Supply", "number": "S-BOR"}),
        )
        .await
        .unwrap_err();
    let CoupaError::Validation {
        errors,
        messages,
        fields,
        ..
    } = &e
    else {
        panic!("expected a validation error, got {e:?}");
    };
    assert_eq!(
        errors.as_ref(),
        &json!({"supplier": ["Name has already been taken", "Number has already been taken"]})
    );
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|f| (f.field.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("supplier", "Name has already been taken"),
            ("supplier", "Number has already been taken")
        ]
    );
    assert_eq!(messages.len(), 2);
    assert_eq!(e.status(), Some(400));
    assert!(!e.is_transient());
    let shown = e.to_string();
    assert!(
        shown.contains("/api/suppliers")
            && shown.contains(
                "supplier: Name has already been taken; supplier: Number has already been taken"
            ),
        "{shown}"
    );
    // A 400 is an answer, not a failure to retry.
    let posts = sent(&sim)
        .iter()
        .filter(|(m, p)| m == "POST" && p == "/api/suppliers")
        .count();
    assert_eq!(posts, 1);
    assert_eq!(sim.versions("suppliers").len(), 2, "nothing was created");
}

#[tokio::test]
async fn po_close_then_cancel_is_a_structured_illegal_transition() {
    let (sim, a) = seeded().await;
    let id = actions_cases::PO_ISSUED;
    let closed = a.close_purchase_order(id).await.unwrap();
    assert_eq!(closed["status"], "closed");
    let e = a.cancel_purchase_order(id).await.unwrap_err();
    assert_eq!(e.kind(), "validation");
    assert_eq!(
        e.field_errors()
            .iter()
            .map(|f| (f.field.as_str(), f.message.as_str()))
            .collect::<Vec<_>>(),
        [(
            "purchase_order",
            "Cannot cancel purchase order 1: status closed cannot change to cancelled"
        )]
    );
    assert_eq!(sim.get("purchase_orders", id).unwrap()["status"], "closed");
    let statuses: Vec<String> = sim
        .versions("purchase_orders")
        .iter()
        .filter(|v| v.id == id)
        .map(|v| v.record["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses,
        ["issued", "closed"],
        "the refused cancel left no version"
    );
}

/// POSTs to `path` the simulator saw.
fn posts(sim: &Simulator, path: &str) -> usize {
    sent(sim)
        .iter()
        .filter(|(m, p)| m == "POST" && p == path)
        .count()
}

#[tokio::test]
async fn a_write_is_not_repeated_once_coupa_may_have_acted() {
    let (sim, a) = seeded().await;
    let runs = sim.versions("integration_runs").len();
    // The response is lost after Coupa created the run: a retry would
    // create a second one.
    sim.inject(FaultRule {
        fault: Fault::StatusAfterHandling { status: 500 },
        times: 1,
        path_contains: Some("/api/integration_runs".into()),
    });
    let e = a
        .create_integration_run(actions_cases::INTEGRATION_CODE)
        .await
        .unwrap_err();
    assert!(matches!(e, CoupaError::Status { status: 500, .. }), "{e:?}");
    assert_eq!(posts(&sim, "/api/integration_runs"), 1);
    assert_eq!(
        sim.versions("integration_runs").len(),
        runs + 1,
        "Coupa acted once"
    );

    // A 500 or 502 the client cannot tell from that one: not retried either.
    for status in [500, 502] {
        sim.inject(FaultRule {
            fault: Fault::Status {
                status,
                retry_after: None,
                body: None,
            },
            times: 1,
            path_contains: Some("/api/integration_runs".into()),
        });
        let before = posts(&sim, "/api/integration_runs");
        let e = a
            .create_integration_run(actions_cases::INTEGRATION_CODE)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(status), "{e:?}");
        assert_eq!(posts(&sim, "/api/integration_runs"), before + 1);
    }

    // PUT actions too: a lost close, retried, would come back "already closed".
    sim.inject(FaultRule {
        fault: Fault::StatusAfterHandling { status: 500 },
        times: 1,
        path_contains: Some("/close".into()),
    });
    let e = a
        .close_purchase_order(actions_cases::PO_ISSUED)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(500));
    let puts = sent(&sim)
        .iter()
        .filter(|(m, p)| m == "PUT" && p.ends_with("/close"))
        .count();
    assert_eq!(puts, 1);
    assert_eq!(
        sim.get("purchase_orders", actions_cases::PO_ISSUED)
            .unwrap()["status"],
        "closed"
    );
}

#[tokio::test]
async fn a_write_is_retried_where_coupa_cannot_have_acted() {
    let (sim, a) = seeded().await;
    for (status, retry_after) in [(429, None), (503, None), (429, Some("1"))] {
        let runs = sim.versions("integration_runs").len();
        let before = posts(&sim, "/api/integration_runs");
        sim.inject(FaultRule {
            fault: Fault::Status {
                status,
                retry_after: retry_after.map(String::from),
                body: None,
            },
            times: 1,
            path_contains: Some("/api/integration_runs".into()),
        });
        let run = a
            .create_integration_run(actions_cases::INTEGRATION_CODE)
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(run["status"], "pending");
        assert_eq!(posts(&sim, "/api/integration_runs"), before + 2, "{status}");
        assert_eq!(
            sim.versions("integration_runs").len(),
            runs + 1,
            "{status}: one run"
        );
    }
}

#[tokio::test]
async fn a_write_to_a_closed_port_is_retried_within_max_attempts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let a = Actions::new(client_at(
        &format!("http://{addr}"),
        "max_attempts = 3\nmax_backoff = \"10ms\"",
        None,
    ));
    let e = a.create_integration_run("ERP-PO").await.unwrap_err();
    match &e {
        CoupaError::RetriesExhausted { attempts: 3, last } => assert!(
            matches!(
                **last,
                CoupaError::Transport {
                    kind: TransportKind::Connect,
                    ..
                }
            ),
            "{last:?}"
        ),
        other => panic!("expected 3 connect attempts, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_that_times_out_is_not_retried() {
    let (sim, _) = seeded().await;
    let a = Actions::new(client(&sim, "timeout = \"300ms\""));
    let runs = sim.versions("integration_runs").len();
    sim.inject(FaultRule {
        fault: Fault::Delay(Duration::from_millis(700)),
        times: 1,
        path_contains: Some("/api/integration_runs".into()),
    });
    let e = a
        .create_integration_run(actions_cases::INTEGRATION_CODE)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CoupaError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{e:?}"
    );
    // One attempt: Coupa may still be creating the run (the simulator's
    // delay sits before the handler, so here it is dropped instead).
    assert_eq!(posts(&sim, "/api/integration_runs"), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(posts(&sim, "/api/integration_runs"), 1, "no late retry");
    assert!(sim.versions("integration_runs").len() <= runs + 1);
}

#[tokio::test]
async fn writes_need_the_write_scope() {
    let sim = Simulator::start(SimConfig {
        oauth_clients: vec![OAuthClient {
            client_id: "reader".into(),
            client_secret: "reader-secret".into(),
            scopes: vec!["core.purchase_order.read".into()],
        }],
        ..sim_config()
    })
    .await
    .unwrap();
    seed(&sim);
    let a = Actions::new(client_at(
        &sim.base_url(),
        "",
        Some(("reader", "reader-secret")),
    ));
    assert_eq!(a.get("purchase_orders", 1).await.unwrap()["id"], 1);
    let e = a.close_purchase_order(1).await.unwrap_err();
    assert!(matches!(e, CoupaError::Forbidden { .. }), "{e:?}");
    assert!(e.to_string().contains("core.purchase_order.write"), "{e}");
    assert_eq!(sim.get("purchase_orders", 1).unwrap()["status"], "issued");
}

#[tokio::test]
async fn search_pages_by_id_in_pages_of_at_most_fifty_and_only_on_demand() {
    let (sim, a) = seeded().await;
    for i in 0..60 {
        sim.create("departments", json!({"name": format!("Extra {i}")}));
    }
    let total = actions_cases::DEPARTMENTS + 60;

    // Reading three records costs one request of three.
    let before = sim.requests().len();
    let first: Vec<_> = a
        .search("departments", &[], 1000)
        .unwrap()
        .take(3)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let log = &sim.requests()[before..];
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].query.contains("limit=50"), "{}", log[0].query);

    let before = sim.requests().len();
    let all: Vec<_> = a
        .search("departments", &[], 1000)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<u64> = all.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=total as u64).collect::<Vec<_>>());
    let log = &sim.requests()[before..];
    // 50 + 50 + 20, then an empty page: a short page is no proof of the end.
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(!log[0].query.contains("id%5Bgt%5D"));
    for (r, after) in log[1..].iter().zip([50, 100, 120]) {
        assert!(
            r.query.contains(&format!("id%5Bgt%5D={after}")),
            "{}",
            r.query
        );
        assert!(r.query.contains("order_by=id"), "{}", r.query);
    }

    // A limit shrinks the last page and ends the paging without an extra request.
    let before = sim.requests().len();
    let some: Vec<_> = a
        .search("departments", &[], 70)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(some.len(), 70);
    let log = &sim.requests()[before..];
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].query.contains("limit=20"), "{}", log[1].query);

    // Short pages from a server that trims them are no end of the results.
    sim.inject(FaultRule::times(Fault::TrimPage { max: 10 }, 3));
    let trimmed: Vec<_> = a
        .search("departments", &[], 1000)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(trimmed.len(), total);
}

#[tokio::test]
async fn a_write_through_an_action_is_an_updated_event() {
    let rig = Rig::new(sim_config(), &["purchase_orders"]).await;
    let an_hour_ago = (rig.sim.now() - chrono::Duration::hours(1)).to_rfc3339();
    let po = rig.sim.create(
        "purchase_orders",
        json!({"status": "issued", "created-at": an_hour_ago, "updated-at": an_hour_ago}),
    )["id"]
        .as_u64()
        .unwrap();
    rig.catch_up().await;
    let first = outbox(&rig.store);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].ty, "coupa.purchase_order.created");

    let a = Actions::new(rig.client.clone());
    let closed = a.close_purchase_order(po).await.unwrap();
    rig.catch_up().await;

    let events = outbox(&rig.store);
    let new: Vec<_> = events.iter().filter(|e| !first.contains(e)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].ty, "coupa.purchase_order.updated");
    assert_eq!(new[0].id, po);
    let stamped =
        coupa_changefeed::coupa::record::parse_timestamp(closed["updated-at"].as_str().unwrap());
    assert_eq!(
        new[0].updated_at, stamped,
        "the event is the version the action made"
    );
    let data = rig
        .store
        .outbox_after(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.event_json())
        .find(|e| e["id"] == new[0].event_id.as_str())
        .unwrap();
    assert_eq!(data["data"]["status"], "closed");
    support::check_exact(&rig.sim, "purchase_orders", &events);
}
