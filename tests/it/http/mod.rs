//! The HTTP surfaces: health, readiness, `/status`, `/metrics` and the page
//! (`server`), operating the daemon (`ops`), and the actions API (`actions`).

mod actions;
mod ops;
mod server;
