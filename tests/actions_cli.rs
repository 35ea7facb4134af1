//! The write-back actions through the real binary: the shared case table
//! run as CLI commands (`--data` from stdin, a file and inline), each
//! result read back from stdout (JSON, or JSON Lines for lists) and each
//! failure from the one JSON error line on stderr and the exit code;
//! streaming search that stops paging when the reader goes away; input
//! errors that never reach Coupa; secrets kept out of errors.

#[path = "common/actions_cases.rs"]
mod actions_cases;
#[path = "common/actions_exec.rs"]
mod actions_exec;
mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use actions_cases::{cases, seed, Act, Outcome};
use actions_exec::{error_outcome, unreadable};
use common::{sim_config, TestConfig};
use coupa_changefeed::cli::actions::exit_code;
use coupa_changefeed::coupa::actions::Target;
use coupa_changefeed::coupa::body::ErrorEnvelope;
use coupa_changefeed::sim::{Fault, FaultRule, Simulator};
use coupa_changefeed::store::Store;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_coupa-changefeed");

/// Longest any one command may take (a loaded 2-core machine included).
const LIMIT: Duration = Duration::from_secs(60);

/// What a command left behind.
struct CliReply {
    outcome: Outcome,
    /// The exit code (`None`: killed by a signal).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `args` against `config`, feeding `stdin`; bounded by [`LIMIT`].
async fn cli(config: &Path, args: &[String], stdin: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("COUPA_CHANGEFEED_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("the binary starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`{}` took over {LIMIT:?}", args.join(" ")))
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The arguments for `target`'s object, with `--parent` when nested.
fn object_args(target: &Target) -> Vec<String> {
    let mut a = vec![target.object.clone()];
    if let Some(p) = target.parent {
        a.extend(["--parent".into(), p.to_string()]);
    }
    a
}

/// Whether the act's result is a list (printed as JSON Lines).
fn is_list(act: &Act) -> bool {
    matches!(
        act,
        Act::Search { .. } | Act::RemitToAddresses { .. } | Act::SupplierSites { .. }
    )
}

/// The command line for an act, and what goes to stdin. Bodies travel
/// all three ways: stdin for `create`, a file for `update`, inline
/// otherwise.
fn command_for(act: &Act, scratch: &Path) -> (Vec<String>, Option<String>) {
    let s = |x: &str| x.to_string();
    let mut stdin = None;
    let args: Vec<String> = match act {
        Act::Get { target, id } => {
            [vec![s("get")], object_args(target), vec![id.to_string()]].concat()
        }
        Act::Search {
            target,
            filters,
            limit,
        } => {
            let mut a = [vec![s("search")], object_args(target)].concat();
            a.extend(filters.iter().map(|(k, v)| format!("{k}={v}")));
            a.extend([s("--limit"), limit.to_string()]);
            a
        }
        Act::Create { target, body } => {
            stdin = Some(body.to_string());
            [
                vec![s("create")],
                object_args(target),
                vec![s("--data"), s("-")],
            ]
            .concat()
        }
        Act::Update { target, id, body } => {
            let file = scratch.join("body.json");
            std::fs::write(&file, body.to_string()).unwrap();
            [
                vec![s("update")],
                object_args(target),
                vec![id.to_string(), s("--data"), format!("@{}", file.display())],
            ]
            .concat()
        }
        Act::Perform {
            target,
            id,
            action,
            body,
        } => {
            let mut a = [
                vec![s("perform")],
                object_args(target),
                vec![id.to_string(), action.clone()],
            ]
            .concat();
            if let Some(b) = body {
                a.extend([s("--data"), b.to_string()]);
            }
            a
        }
        Act::MarkExported { target, id } => [
            vec![s("mark-exported")],
            object_args(target),
            vec![id.to_string()],
        ]
        .concat(),
        Act::RemitToAddresses { supplier_id } => {
            vec![s("supplier"), s("remit-to"), supplier_id.to_string()]
        }
        Act::SupplierSites { supplier_id } => {
            vec![s("supplier"), s("sites"), supplier_id.to_string()]
        }
        Act::ClosePurchaseOrder { id } => vec![s("po"), s("close"), id.to_string()],
        Act::CancelPurchaseOrder { id } => vec![s("po"), s("cancel"), id.to_string()],
        Act::CreateIntegrationRun { code } => vec![s("integration-run"), s("create"), code.clone()],
        Act::SetIntegrationRunStatus { id, status, counts } => {
            let mut a = vec![
                s("integration-run"),
                s("status"),
                id.to_string(),
                status.to_string(),
            ];
            if let Some(n) = counts.total_records {
                a.extend([s("--total-records"), n.to_string()]);
            }
            if let Some(n) = counts.records_processed {
                a.extend([s("--records-processed"), n.to_string()]);
            }
            a
        }
        Act::CreateIntegrationError { record, alert }
        | Act::CreateIntegrationHistoryRecord { record, alert } => {
            let group = if matches!(act, Act::CreateIntegrationError { .. }) {
                "integration-error"
            } else {
                "integration-history"
            };
            let mut a = vec![
                s(group),
                s("create"),
                s("--data"),
                serde_json::to_string(record).unwrap(),
            ];
            if *alert {
                a.push(s("--alert"));
            }
            a
        }
        Act::Resolve { object, id } => vec![s("resolve"), object.clone(), id.to_string()],
        Act::Raw {
            method,
            path,
            query,
            body,
        } => {
            let mut a = vec![s("http"), method.clone(), path.clone()];
            for (k, v) in query {
                a.extend([s("--query"), format!("{k}={v}")]);
            }
            if let Some(b) = body {
                a.extend([s("--data"), b.to_string()]);
            }
            a
        }
    };
    (args, stdin)
}

/// Reads a command's result back: stdout's JSON (lists: one record per
/// line) on success, stderr's error line otherwise.
fn reply(act: &Act, code: Option<i32>, stdout: String, stderr: String) -> CliReply {
    let outcome = if code == Some(0) {
        let parsed = if is_list(act) {
            stdout
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<Vec<Value>, _>>()
                .map(Value::Array)
        } else {
            serde_json::from_str(&stdout)
        };
        match parsed {
            Ok(v) => Outcome::Ok(v),
            Err(e) => unreadable(&format!("stdout is not JSON ({e}): {stdout}")),
        }
    } else {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        error_outcome(last.unwrap_or(""), &format!("exit {code:?}, stderr"))
    };
    CliReply {
        outcome,
        code,
        stdout,
        stderr,
    }
}

/// Runs one act through the binary.
async fn run_cli(config: &Path, act: &Act, scratch: &Path) -> CliReply {
    let (args, stdin) = command_for(act, scratch);
    let (code, stdout, stderr) = cli(config, &args, stdin.as_deref()).await;
    reply(act, code, stdout, stderr)
}

/// A config for `sim` with `[coupa]` and no `[[objects]]`, its state dir
/// at `state` (which the test keeps locked).
fn write_config(sim: &Simulator, state: &Path, at: &Path) {
    std::fs::write(at, TestConfig::new(&sim.base_url(), state).toml()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Held open (and so locked) throughout: a command that opened the
    // state dir would fail, as it would beside a running daemon.
    let _store = Store::open(&state).unwrap();
    let config = dir.path().join("actions.toml");
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let sim = Simulator::start(sim_config()).await.unwrap();
        seed(&sim);
        write_config(&sim, &state, &config);
        let before = sim.requests().len();
        let r = run_cli(&config, &case.act, dir.path()).await;
        if let Err(why) = case.check(&r.outcome, &sim, before) {
            failures.push(format!("{}: {why}", case.name));
        }
        let want = match &r.outcome {
            Outcome::Ok(_) => 0,
            Outcome::Err { kind, .. } => exit_code(kind) as i32,
        };
        if r.code != Some(want) {
            failures.push(format!(
                "{}: exit {:?}, expected {want} ({:?})",
                case.name, r.code, r.outcome
            ));
        }
        if r.code != Some(0) && !r.stdout.is_empty() {
            failures.push(format!("{}: failed yet printed {:?}", case.name, r.stdout));
        }
        if r.code == Some(0) && !r.stderr.is_empty() {
            failures.push(format!("{}: succeeded yet said {:?}", case.name, r.stderr));
        }
        sim.shutdown().await;
    }
    assert!(
        failures.is_empty(),
        "{} failures over {} cases:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_prints_json_lines_and_stops_paging_when_the_reader_goes_away() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    seed(&sim);
    for i in 0..1500 {
        sim.create("departments", json!({"name": format!("Extra {i:04}")}));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actions.toml");
    write_config(&sim, &dir.path().join("state"), &config);
    let pages = |sim: &Simulator| {
        sim.requests()
            .iter()
            .filter(|r| r.path == "/api/departments")
            .count()
    };

    // All of them, one compact record per line, in id order.
    let (code, stdout, _) = cli(
        &config,
        &[
            "search".into(),
            "departments".into(),
            "--limit".into(),
            "5000".into(),
        ],
        None,
    )
    .await;
    assert_eq!(code, Some(0));
    let ids: Vec<u64> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (1..=1560).collect::<Vec<u64>>());
    assert_eq!(pages(&sim), 1560usize.div_ceil(50) + 1);

    // Read one line, then hang up: the command ends quietly and the
    // remaining pages are never asked for.
    let before = pages(&sim);
    let mut child = tokio::process::Command::new(BIN)
        .args(["search", "departments", "--limit", "5000", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("a first line");
    assert_eq!(serde_json::from_str::<Value>(&first).unwrap()["id"], 1);
    drop(lines);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("the command ends once its reader is gone")
        .unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let asked = pages(&sim) - before;
    // What fits in the pipe's buffer is fetched, not the 32 pages.
    assert!(
        asked < 20,
        "{asked} pages fetched for a reader that left after one line"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_failing_midway_keeps_what_was_printed_and_says_why() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    seed(&sim);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actions.toml");
    write_config(&sim, &dir.path().join("state"), &config);
    sim.inject(FaultRule {
        fault: Fault::Status {
            status: 403,
            retry_after: None,
            body: None,
        },
        times: 1,
        path_contains: Some("id%5Bgt%5D=50".into()),
    });
    let (code, stdout, stderr) = cli(&config, &["search".into(), "departments".into()], None).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout.lines().count(), 50, "the first page was printed");
    let env: ErrorEnvelope = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(env.error.kind, "forbidden");
    assert_eq!(env.error.status, Some(403));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_json_line_on_stderr_with_fields() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    seed(&sim);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actions.toml");
    write_config(&sim, &dir.path().join("state"), &config);
    let (code, stdout, stderr) = cli(
        &config,
        &[
            "create".into(),
            "suppliers".into(),
            "--data".into(),
            r#"{"name": "Acme Supply", "number": "S-BOR"}"#.into(),
        ],
        None,
    )
    .await;
    assert_eq!(code, Some(5));
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let v: Value = serde_json::from_str(&stderr).unwrap();
    assert_eq!(
        v["error"]["fields"],
        json!([{"field": "supplier", "message": "Name has already been taken"},
               {"field": "supplier", "message": "Number has already been taken"}])
    );
    assert_eq!(v["error"]["kind"], "validation");
    assert_eq!(v["error"]["status"], 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/api/suppliers"));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_before_reaching_coupa() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    seed(&sim);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actions.toml");
    write_config(&sim, &dir.path().join("state"), &config);
    let before = sim.requests().len();
    let a = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (args, says) in [
        (
            a(&["create", "suppliers", "--data", "{nope"]),
            "is not JSON",
        ),
        (
            a(&["create", "suppliers", "--data", "@/no/such/file.json"]),
            "/no/such/file.json",
        ),
        (a(&["search", "departments", "status"]), "is not KEY=VALUE"),
        (
            a(&["integration-run", "status", "1", "done"]),
            "unknown integration run status",
        ),
        (
            a(&[
                "integration-error",
                "create",
                "--data",
                r#"{"document_id": 1}"#,
            ]),
            "document_type",
        ),
        (a(&["http", "TRACE", "/api/users"]), "TRACE"),
        (a(&["http", "GET", "/api/users?limit=1"]), "query"),
    ] {
        let (code, stdout, stderr) = cli(&config, &args, None).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        let env: ErrorEnvelope = serde_json::from_str(stderr.trim())
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {stderr}"));
        assert_eq!(env.error.kind, "invalid", "{args:?}");
        assert!(
            env.error.message.contains(says),
            "{args:?}: {}",
            env.error.message
        );
    }
    assert_eq!(sim.requests().len(), before, "nothing reached Coupa");

    // A config that cannot be read is exit 1, kind `config`.
    let (code, _, stderr) = cli(
        &dir.path().join("missing.toml"),
        &a(&["get", "users", "1"]),
        None,
    )
    .await;
    assert_eq!(code, Some(1));
    let env: ErrorEnvelope = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(env.error.kind, "config");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_credential_is_named_not_shown() {
    let sim = Simulator::start(sim_config()).await.unwrap();
    seed(&sim);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("actions.toml");
    let secret = "wrong-key-7d0e5b1c";
    std::fs::write(
        &config,
        TestConfig::new(&sim.base_url(), &dir.path().join("state"))
            .coupa(&format!("api_key = \"{secret}\""))
            .toml(),
    )
    .unwrap();
    let (code, stdout, stderr) =
        cli(&config, &["po".into(), "close".into(), "1".into()], None).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty());
    let env: ErrorEnvelope = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(env.error.kind, "unauthorized");
    assert!(!stderr.contains(secret), "{stderr}");
    assert_eq!(sim.get("purchase_orders", 1).unwrap()["status"], "issued");
    sim.shutdown().await;
}
