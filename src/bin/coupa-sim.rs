//! `coupa-sim`: the Coupa API simulator as a standalone server, and
//! `coupa-sim check`. All of it lives in the `coupa-sim` crate
//! ([`coupa_sim::cli`]); this shim sits in the daemon's package so the
//! daemon's tests can spawn it (`CARGO_BIN_EXE_coupa-sim`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    coupa_sim::cli::run().await
}
