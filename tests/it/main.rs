//! The integration tests: one binary, one module per part of the daemon.
//! Select by module path, e.g. `cargo test --test it chaos::crash` or
//! `cargo test --test it sink::`.
//!
//! - `coupa`: the client against hostile servers; actions through the library
//! - `poll`: the polling algorithm against every version; sliced backfill
//! - `sink`: webhook and Kafka (librdkafka's mock cluster and Tansu)
//! - `delivery`: outbox → sinks, dead letters, a disk filling mid-batch
//! - `http`: health, status page, metrics, the actions API
//! - `cli`: the real binaries and their commands; actions as commands
//! - `config`, `deploy`: settings loading; the shipped deploy files
//! - `chaos`: kill -9 loops, Coupa faults and outages, hostile records and
//!   state dirs, each checked against the simulator's ground truth
//! - `support`: the shared harness (simulator, configs, rigs, checks)
//!
//! Tests that need an outside tool (Tansu, Chromium, promtool, root for a
//! tmpfs) print `skipped: <tool> not found` to stderr and pass when it is
//! missing; under `CI=true` they fail instead.

mod chaos;
mod cli;
mod config;
mod coupa;
mod delivery;
mod deploy;
mod http;
mod poll;
mod sink;
mod support;
