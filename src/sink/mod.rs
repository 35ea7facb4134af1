//! The `Sink` trait every destination implements, and building sinks from
//! config. A sink only delivers a batch and says whether it worked; cursors,
//! retries and releasing the outbox belong to `delivery`.

use std::future::Future;

use crate::config::SinkSettings;
use crate::store::OutboxEntry;

pub mod file;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: the destination is down, full or slow.
    #[error("{0}")]
    Transient(String),
    /// Retrying the same event cannot succeed (dead letter).
    #[error("{0}")]
    Permanent(String),
}

/// A destination for events.
pub trait Sink: Send + 'static {
    /// Unique name: the key of its cursor.
    fn name(&self) -> &str;

    /// Delivers a batch in order; `Ok` means every event is durably with
    /// the destination and may be acknowledged.
    fn deliver(
        &mut self,
        batch: &[(u64, OutboxEntry)],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// A configured sink of any type (enum dispatch keeps `Sink` free of boxing).
pub enum AnySink {
    File(file::FileSink),
}

impl AnySink {
    /// Builds the sink a config entry describes.
    pub fn from_settings(s: &SinkSettings) -> Result<AnySink, SinkError> {
        match s {
            SinkSettings::File { path, .. } => {
                Ok(AnySink::File(file::FileSink::open(s.name(), path)?))
            }
        }
    }
}

impl Sink for AnySink {
    fn name(&self) -> &str {
        match self {
            AnySink::File(f) => f.name(),
        }
    }

    async fn deliver(&mut self, batch: &[(u64, OutboxEntry)]) -> Result<(), SinkError> {
        match self {
            AnySink::File(f) => f.deliver(batch).await,
        }
    }
}
