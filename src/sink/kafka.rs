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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::Deserialize;

use super::{Outcome, RetryPolicy, Sink, SinkError};
use crate::config::{ConfigError, OneOrMany};
use crate::event::EventHead;
use crate::store::OutboxEntry;

/// `content-type` header of structured-mode CloudEvents.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Default `message.timeout.ms`: librdkafka's 5 min would hide a broker
/// outage from `delivery` for that long; 30 s surfaces it as transient.
const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// Kafka's limit on topic names.
const MAX_TOPIC_LEN: usize = 249;

/// `[[sinks]] type = "kafka"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Unique sink name (default: `kafka`).
    #[serde(default)]
    pub name: Option<String>,
    /// Bootstrap brokers: `"host:9092,host2:9092"` or a list.
    pub brokers: OneOrMany<String>,
    /// Topic template; `{object}` is the object name.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Any librdkafka property (`security.protocol`, `sasl.*`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// An event failing for longer than this becomes a dead letter.
    #[serde(default = "default_max_retry_age", with = "humantime_serde")]
    pub max_retry_age: Duration,
    /// Cap of the backoff between attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

fn default_topic() -> String {
    "coupa.{object}".into()
}
fn default_max_retry_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Properties may hold sasl.password: names only.
        f.debug_struct("KafkaConfig")
            .field("name", &self.name)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .field("max_retry_age", &self.max_retry_age)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// A config problem: the key below `sinks[i]` and what is wrong.
struct Invalid {
    key: String,
    message: String,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// `properties.acks`, `properties."sasl.password"`: a TOML-style key path.
fn property_key(name: &str) -> String {
    if name.contains('.') {
        format!("properties.\"{name}\"")
    } else {
        format!("properties.{name}")
    }
}

/// Whether a property's value must never be shown.
fn is_secret(name: &str) -> bool {
    const MARKERS: [&str; 7] = [
        "password", "secret", "jaas", "token", ".key", "keystore", ".pem",
    ];
    MARKERS.iter().any(|m| name.contains(m))
}

impl KafkaConfig {
    /// Checks the values; `key` is `sinks[i]`.
    pub(crate) fn prepare(&mut self, key: &str) -> Result<(), ConfigError> {
        self.check()
            .map(|_| ())
            .map_err(|e| ConfigError::new(format!("{key}.{}", e.key), e.message))
    }

    /// Validates everything and builds the producer config (no network).
    fn check(&self) -> Result<Built, Invalid> {
        check_template(&self.topic)?;
        let brokers: Vec<String> = self
            .brokers
            .clone()
            .into_vec()
            .iter()
            .flat_map(|b| b.split(','))
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if brokers.is_empty() {
            return Err(invalid("brokers", "is empty: give at least one host:port"));
        }
        let props = &self.properties;
        for (name, value) in props {
            let v = value.trim().to_ascii_lowercase();
            let reason = match name.as_str() {
                "bootstrap.servers" | "metadata.broker.list" => {
                    Some("set the sink's `brokers` instead".to_string())
                }
                "enable.idempotence" if v != "true" => Some(format!(
                    "is `{value}`: the Kafka sink always uses the idempotent producer \
                     (no duplicates or reordering from its retries); remove the property"
                )),
                "acks" | "request.required.acks" if v != "all" && v != "-1" => Some(format!(
                    "is `{value}`: the Kafka sink needs acks=all (an event is delivered \
                     only once every in-sync replica has it); remove the property"
                )),
                "transactional.id" => Some("transactions are not supported by this sink".into()),
                "delivery.report.only.error" if v == "true" => {
                    Some("must stay false: events are acked on their delivery reports".to_string())
                }
                "message.timeout.ms" | "delivery.timeout.ms" if v == "0" => Some(
                    "0 (never time out) would hide a broker outage from retries and dead \
                     letters; give milliseconds"
                        .to_string(),
                ),
                _ => None,
            };
            if let Some(r) = reason {
                return Err(invalid(property_key(name), r));
            }
        }

        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", brokers.join(","));
        cc.set("enable.idempotence", "true");
        // Aliases: setting both spellings would leave the winner to hash order.
        if !props.contains_key("request.required.acks") {
            cc.set("acks", "all");
        }
        let timeout_key = ["message.timeout.ms", "delivery.timeout.ms"]
            .into_iter()
            .find(|k| props.contains_key(*k));
        if timeout_key.is_none() {
            cc.set("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS.to_string());
        }
        if !props.contains_key("client.id") {
            cc.set("client.id", "coupa-changefeed");
        }
        for (name, value) in props {
            cc.set(name, value);
        }
        let message_timeout = match timeout_key {
            Some(k) => {
                let ms: u64 = props[k].trim().parse().map_err(|_| {
                    invalid(
                        property_key(k),
                        format!("is `{}`: give milliseconds", props[k]),
                    )
                })?;
                Duration::from_millis(ms)
            }
            None => Duration::from_millis(DEFAULT_MESSAGE_TIMEOUT_MS),
        };
        // librdkafka checks names and values when they are set.
        if let Err(e) = cc.create_native_config() {
            return Err(match e {
                KafkaError::ClientConfig(_, desc, name, value) => {
                    // librdkafka's description may quote the value.
                    let shown = if is_secret(&name) && !value.is_empty() {
                        desc.replace(&value, "***")
                    } else {
                        desc
                    };
                    invalid(property_key(&name), shown)
                }
                other => invalid("properties", redact(&other.to_string(), props)),
            });
        }
        Ok(Built {
            client_config: cc,
            message_timeout,
        })
    }
}

/// Removes every secret property value from a message.
fn redact(message: &str, props: &BTreeMap<String, String>) -> String {
    let mut m = message.to_string();
    for (name, value) in props {
        if is_secret(name) && !value.is_empty() {
            m = m.replace(value.as_str(), "***");
        }
    }
    m
}

/// What [`KafkaConfig::check`] produces.
struct Built {
    client_config: ClientConfig,
    /// The effective `message.timeout.ms`: bounds every wait in `deliver`.
    message_timeout: Duration,
}

/// Only `{object}` may appear; the result must be a legal topic.
fn check_template(template: &str) -> Result<(), Invalid> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(invalid("topic", format!("`{template}`: unclosed `{{`")));
        };
        let name = &after[..close];
        if name != "object" {
            return Err(invalid(
                "topic",
                format!(
                    "`{template}`: unknown placeholder `{{{name}}}` (only `{{object}}` is known)"
                ),
            ));
        }
        rest = &after[close + 1..];
    }
    topic_for(template, "purchase_orders")
        .map(|_| ())
        .map_err(|m| invalid("topic", format!("`{template}`: {m}")))
}

/// The topic of `object`, or why it is not a legal Kafka topic name.
fn topic_for(template: &str, object: &str) -> Result<String, String> {
    let topic = template.replace("{object}", object);
    if topic.is_empty() || topic == "." || topic == ".." {
        return Err(format!("topic `{topic}` is not a legal Kafka topic name"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "topic `{topic}` is {} characters long, Kafka allows {MAX_TOPIC_LEN}",
            topic.len()
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic `{topic}` contains `{c}`; Kafka allows only A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(topic)
}

/// Errors that resending the same event cannot fix (dead letter at once).
/// Everything else, authorisation included, is waited out: an operator can
/// fix a broker or an ACL while the outbox holds.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
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

/// librdkafka's logs and errors, routed into `tracing` under the sink's
/// name; the last error is kept because it explains a later timeout
/// ("Connection refused", "SASL authentication failed", …).
struct Context {
    sink: String,
    last_error: Arc<Mutex<Option<String>>>,
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
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        // "All brokers down" follows the error that says why: keep that one.
        let summary = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if !summary || last.is_none() {
            *last = Some(reason.to_string());
        }
    }
}

/// The producer type, with [`Context`].
type KafkaProducer = FutureProducer<Context>;

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

    fn topic(&mut self, object: &str) -> Result<String, String> {
        if let Some(t) = self.topics.get(object) {
            return t.clone();
        }
        let t = topic_for(&self.template, object);
        self.topics.insert(object.to_string(), t.clone());
        t
    }

    /// One event's outcome from its Kafka error.
    fn failure(&self, e: &KafkaError, topic: &str, entry: &OutboxEntry) -> SinkError {
        let at = format!(
            "sink `{}`: topic `{topic}`, key `{}`, event of {} bytes",
            self.name,
            entry.key,
            entry.event.len()
        );
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageTimedOut) => {
                self.stale.store(true, Ordering::Relaxed);
                let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
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
    async fn report(&self, fut: DeliveryFuture, topic: &str, entry: &OutboxEntry) -> Outcome {
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
    fn renew_producer_if_needed(&mut self) {
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

fn create_producer(
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
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
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

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

fn held_back(sink: &str, topic: &str, key: &str) -> SinkError {
    SinkError::Transient(format!(
        "sink `{sink}`: topic `{topic}`, key `{key}`: held back until an earlier event \
         of the same key is delivered"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(props: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            name: None,
            brokers: OneOrMany::One("127.0.0.1:9092".into()),
            topic: default_topic(),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            max_retry_age: default_max_retry_age(),
            max_backoff: default_max_backoff(),
        }
    }

    fn err(c: &mut KafkaConfig) -> ConfigError {
        c.prepare("sinks[2]").expect_err("invalid")
    }

    #[test]
    fn defaults_are_idempotent_acks_all_30s_and_user_properties_win() {
        let b = config(&[("compression.type", "lz4"), ("linger.ms", "20")])
            .check()
            .ok()
            .unwrap();
        let cc = &b.client_config;
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("message.timeout.ms"), Some("30000"));
        assert_eq!(cc.get("compression.type"), Some("lz4"));
        assert_eq!(cc.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(b.message_timeout, Duration::from_secs(30));

        let b = config(&[
            ("delivery.timeout.ms", "1500"),
            ("request.required.acks", "-1"),
        ])
        .check()
        .ok()
        .unwrap();
        // The alias replaces the default instead of racing it.
        assert_eq!(b.client_config.get("message.timeout.ms"), None);
        assert_eq!(b.client_config.get("acks"), None);
        assert_eq!(b.message_timeout, Duration::from_millis(1500));

        let mut many = config(&[]);
        many.brokers = OneOrMany::Many(vec!["a:1".into(), " b:2 , c:3".into()]);
        let b = many.check().ok().unwrap();
        assert_eq!(
            b.client_config.get("bootstrap.servers"),
            Some("a:1,b:2,c:3")
        );
    }

    #[test]
    fn weakening_delivery_guarantees_is_rejected_by_key() {
        let e = err(&mut config(&[("enable.idempotence", "false")]));
        assert_eq!(e.key, "sinks[2].properties.\"enable.idempotence\"");
        assert!(e.message.contains("idempotent"), "{e}");
        let e = err(&mut config(&[("acks", "1")]));
        assert_eq!(e.key, "sinks[2].properties.acks");
        assert!(e.message.contains("acks=all"), "{e}");
        let e = err(&mut config(&[("request.required.acks", "0")]));
        assert_eq!(e.key, "sinks[2].properties.\"request.required.acks\"");
        let e = err(&mut config(&[("bootstrap.servers", "x:1")]));
        assert!(e.message.contains("brokers"), "{e}");
        let e = err(&mut config(&[("message.timeout.ms", "0")]));
        assert_eq!(e.key, "sinks[2].properties.\"message.timeout.ms\"");
        let e = err(&mut config(&[("transactional.id", "t")]));
        assert!(e.message.contains("transactions"), "{e}");
        assert!(config(&[("acks", "all"), ("enable.idempotence", "true")])
            .prepare("sinks[0]")
            .is_ok());
    }

    #[test]
    fn topic_template_is_checked() {
        let mut c = config(&[]);
        c.topic = "coupa.{objekt}".into();
        let e = err(&mut c);
        assert_eq!(e.key, "sinks[2].topic");
        assert!(e.message.contains("unknown placeholder `{objekt}`"), "{e}");
        c.topic = "coupa/{object}".into();
        assert!(err(&mut c).message.contains("contains `/`"));
        c.topic = "{object".into();
        assert!(err(&mut c).message.contains("unclosed"));
        c.topic = format!("{}{{object}}", "x".repeat(240));
        assert!(err(&mut c).message.contains("249"));
        c.topic = "erp-{object}_v1".into();
        c.prepare("sinks[0]").unwrap();
        assert_eq!(topic_for(&c.topic, "invoices").unwrap(), "erp-invoices_v1");
        assert!(topic_for("coupa.{object}", "bad name").is_err());
    }

    #[test]
    fn property_errors_name_the_key_and_hide_secrets() {
        let e = err(&mut config(&[("no.such.property", "1")]));
        assert_eq!(e.key, "sinks[2].properties.\"no.such.property\"");
        let e = err(&mut config(&[("compression.type", "bogus")]));
        assert_eq!(e.key, "sinks[2].properties.\"compression.type\"");
        let secret = "hunter2-very-secret";
        let c = config(&[
            ("sasl.password", secret),
            ("compression.type", "bogus"),
            ("security.protocol", "SASL_PLAINTEXT"),
        ]);
        assert!(!format!("{c:?}").contains(secret));
        let e = err(&mut c.clone());
        assert!(!e.to_string().contains(secret), "{e}");
        assert_eq!(e.key, "sinks[2].properties.\"compression.type\"");
        // A secret-named property's own error never quotes the value.
        let e = KafkaSink::new(
            "k".into(),
            &config(&[
                ("security.protocol", "SSL"),
                ("ssl.key.location", "/nonexistent/key.pem"),
                ("ssl.key.password", secret),
            ]),
        )
        .err()
        .expect("missing key file");
        assert!(!e.to_string().contains(secret), "{e}");
        // Problems librdkafka finds only when the client is made.
        let e = KafkaSink::new(
            "k".into(),
            &config(&[
                ("sasl.password", secret),
                ("sasl.mechanism", "NOPE"),
                ("security.protocol", "SASL_PLAINTEXT"),
            ]),
        )
        .err()
        .expect("bad mechanism");
        assert!(!e.to_string().contains(secret), "{e}");
        assert!(!redact(&format!("x {secret} y"), &c.properties).contains(secret));
    }

    #[test]
    fn sink_builds_without_a_broker_and_reports_policy() {
        let mut c = config(&[("sasl.password", "pw")]);
        c.max_backoff = Duration::from_millis(500);
        let s = KafkaSink::new("k".into(), &c).unwrap();
        assert_eq!(s.name(), "k");
        assert_eq!(
            s.retry_policy(),
            RetryPolicy {
                max_retry_age: Some(Duration::from_secs(24 * 3600)),
                max_backoff: Duration::from_millis(500),
            }
        );
        // librdkafka refuses this combination only when the client is made.
        let e = KafkaSink::new(
            "k".into(),
            &config(&[("max.in.flight", "50"), ("sasl.password", "pw-xyz-1")]),
        )
        .err()
        .unwrap();
        assert!(matches!(e, SinkError::Permanent(_)));
        assert!(e.to_string().contains("sink `k`"), "{e}");
        assert!(!e.to_string().contains("pw-xyz-1"), "{e}");
    }
}
