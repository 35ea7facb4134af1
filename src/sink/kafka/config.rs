//! `[[sinks]] type = "kafka"`: the settings, checked and turned into
//! librdkafka properties (secrets redacted when shown), and the topic
//! template.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use serde::Deserialize;

use crate::setting::{ConfigError, OneOrMany};

/// Default `message.timeout.ms`: librdkafka's 5 min would hide a broker
/// outage from `delivery` for that long; 30 s surfaces it as transient.
pub(super) const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// Kafka's limit on topic names.
pub(super) const MAX_TOPIC_LEN: usize = 249;

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

pub(super) fn default_topic() -> String {
    "coupa.{object}".into()
}

pub(super) fn default_max_retry_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

pub(super) fn default_max_backoff() -> Duration {
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
pub(super) struct Invalid {
    pub(super) key: String,
    pub(super) message: String,
}

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// `properties.acks`, `properties."sasl.password"`: a TOML-style key path.
pub(super) fn property_key(name: &str) -> String {
    if name.contains('.') {
        format!("properties.\"{name}\"")
    } else {
        format!("properties.{name}")
    }
}

/// Whether a property's value must never be shown.
pub(super) fn is_secret(name: &str) -> bool {
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
    pub(super) fn check(&self) -> Result<Built, Invalid> {
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
pub(super) fn redact(message: &str, props: &BTreeMap<String, String>) -> String {
    let mut m = message.to_string();
    for (name, value) in props {
        if is_secret(name) && !value.is_empty() {
            m = m.replace(value.as_str(), "***");
        }
    }
    m
}

/// What [`KafkaConfig::check`] produces.
pub(super) struct Built {
    pub(super) client_config: ClientConfig,
    /// The effective `message.timeout.ms`: bounds every wait in `deliver`.
    pub(super) message_timeout: Duration,
}

/// Only `{object}` may appear; the result must be a legal topic.
pub(super) fn check_template(template: &str) -> Result<(), Invalid> {
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
pub(super) fn topic_for(template: &str, object: &str) -> Result<String, String> {
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
