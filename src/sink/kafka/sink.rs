//! The Kafka sink: one message per event (CloudEvents binary or
//! structured mode), idempotent producer, `acks=all`; what fails for good
//! is dead-lettered, the rest retried.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};

use super::config::{redact, topic_for, KafkaConfig};
use super::context::{create_producer, KafkaProducer};
use crate::event::EventHead;
use crate::sink::{Outcome, RetryPolicy, Sink, SinkError};
use crate::store::OutboxEntry;

/// `content-type` header of structured-mode CloudEvents.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Errors that resending the same event cannot fix (dead letter at once).
/// Everything else, authorisation included, is waited out: an operator can
/// fix a broker or an ACL while the outbox holds.
pub(super) fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageSizeTooLarge
            | InvalidMessageSize
            | MessageBatchTooLarge
            | InvalidTopic
            | InvalidRecord
            | UnsupportedForMessageFormat
            | PolicyViolation
    )
}

/// A producer for one cluster.
pub struct KafkaSink {
    name: String,
    template: String,
    /// Kept to renew the producer (see `renew_producer_if_needed`).
    client_config: ClientConfig,
    /// The user's properties, to keep secret values out of errors.
    properties: BTreeMap<String, String>,
    producer: KafkaProducer,
    /// The producer's last client-level error (see [`Context`]).
    last_error: Arc<Mutex<Option<String>>>,
    policy: RetryPolicy,
    /// The effective `message.timeout.ms`.
    message_timeout: Duration,
    /// object → topic (or why the name is illegal).
    topics: HashMap<String, Result<String, String>>,
    /// A message timed out in this round: replace the producer after it.
    stale: AtomicBool,
}

impl KafkaSink {
    /// Creates the producer (does not wait for the brokers).
    pub fn new(name: String, config: &KafkaConfig) -> Result<KafkaSink, SinkError> {
        let built = config.check().map_err(|e| {
            SinkError::Permanent(format!("sink `{name}`: `{}` {}", e.key, e.message))
        })?;
        let last_error = Arc::new(Mutex::new(None));
        let producer =
            create_producer(&name, &built.client_config, &config.properties, &last_error)?;
        Ok(KafkaSink {
            last_error,
            name,
            template: config.topic.clone(),
            client_config: built.client_config,
            properties: config.properties.clone(),
            producer,
            policy: RetryPolicy {
                max_retry_age: Some(config.max_retry_age),
                max_backoff: config.max_backoff,
            },
            message_timeout: built.message_timeout,
            topics: HashMap::new(),
            stale: AtomicBool::new(false),
        })
    }

    /// Asks the cluster for its metadata (for `check`): the number of
    /// brokers it reports.
    pub async fn probe(&self, timeout: Duration) -> Result<usize, SinkError> {
        let producer = self.producer.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|m| m.brokers().len())
                .map_err(|e| {
                    SinkError::Transient(format!(
                        "sink `{name}`: no cluster metadata within {timeout:?}: {e}"
                    ))
                })
        })
        .await
        .unwrap_or_else(|e| Err(SinkError::Transient(format!("probe task failed: {e}"))))
    }

    pub(super) fn topic(&mut self, object: &str) -> Result<String, String> {
        if let Some(t) = self.topics.get(object) {
            return t.clone();
        }
        let t = topic_for(&self.template, object);
        self.topics.insert(object.to_string(), t.clone());
        t
    }

    /// One event's outcome from its Kafka error.
    pub(super) fn failure(&self, e: &KafkaError, topic: &str, entry: &OutboxEntry) -> SinkError {
        let at = format!(
            "sink `{}`: topic `{topic}`, key `{}`, event of {} bytes",
            self.name,
            entry.key,
            entry.event.len()
        );
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageTimedOut) => {
                self.stale.store(true, Ordering::Relaxed);
                let last = crate::sync::lock(&self.last_error);
                match last.as_deref() {
                    Some(why) => SinkError::Transient(format!(
                        "{at}: {e}; last broker error: {}",
                        redact(why, &self.properties)
                    )),
                    None => SinkError::Transient(format!("{at}: {e}")),
                }
            }
            Some(code) if is_permanent(code) => {
                SinkError::Permanent(format!("{at}: {e} (resending cannot fix this)"))
            }
            _ => SinkError::Transient(format!("{at}: {e}")),
        }
    }

    /// Waits for one delivery report; bounded in case a report never comes.
    pub(super) async fn report(
        &self,
        fut: DeliveryFuture,
        topic: &str,
        entry: &OutboxEntry,
    ) -> Outcome {
        // In-flight messages may outlive message.timeout.ms by a request
        // timeout; this bound is a safety net, not the normal path.
        let bound = self.message_timeout + Duration::from_secs(60);
        match tokio::time::timeout(bound, fut).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(self.failure(&e, topic, entry)),
            Ok(Err(_canceled)) => Err(SinkError::Transient(format!(
                "sink `{}`: producer closed before the delivery report",
                self.name
            ))),
            Err(_) => {
                self.stale.store(true, Ordering::Relaxed);
                Err(SinkError::Transient(format!(
                    "sink `{}`: topic `{topic}`, key `{}`: no delivery report within {bound:?}",
                    self.name, entry.key
                )))
            }
        }
    }

    /// Replaces the producer after a round that showed it cannot deliver:
    /// a fatal error (it refuses everything from then on), or a message
    /// timeout. The fresh producer bootstraps again and gets a new producer
    /// id, which a broker that lost its producer state requires: the old
    /// one would otherwise bump its epoch and be refused for ever (seen
    /// with a restarted Tansu). Nothing is pending in the old one: every
    /// report of the round has come in.
    pub(super) fn renew_producer_if_needed(&mut self) {
        let fatal = self.producer.client().fatal_error();
        let stale = self.stale.swap(false, Ordering::Relaxed);
        if fatal.is_none() && !stale {
            return;
        }
        match &fatal {
            Some((code, reason)) => {
                tracing::warn!(sink = %self.name, ?code, %reason, "Kafka producer hit a fatal error; creating a new one")
            }
            None => {
                tracing::info!(sink = %self.name, "Kafka messages timed out; creating a new producer")
            }
        }
        match create_producer(
            &self.name,
            &self.client_config,
            &self.properties,
            &self.last_error,
        ) {
            Ok(p) => self.producer = p,
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "cannot recreate the Kafka producer")
            }
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }

    async fn deliver(&mut self, batch: &[(u64, OutboxEntry)]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut topics: Vec<String> = Vec::with_capacity(batch.len());
        // Enqueued, not yet reported: (batch index, report).
        let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::new();
        // (topic, key) pairs with a transient failure in this call.
        let mut held: HashSet<(String, String)> = HashSet::new();

        for (i, (_, entry)) in batch.iter().enumerate() {
            let topic = match self.topic(&entry.object) {
                Ok(t) => t,
                Err(m) => {
                    outcomes[i] = Some(Err(SinkError::Permanent(format!(
                        "sink `{}`: object `{}`: {m}",
                        self.name, entry.object
                    ))));
                    topics.push(String::new());
                    continue;
                }
            };
            topics.push(topic.clone());
            if held.contains(&(topic.clone(), entry.key.clone())) {
                outcomes[i] = Some(Err(held_back(&self.name, &topic, &entry.key)));
                continue;
            }
            let Some(head) = EventHead::parse(&entry.event) else {
                outcomes[i] = Some(Err(SinkError::Permanent(format!(
                    "sink `{}`: topic `{topic}`, key `{}`: the event is not a CloudEvent",
                    self.name, entry.key
                ))));
                continue;
            };
            let headers = OwnedHeaders::new_with_capacity(5)
                .insert(header("ce_id", &head.id))
                .insert(header("ce_type", &head.ty))
                .insert(header("ce_source", &head.source))
                .insert(header("ce_specversion", &head.specversion))
                .insert(header("content-type", CONTENT_TYPE));
            let mut record = FutureRecord::to(&topic)
                .key(entry.key.as_str())
                .payload(entry.event.as_slice())
                .headers(headers);
            // A full local queue frees up as earlier reports come in.
            let deadline = Instant::now() + self.message_timeout;
            loop {
                match self.producer.send_result(record) {
                    Ok(fut) => {
                        pending.push_back((i, fut));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if Instant::now() < deadline =>
                    {
                        record = r;
                        match pending.pop_front() {
                            Some((j, fut)) => {
                                let (_, e) = &batch[j];
                                let o = self.report(fut, &topics[j], e).await;
                                if matches!(o, Err(SinkError::Transient(_))) {
                                    held.insert((topics[j].clone(), e.key.clone()));
                                }
                                outcomes[j] = Some(o);
                            }
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                        if held.contains(&(topic.clone(), entry.key.clone())) {
                            outcomes[i] = Some(Err(held_back(&self.name, &topic, &entry.key)));
                            break;
                        }
                    }
                    Err((e, _)) => {
                        let err = self.failure(&e, &topic, entry);
                        if matches!(err, SinkError::Transient(_)) {
                            held.insert((topic.clone(), entry.key.clone()));
                        }
                        outcomes[i] = Some(Err(err));
                        break;
                    }
                }
            }
        }
        for (j, fut) in pending {
            outcomes[j] = Some(self.report(fut, &topics[j], &batch[j].1).await);
        }
        self.renew_producer_if_needed();
        if outcomes.iter().any(|o| matches!(o, Some(Ok(())))) {
            // The cluster works again: old errors explain nothing now.
            *crate::sync::lock(&self.last_error) = None;
        }

        // An event acked after an earlier one of its key failed is resent
        // after it, so the newest version is the last a consumer sees.
        let mut failed: HashSet<(&str, &str)> = HashSet::new();
        let mut out = Vec::with_capacity(batch.len());
        for (i, o) in outcomes.into_iter().enumerate() {
            let o = o.expect("every event has an outcome");
            let k = (topics[i].as_str(), batch[i].1.key.as_str());
            let o = match o {
                Ok(()) if failed.contains(&k) => Err(held_back(&self.name, k.0, k.1)),
                Err(SinkError::Transient(m)) => {
                    failed.insert(k);
                    Err(SinkError::Transient(m))
                }
                other => other,
            };
            out.push(o);
        }
        out
    }
}

pub(super) fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

pub(super) fn held_back(sink: &str, topic: &str, key: &str) -> SinkError {
    SinkError::Transient(format!(
        "sink `{sink}`: topic `{topic}`, key `{key}`: held back until an earlier event \
         of the same key is delivered"
    ))
}
