use std::time::Duration;

use super::config::{
    default_max_backoff, default_max_retry_age, default_topic, redact, topic_for, KafkaConfig,
};
use super::sink::KafkaSink;
use crate::setting::{ConfigError, OneOrMany};
use crate::sink::{RetryPolicy, Sink, SinkError};

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
