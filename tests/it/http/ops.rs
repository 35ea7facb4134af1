//! Operating the real binary: `check` reports per object and sink and
//! fails on a missing scope; `health`; SIGTERM in the middle of polling
//! and a restart lose and repeat nothing.

use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    check_exact, free_port, read_jsonl, received, sigterm, spawn_logged, spawn_run, wait_exit,
    TestConfig,
};
use coupa_sim::{OAuthClient, SimConfig, Simulator};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_coupa-changefeed");
const SECRET: &str = "oauth-secret-9d2e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_object_and_sink_and_names_a_missing_scope() {
    let sim = Simulator::start(SimConfig {
        oauth_clients: vec![OAuthClient {
            client_id: "checker".into(),
            client_secret: SECRET.into(),
            scopes: vec![
                "core.purchase_order.read".into(),
                "core.supplier.read".into(),
                "core.supplier_sites.read".into(),
            ],
        }],
        initial_records: 2,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let good = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .oauth("checker", SECRET)
        .objects(&["purchase_orders", "supplier_sites"])
        .file_sink(&dir.path().join("events.jsonl"));
    std::fs::write(&config, good.toml()).unwrap();
    let (ok, out) = support::cli(&["check"], &config);
    assert!(ok, "{out}");
    assert!(out.contains("OAuth token minted"), "{out}");
    assert!(out.contains("listed /api/purchase_orders"), "{out}");
    assert!(
        out.contains("listed /api/suppliers/"),
        "nested objects probe a parent's children: {out}"
    );
    assert!(!out.contains(SECRET), "{out}");
    assert!(
        !dir.path().join("state").exists(),
        "check does not touch the state dir"
    );

    let bad = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .oauth("checker", SECRET)
        .objects(&["purchase_orders", "invoices"])
        .sink(&format!(
            "type = \"file\"\nname = \"lost\"\npath = \"{}/nowhere/e.jsonl\"",
            dir.path().display()
        ));
    std::fs::write(&config, bad.toml()).unwrap();
    let (ok, out) = support::cli(&["check", "--json"], &config);
    assert!(!ok, "{out}");
    let json_end = out.rfind(']').unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out[..=json_end]).unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {out}"))
    };
    assert_eq!(row("purchase_orders")["ok"], true);
    assert_eq!(row("invoices")["ok"], false);
    assert!(
        row("invoices")["detail"]
            .as_str()
            .unwrap()
            .contains("core.invoice.read"),
        "{out}"
    );
    assert_eq!(row("lost")["ok"], false);
    assert!(out.contains("2 check(s) failed"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_poll_then_restart_loses_and_repeats_nothing() {
    let sim = Simulator::start(SimConfig {
        oauth_clients: vec![OAuthClient::with_all_scopes("daemon", SECRET)],
        initial_records: 0,
        latency: Duration::from_millis(150),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    for i in 0..40 {
        sim.create("purchase_orders", json!({"po-number": format!("PO-{i}")}));
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("c.toml");
    let port = free_port();
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .oauth("daemon", SECRET)
        .poll("page_size = 4")
        .objects(&["purchase_orders"])
        .file_sink(&events)
        .listen(&format!("127.0.0.1:{port}"))
        .toml();
    std::fs::write(&config, text).unwrap();
    let start = || spawn_run(&config, Stdio::piped());
    let mut daemon = start();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read_jsonl(&events).len() < 8 {
        assert!(std::time::Instant::now() < deadline, "no events");
        std::thread::sleep(Duration::from_millis(20));
    }
    // `health` sees the live daemon.
    let health = Command::new(BIN)
        .args([
            "health",
            "--url",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .status()
        .unwrap();
    assert!(health.success());
    sigterm(&daemon.0);
    let status = wait_exit(&mut daemon.0, Duration::from_secs(40));
    assert!(status.success(), "exit 0 on SIGTERM: {status}");
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(!log.contains(SECRET));
    let first = read_jsonl(&events).len();
    assert!(
        first < 40,
        "the stop came mid-poll ({first} of 40 delivered)"
    );
    let down = Command::new(BIN)
        .args([
            "health",
            "--url",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .status()
        .unwrap();
    assert!(!down.success(), "health fails when nothing answers");

    let mut daemon = start();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read_jsonl(&events).len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 40 after restart",
            read_jsonl(&events).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&daemon.0);
    assert!(wait_exit(&mut daemon.0, Duration::from_secs(40)).success());
    let got: Vec<_> = read_jsonl(&events).iter().map(received).collect();
    // Exactly every version, each once: a graceful stop repeats nothing.
    check_exact(&sim, "purchase_orders", &got);
}

/// A Coupa answering every request with `429 Retry-After: 99999999`: the
/// wait is capped at `coupa.max_backoff`, and SIGTERM still exits within
/// `delivery.shutdown_timeout` + 5 s while the poller waits (it waited for
/// 10 minutes and a systemd stop ended in SIGKILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_in_time_while_coupa_says_retry_after_forever() {
    let sim = Simulator::start(SimConfig {
        oauth_clients: vec![OAuthClient::with_all_scopes("daemon", SECRET)],
        initial_records: 3,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.inject(coupa_sim::FaultRule::always(coupa_sim::Fault::Status {
        status: 429,
        retry_after: Some("99999999".into()),
        body: None,
    }));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .oauth("daemon", SECRET)
        .coupa("max_backoff = \"60s\"")
        .objects(&["purchase_orders", "invoices"])
        .file_sink(&dir.path().join("events.jsonl"))
        .listen(&format!("127.0.0.1:{}", free_port()))
        .raw("[delivery]\nshutdown_timeout = \"3s\"\n")
        .toml();
    std::fs::write(&config, text).unwrap();
    let mut daemon = spawn_run(&config, Stdio::null());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !sim.requests().iter().any(|r| r.status == 429) {
        assert!(std::time::Instant::now() < deadline, "no 429 served");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    sigterm(&daemon.0);
    let status = wait_exit(&mut daemon.0, Duration::from_secs(60));
    let took = started.elapsed();
    assert!(status.success(), "exit 0 on SIGTERM: {status}");
    assert!(
        took < Duration::from_secs(3 + 5),
        "SIGTERM took {took:?}, beyond shutdown_timeout (3 s) + 5 s"
    );
}

/// A run with every kind of secret configured and every sink failing: not
/// one secret in the logs (debug level), `/status`, `/readyz` or `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_or_endpoints() {
    const WEBHOOK: &str = "whsec_c2VjcmV0LXdlYmhvb2sta2V5LTkxNzM=";
    const HEADER: &str = "hdr-token-5c7a";
    const SASL: &str = "sasl-pass-81b0";
    let sim = Simulator::start(SimConfig {
        oauth_clients: vec![OAuthClient::with_all_scopes("daemon", SECRET)],
        initial_records: 3,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let port = free_port();
    let closed = free_port();
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .oauth("daemon", SECRET)
        .objects(&["purchase_orders"])
        .listen(&format!("127.0.0.1:{port}"))
        .sink(&format!(
            "type = \"webhook\"\nurl = \"http://127.0.0.1:{closed}/hook?token={HEADER}\"\nsecret = \"{WEBHOOK}\"\nheaders = {{ \"x-auth\" = \"{HEADER}\" }}\nmax_backoff = \"200ms\""
        ))
        .sink(&format!(
            "type = \"kafka\"\nbrokers = \"127.0.0.1:{closed}\"\nmax_backoff = \"200ms\"\n[sinks.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.username\" = \"svc\"\n\"sasl.password\" = \"{SASL}\"\n\"message.timeout.ms\" = \"1000\""
        ))
        .raw("[log]\nformat = \"json\"\n[delivery]\nstuck_after = \"1s\"")
        .toml();
    std::fs::write(&config, text).unwrap();
    let (mut daemon, err, out) = spawn_logged(&config);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut bodies = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Wait until both sinks have failed, so their errors are in view.
        if let Ok(r) = http.get(format!("{base}/status")).send().await {
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            let failing = v["sinks"].as_array().map_or(0, |s| {
                s.iter().filter(|k| k["last_error"].is_string()).count()
            });
            if failing == 2 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sinks never reported failures"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for path in ["/status", "/readyz", "/metrics", "/"] {
        bodies += &http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    assert!(
        bodies.contains("127.0.0.1"),
        "the errors are shown: {bodies}"
    );
    sigterm(&daemon.0);
    wait_exit(&mut daemon.0, Duration::from_secs(60));
    let logs = err.join().unwrap() + &out.join().unwrap();
    assert!(
        logs.contains("delivery failed"),
        "the run logged sink failures"
    );
    for secret in [SECRET, WEBHOOK, &WEBHOOK[6..], HEADER, SASL] {
        assert!(!logs.contains(secret), "secret `{secret}` in the logs");
        assert!(!bodies.contains(secret), "secret `{secret}` in an endpoint");
    }
}

/// `coupa-changefeed run` on `config` (as `uid` if given): its exit code
/// and log, bounded (it must refuse to start, not run).
fn run_refused(config: &std::path::Path, uid: Option<u32>) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt;
    // Another user may not reach the binary inside the checkout (a clone
    // in a 0700 `mktemp -d` dir): run a link or copy beside the config.
    let bin = match uid {
        None => std::path::PathBuf::from(BIN),
        Some(_) => {
            let beside = config.with_file_name("coupa-changefeed");
            if !beside.exists() {
                std::fs::hard_link(BIN, &beside)
                    .or_else(|_| std::fs::copy(BIN, &beside).map(|_| ()))
                    .unwrap();
            }
            beside
        }
    };
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let mut child = support::Reap(cmd.spawn().unwrap());
    let status = wait_exit(&mut child.0, Duration::from_secs(20));
    let mut log = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    (status.code(), log)
}

/// Issue 12.7: a state dir on a read-only mount, or one the daemon's user
/// may not write, is named as such (exit 74), not called damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_or_unwritable_state_dir_says_so_not_damaged() {
    let Some(disk) = support::Tmpfs::mount("16m") else {
        return;
    };
    let sim = support::quiet_sim(1).await;
    let existing = disk.path.join("existing");
    drop(coupa_changefeed::store::Store::open(&existing).unwrap());
    disk.set_writable(false);
    for (what, state) in [
        ("an existing state dir", existing.clone()),
        ("a new state dir", disk.path.join("new")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        let text = TestConfig::new(&sim.base_url(), &state)
            .objects(&["purchase_orders"])
            .toml();
        std::fs::write(&config, text).unwrap();
        let (code, log) = run_refused(&config, None);
        assert_eq!(code, Some(74), "{what}: {log}");
        assert!(log.contains("read-only file system"), "{what}: {log}");
        assert!(!log.contains("damaged"), "{what}: {log}");
        assert!(log.contains(&state.display().to_string()), "{what}: {log}");
    }
    disk.set_writable(true);

    // Root ignores mode bits: run as `nobody` against root's 0700 dir.
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&disk.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.path().join("c.toml");
    let text = TestConfig::new(&sim.base_url(), &existing)
        .objects(&["purchase_orders"])
        .toml();
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, log) = run_refused(&config, Some(65534));
    assert_eq!(code, Some(74), "{log}");
    assert!(log.contains("permission denied"), "{log}");
    assert!(!log.contains("damaged"), "{log}");
}

/// Raises this process's open-files limit to what `want` needs.
fn need_fds(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain struct in, struct out.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            // Root (CI) may also raise the hard limit; others only the soft.
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max.max(want),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                lim.rlim_cur = want.min(lim.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    assert!(
        lim.rlim_cur >= want,
        "this test needs {want} open files (hard limit {})",
        lim.rlim_max
    );
}

/// Issue 12.8: 1,000 idle connections with half-sent requests against a
/// daemon held to 512 open files (fewer than the connections): `/healthz` still
/// answers within 1 s, the file sink keeps writing, nothing logs "Too many
/// open files".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_leave_healthz_and_the_file_sink_working() {
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncWriteExt;
    need_fds(4096);
    let sim = Simulator::start(SimConfig {
        initial_records: 5,
        change_rate: 10.0,
        change_objects: vec!["purchase_orders".into()],
        ..support::sim_config()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("c.toml");
    let log = dir.path().join("daemon.log");
    let port = free_port();
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .poll("settle = \"1s\"")
        .file_sink(&events)
        .listen(&format!("127.0.0.1:{port}"))
        .toml();
    std::fs::write(&config, text).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs pre-exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = support::Reap(cmd.spawn().unwrap());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read_jsonl(&events).len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no events\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .unwrap_or_else(|_| panic!("connection {i} not accepted within 5 s"))
        .unwrap();
        // A request cut off mid-headers.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    let before = read_jsonl(&events).len();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let r = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/healthz under 1,000 idle connections: {e}"));
        assert_eq!(r.status(), 200);
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("/healthz with 1,000 idle connections held: slowest of 5 {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while read_jsonl(&events).len() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the file sink stopped writing\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !log_text().contains("Too many open files"),
        "{}",
        log_text()
    );
    drop(idle);
    sigterm(&daemon.0);
    let status = wait_exit(&mut daemon.0, Duration::from_secs(40));
    assert!(status.success(), "{status}\n{}", log_text());
}

/// Issue 12.8: a client that never finishes its headers, one that sends
/// nothing, and one idle after a keep-alive request are each cut off
/// (`server.header_timeout`, `server.idle_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = support::quiet_sim(1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let port = free_port();
    let text = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .listen(&format!("127.0.0.1:{port}"))
        .toml()
        .replace(
            "[server]\n",
            "[server]\nheader_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
        );
    std::fs::write(&config, text).unwrap();
    let mut daemon = spawn_run(&config, Stdio::null());
    let connect = || async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => return s,
                Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut trickle = connect().await;
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut silent = connect().await;
    let mut kept = connect().await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    for (what, s) in [
        ("half-sent headers", &mut trickle),
        ("nothing sent", &mut silent),
        ("idle after a request", &mut kept),
    ] {
        // Closed (EOF or reset) well within 10 s, not held open for good.
        let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        match r {
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{what}: {text}");
            }
            Ok(Err(_)) => {}
            Err(_) => panic!("{what}: still open after 10 s"),
        }
    }
    sigterm(&daemon.0);
    assert!(wait_exit(&mut daemon.0, Duration::from_secs(40)).success());
}
