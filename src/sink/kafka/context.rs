//! The librdkafka client context (its logs and errors into tracing) and
//! the producer built with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use super::config::redact;
use crate::sink::SinkError;

/// librdkafka's logs and errors, routed into `tracing` under the sink's
/// name; the last error is kept because it explains a later timeout
/// ("Connection refused", "SASL authentication failed", …).
pub(super) struct Context {
    pub(super) sink: String,
    pub(super) last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel::*;
        let sink = &self.sink;
        match level {
            // Connection failures repeat while a broker is down, and
            // `delivery` already warns about what they cause.
            Emerg | Alert | Critical | Error | Warning => {
                tracing::warn!(sink, "librdkafka {fac}: {message}")
            }
            Notice | Info => tracing::info!(sink, "librdkafka {fac}: {message}"),
            Debug => tracing::debug!(sink, "librdkafka {fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(sink = %self.sink, "librdkafka: {error}: {reason}");
        let mut last = crate::sync::lock(&self.last_error);
        // "All brokers down" follows the error that says why: keep that one.
        let summary = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if !summary || last.is_none() {
            *last = Some(reason.to_string());
        }
    }
}

/// The producer type, with [`Context`].
pub(super) type KafkaProducer = FutureProducer<Context>;

pub(super) fn create_producer(
    name: &str,
    cc: &ClientConfig,
    props: &BTreeMap<String, String>,
    last_error: &Arc<Mutex<Option<String>>>,
) -> Result<KafkaProducer, SinkError> {
    let context = Context {
        sink: name.to_string(),
        last_error: last_error.clone(),
    };
    cc.create_with_context::<_, KafkaProducer>(context)
        .map_err(|e| {
            // KafkaError's Display of a config error carries the value.
            let msg = match &e {
                KafkaError::ClientConfig(_, _, key, _) => format!("invalid property `{key}`"),
                other => redact(&other.to_string(), props),
            };
            SinkError::Permanent(format!("sink `{name}`: cannot create the producer: {msg}"))
        })
}
