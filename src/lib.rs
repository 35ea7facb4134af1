//! coupa-changefeed: turns a Coupa instance into a stream of change events.
//!
//! # Layout
//!
//! Data flows top to bottom:
//!
//! - [`config`]: typed settings from TOML + environment, validated with
//!   key-named errors; resolves each object's poll plan.
//! - [`coupa`]: the Coupa API — [`coupa::client`] (HTTP, auth, the one
//!   global rate limit, retries), [`coupa::objects`] (the object catalogue,
//!   the only list of objects), [`coupa::record`] (reading ids and
//!   timestamps in any key style and UTC offset).
//! - [`poller`]: one object's poll loop — frozen windows from Coupa's
//!   clock, paging by `id[gt]`, change detection against the seen-set.
//! - [`store`]: the sled state — high-water marks, open windows, seen-set,
//!   outbox, sink cursors. The only code that knows sled's key layout.
//! - [`event`]: change events and their CloudEvents encoding.
//! - [`sink`] and [`delivery`]: sinks (file, webhook, Kafka) drain the
//!   outbox from their own cursors, retrying, dead-lettering what cannot be
//!   delivered; entries are released once every sink settled them.
//! - [`server`] and [`metrics`]: `/healthz`, `/readyz`, `/status`,
//!   `/metrics` and the status page, all rendered from one snapshot.
//! - [`check`]: `coupa-changefeed check`, probing Coupa and every sink.
//! - [`coupa::actions`]: the write-back actions (get, search, create,
//!   update, PO close/cancel, integration runs and records, raw calls).
//! - [`api`]: the actions over HTTP under `/v1` (bearer token, OpenAPI).
//! - [`cli`]: the commands behind `main`; [`cli::actions`] the actions as CLI commands, JSON in and out.
//! - [`admin`]: dead letters over HTTP (`/admin/dlq`), behind the API token.
//! - [`app`]: assembles and stops the daemon; [`shutdown`] is the one
//!   stop signal passed down to every task.
//! - [`backoff`]: the one retry delay.
//! - [`sim`]: the Coupa simulator used by tests, benches and [`demo`].
//! - [`verify`]: the ground-truth checker — the simulator's versions against
//!   what a sink received: lost, duplicate and phantom events.

pub mod app;
pub mod backoff;
pub mod check;
pub mod cli;
pub mod config;
pub mod coupa;
pub mod delivery;
pub mod demo;
pub mod event;
pub mod http;
pub mod metrics;
mod net;
pub mod poll;
pub mod redact;
pub mod shutdown;
pub mod sim;
pub mod sink;
pub mod status;
pub mod store;
pub mod verify;

/// The message a panic carried, if it was a string (what `panic!` makes).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}
