//! The actions as CLI commands: `get`, `search`, `create`, `update`,
//! `perform`, `mark-exported`, `resolve`, `po close|cancel`,
//! `supplier sites|remit-to`, `integration-run create|status`,
//! `integration-error create`, `integration-history create` and `http`.
//! Each parses its arguments, makes one call of [`Actions`] and prints the
//! result; `main` flattens [`ActionCommand`] into its own commands.
//!
//! Output, for scripts first: a record or raw response is one JSON value
//! on stdout (pretty on a terminal, compact otherwise); lists (`search`,
//! `supplier sites`, `supplier remit-to`) are JSON Lines, one compact
//! record per line, printed as the pages arrive (`| head` stops the
//! paging). On failure stdout carries nothing more, stderr gets
//! `{"error": {"kind", "status", "message", "fields"}}` (the HTTP API's
//! error body, [`ErrorBody`]) and the exit code says the kind:
//! 2 invalid arguments, 3 refused, 4 not found, 5 Coupa validation,
//! 1 anything else (config, credentials, Coupa failing).
//!
//! Reads `[coupa]` from the config only (no `[[objects]]` needed) and
//! never opens the state directory, so it runs beside a live daemon.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use clap::Subcommand;
use futures_util::TryStreamExt;
use serde_json::Value;

use super::ConfigArg;
use crate::config::Settings;
use crate::coupa::actions::{Actions, IntegrationRecord, Target};
use crate::coupa::body::{ErrorBody, ErrorEnvelope, RunStatusRequest, DEFAULT_LIMIT};
use crate::coupa::record::Record;
use crate::coupa::{CoupaClient, CoupaError};

/// The action commands (flattened into the top-level commands).
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Print one record (`GET /api/<object>/<id>`).
    Get {
        /// Catalogue name, e.g. purchase_orders (see `objects`).
        object: String,
        id: u64,
        /// The parent record's id, for objects nested under one
        /// (supplier_sites and remit_to_addresses live under a supplier).
        #[arg(long)]
        parent: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the records matching FILTERs as JSON Lines, as pages arrive.
    Search {
        object: String,
        /// Coupa filters as KEY=VALUE, e.g. status=issued 'updated_at[gt]=2024-01-01'
        /// order_by=name (ordering by anything but id pages by offset).
        filters: Vec<String>,
        /// Most records printed.
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long)]
        parent: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Create a record from a JSON body in Coupa's shape; print it.
    Create {
        object: String,
        /// The body: inline JSON, @FILE, or - for stdin.
        #[arg(long, short)]
        data: String,
        #[arg(long)]
        parent: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Change the fields in a JSON body, only those; print the record.
    Update {
        object: String,
        id: u64,
        /// The fields: inline JSON, @FILE, or - for stdin.
        #[arg(long, short)]
        data: String,
        #[arg(long)]
        parent: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run one of the object's catalogue actions (close, reopen, void, ...).
    Perform {
        object: String,
        id: u64,
        /// The action, as `objects` lists it.
        action: String,
        /// Optional body: inline JSON, @FILE, or - for stdin.
        #[arg(long, short)]
        data: Option<String>,
        #[arg(long)]
        parent: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Set Coupa's `exported` flag on a record.
    MarkExported {
        object: String,
        id: u64,
        #[arg(long)]
        parent: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Resolve an integration error or history record.
    Resolve {
        /// integration_errors or integration_history_records.
        object: String,
        id: u64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Close or cancel a purchase order.
    Po {
        #[command(subcommand)]
        command: PoCommand,
    },
    /// A supplier's sites or remit-to addresses (JSON Lines).
    Supplier {
        #[command(subcommand)]
        command: SupplierCommand,
    },
    /// Create an integration run, or move one to a status.
    IntegrationRun {
        #[command(subcommand)]
        command: RunCommand,
    },
    /// Report a document's failure in the ERP, tied to a run.
    IntegrationError {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Record a document's outcome in the ERP, tied to an integration.
    IntegrationHistory {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Any call under Coupa's /api/ (print Coupa's JSON; null if empty).
    Http {
        /// GET, POST, PUT, PATCH or DELETE.
        method: String,
        /// Under /api/, no query string, e.g. /api/purchase_orders/1/reopen.
        path: String,
        /// A query pair KEY=VALUE (repeat for more).
        #[arg(long, short)]
        query: Vec<String>,
        /// Body: inline JSON, @FILE, or - for stdin.
        #[arg(long, short)]
        data: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoCommand {
    /// `PUT /api/purchase_orders/:id/close`.
    Close {
        id: u64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// `PUT /api/purchase_orders/:id/cancel`.
    Cancel {
        id: u64,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum SupplierCommand {
    /// The supplier's sites.
    Sites {
        /// The supplier's id.
        id: u64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The supplier's remit-to addresses.
    RemitTo {
        /// The supplier's id.
        id: u64,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Start a run of the integration with this code (created `pending`).
    Create {
        /// The integration's code, e.g. ERP-PO.
        code: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Move a run to STATUS: pending, running, successful, failed or paused.
    Status {
        id: u64,
        status: String,
        /// Written first, with a plain update.
        #[arg(long)]
        total_records: Option<u64>,
        /// Written first, with a plain update.
        #[arg(long)]
        records_processed: Option<u64>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Create one from JSON: {"document_type", "document_id",
    /// "document_status", "status", "integration_code", "run_id",
    /// "contact_alert_type", "responses": [{"code", "message"}]}.
    Create {
        /// The record: inline JSON, @FILE, or - for stdin.
        #[arg(long, short)]
        data: String,
        /// Also alert the integration's contacts (`/create_alert`).
        #[arg(long)]
        alert: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
struct Failure {
    body: ErrorBody,
    code: u8,
}

impl Failure {
    fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            body: ErrorBody::own("invalid", message),
            code: 2,
        }
    }
}

/// The exit code for an error kind (documented in the module header).
pub fn exit_code(kind: &str) -> u8 {
    match kind {
        "invalid" => 2,
        "refused" => 3,
        "not_found" => 4,
        "validation" => 5,
        _ => 1,
    }
}

impl From<CoupaError> for Failure {
    fn from(e: CoupaError) -> Failure {
        let body = ErrorBody::from(&e);
        Failure {
            code: exit_code(&body.kind),
            body,
        }
    }
}

/// What a command printed successfully, or why it stopped.
type Outcome = Result<(), Failure>;

/// Runs one action command; prints its result or its error.
pub async fn run(cmd: ActionCommand) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    match execute(cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let env = ErrorEnvelope { error: f.body };
            let stderr = std::io::stderr();
            let text = if stderr.is_terminal() {
                serde_json::to_string_pretty(&env)
            } else {
                serde_json::to_string(&env)
            }
            .unwrap_or_default();
            let _ = writeln!(stderr.lock(), "{text}");
            ExitCode::from(f.code)
        }
    }
}

fn actions(config: &ConfigArg) -> Result<Actions, Failure> {
    let settings = Settings::load_for_actions(config.config.as_deref()).map_err(|e| Failure {
        body: ErrorBody::own("config", e.to_string()),
        code: 1,
    })?;
    let client = CoupaClient::new(&settings.coupa)?;
    Ok(Actions::new(client))
}

fn target(object: &str, parent: Option<u64>) -> Target {
    Target {
        object: object.into(),
        parent,
    }
}

async fn execute(cmd: ActionCommand) -> Outcome {
    use ActionCommand as C;
    match cmd {
        C::Get {
            object,
            id,
            parent,
            config,
        } => print_record(actions(&config)?.get(target(&object, parent), id).await?),
        C::Search {
            object,
            filters,
            limit,
            parent,
            config,
        } => {
            let filters = pairs("filter", &filters)?;
            let a = actions(&config)?;
            let records = a.search(target(&object, parent), &filters, limit)?;
            print_lines(records).await
        }
        C::Create {
            object,
            data,
            parent,
            config,
        } => {
            let body = read_data(&data)?;
            print_record(
                actions(&config)?
                    .create(target(&object, parent), &body)
                    .await?,
            )
        }
        C::Update {
            object,
            id,
            data,
            parent,
            config,
        } => {
            let body = read_data(&data)?;
            print_record(
                actions(&config)?
                    .update(target(&object, parent), id, &body)
                    .await?,
            )
        }
        C::Perform {
            object,
            id,
            action,
            data,
            parent,
            config,
        } => {
            let body = data.as_deref().map(read_data).transpose()?;
            print_record(
                actions(&config)?
                    .perform(target(&object, parent), id, &action, body.as_ref())
                    .await?,
            )
        }
        C::MarkExported {
            object,
            id,
            parent,
            config,
        } => print_record(
            actions(&config)?
                .mark_exported(target(&object, parent), id)
                .await?,
        ),
        C::Resolve { object, id, config } => {
            print_record(actions(&config)?.resolve(&object, id).await?)
        }
        C::Po { command } => match command {
            PoCommand::Close { id, config } => {
                print_record(actions(&config)?.close_purchase_order(id).await?)
            }
            PoCommand::Cancel { id, config } => {
                print_record(actions(&config)?.cancel_purchase_order(id).await?)
            }
        },
        C::Supplier { command } => {
            let (object, id, config) = match command {
                SupplierCommand::Sites { id, config } => ("supplier_sites", id, config),
                SupplierCommand::RemitTo { id, config } => ("remit_to_addresses", id, config),
            };
            // What `Actions::supplier_sites` and `remit_to_addresses`
            // collect, printed as it streams instead.
            let a = actions(&config)?;
            let records = a.search(Target::nested(object, id), &[], DEFAULT_LIMIT)?;
            print_lines(records).await
        }
        C::IntegrationRun { command } => match command {
            RunCommand::Create { code, config } => {
                print_record(actions(&config)?.create_integration_run(&code).await?)
            }
            RunCommand::Status {
                id,
                status,
                total_records,
                records_processed,
                config,
            } => {
                let (status, counts) = RunStatusRequest {
                    status,
                    total_records,
                    records_processed,
                }
                .parts()
                .map_err(Failure::invalid)?;
                print_record(
                    actions(&config)?
                        .set_integration_run_status(id, status, counts)
                        .await?,
                )
            }
        },
        C::IntegrationError { command } => create_log(command, "integration_errors").await,
        C::IntegrationHistory { command } => {
            create_log(command, "integration_history_records").await
        }
        C::Http {
            method,
            path,
            query,
            data,
            config,
        } => {
            let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| Failure::invalid(format!("`{method}` is not an HTTP method")))?;
            let query = pairs("--query", &query)?;
            let body = data.as_deref().map(read_data).transpose()?;
            let v = actions(&config)?
                .raw(method, &path, &query, body.as_ref())
                .await?;
            print_value(&v)
        }
    }
}

/// `KEY=VALUE` arguments as pairs, order kept.
fn pairs(what: &str, args: &[String]) -> Result<Vec<(String, String)>, Failure> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure::invalid(format!("{what} `{a}` is not KEY=VALUE")))
        })
        .collect()
}

/// A `--data` argument: `-` reads stdin, `@FILE` a file, anything else is
/// the JSON itself.
fn read_data(arg: &str) -> Result<Value, Failure> {
    let (source, text) = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::invalid(format!("--data -: cannot read stdin: {e}")))?;
        ("stdin".to_string(), s)
    } else if let Some(path) = arg.strip_prefix('@') {
        let s = std::fs::read_to_string(path)
            .map_err(|e| Failure::invalid(format!("--data @{path}: {e}")))?;
        (format!("@{path}"), s)
    } else {
        ("inline".to_string(), arg.to_string())
    };
    serde_json::from_str(&text)
        .map_err(|e| Failure::invalid(format!("--data ({source}) is not JSON: {e}")))
}

/// `integration-error|integration-history create`: one record, two objects.
async fn create_log(command: LogCommand, object: &str) -> Outcome {
    let LogCommand::Create {
        data,
        alert,
        config,
    } = command;
    let rec = read_record(&data)?;
    print_record(actions(&config)?.create_log(object, &rec, alert).await?)
}

fn read_record(arg: &str) -> Result<IntegrationRecord, Failure> {
    serde_json::from_value(read_data(arg)?).map_err(|e| Failure::invalid(format!("--data: {e}")))
}

/// Whether a write failure is the reader going away (`| head`): the end,
/// not an error.
fn gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

fn write_failure(e: std::io::Error) -> Failure {
    Failure {
        body: ErrorBody::own("io", format!("cannot write to stdout: {e}")),
        code: 1,
    }
}

fn print_value(v: &Value) -> Outcome {
    let stdout = std::io::stdout();
    let text = if stdout.is_terminal() {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .unwrap_or_default();
    let mut out = stdout.lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if !gone(&e) => Err(write_failure(e)),
        _ => Ok(()),
    }
}

fn print_record(r: Record) -> Outcome {
    print_value(&Value::Object(r))
}

/// Prints each record on its own line as it arrives; stops the stream
/// (and the paging) when the reader goes away.
async fn print_lines(
    records: impl futures_util::Stream<Item = Result<Record, CoupaError>>,
) -> Outcome {
    futures_util::pin_mut!(records);
    while let Some(r) = records.try_next().await? {
        let line = Value::Object(r).to_string();
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            return if gone(&e) {
                Ok(())
            } else {
                Err(write_failure(e))
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        let p = pairs("filter", &["a[gt]=1=2".into(), "b=".into()]).unwrap();
        assert_eq!(
            p,
            [("a[gt]".into(), "1=2".into()), ("b".into(), String::new())]
        );
        assert_eq!(pairs("filter", &["=x".into()]).unwrap_err().code, 2);
        assert_eq!(pairs("filter", &["x".into()]).unwrap_err().code, 2);
    }

    #[test]
    fn data_reads_inline_json_or_a_file() {
        assert_eq!(read_data(r#"{"a":1}"#).unwrap()["a"], 1);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.json");
        std::fs::write(&p, "[1, 2]").unwrap();
        assert_eq!(read_data(&format!("@{}", p.display())).unwrap()[1], 2);
        let e = read_data("@/no/such/file").unwrap_err();
        assert_eq!(e.code, 2);
        assert!(read_data("{nope")
            .unwrap_err()
            .body
            .message
            .contains("inline"));
    }

    #[test]
    fn exit_codes_name_the_kind() {
        assert_eq!(exit_code("invalid"), 2);
        assert_eq!(exit_code("refused"), 3);
        assert_eq!(exit_code("not_found"), 4);
        assert_eq!(exit_code("validation"), 5);
        assert_eq!(exit_code("transport"), 1);
    }
}
