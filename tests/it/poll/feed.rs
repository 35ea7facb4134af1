//! The change feed against the simulator on 127.0.0.1 with real sled
//! directories: each failure mode of DESIGN.md "Polling without losing
//! changes", checked against the simulator's record of every version.

use crate::support;

use std::time::Duration;

use crate::support::{check, check_exact, crash_poll_after, outbox, sim_config, Rig};
use chrono::{FixedOffset, SubsecRound};
use coupa_sim::{Fault, FaultRule, RateLimit};
use serde_json::json;

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&FixedOffset::west_opt(7 * 3600).unwrap())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// `n` purchase orders an hour old (ten a second) on a server that ignores
/// `id[gt]`, with the clock moved past `settle`. Only the first window
/// reads them (no lookback rescue), so a record skipped there would be
/// lost for good.
fn hour_old_pos_without_id_gt(rig: &Rig, n: i64) {
    let old = rig.sim.now().trunc_subsecs(0) - chrono::Duration::hours(1);
    for i in 0..n {
        let t = stamp(old + chrono::Duration::seconds(i / 10));
        rig.sim
            .create("purchase_orders", json!({"created-at": t, "updated-at": t}));
    }
    rig.sim.inject(FaultRule {
        fault: Fault::IgnoreParams {
            names: vec!["id[gt]".into()],
        },
        times: usize::MAX,
        path_contains: None,
    });
    rig.sim.set_clock_offset(chrono::Duration::seconds(5));
}

#[tokio::test]
async fn many_records_sharing_one_second_across_pages() {
    let rig = Rig::new(sim_config(), &["purchase_orders"]).await;
    let t = stamp(rig.sim.now().trunc_subsecs(0));
    for _ in 0..170 {
        rig.sim
            .create("purchase_orders", json!({"updated-at": t, "created-at": t}));
    }
    let r = rig.catch_up().await;
    assert!(
        r.requests >= 5,
        "170 records take 4 pages and an empty one, got {}",
        r.requests
    );
    let got = check_exact(&rig.sim, "purchase_orders", &outbox(&rig.store));
    assert_eq!(got.len(), 170);
    assert!(outbox(&rig.store)
        .iter()
        .all(|e| e.ty == "coupa.purchase_order.created"));
}

#[tokio::test]
async fn records_edited_while_paging_lose_nothing() {
    let mut cfg = sim_config();
    cfg.latency = Duration::from_millis(2);
    let rig = Rig::new(cfg, &["purchase_orders"]).await;
    for _ in 0..1000 {
        rig.sim.create("purchase_orders", json!({}));
    }
    rig.sim.set_clock_offset(chrono::Duration::seconds(5));
    // An editor changes records (mostly low ids, which paging has passed,
    // and some ahead of it) for as long as the poller pages.
    let sim = rig.sim.clone_handle();
    let editor = tokio::spawn(async move {
        let mut n = 0u64;
        for i in 0..400u64 {
            let id = (i * 37) % 1000 + 1;
            sim.update(
                "purchase_orders",
                id,
                json!({"status": format!("edit-{i}")}),
            );
            n += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        n
    });
    let first = rig.poll().await;
    assert!(first.events > 0);
    let edits = editor.await.unwrap();
    assert_eq!(edits, 400);
    rig.catch_up().await;
    let delivered = outbox(&rig.store);
    let got = check(&rig.sim, "purchase_orders", &delivered);
    assert!(got.len() >= 1000, "{}", got.len());
}

#[tokio::test]
async fn late_commit_behind_hwm_inside_lookback_is_delivered() {
    let rig = Rig::new(sim_config(), &["invoices"]).await;
    rig.sim.create("invoices", json!({}));
    rig.catch_up().await;
    let hwm = rig.store.object_state("invoices").unwrap().hwm.unwrap();
    // Committed now, but stamped two minutes before the high-water mark.
    let late = stamp(hwm - chrono::Duration::minutes(2));
    let rec = rig
        .sim
        .create("invoices", json!({"updated-at": late, "created-at": late}));
    rig.catch_up().await;
    let got = check_exact(&rig.sim, "invoices", &outbox(&rig.store));
    assert!(
        got.iter().any(|(id, _)| Some(*id) == rec["id"].as_u64()),
        "late commit lost"
    );
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn no_change_for_100_polls_emits_nothing_and_costs_one_request_each() {
    // The sim's clock leaps 10 minutes below (time passing past the
    // lookback): a jump the client would reject under the 5m default.
    let rig = Rig::with(sim_config(), &["suppliers"], "max_clock_jump = \"1h\"", "").await;
    for _ in 0..10 {
        rig.sim.create("suppliers", json!({}));
    }
    rig.catch_up().await;
    assert_eq!(outbox(&rig.store).len(), 10);
    // Inside the lookback the records are re-read but suppressed.
    let again = rig.catch_up().await;
    assert_eq!(again.events, 0);
    assert!(again.repeats >= 10);
    // Past the lookback, an idle object costs exactly one request a poll.
    rig.sim.set_clock_offset(chrono::Duration::minutes(10));
    rig.catch_up().await;
    let before = rig.sim.requests().len();
    let mut events = 0;
    for _ in 0..100 {
        let r = rig.poll().await;
        events += r.events;
        assert!(r.window_complete);
    }
    assert_eq!(events, 0);
    assert_eq!(
        rig.sim.requests().len() - before,
        100,
        "one request per idle poll"
    );
    assert_eq!(outbox(&rig.store).len(), 10);
}

#[tokio::test]
async fn two_edits_within_one_second_are_two_events() {
    let rig = Rig::new(sim_config(), &["purchase_orders"]).await;
    let rec = rig.sim.create("purchase_orders", json!({}));
    let id = rec["id"].as_u64().unwrap();
    rig.catch_up().await;
    let t = stamp(rig.sim.now().trunc_subsecs(0));
    rig.sim.update(
        "purchase_orders",
        id,
        json!({"status": "closed", "updated-at": t}),
    );
    rig.catch_up().await;
    rig.sim.update(
        "purchase_orders",
        id,
        json!({"status": "cancelled", "updated-at": t}),
    );
    rig.catch_up().await;
    let delivered = outbox(&rig.store);
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    assert_eq!(delivered[1].updated_at, delivered[2].updated_at);
    assert_ne!(delivered[1].event_id, delivered[2].event_id);
    assert_eq!(delivered[0].ty, "coupa.purchase_order.created");
    assert_eq!(delivered[2].ty, "coupa.purchase_order.updated");
}

#[tokio::test]
async fn short_pages_while_more_records_exist_lose_nothing() {
    let rig = Rig::new(sim_config(), &["invoices"]).await;
    for _ in 0..230 {
        rig.sim.create("invoices", json!({}));
    }
    rig.sim.inject(FaultRule {
        fault: Fault::TrimPage { max: 49 },
        times: usize::MAX,
        path_contains: None,
    });
    rig.catch_up().await;
    rig.sim.clear_faults();
    rig.sim.inject(FaultRule {
        fault: Fault::TrimPage { max: 7 },
        times: usize::MAX,
        path_contains: None,
    });
    for _ in 0..30 {
        rig.sim.create("invoices", json!({}));
    }
    rig.catch_up().await;
    assert_eq!(
        check_exact(&rig.sim, "invoices", &outbox(&rig.store)).len(),
        260
    );
}

#[tokio::test]
async fn host_clock_minutes_off_loses_nothing() {
    for offset_min in [-10i64, 10] {
        let mut cfg = sim_config();
        cfg.clock_offset = chrono::Duration::minutes(offset_min);
        let rig = Rig::with(cfg, &["purchase_orders"], "", "start_from = \"now\"").await;
        rig.poll().await; // starts at Coupa's "now", not the host's
        for _ in 0..20 {
            rig.sim.create("purchase_orders", json!({}));
        }
        rig.catch_up().await;
        let got = check_exact(&rig.sim, "purchase_orders", &outbox(&rig.store));
        assert_eq!(got.len(), 20, "sim clock {offset_min} min off");
    }
}

#[tokio::test]
async fn timestamps_in_several_offsets_normalise() {
    let mut cfg = sim_config();
    cfg.utc_offsets = ["-07:00", "+05:30", "+02:00", "+00:00", "-03:30"]
        .iter()
        .map(|s| s.parse::<FixedOffset>().unwrap())
        .collect();
    let rig = Rig::new(cfg, &["users"]).await;
    for _ in 0..40 {
        rig.sim.create("users", json!({}));
    }
    rig.catch_up().await;
    let delivered = outbox(&rig.store);
    assert_eq!(check_exact(&rig.sim, "users", &delivered).len(), 40);
    let raw = rig.store.outbox_after(0, 100).unwrap();
    let offsets: std::collections::HashSet<String> = raw
        .iter()
        .map(|(_, e)| e.event_json()["data"]["updated-at"].as_str().unwrap()[19..].to_string())
        .collect();
    assert!(
        offsets.len() >= 4,
        "records carry several offsets: {offsets:?}"
    );
    assert!(raw
        .iter()
        .all(|(_, e)| e.event_json()["time"].as_str().unwrap().ends_with('Z')));
}

#[tokio::test]
async fn rate_limits_errors_and_timeouts_lose_nothing_and_rate_holds() {
    for retry_after in [false, true] {
        let mut cfg = sim_config();
        cfg.rate_limit = Some(RateLimit {
            per_second: 8.0,
            burst: 2,
        });
        cfg.retry_after_on_429 = retry_after;
        let rig = Rig::with(
            cfg,
            &["invoices", "purchase_orders"],
            "requests_per_second = 10\nmax_attempts = 12",
            "",
        )
        .await;
        for _ in 0..120 {
            rig.sim.create("invoices", json!({}));
            rig.sim.create("purchase_orders", json!({}));
        }
        rig.sim.inject(FaultRule {
            fault: Fault::Status {
                status: 500,
                retry_after: None,
                body: None,
            },
            times: 2,
            path_contains: Some("invoices".into()),
        });
        rig.sim.inject(FaultRule {
            fault: Fault::Status {
                status: 503,
                retry_after: Some("1".into()),
                body: None,
            },
            times: 1,
            path_contains: None,
        });
        rig.sim.inject(FaultRule {
            fault: Fault::Delay(Duration::from_secs(3)),
            times: 1,
            path_contains: Some("purchase_orders".into()),
        });
        rig.catch_up().await;
        let delivered = outbox(&rig.store);
        assert_eq!(check_exact(&rig.sim, "invoices", &delivered).len(), 120);
        assert_eq!(
            check_exact(&rig.sim, "purchase_orders", &delivered).len(),
            120
        );
        let log = rig.sim.requests();
        let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
        assert!(statuses.contains(&500) && statuses.contains(&503));
        // The client never sends faster than its configured 10/s. Arrival
        // times carry scheduling jitter, so count over 2-second windows.
        let times: Vec<_> = log.iter().map(|r| r.at).collect();
        let mut worst = 0;
        for (i, t) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(2))
                .count();
            worst = worst.max(n);
        }
        assert!(
            worst <= 21,
            "{worst} requests inside two seconds at 10/s (retry_after={retry_after})"
        );
    }
}

#[tokio::test]
async fn crash_between_pages_resumes_without_loss_or_duplicates() {
    let mut cfg = sim_config();
    cfg.latency = Duration::from_millis(15);
    let mut rig = Rig::new(cfg, &["purchase_orders"]).await;
    for _ in 0..400 {
        rig.sim.create("purchase_orders", json!({}));
    }
    rig.sim.set_clock_offset(chrono::Duration::seconds(5));
    // Kill the poll after it has sent a few more requests each time: with
    // 15 ms per request that lands between (or inside) page commits.
    // Each reopened client first learns Coupa's clock (3 agreeing `Date`
    // headers): three requests more before the pages.
    for more in [5usize, 5, 6] {
        crash_poll_after(&mut rig, more, Duration::from_secs(10)).await;
        let state = rig.store.object_state("purchase_orders").unwrap();
        assert!(state.window.is_some(), "a window was open at the crash");
    }
    rig.catch_up().await;
    let delivered = outbox(&rig.store);
    assert_eq!(delivered.len(), 400, "every record exactly once");
    assert_eq!(
        check_exact(&rig.sim, "purchase_orders", &delivered).len(),
        400
    );
}

#[tokio::test]
async fn nested_supplier_sites_are_polled_through_their_parents_within_budget() {
    let rig = Rig::with(sim_config(), &["supplier_sites"], "", "parent_budget = 3").await;
    let mut suppliers = Vec::new();
    for _ in 0..7 {
        suppliers.push(
            rig.sim.create("suppliers", json!({}))["id"]
                .as_u64()
                .unwrap(),
        );
    }
    for (i, s) in suppliers.iter().enumerate() {
        for _ in 0..(i % 3 + 1) {
            rig.sim.create("supplier_sites", json!({"_parent_id": s}));
        }
    }
    rig.catch_up().await;
    let first = check_exact(&rig.sim, "supplier_sites", &outbox(&rig.store));
    assert_eq!(first.len(), rig.sim.versions("supplier_sites").len());
    // A site edited later is caught by the next window.
    let site = rig.sim.versions("supplier_sites")[0].id;
    rig.sim
        .update("supplier_sites", site, json!({"name": "Renamed site"}));
    rig.catch_up().await;
    let after = check_exact(&rig.sim, "supplier_sites", &outbox(&rig.store));
    assert_eq!(after.len(), first.len() + 1);
    let ev = rig.store.outbox_after(0, 1000).unwrap();
    assert!(ev.iter().any(|(_, e)| e.event_json()["source"]
        .as_str()
        .unwrap()
        .contains("/api/suppliers/")));
}

#[tokio::test]
async fn records_without_updated_at_are_published_not_dropped() {
    let rig = Rig::new(sim_config(), &["items"]).await;
    rig.sim.create("items", json!({}));
    rig.catch_up().await;
    // A hostile server that ignores the time filter and omits updated-at.
    rig.sim.inject(FaultRule {
        fault: Fault::Status {
            status: 200,
            retry_after: None,
            body: Some(r#"[{"id": 999, "name": "no stamp"}]"#.into()),
        },
        times: 1,
        path_contains: Some("items".into()),
    });
    let r = rig.poll().await;
    assert_eq!(r.undated, 1);
    let raw = rig.store.outbox_after(0, 100).unwrap();
    let undated: Vec<_> = raw
        .iter()
        .filter(|(_, e)| e.event_json()["subject"] == "999")
        .collect();
    assert_eq!(undated.len(), 1);
    assert_eq!(undated[0].1.event_json()["type"], "coupa.item.updated");
}

#[tokio::test]
async fn a_row_served_twice_is_one_event_and_a_server_ignoring_all_paging_is_an_error() {
    let rig = Rig::new(sim_config(), &["items"]).await;
    rig.sim.create("items", json!({}));
    rig.catch_up().await;
    let t = stamp(rig.sim.now().trunc_subsecs(0) - chrono::Duration::seconds(3));
    let row =
        format!(r#"{{"id": 500, "name": "twice", "created-at": "{t}", "updated-at": "{t}"}}"#);
    rig.sim.inject(FaultRule {
        fault: Fault::Status {
            status: 200,
            retry_after: None,
            body: Some(format!("[{row},{row}]")),
        },
        times: 1,
        path_contains: Some("/api/items".into()),
    });
    let r = rig.poll().await;
    assert_eq!((r.events, r.repeats), (1, 1));

    // The same page whatever `id[gt]` or `offset` say: refuse instead of
    // looping. (Two rows: a one-row page is a whole list in offset mode.)
    let row2 = row.replace("500", "501");
    rig.sim.inject(FaultRule {
        fault: Fault::Status {
            status: 200,
            retry_after: None,
            body: Some(format!("[{row},{row2}]")),
        },
        times: usize::MAX,
        path_contains: Some("/api/items".into()),
    });
    rig.sim.set_clock_offset(chrono::Duration::seconds(30));
    let mut errors = Vec::new();
    for _ in 0..3 {
        if let Err(e) = rig.pollers[0].poll_once(&rig.shutdown).await {
            errors.push(e.to_string());
        }
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("ignores both `id[gt]` and `offset`")),
        "{errors:?}"
    );
    assert!(rig.sim.requests().len() < 40, "bounded");
}

#[tokio::test]
async fn a_server_ignoring_id_gt_is_paged_by_offset_with_overlap() {
    let mut cfg = sim_config();
    cfg.latency = Duration::from_millis(10);
    let rig = Rig::new(cfg, &["purchase_orders"]).await;
    hour_old_pos_without_id_gt(&rig, 300);
    // Records leave the window while it is paged by offset: three edits
    // after each request the simulator sees, so fewer departures between
    // two page requests than the overlap, however loaded the machine is.
    let sim = rig.sim.clone_handle();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let editor = tokio::spawn(async move {
        let mut seen = sim.requests().len();
        let mut i = 0u64;
        while i < 60 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let now = sim.requests().len();
            if now == seen {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            seen = now;
            for _ in 0..3 {
                sim.update(
                    "purchase_orders",
                    (i * 7) % 300 + 1,
                    json!({"status": format!("e{i}")}),
                );
                i += 1;
            }
        }
        i
    });
    rig.poll().await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let edits = editor.await.unwrap();
    assert!(edits >= 9, "edits happened while paging: {edits}");
    assert!(
        rig.store
            .object_state("purchase_orders")
            .unwrap()
            .offset_paging
    );
    rig.catch_up().await;
    let delivered = outbox(&rig.store);
    check(&rig.sim, "purchase_orders", &delivered);
    // Every record's first version was live when the first window was read.
    let first_versions: std::collections::BTreeSet<u64> = delivered.iter().map(|e| e.id).collect();
    assert_eq!(first_versions.len(), 300);
}

/// Issue 13 item 3 and issue 12 item 10: with `id[gt]` ignored, more
/// records than a page leave the window between two offset requests
/// (a burst of 60 edits while the next request is in flight); nothing is
/// skipped. Once the server honours `id[gt]` again, the next window
/// pages by id.
#[tokio::test]
async fn offset_fallback_survives_a_burst_larger_than_a_page_and_returns_to_id_paging() {
    let mut cfg = sim_config();
    cfg.latency = Duration::from_millis(300);
    let rig = Rig::with(
        cfg,
        &["purchase_orders"],
        "timeout = \"5s\"",
        "backfill_concurrency = 1",
    )
    .await;
    hour_old_pos_without_id_gt(&rig, 200);
    // Right after `offset=0` is answered (the next request is already on
    // its way and waits out the latency), 60 records leave the window.
    let sim = rig.sim.clone_handle();
    let editor = tokio::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !sim
            .requests()
            .iter()
            .any(|r| r.query.contains("offset=0") && r.status == 200)
        {
            assert!(std::time::Instant::now() < deadline, "no offset request");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for id in 1..=60u64 {
            sim.update("purchase_orders", id, json!({"status": "burst"}));
        }
    });
    rig.poll().await;
    editor.await.unwrap();
    assert!(
        rig.store
            .object_state("purchase_orders")
            .unwrap()
            .offset_paging
    );
    rig.catch_up().await;
    let delivered = outbox(&rig.store);
    check(&rig.sim, "purchase_orders", &delivered);
    let first_versions: std::collections::BTreeSet<u64> = delivered.iter().map(|e| e.id).collect();
    assert_eq!(first_versions.len(), 200);

    // The server honours `id[gt]` again: the next window returns to it.
    rig.sim.clear_faults();
    rig.sim.set_latency(Duration::ZERO);
    rig.sim
        .update("purchase_orders", 150, json!({"status": "later"}));
    let before = rig.sim.requests().len();
    rig.catch_up().await;
    assert!(
        !rig.store
            .object_state("purchase_orders")
            .unwrap()
            .offset_paging
    );
    let later = &rig.sim.requests()[before..];
    assert!(later.iter().all(|r| !r.query.contains("offset=")));
    assert!(later.iter().any(|r| r.query.contains("id%5Bgt%5D=")));
    check(&rig.sim, "purchase_orders", &outbox(&rig.store));
}

/// Issue 13 item 2: a supplier list that ignores `id[gt]` is walked by
/// offset instead of stopping the nested object; more suppliers than a
/// page, and a later site edit still arrives.
#[tokio::test]
async fn a_parent_list_ignoring_id_gt_is_walked_by_offset() {
    let rig = Rig::with(sim_config(), &["supplier_sites"], "", "parent_budget = 100").await;
    let mut suppliers = Vec::new();
    for _ in 0..60 {
        let s = rig.sim.create("suppliers", json!({}))["id"]
            .as_u64()
            .unwrap();
        rig.sim.create("supplier_sites", json!({"_parent_id": s}));
        suppliers.push(s);
    }
    rig.sim.inject(FaultRule {
        fault: Fault::IgnoreParams {
            names: vec!["id[gt]".into()],
        },
        times: usize::MAX,
        path_contains: Some("/api/suppliers?".into()),
    });
    rig.catch_up().await;
    let first = check_exact(&rig.sim, "supplier_sites", &outbox(&rig.store));
    assert_eq!(first.len(), rig.sim.versions("supplier_sites").len());
    assert!(rig
        .sim
        .requests()
        .iter()
        .any(|r| r.path == "/api/suppliers" && r.query.contains("offset=")));
    let last_site = rig.sim.versions("supplier_sites").last().unwrap().id;
    rig.sim
        .update("supplier_sites", last_site, json!({"name": "Renamed site"}));
    rig.catch_up().await;
    let after = check_exact(&rig.sim, "supplier_sites", &outbox(&rig.store));
    assert_eq!(after.len(), first.len() + 1);
}

/// Issue 13 item 6: raising `lookback` between restarts re-reads nothing
/// the seen-set has already pruned, so nothing is published twice.
#[tokio::test]
async fn a_larger_lookback_after_a_restart_republishes_nothing() {
    let mut rig = Rig::with(sim_config(), &["invoices"], "", "lookback = \"5s\"").await;
    for _ in 0..5 {
        rig.sim.create("invoices", json!({}));
    }
    rig.catch_up().await;
    // A minute later the five have left the 5 s lookback and are pruned.
    rig.sim.set_clock_offset(chrono::Duration::seconds(65));
    rig.catch_up().await;
    assert_eq!(outbox(&rig.store).len(), 5);
    rig.settings = support::TestConfig::new(&rig.sim.base_url(), rig.dir.path())
        .objects(&["invoices"])
        .poll("lookback = \"10m\"")
        .settings();
    rig.reopen();
    rig.catch_up().await;
    let delivered = outbox(&rig.store);
    check_exact(&rig.sim, "invoices", &delivered);
    assert_eq!(delivered.len(), 5, "nothing republished");
}

/// Issue 13 item 6: another `fields` selection after a restart changes
/// every record's content hash; the versions already published are re-read
/// without being published again, while a real edit still is.
#[tokio::test]
async fn another_fields_selection_after_a_restart_republishes_nothing() {
    let objects = |fields: &str| format!("[[objects]]\nname = \"invoices\"\nfields = {fields}\n");
    let mut rig = Rig::with(sim_config(), &["invoices"], "", "").await;
    rig.settings = support::TestConfig::new(&rig.sim.base_url(), rig.dir.path())
        .raw(&objects(r#"["id", "created-at", "updated-at", "status"]"#))
        .settings();
    rig.reopen();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            rig.sim.create("invoices", json!({}))["id"]
                .as_u64()
                .unwrap(),
        );
    }
    rig.catch_up().await;
    assert_eq!(outbox(&rig.store).len(), 5);
    rig.settings = support::TestConfig::new(&rig.sim.base_url(), rig.dir.path())
        .raw(&objects(
            r#"["id", "created-at", "updated-at", "status", "invoice-number"]"#,
        ))
        .settings();
    rig.reopen();
    rig.catch_up().await;
    assert_eq!(outbox(&rig.store).len(), 5, "nothing republished");
    // A real edit after the change is published, with the new selection.
    rig.sim
        .update("invoices", ids[0], json!({"status": "approved"}));
    rig.catch_up().await;
    let all = outbox(&rig.store);
    assert_eq!(all.len(), 6, "the edit is published");
}

/// Issue 13 item 8: a nested object's supplier walk spans several polls
/// (`parent_budget = 1`, 4 suppliers), so a site version is promised only
/// if it outlives two walk cycles (plus `settle`), not two poll intervals.
/// The cycle is measured and shown in `/status` and `/metrics`, and every
/// version that outlived two of the longest cycles seen is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_versions_outliving_two_walk_cycles_arrive_and_the_cycle_is_shown() {
    use coupa_sim::verify::{verify, Received};
    let sim = coupa_sim::Simulator::start(coupa_sim::SimConfig {
        initial_records: 0,
        ..sim_config()
    })
    .await
    .unwrap();
    let old = (sim.now() - chrono::Duration::minutes(10)).trunc_subsecs(0);
    let t = stamp(old);
    let mut sites = Vec::new();
    for _ in 0..4 {
        let s = sim.create("suppliers", json!({}))["id"].as_u64().unwrap();
        let site = sim.create(
            "supplier_sites",
            json!({"_parent_id": s, "created-at": t, "updated-at": t}),
        );
        sites.push(site["id"].as_u64().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let cfg = support::TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["supplier_sites"])
        .poll("parent_budget = 1\nsettle = \"1s\"")
        .file_sink(&events)
        .listen("127.0.0.1:0");
    let daemon = support::Daemon::start(&cfg.settings());
    // An edit every 700 ms, round robin over the sites, for 12 s.
    let started = std::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(12) {
        sim.update(
            "supplier_sites",
            sites[i % sites.len()],
            json!({"name": format!("v{i}")}),
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let truth = || sim.versions("supplier_sites");
    let got = || -> Vec<Received> {
        support::read_jsonl(&events)
            .iter()
            .map(|e| Received::from_event(e).unwrap())
            .collect()
    };
    support::wait_for("every final version", Duration::from_secs(60), || {
        verify(&truth(), &got(), Duration::from_secs(1))
            .lost_final
            .is_empty()
    })
    .await;
    let walk = daemon.handles.pollers["supplier_sites"]
        .lock()
        .unwrap()
        .walk
        .clone();
    let addr = daemon.handles.server_addr.unwrap();
    let status: serde_json::Value = reqwest::get(format!("http://{addr}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    daemon.stop().await.unwrap();
    assert!(walk.longest_cycle_seconds > 0.0, "{walk:?}");
    assert!(
        status["objects"][0]["walk"]["last_cycle_seconds"].is_number(),
        "{status}"
    );
    assert!(
        metrics.contains("nested_walk_cycle_seconds{object=\"supplier_sites\"}"),
        "{metrics}"
    );
    let bound = Duration::from_secs_f64(walk.longest_cycle_seconds) + Duration::from_secs(1);
    let v = verify(&truth(), &got(), bound);
    assert!(v.is_clean(), "bound {bound:?}: {v}");
    assert!(v.events >= 4, "{v}");
}
