//! Everything about talking to Coupa: the client (HTTP, auth, rate limit,
//! retries), its errors, the object catalogue, reading records, and the
//! write-back actions. It knows nothing of windows, the store or sinks.

pub mod actions;
pub mod auth;
pub mod body;
pub mod client;
pub mod clock;
pub mod error;
mod exchange;
pub mod objects;
pub mod record;
mod response;
pub mod settings;

pub use actions::Actions;
pub use client::{ClientStats, CoupaClient};
pub use error::CoupaError;
