//! The webhook sink: one signed `POST` per event, classifying answers
//! into delivered, retry later (with `Retry-After`) and dead letter.

use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::debug;
use url::Url;

use super::config::{hidden_values, WebhookConfig};
use super::sign::{sign, HmacSha256};
use crate::event::EventHead;
use crate::net::{error_chain, retry_after};
use crate::redact::display_endpoint;
use crate::redact::Secrets;
use crate::sink::{Outcome, RetryPolicy, Sink, SinkError};
use crate::store::OutboxEntry;

/// How much of a failing response's body goes into the error.
pub(super) const BODY_PREFIX_CHARS: usize = 200;

/// Signed POSTs to one URL.
pub struct WebhookSink {
    name: String,
    client: reqwest::Client,
    url: Url,
    /// The URL as logs and errors may show it.
    shown: String,
    keys: Vec<HmacSha256>,
    timeout: Duration,
    concurrency: usize,
    policy: RetryPolicy,
    /// A 429's `Retry-After` (capped at `max_backoff`): the next batch
    /// waits until then.
    not_before: Option<Instant>,
    /// What a receiver's answer may quote back and errors must not show:
    /// header values, the URL's query and credentials, the secrets.
    hidden: Secrets,
}

/// How one send ended; `retry_after` only for a 429 that asked for it.
pub(super) struct Sent {
    pub(super) outcome: Outcome,
    pub(super) retry_after: Option<Duration>,
}

impl WebhookSink {
    /// Builds the HTTP client and decodes the secrets.
    pub fn new(name: String, config: &WebhookConfig) -> Result<WebhookSink, SinkError> {
        let checked = config
            .check(&format!("sinks.{name}"))
            .map_err(|e| SinkError::Permanent(e.to_string()))?;
        let shown = display_endpoint(&config.url);
        let client = reqwest::Client::builder()
            .tls_backend_rustls()
            .user_agent(concat!("coupa-changefeed/", env!("CARGO_PKG_VERSION")))
            .default_headers(checked.headers)
            // A 3xx is a failure: following it would send signed events
            // (and any auth header) to an address nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .pool_max_idle_per_host(config.concurrency)
            .build()
            .map_err(|e| {
                SinkError::Permanent(format!(
                    "sink `{name}`: cannot build the HTTP client for {shown}: {}",
                    error_chain(&e)
                ))
            })?;
        debug!(sink = %name, url = %shown, secrets = checked.keys.len(), "webhook sink ready");
        Ok(WebhookSink {
            name,
            client,
            url: config.url.clone(),
            shown,
            keys: checked.keys,
            timeout: config.timeout,
            concurrency: config.concurrency,
            policy: RetryPolicy {
                max_retry_age: Some(config.max_retry_age),
                max_backoff: config.max_backoff,
            },
            not_before: None,
            hidden: hidden_values(config),
        })
    }

    /// Sends one lane's events in order; after the first transient failure
    /// the rest are not sent, so no event overtakes an earlier one of its
    /// record (and a down receiver costs one request per lane).
    pub(super) async fn send_lane(
        &self,
        batch: &[(u64, OutboxEntry)],
        lane: &[usize],
    ) -> Vec<(usize, Sent)> {
        let mut out = Vec::with_capacity(lane.len());
        let mut stopped_at: Option<&str> = None;
        for &i in lane {
            let entry = &batch[i].1;
            if let Some(failed) = stopped_at {
                let why = if failed == entry.key {
                    format!(
                        "not sent: waiting for an earlier event of record {}",
                        entry.key
                    )
                } else {
                    format!("not sent: an earlier event in its lane (record {failed}) failed")
                };
                out.push((
                    i,
                    Sent {
                        outcome: Err(SinkError::Transient(why)),
                        retry_after: None,
                    },
                ));
                continue;
            }
            let sent = self.send(entry).await;
            if matches!(sent.outcome, Err(SinkError::Transient(_))) {
                stopped_at = Some(&entry.key);
            }
            out.push((i, sent));
        }
        out
    }

    /// One signed POST. The id is the event's own, so every retry carries
    /// the same `webhook-id`; the timestamp and signature are fresh.
    pub(super) async fn send(&self, entry: &OutboxEntry) -> Sent {
        let done = |outcome| Sent {
            outcome,
            retry_after: None,
        };
        let Some(head) = EventHead::parse(&entry.event) else {
            return done(Err(SinkError::Permanent(format!(
                "event of {} {} is not a CloudEvent with an id",
                entry.object, entry.key
            ))));
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let signature = sign(&self.keys, &head.id, &timestamp, &entry.event);
        let request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/cloudevents+json")
            .header("webhook-id", head.id.as_ref())
            .header("webhook-timestamp", &timestamp)
            .header("webhook-signature", signature)
            .body(entry.event.clone());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return done(Err(SinkError::Permanent(format!(
                    "POST {}: cannot build the request: {}",
                    self.shown,
                    error_chain(&e)
                ))));
            }
            Err(e) => {
                let what = if e.is_timeout() {
                    format!("no answer within {:?} (timeout)", self.timeout)
                } else {
                    error_chain(&e)
                };
                debug!(sink = %self.name, url = %self.shown, event = %head.id, error = %what, "webhook not delivered");
                return done(Err(SinkError::Transient(format!(
                    "POST {}: {what}",
                    self.shown
                ))));
            }
        };
        let status = response.status();
        if status.is_success() {
            return done(Ok(()));
        }
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after(response.headers()))
            .flatten();
        // Receivers may echo the request (auth header, URL) in errors.
        let body = body_prefix(&mut response, &self.hidden).await;
        let mut message = format!("POST {} answered {status}", self.shown);
        if status.is_redirection() {
            message += " (redirects are not followed: point `url` at the final address)";
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            message += " (does the receiver have this sink's secret and any auth header it needs?)";
        }
        if !body.is_empty() {
            message += &format!(": {body}");
        }
        debug!(sink = %self.name, url = %self.shown, event = %head.id, %status, "webhook refused");
        let permanent = status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS;
        Sent {
            outcome: Err(if permanent {
                SinkError::Permanent(message)
            } else {
                SinkError::Transient(message)
            }),
            retry_after,
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }

    async fn deliver(&mut self, batch: &[(u64, OutboxEntry)]) -> Vec<Outcome> {
        if let Some(t) = self.not_before.take() {
            tokio::time::sleep_until(t).await;
        }
        // Lanes by record: one record's events share a lane and keep order.
        let lanes = self.concurrency.min(batch.len()).max(1);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); lanes];
        for (i, (_, e)) in batch.iter().enumerate() {
            let mut h = std::hash::DefaultHasher::new();
            (&e.object, &e.key).hash(&mut h);
            members[(h.finish() % lanes as u64) as usize].push(i);
        }
        let this = &*self;
        let results = futures_util::future::join_all(
            members
                .iter()
                .filter(|m| !m.is_empty())
                .map(|m| this.send_lane(batch, m)),
        )
        .await;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut wait = None;
        for (i, sent) in results.into_iter().flatten() {
            outcomes[i] = Some(sent.outcome);
            wait = wait.max(sent.retry_after);
        }
        if let Some(w) = wait {
            self.not_before = Some(Instant::now() + w.min(self.policy.max_backoff));
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every event is in one lane"))
            .collect()
    }
}

/// The start of a failing response's body, on one line, for the error,
/// `hidden` values replaced before the cut. Reads no more than it needs
/// (a receiver may send megabytes); a secret cut off by that read is
/// hidden from where it starts.
pub(super) async fn body_prefix(response: &mut reqwest::Response, hidden: &Secrets) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_PREFIX_CHARS * 4 {
        match response.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            _ => break,
        }
    }
    hidden.excerpt(&String::from_utf8_lossy(&bytes), BODY_PREFIX_CHARS)
}
