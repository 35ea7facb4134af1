//! Everything about talking to Coupa: the client (HTTP, auth, rate limit,
//! retries), its errors, the object catalogue, and reading records. It
//! knows nothing of windows, the store or sinks.

pub mod auth;
pub mod client;
pub mod error;
pub mod objects;
pub mod record;

pub use client::{ClientStats, CoupaClient};
pub use error::CoupaError;
