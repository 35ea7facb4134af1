//! The operator's HTTP surface against a running daemon: `/healthz`,
//! `/readyz` (healthy, Coupa down, poller behind, sink stuck), `/status`,
//! `/metrics` (checked by `promtool` when installed), and the status page
//! rendered by headless Chromium.

use crate::support;

use std::time::Duration;

use crate::support::{read_jsonl, wait_for, Daemon, TestConfig};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

async fn get(daemon: &Daemon, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", daemon.handles.server_addr.unwrap());
    let r = reqwest::get(&url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn json(daemon: &Daemon, path: &str) -> (u16, Value) {
    let (code, body) = get(daemon, path).await;
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

/// Polls `path` until `ok` holds for its JSON (bounded).
async fn until(daemon: &Daemon, path: &str, what: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let (code, v) = json(daemon, path).await;
        if ok(code, &v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}; last {code} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `promtool check metrics` if installed; under CI it must be.
fn promtool(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is required under CI: {e}"
            );
            eprintln!("skipped: promtool not found ({e}); its check of /metrics did not run");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool rejects the metrics:\n{report}\n{text}"
    );
}

/// A sample's value by its exact name and labels.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_daemon_is_ready_and_reports_its_figures() {
    let sim = support::quiet_sim(5).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .file_sink(&out)
        .settings();
    let daemon = Daemon::start(&settings);
    wait_for("5 events delivered", LIMIT, || read_jsonl(&out).len() >= 5).await;
    assert_eq!(get(&daemon, "/healthz").await.0, 200);
    let ready = until(&daemon, "/readyz", "ready", |c, _| c == 200).await;
    assert_eq!(ready["ready"], true);
    let status = until(&daemon, "/status", "sink counted", |_, v| {
        v["sinks"][0]["delivered"] == 5
    })
    .await;
    let po = &status["objects"][0];
    assert_eq!(po["name"], "purchase_orders");
    assert_eq!(po["state"], "ok");
    assert_eq!(po["events"], 5);
    assert!(
        po["hwm"].is_string() && po["lag_seconds"].as_f64().unwrap() < 3600.0,
        "{po}"
    );
    assert_eq!(status["sinks"][0]["name"], "file");
    assert_eq!(status["sinks"][0]["backlog"], 0);
    assert!(status["coupa"]["requests"].as_u64().unwrap() >= 2);

    let (code, text) = get(&daemon, "/metrics").await;
    assert_eq!(code, 200);
    let obj = "{object=\"purchase_orders\"}";
    assert_eq!(
        sample(
            &text,
            &format!("coupa_changefeed_events_emitted_total{obj}")
        ),
        Some(5.0)
    );
    assert!(sample(&text, &format!("coupa_changefeed_polls_total{obj}")).unwrap() >= 1.0);
    assert!(sample(&text, &format!("coupa_changefeed_window_lag_seconds{obj}")).is_some());
    assert_eq!(
        sample(
            &text,
            "coupa_changefeed_sink_delivered_total{sink=\"file\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, "coupa_changefeed_sink_backlog{sink=\"file\"}"),
        Some(0.0)
    );
    assert!(
        sample(
            &text,
            "coupa_changefeed_coupa_responses_total{status=\"2xx\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        text.contains("coupa_changefeed_sink_delivery_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "coupa_changefeed_coupa_request_duration_seconds_count{status=\"2xx\"}"
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    assert_eq!(sample(&text, "coupa_changefeed_ready"), Some(1.0));
    promtool(&text);
    // OpenMetrics for scrapers that ask for it.
    let url = format!("http://{}/metrics", daemon.handles.server_addr.unwrap());
    let om = reqwest::Client::new()
        .get(&url)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_stuck_sink_and_a_poller_that_is_behind() {
    let sim = support::quiet_sim(5).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .coupa("timeout = \"60s\"")
        .sink(&format!(
            "type = \"file\"\nname = \"archive\"\npath = \"{}/e.jsonl\"",
            out_dir.display()
        ))
        .raw("[delivery]\nstuck_after = \"1s\"")
        .settings();
    let daemon = Daemon::start_after(&settings, || std::fs::remove_dir_all(&out_dir).unwrap());
    let v = until(&daemon, "/readyz", "the stuck sink", |c, _| c == 503).await;
    let p = &v["problems"][0];
    assert_eq!(
        (p["component"].as_str(), p["name"].as_str()),
        (Some("sink"), Some("archive")),
        "{v}"
    );
    assert!(p["reason"].as_str().unwrap().contains("e.jsonl"), "{v}");
    std::fs::create_dir(&out_dir).unwrap();
    until(&daemon, "/readyz", "the sink recovers", |c, _| c == 200).await;

    // Coupa answers, but slower than three schedules: the poller is behind.
    sim.set_latency(Duration::from_secs(20));
    let v = until(&daemon, "/readyz", "the poller behind", |c, _| c == 503).await;
    let p = &v["problems"][0];
    assert_eq!(
        (p["component"].as_str(), p["name"].as_str()),
        (Some("object"), Some("purchase_orders")),
        "{v}"
    );
    assert!(
        p["reason"].as_str().unwrap().contains("3 × its schedule"),
        "{v}"
    );
    let (_, status) = json(&daemon, "/status").await;
    assert_eq!(status["objects"][0]["state"], "behind");
    sim.set_latency(Duration::ZERO);
    until(&daemon, "/readyz", "the poller catches up", |c, _| c == 200).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupa_down_shows_as_failing_then_not_ready_with_the_error() {
    let sim = support::quiet_sim(2).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders"])
        .file_sink(&dir.path().join("e.jsonl"))
        .settings();
    let daemon = Daemon::start(&settings);
    until(&daemon, "/status", "a first poll", |_, v| {
        v["objects"][0]["state"] == "ok"
    })
    .await;
    sim.shutdown().await;
    let v = until(&daemon, "/status", "the poll fails", |_, v| {
        v["objects"][0]["state"] != "ok"
    })
    .await;
    assert!(v["objects"][0]["last_error"].is_string(), "{v}");
    let v = until(&daemon, "/readyz", "not ready", |c, _| c == 503).await;
    let reason = v["problems"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("last error") && reason.contains("127.0.0.1"),
        "{reason}"
    );
    let (_, text) = get(&daemon, "/metrics").await;
    assert!(
        text.contains("coupa_changefeed_poll_errors_total{object=\"purchase_orders\",kind="),
        "{text}"
    );
    assert_eq!(sample(&text, "coupa_changefeed_ready"), Some(0.0));
    daemon.stop().await.unwrap();
}

/// Counts pixels of one colour in a PNG.
fn pixels_of(png_path: &std::path::Path, rgb: [u8; 3]) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p[..3] == rgb)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_its_tables_in_chromium() {
    let chromium = ["chromium", "/usr/bin/chromium"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok()
    });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is required under CI"
        );
        eprintln!("skipped: chromium not found");
        return;
    };
    let sim = support::quiet_sim(3).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let settings = TestConfig::new(&sim.base_url(), &dir.path().join("state"))
        .objects(&["purchase_orders", "invoices"])
        .file_sink(&out)
        .settings();
    let daemon = Daemon::start(&settings);
    wait_for("events delivered", LIMIT, || read_jsonl(&out).len() >= 6).await;
    until(&daemon, "/readyz", "ready", |c, _| c == 200).await;
    let url = format!("http://{}/", daemon.handles.server_addr.unwrap());
    let shot = dir.path().join("status.png");
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,700",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium finishes within 60 s")
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Healthy rows are painted #e8f6e8, the header #eeeeee, the ready
    // badge #2a8a2a: all three must be on screen.
    let rows = pixels_of(&shot, [0xe8, 0xf6, 0xe8]);
    assert!(rows > 2000, "healthy table rows not rendered ({rows} px)");
    assert!(
        pixels_of(&shot, [0xee, 0xee, 0xee]) > 1000,
        "table headers not rendered"
    );
    assert!(
        pixels_of(&shot, [0x2a, 0x8a, 0x2a]) > 100,
        "ready badge not rendered"
    );
    daemon.stop().await.unwrap();
}
