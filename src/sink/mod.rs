//! The `Sink` trait every destination implements, and building sinks from
//! config. A sink attempts a batch once and reports an outcome per event;
//! cursors, retries, dead letters and releasing the outbox belong to
//! `delivery`.

use std::future::Future;
use std::time::Duration;

use crate::store::OutboxEntry;

pub mod file;
pub mod kafka;
pub mod webhook;

/// `[[sinks]]`: each sink type's settings live beside its code.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkSettings {
    /// JSON Lines to a file or stdout.
    File(file::FileConfig),
    /// Signed HTTP POSTs (Standard Webhooks).
    Webhook(webhook::WebhookConfig),
    /// Kafka topics.
    Kafka(kafka::KafkaConfig),
}

impl SinkSettings {
    /// The sink's name: its cursor and dead letters are stored under it
    /// (default: its type).
    pub fn name(&self) -> String {
        let (name, ty) = match self {
            SinkSettings::File(c) => (&c.name, "file"),
            SinkSettings::Webhook(c) => (&c.name, "webhook"),
            SinkSettings::Kafka(c) => (&c.name, "kafka"),
        };
        name.clone().unwrap_or_else(|| ty.into())
    }

    /// Reads secret files and checks the values; `key` is `sinks[i]`.
    pub(crate) fn prepare(&mut self, key: &str) -> Result<(), crate::setting::ConfigError> {
        match self {
            SinkSettings::File(c) => c.prepare(key),
            SinkSettings::Webhook(c) => c.prepare(key),
            SinkSettings::Kafka(c) => c.prepare(key),
        }
    }
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: the destination is down, full or slow.
    #[error("{0}")]
    Transient(String),
    /// Retrying the same event cannot succeed (dead letter).
    #[error("{0}")]
    Permanent(String),
    /// The sink cannot go on at all (stdout closed by its reader): the
    /// daemon stops with an error; the events stay in the outbox.
    #[error("{0}")]
    Fatal(String),
}

/// One event's result in a batch.
pub type Outcome = Result<(), SinkError>;

/// How `delivery` retries a sink's transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// An event failing for longer than this becomes a dead letter
    /// (`None`: retry for ever, e.g. a local file on a full disk).
    pub max_retry_age: Option<Duration>,
    /// Cap of the exponential backoff between attempts.
    pub max_backoff: Duration,
}

/// A destination for events.
pub trait Sink: Send + 'static {
    /// Unique name: the key of its cursor and dead letters.
    fn name(&self) -> &str;

    /// How `delivery` retries this sink.
    fn retry_policy(&self) -> RetryPolicy;

    /// Attempts every event of `batch` (ascending seq) once and returns one
    /// outcome per event, in batch order. `Ok` means the event is durably
    /// with the destination. Per record key, order must hold: after an
    /// event fails transiently, later events with the same key must not be
    /// sent in this call (report them as `Transient`).
    fn deliver(
        &mut self,
        batch: &[(u64, OutboxEntry)],
    ) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// A configured sink of any type (enum dispatch keeps `Sink` free of boxing).
pub enum AnySink {
    File(file::FileSink),
    Webhook(webhook::WebhookSink),
    Kafka(kafka::KafkaSink),
}

impl AnySink {
    /// Builds the sink a config entry describes.
    pub fn from_settings(s: &SinkSettings) -> Result<AnySink, SinkError> {
        let name = s.name();
        Ok(match s {
            SinkSettings::File(c) => AnySink::File(file::FileSink::open(name, &c.path)?),
            SinkSettings::Webhook(c) => AnySink::Webhook(webhook::WebhookSink::new(name, c)?),
            SinkSettings::Kafka(c) => AnySink::Kafka(kafka::KafkaSink::new(name, c)?),
        })
    }
}

impl Sink for AnySink {
    fn name(&self) -> &str {
        match self {
            AnySink::File(s) => s.name(),
            AnySink::Webhook(s) => s.name(),
            AnySink::Kafka(s) => s.name(),
        }
    }

    fn retry_policy(&self) -> RetryPolicy {
        match self {
            AnySink::File(s) => s.retry_policy(),
            AnySink::Webhook(s) => s.retry_policy(),
            AnySink::Kafka(s) => s.retry_policy(),
        }
    }

    async fn deliver(&mut self, batch: &[(u64, OutboxEntry)]) -> Vec<Outcome> {
        match self {
            AnySink::File(s) => s.deliver(batch).await,
            AnySink::Webhook(s) => s.deliver(batch).await,
            AnySink::Kafka(s) => s.deliver(batch).await,
        }
    }
}

/// Marks every event of a batch with the same outcome (all-or-nothing sinks).
pub fn same_for_all(batch: &[(u64, OutboxEntry)], outcome: Outcome) -> Vec<Outcome> {
    vec![outcome; batch.len()]
}
