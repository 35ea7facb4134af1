pub mod auth;
pub mod client;
pub mod error;
pub mod objects;
pub mod record;

pub use client::{ClientStats, CoupaClient};
pub use error::CoupaError;
