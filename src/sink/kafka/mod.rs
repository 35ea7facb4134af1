//! The Kafka sink (rdkafka, librdkafka built in): one topic per object from
//! a template, message key = record id, value = the CloudEvent (structured
//! mode) with `ce_id`, `ce_type`, `ce_source`, `ce_specversion` and
//! `content-type` headers. Owns the producer config (defaults, what users
//! may not turn off), the topic template and the mapping of Kafka errors to
//! transient/permanent outcomes; retries and dead letters are `delivery`'s.
//!
//! Order per record key: the key picks the partition (librdkafka's default
//! `consistent_random` partitioner; set `partitioner = "murmur2_random"` to
//! match Java clients), and the idempotent producer (`enable.idempotence`,
//! `acks=all`, always on) keeps order within a partition across its own
//! retries. An event counts as delivered on its delivery report. If one
//! event of a key fails transiently, the later events of that key in the
//! same batch are not sent, or, if already in flight and acked, are
//! reported transient too, so the retry resends them after it: a consumer
//! may see a duplicate (same `ce_id`), never an older version last.
//!
//! A round in which a message timed out (or the producer hit a fatal
//! error) ends with a fresh producer: it bootstraps again and gets a new
//! producer id, which a broker that lost its producer state requires.
//!
//! Property values never appear in errors or logs (`sasl.password`…).

mod config;
mod context;
mod sink;
#[cfg(test)]
mod tests;

pub use config::KafkaConfig;
pub use sink::KafkaSink;
