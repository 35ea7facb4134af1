//! Coupa misbehaving: broken bodies, a revoked token, a missing scope for
//! one object. Nothing is lost, the failing object reports its error and
//! the others carry on.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{check_exact, outbox, sim_config, Rig, TestConfig};
use coupa_changefeed::{app, shutdown};
use coupa_sim::{Fault, FaultRule, OAuthClient, SimConfig, Simulator};
use serde_json::json;

fn once(fault: Fault) -> FaultRule {
    FaultRule {
        fault,
        times: 1,
        path_contains: Some("/api/invoices".into()),
    }
}

#[tokio::test]
async fn broken_bodies_are_retried_and_lose_nothing() {
    let rig = Rig::new(sim_config(), &["invoices"]).await;
    for _ in 0..120 {
        rig.sim.create("invoices", json!({}));
    }
    for f in [
        Fault::MalformedJson,
        Fault::HtmlPage,
        Fault::ResetConnection,
        Fault::Status {
            status: 502,
            retry_after: None,
            body: Some("<html>bad gateway</html>".into()),
        },
    ] {
        rig.sim.inject(once(f));
    }
    rig.catch_up().await;
    assert_eq!(
        check_exact(&rig.sim, "invoices", &outbox(&rig.store)).len(),
        120
    );
    let statuses: Vec<u16> = rig.sim.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&502));
}

#[tokio::test]
async fn a_failing_poll_keeps_its_window_and_the_next_poll_finishes_it() {
    // One plain list (no backfill slices): the test pins which page fails.
    let rig = Rig::with(
        sim_config(),
        &["invoices"],
        "max_attempts = 2",
        "backfill_concurrency = 1",
    )
    .await;
    for _ in 0..120 {
        rig.sim.create("invoices", json!({}));
    }
    rig.sim.set_clock_offset(chrono::Duration::seconds(5));
    // The second page fails past the retry budget.
    rig.sim.inject(FaultRule {
        fault: Fault::Status {
            status: 503,
            retry_after: None,
            body: None,
        },
        times: 2,
        path_contains: Some("id%5Bgt%5D=50&".into()),
    });
    let err = rig.pollers[0]
        .poll_once(&rig.shutdown)
        .await
        .expect_err("the poll gives up");
    let text = err.to_string();
    assert!(text.contains("invoices") && text.contains("503"), "{text}");
    let state = rig.store.object_state("invoices").unwrap();
    assert_eq!(
        state.window.as_ref().and_then(|w| w.last_id),
        Some(50),
        "first page committed"
    );
    rig.catch_up().await;
    let delivered = outbox(&rig.store);
    assert_eq!(delivered.len(), 120, "no page read twice");
    assert_eq!(check_exact(&rig.sim, "invoices", &delivered).len(), 120);
}

/// The whole daemon over OAuth: one object lacks its scope (403) and one
/// has its token revoked mid-run; the others keep delivering.
#[tokio::test]
async fn missing_scope_fails_one_object_and_revoked_token_is_reminted() {
    let sim = Simulator::start(SimConfig {
        oauth_clients: vec![OAuthClient {
            client_id: "daemon".into(),
            client_secret: "oauth-secret-4471".into(),
            scopes: vec![
                "core.purchase_order.read".into(),
                "core.invoice.read".into(),
            ],
        }],
        rate_limit: None,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    for _ in 0..5 {
        sim.create("purchase_orders", json!({}));
        sim.create("invoices", json!({}));
        sim.create("users", json!({}));
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .oauth("daemon", "oauth-secret-4471")
        .coupa("max_backoff = \"50ms\"")
        .poll("settle = \"1s\"")
        .objects(&["purchase_orders", "invoices", "users"])
        .file_sink(&events)
        .settings();
    let (handles, pollers, sinks) = app::build(&settings).unwrap();
    let (trigger, listener) = shutdown::channel();
    let daemon = tokio::spawn(app::run_built(handles.clone(), pollers, sinks, listener));

    let count = |want: &str| {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(want))
            .count()
    };
    let wait_for = |n_po: usize, n_inv: usize| async move {
        for _ in 0..200 {
            if count("coupa.purchase_order.") >= n_po && count("coupa.invoice.") >= n_inv {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("events did not arrive");
    };
    wait_for(5, 5).await;
    sim.revoke_tokens();
    for _ in 0..3 {
        sim.create("purchase_orders", json!({}));
    }
    wait_for(8, 5).await;
    assert_eq!(count("coupa.user."), 0);
    let users = handles.pollers["users"].lock().unwrap().clone();
    let err = users.last_error.expect("users reports its error");
    assert!(err.contains("users") && err.contains("403"), "{err}");
    let po: BTreeMap<_, _> = [(
        "po",
        handles.pollers["purchase_orders"]
            .lock()
            .unwrap()
            .last_error
            .clone(),
    )]
    .into();
    assert_eq!(po["po"], None);
    assert!(
        handles.client.stats().token_mints >= 2,
        "re-minted after the revocation"
    );
    trigger.fire();
    daemon.await.unwrap().unwrap();
    let all = std::fs::read_to_string(&events).unwrap();
    assert!(!all.contains("oauth-secret-4471"));
}

/// Issue 13 item 1: one 404 on a supplier's site list (the supplier still
/// exists) is retried, not taken for a vanished parent: the sites, an
/// hour old so that only the first window reads them, all arrive.
#[tokio::test]
async fn a_404_on_a_child_list_of_a_live_parent_is_retried() {
    let rig = Rig::with(sim_config(), &["supplier_sites"], "", "parent_budget = 10").await;
    let old = rig.sim.now() - chrono::Duration::hours(1);
    let t = old.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
    let mut suppliers = Vec::new();
    for _ in 0..3 {
        let s = rig.sim.create("suppliers", json!({}))["id"]
            .as_u64()
            .unwrap();
        rig.sim.create(
            "supplier_sites",
            json!({"_parent_id": s, "created-at": t, "updated-at": t}),
        );
        suppliers.push(s);
    }
    rig.sim.inject(FaultRule {
        fault: Fault::Status {
            status: 404,
            retry_after: None,
            body: None,
        },
        times: 1,
        path_contains: Some(format!("/api/suppliers/{}/supplier_sites", suppliers[1])),
    });
    rig.sim.set_clock_offset(chrono::Duration::seconds(5));
    let first = rig.pollers[0].poll_once(&rig.shutdown).await;
    let err = first.expect_err("the 404 fails this poll").to_string();
    assert!(
        err.contains("supplier_sites") && err.contains("404"),
        "{err}"
    );
    // The parent was checked, not skipped.
    assert!(rig
        .sim
        .requests()
        .iter()
        .any(|r| r.path == format!("/api/suppliers/{}", suppliers[1])));
    rig.catch_up().await;
    let got = check_exact(&rig.sim, "supplier_sites", &outbox(&rig.store));
    assert_eq!(got.len(), 3);
}
