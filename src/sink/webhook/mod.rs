//! The webhook sink: `POST`s each CloudEvent (`application/cloudevents+json`)
//! signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`). Only a 2xx counts; 4xx other than 408/429 is
//! permanent. Events of one key go in order; different keys go in parallel
//! up to `concurrency`.
//!
//! Owns the webhook config checks, signing and the HTTP exchange. It does
//! not retry or dead-letter (that is `delivery`), and never logs the secret
//! or the URL's query (tokens often live there).

mod config;
mod sign;
mod sink;
#[cfg(test)]
mod tests;

pub use config::WebhookConfig;
pub use sink::WebhookSink;
