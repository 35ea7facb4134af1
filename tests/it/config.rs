//! Config errors: each bad key refuses to start with one message naming
//! the key and the value at fault; secrets never show.

use coupa_changefeed::config::{Settings, StartFrom};

const GOOD: &str = r#"
[coupa]
base_url = "https://acme.coupahost.com"
[coupa.oauth]
client_id = "cid"
client_secret = "s3cr3t-value-xyz"
scopes = ["core.purchase_order.read"]
[[objects]]
name = "purchase_orders"
"#;

fn err(text: &str) -> String {
    Settings::from_toml(text)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn the_documented_example_loads_with_defaults() {
    let s = Settings::from_toml(GOOD).unwrap();
    assert_eq!(s.coupa.requests_per_second, 10);
    assert_eq!(s.coupa.timeout.as_secs(), 30);
    let plans = s.plans().unwrap();
    assert_eq!(plans[0].lookback.as_secs(), 300);
    assert_eq!(plans[0].settle.as_secs(), 5);
    assert_eq!(plans[0].start_from, StartFrom::Now);
    assert_eq!(s.sinks[0].name(), "file");
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .unwrap();
    Settings::from_toml(&example).expect("config/example.toml is valid");
}

#[test]
fn unknown_key_is_named() {
    let e = err(&GOOD.replace(
        "[[objects]]",
        "[poll]\nschedul = \"* * * * * *\"\n[[objects]]",
    ));
    assert!(e.contains("`poll.schedul`"), "{e}");
    let e = err(&format!("{GOOD}colour = \"blue\"\n"));
    assert!(e.contains("`objects[0].colour`"), "{e}");
    let e = err(&format!("[dispatch]\nx = 1\n{GOOD}"));
    assert!(
        e.contains("`dispatch`") && e.contains("unknown field"),
        "{e}"
    );
    let e = err(&format!("[delivery]\nx = 1\n{GOOD}"));
    assert!(e.contains("`delivery.x`"), "{e}");
    let e = err(&format!(
        "{GOOD}[[sinks]]\ntype = \"file\"\npath = \"-\"\ncolour = \"blue\"\n"
    ));
    assert!(e.contains("colour"), "{e}");
    let e = err(&format!("{GOOD}[[sinks]]\ntype = \"ftp\"\n"));
    assert!(e.contains("ftp"), "{e}");
    let e = err(&GOOD.replace("base_url = \"https://acme.coupahost.com\"\n", ""));
    assert!(
        e.contains("`coupa.base_url`") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn bad_cron_is_named_with_its_value() {
    let e = err(&format!("{GOOD}schedule = \"every minute\"\n"));
    assert!(
        e.contains("objects[0].schedule") && e.contains("every minute"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "[[objects]]",
        "[poll]\nschedule = \"61 * * * * *\"\n[[objects]]",
    ));
    assert!(e.contains("poll.schedule"), "{e}");
}

#[test]
fn unix_cron_is_translated_with_unix_weekdays() {
    let s = Settings::from_toml(&format!("{GOOD}schedule = \"*/5 * * * 1-5\"\n")).unwrap();
    let plan = &s.plans().unwrap()[0];
    // 1-5 must mean Monday..Friday, not the cron crate's Sunday..Thursday.
    let mut t = chrono::DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc); // a Saturday
    for _ in 0..200 {
        t = plan.schedule.next_after(t).unwrap();
        let wd = chrono::Datelike::weekday(&t);
        assert!(
            !matches!(wd, chrono::Weekday::Sat | chrono::Weekday::Sun),
            "{t}"
        );
    }
}

#[test]
fn unknown_object_is_named_with_the_catalogue() {
    let e = err(&GOOD.replace("purchase_orders", "purchase_ordres"));
    assert!(
        e.contains("objects[0].name") && e.contains("purchase_ordres") && e.contains("invoices"),
        "{e}"
    );
    // any other resource can be polled by path
    let s = Settings::from_toml(&GOOD.replace(
        "name = \"purchase_orders\"",
        "name = \"receiving_transactions\"\npath = \"/api/receiving_transactions\"",
    ))
    .unwrap();
    assert_eq!(s.plans().unwrap()[0].path, "/api/receiving_transactions");
    let e = err(&GOOD.replace(
        "name = \"purchase_orders\"",
        "name = \"x\"\npath = \"https://evil.example/api\"",
    ));
    assert!(e.contains("objects[0].path"), "{e}");
}

#[test]
fn bad_url_is_named() {
    let e = err(&GOOD.replace("https://acme.coupahost.com", "acme.coupahost.com"));
    assert!(e.contains("base_url"), "{e}");
    let e = err(&GOOD.replace("https://acme.coupahost.com", "ftp://acme.coupahost.com"));
    assert!(e.contains("coupa.base_url") && e.contains("ftp://"), "{e}");
}

#[test]
fn missing_secret_and_missing_credentials_are_named() {
    let e = err(&GOOD.replace("client_secret = \"s3cr3t-value-xyz\"\n", ""));
    assert!(e.contains("coupa.oauth.client_secret"), "{e}");
    let e = err(&GOOD.replace("[coupa.oauth]\nclient_id = \"cid\"\nclient_secret = \"s3cr3t-value-xyz\"\nscopes = [\"core.purchase_order.read\"]\n", ""));
    assert!(e.contains("no credentials"), "{e}");
    let e = err(&GOOD.replace(
        "client_secret = \"s3cr3t-value-xyz\"",
        "client_secret_file = \"/nonexistent/secret\"",
    ));
    assert!(
        e.contains("client_secret_file") && e.contains("/nonexistent/secret"),
        "{e}"
    );
}

#[test]
fn secret_file_is_read_and_secrets_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret");
    std::fs::write(&f, "from-file-secret-987\n").unwrap();
    let s = Settings::from_toml(&GOOD.replace(
        "client_secret = \"s3cr3t-value-xyz\"",
        &format!("client_secret_file = \"{}\"", f.display()),
    ))
    .unwrap();
    let secret = secrecy::ExposeSecret::expose_secret(
        s.coupa
            .oauth
            .as_ref()
            .unwrap()
            .client_secret
            .as_ref()
            .unwrap(),
    )
    .to_string();
    assert_eq!(secret, "from-file-secret-987");
    let debug = format!("{s:?}");
    assert!(!debug.contains("from-file-secret-987"), "{debug}");
    let debug = format!("{:?}", Settings::from_toml(GOOD).unwrap());
    assert!(!debug.contains("s3cr3t-value-xyz"));
    // a wrongly typed secret is named but not echoed
    let e = err(&GOOD.replace(
        "client_secret = \"s3cr3t-value-xyz\"",
        "client_secret = [\"s3cr3t-value-xyz\"]",
    ));
    assert!(
        !e.contains("s3cr3t-value-xyz") && e.contains("client_secret"),
        "{e}"
    );
}

#[test]
fn bad_start_from_and_duration_are_named() {
    let e = err(&format!("{GOOD}start_from = \"last tuesday\"\n"));
    assert!(
        e.contains("objects[0].start_from") && e.contains("last tuesday"),
        "{e}"
    );
    let e = err(&format!("{GOOD}lookback = \"5 parsecs\"\n"));
    assert!(e.contains("lookback"), "{e}");
}

#[test]
fn environment_overrides_file_values() {
    // The environment is the process's: alone, so no other test or the
    // daemons they spawn see these keys.
    if !crate::support::in_own_process(concat!(
        module_path!(),
        "::environment_overrides_file_values"
    )) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, GOOD).unwrap();
    // Unique keys so parallel tests do not see each other's environment.
    std::env::set_var("COUPA_CHANGEFEED__COUPA__REQUESTS_PER_SECOND", "7");
    std::env::set_var("COUPA_CHANGEFEED__STATE__DIR", "/tmp/from-env");
    let s = Settings::load(Some(&path)).unwrap();
    std::env::remove_var("COUPA_CHANGEFEED__COUPA__REQUESTS_PER_SECOND");
    std::env::remove_var("COUPA_CHANGEFEED__STATE__DIR");
    assert_eq!(s.coupa.requests_per_second, 7);
    assert_eq!(s.state.dir.to_str(), Some("/tmp/from-env"));
    let e = Settings::load(Some(&dir.path().join("missing.toml")))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn nested_secret_numeric_values_and_scope_lists_come_from_the_environment() {
    // The environment is the process's: alone, so no other test or the
    // daemons they spawn see these keys.
    if !crate::support::in_own_process(concat!(
        module_path!(),
        "::nested_secret_numeric_values_and_scope_lists_come_from_the_environment"
    )) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        GOOD.replace(
            "[coupa.oauth]",
            "[coupa.oauth]\ntoken_url = \"https://acme.coupahost.com/oauth2/token\"",
        ),
    )
    .unwrap();
    // Distinct keys from the other env test, which may run in parallel.
    std::env::set_var("COUPA_CHANGEFEED__COUPA__OAUTH__CLIENT_SECRET", "20261130");
    std::env::set_var("COUPA_CHANGEFEED__COUPA__OAUTH__CLIENT_ID", "4711");
    std::env::set_var(
        "COUPA_CHANGEFEED__COUPA__OAUTH__SCOPES",
        "core.invoice.read,core.supplier.read",
    );
    let s = Settings::load(Some(&path));
    std::env::remove_var("COUPA_CHANGEFEED__COUPA__OAUTH__CLIENT_SECRET");
    std::env::remove_var("COUPA_CHANGEFEED__COUPA__OAUTH__CLIENT_ID");
    std::env::remove_var("COUPA_CHANGEFEED__COUPA__OAUTH__SCOPES");
    let s = s.unwrap();
    let o = s.coupa.oauth.as_ref().unwrap();
    assert_eq!(o.client_id, "4711");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(o.client_secret.as_ref().unwrap()),
        "20261130"
    );
    assert_eq!(o.scopes, vec!["core.invoice.read", "core.supplier.read"]);
}

#[test]
fn sink_errors_name_the_sink_key() {
    let e = err(&format!(
        "{GOOD}[[sinks]]\ntype = \"file\"\npath = \"-\"\ncolour = \"blue\"\n"
    ));
    assert!(e.contains("`sinks[0].colour`"), "{e}");
    let e = err(&format!("{GOOD}[[sinks]]\ntype = \"file\"\npath = \"\"\n"));
    assert!(e.contains("`sinks[0].path`"), "{e}");
    let e = err(&format!(
        "{GOOD}[[sinks]]\ntype = \"file\"\npath = \"a\"\n[[sinks]]\ntype = \"file\"\npath = \"b\"\n"
    ));
    assert!(
        e.contains("`sinks[1].name`") && e.contains("`file` is used twice"),
        "{e}"
    );
    let e = err(&format!("[delivery]\nmax_backlog = 0\n{GOOD}"));
    assert!(e.contains("`delivery.max_backlog`"), "{e}");
}

#[test]
fn shards_split_the_objects_between_replicas() {
    use coupa_changefeed::config::Shard;
    use coupa_changefeed::coupa::objects::names;
    let shards: Vec<Shard> = (0..3)
        .map(|i| Shard::parse(&format!("{i}/3"), "").unwrap())
        .collect();
    let mut counts = [0; 3];
    for o in names() {
        let owners: Vec<usize> = (0..3).filter(|i| shards[*i].owns(o)).collect();
        assert_eq!(
            owners.len(),
            1,
            "{o} must have exactly one owner: {owners:?}"
        );
        counts[owners[0]] += 1;
    }
    assert!(
        counts.iter().all(|c| *c >= 3),
        "each replica gets a share: {counts:?}"
    );
    // Growing to 4 replicas moves only the objects the new one takes.
    let four: Vec<Shard> = (0..4)
        .map(|i| Shard::parse(&format!("{i}/4"), "").unwrap())
        .collect();
    for o in names() {
        let before = (0..3).find(|i| shards[*i].owns(o)).unwrap();
        let after = (0..4).find(|i| four[*i].owns(o)).unwrap();
        assert!(
            after == before || after == 3,
            "{o} moved from {before} to {after}"
        );
    }
    assert_eq!(
        Shard::parse("hostname/3", "coupa-changefeed-2").unwrap(),
        Shard { index: 2, count: 3 }
    );
    for (spec, host, msg) in [
        ("3/3", "", "not below the count"),
        ("x/3", "", "not a replica index"),
        ("1/0", "", "at least 1"),
        ("hostname/3", "laptop", "does not end in"),
        ("1", "", "is not `i/n`"),
    ] {
        let e = Shard::parse(spec, host).unwrap_err();
        assert!(e.contains(msg), "{spec}: {e}");
    }
    let e = err(&format!("[cluster]\nshard = \"5/2\"\n{GOOD}"));
    assert!(e.contains("`cluster.shard`"), "{e}");
}

#[test]
fn a_poller_is_overdue_after_three_of_its_own_schedules() {
    use coupa_changefeed::config::Schedule;
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let every30 = Schedule::parse("*/30 * * * * *").unwrap();
    assert_eq!(
        every30.overdue_at(t("2026-11-30T10:00:05Z")),
        Some(t("2026-11-30T10:01:30Z"))
    );
    // Weekdays at 09:00: a Friday success is not overdue over the weekend.
    let weekdays = Schedule::parse("0 9 * * 1-5").unwrap();
    assert_eq!(
        weekdays.overdue_at(t("2026-11-27T09:00:05Z")), // a Friday
        Some(t("2026-12-02T09:00:00Z"))
    );
}

/// Issue 13 item 7: Coupa stamps whole seconds; a fractional `start_from`
/// or `lookback` would make every window re-read (and republish) a
/// fraction of a second, so both are refused naming the key.
#[test]
fn sub_second_start_from_and_lookback_are_refused() {
    let e = err(&GOOD.replace(
        "[[objects]]",
        "[poll]\nstart_from = \"2026-03-01T10:15:02.250Z\"\n[[objects]]",
    ));
    assert!(
        e.contains("poll.start_from") && e.contains("whole seconds"),
        "{e}"
    );
    let e = err(&GOOD.replace("[[objects]]", "[poll]\nlookback = \"2500ms\"\n[[objects]]"));
    assert!(e.contains("poll.lookback") && e.contains("2s 500ms"), "{e}");
    let e = err(&format!("{GOOD}lookback = \"90.5s\"\n"));
    assert!(e.contains("objects[0].lookback"), "{e}");
    let e = err(&format!(
        "{GOOD}start_from = \"2026-03-01T10:15:02.5+02:00\"\n"
    ));
    assert!(e.contains("objects[0].start_from"), "{e}");
    // Whole seconds, in any offset, still load.
    let ok = GOOD.replace(
        "[[objects]]",
        "[poll]\nlookback = \"2m 30s\"\nstart_from = \"2026-03-01T10:15:02+02:00\"\n[[objects]]",
    );
    Settings::from_toml(&ok).unwrap();
}
