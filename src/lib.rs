//! coupa-changefeed: turns a Coupa instance into a stream of change events.
//!
//! # Layout
//!
//! Data flows top to bottom; a module imports only from below it.
//!
//! - [`config`]: typed settings from TOML + environment, validated with
//!   key-named errors (`config::errors` is the leaf every section shares);
//!   resolves each object's poll plan, schedule and shard.
//! - [`coupa`]: the Coupa API — [`coupa::client`] (HTTP, auth, the one
//!   global rate limit, retries), [`coupa::settings`] (`[coupa]`),
//!   [`coupa::objects`] (the object catalogue, the only list of objects),
//!   [`coupa::record`] (ids and timestamps in any key style and UTC
//!   offset), [`coupa::actions`] (the write-back actions) and
//!   [`coupa::body`] (the error and request bodies the API and CLI share).
//! - [`poll`]: one object's poll loop — frozen windows from Coupa's clock
//!   (`window`), paging by `id[gt]` (`page`), sliced backfill
//!   (`backfill`), the nested walk (`nested`), change detection against
//!   the seen-set (`detect`), and what it reports (`status`).
//! - [`store`]: the sled state — object state and seen-set (`objects`),
//!   outbox and cursors (`outbox`), dead letters (`dead`), key layout
//!   (`keys`). The only code that knows sled's key layout.
//! - [`event`]: change events and their CloudEvents encoding.
//! - [`sink`] and [`delivery`]: sinks (`file`, `webhook/`, `kafka/`) drain
//!   the outbox from their own cursors, retrying, dead-lettering what
//!   cannot be delivered; entries are released once every sink settled them.
//! - `status`: [`app::Handles`] and the snapshot every surface renders;
//!   `metrics`: the latency families only.
//! - `http`: the one server — ops endpoints and page (`ops`), the actions
//!   API under `/v1` (`api/`), dead letters under `/admin/dlq` (`admin`),
//!   the bearer token both need (`token`).
//! - `net`: what HTTP code shares (`Retry-After`, error chains);
//!   [`redact`]: hiding secrets and user info in text and URLs.
//! - [`check`]: `coupa-changefeed check`, probing Coupa and every sink.
//! - [`cli`]: the commands behind `main` (`actions`, `dlq`, `state`,
//!   `tables`) and the one `--config` flag.
//! - [`app`]: assembles and stops the daemon; [`shutdown`] is the one
//!   stop signal passed down to every task; `backoff` the one retry delay.
//!
//! Beside the daemon, in the same workspace: `coupa-model` (the object
//! catalogue and record helpers, re-exported as [`coupa::objects`] and
//! [`coupa::record`]) and `coupa-sim` (the Coupa simulator used by tests,
//! benches and [`demo`], and `verify`, the ground-truth checker).

pub mod app;
mod backoff;
pub mod check;
pub mod cli;
pub mod config;
pub mod coupa;
pub mod delivery;
pub mod demo;
pub mod event;
mod http;
mod metrics;
mod net;
pub mod poll;
pub mod redact;
mod setting;
pub mod shutdown;
pub mod sink;
mod status;
pub mod store;
mod sync;

/// The message a panic carried, if it was a string (what `panic!` makes).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}
