//! The write-back "actions" the ERP middleware calls: generic get, search,
//! create and update over the object catalogue, the named operations
//! (supplier remit-to addresses and sites, PO close/cancel, integration
//! runs, errors and history records) and a raw escape hatch under `/api/`.
//!
//! Owns: refusing, before any request, what the catalogue says Coupa does
//! not allow; the paths and bodies Coupa expects for each operation
//! (coupa-api.md §6); bounded, streaming search paging. Every call goes
//! through the one [`CoupaClient`] (same auth, rate limit and counters);
//! reads retry like the poller's, writes only where Coupa cannot have
//! acted (see `RetryPolicy::Write` in exchange.rs).
//!
//! Records go in and come out as Coupa shapes them: bodies are sent as
//! given and responses returned untouched, so custom fields travel in
//! both placements (the `custom-fields` object and legacy top-level keys)
//! without this module knowing which keys they are.
//!
//! Layout, one noun a file: `handle` (the [`Actions`] handle and its
//! single-record responses), `target` (what an action addresses and what
//! the catalogue refuses), `read` (get, paged search), `write` (create,
//! update, catalogue actions, the exported flag), `purchase_order`,
//! `supplier`, `integration` (runs, errors, history records) and `raw`
//! (the escape hatch under `/api/`).

mod handle;
mod integration;
mod purchase_order;
mod raw;
mod read;
mod supplier;
mod target;
mod write;

pub use handle::Actions;
pub use integration::{IntegrationRecord, IntegrationResponse, RunCounts, RunStatus};
pub use supplier::NESTED_LIMIT;
pub use target::Target;
