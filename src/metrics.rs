//! Prometheus metrics (prometheus-client, OpenMetrics text). Counters and
//! gauges are read from the live status at scrape time (a [`Snapshot`]),
//! so the hot paths keep one set of figures; the latency histograms are
//! the only metrics recorded as they happen, through [`Metrics`].

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::server::Snapshot;

type Labels = Vec<(String, String)>;

/// A latency histogram per label set.
pub type LatencyFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// A new, empty [`LatencyFamily`].
pub fn latency_family() -> LatencyFamily {
    Family::new_with_constructor(latency_buckets)
}

fn latency_buckets() -> Histogram {
    // 5 ms … ~80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The histograms, shared by the client, the sinks and the server.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Coupa request latency by status class (the client records it).
    pub coupa_latency: LatencyFamily,
    /// Time a sink takes to accept a batch, by sink.
    pub delivery_latency: LatencyFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            coupa_latency: latency_family(),
            delivery_latency: latency_family(),
        }
    }
}

impl Metrics {
    /// Records one sink round.
    pub fn observe_delivery(&self, sink: &str, seconds: f64) {
        self.delivery_latency
            .get_or_create(&vec![("sink".into(), sink.into())])
            .observe(seconds);
    }

    /// The metrics for a snapshot plus the histograms: OpenMetrics text if
    /// `openmetrics`, else the Prometheus text format 0.0.4 (what
    /// `promtool check metrics` and older scrapers read).
    pub fn render(&self, snap: &Snapshot, openmetrics: bool) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("coupa_changefeed");
        registry.register(
            "coupa_request_duration_seconds",
            "Coupa API request latency",
            self.coupa_latency.clone(),
        );
        registry.register(
            "sink_delivery_duration_seconds",
            "Time a sink takes to accept one batch",
            self.delivery_latency.clone(),
        );
        registry.register_collector(Box::new(SnapshotCollector(Arc::new(snap.clone()))));
        let mut out = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        }
        Ok(out)
    }
}

/// Counters and gauges from one snapshot.
#[derive(Debug)]
struct SnapshotCollector(Arc<Snapshot>);

/// Writes one metric family: `rows` are (labels, value).
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut fam = encoder.encode_descriptor(name, help, None, ty)?;
    for (labels, metric) in rows {
        metric.encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

fn l(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let per_object =
            |f: fn(&crate::server::ObjectView) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
                s.objects
                    .iter()
                    .map(|o| (l("object", &o.name), ConstCounter::new(f(o))))
                    .collect()
            };
        let counter = MetricType::Counter;
        family(
            &mut e,
            "polls",
            "Polls run",
            counter,
            per_object(|o| o.polls),
        )?;
        family(
            &mut e,
            "records_fetched",
            "Records received from Coupa",
            counter,
            per_object(|o| o.records),
        )?;
        family(
            &mut e,
            "events_emitted",
            "New record versions published",
            counter,
            per_object(|o| o.events),
        )?;
        family(
            &mut e,
            "repeats_suppressed",
            "Records already seen with the same content",
            counter,
            per_object(|o| o.repeats),
        )?;
        family(
            &mut e,
            "list_requests",
            "List requests sent per object",
            counter,
            per_object(|o| o.requests),
        )?;
        let mut errors = Vec::new();
        for o in &s.objects {
            for (kind, n) in &o.errors {
                let mut labels = l("object", &o.name);
                labels.push(("kind".into(), kind.clone()));
                errors.push((labels, ConstCounter::new(*n)));
            }
        }
        let mut rejected = Vec::new();
        for o in &s.objects {
            for (reason, n) in &o.rejected {
                let mut labels = l("object", &o.name);
                labels.push(("reason".into(), reason.clone()));
                rejected.push((labels, ConstCounter::new(*n)));
            }
        }
        family(
            &mut e,
            "records_rejected",
            "List elements not published (no usable id, unreadable), by reason",
            counter,
            rejected,
        )?;
        family(
            &mut e,
            "poll_errors",
            "Failed polls by kind",
            counter,
            errors,
        )?;
        let gauge = MetricType::Gauge;
        family(
            &mut e,
            "window_lag_seconds",
            "Now minus the high-water mark",
            gauge,
            s.objects
                .iter()
                .filter_map(|o| {
                    o.lag_seconds
                        .map(|lag| (l("object", &o.name), ConstGauge::new(lag)))
                })
                .collect(),
        )?;
        family(
            &mut e,
            "last_success_timestamp_seconds",
            "Unix time of the last successful poll",
            gauge,
            s.objects
                .iter()
                .filter_map(|o| {
                    o.last_success_at.map(|t| {
                        (
                            l("object", &o.name),
                            ConstGauge::new(t.timestamp_millis() as f64 / 1000.0),
                        )
                    })
                })
                .collect(),
        )?;
        family(
            &mut e,
            "object_paused",
            "1 while backpressure pauses the object's poller",
            gauge,
            s.objects
                .iter()
                .map(|o| {
                    (
                        l("object", &o.name),
                        ConstGauge::new(o.paused.is_some() as i64),
                    )
                })
                .collect(),
        )?;
        family(
            &mut e,
            "nested_walk_cycle_seconds",
            "Nested objects: how long the last walk over every parent took (versions outliving two cycles are promised)",
            gauge,
            s.objects
                .iter()
                .filter_map(|o| {
                    let secs = o.walk.as_ref()?.last_cycle_seconds?;
                    Some((l("object", &o.name), ConstGauge::new(secs)))
                })
                .collect(),
        )?;

        let c = &s.coupa;
        let mut by_status = Vec::new();
        for (class, n) in [
            ("2xx", c.responses_2xx),
            ("3xx", c.responses_3xx),
            ("4xx", c.responses_4xx),
            ("5xx", c.responses_5xx),
            ("transport_error", c.transport_errors),
        ] {
            by_status.push((l("status", class), ConstCounter::new(n)));
        }
        family(
            &mut e,
            "coupa_responses",
            "Coupa responses by status class",
            counter,
            by_status,
        )?;
        let one = |v: u64| vec![(Labels::new(), ConstCounter::new(v))];
        family(
            &mut e,
            "coupa_requests",
            "Coupa requests sent (retries and token mints included)",
            counter,
            one(c.requests),
        )?;
        family(
            &mut e,
            "coupa_retries",
            "Coupa requests repeated after a transient failure",
            counter,
            one(c.retries),
        )?;
        family(
            &mut e,
            "coupa_rate_limited",
            "429 responses from Coupa",
            counter,
            one(c.rate_limited),
        )?;
        family(
            &mut e,
            "coupa_rate_limit_waits",
            "Requests that waited for the rate limit",
            counter,
            one(c.rate_limit_waits),
        )?;
        family(
            &mut e,
            "coupa_token_refreshes",
            "OAuth tokens minted",
            counter,
            one(c.token_mints),
        )?;
        family(
            &mut e,
            "coupa_clock_rejected",
            "Coupa Date headers ignored for jumping beyond coupa.max_clock_jump",
            counter,
            one(s.clock.rejected),
        )?;
        family(
            &mut e,
            "coupa_clock_offset_seconds",
            "Coupa's clock minus the host's, as the poll windows use it",
            MetricType::Gauge,
            s.clock
                .offset_seconds
                .map(|o| vec![(Labels::new(), ConstGauge::new(o))])
                .unwrap_or_default(),
        )?;

        let per_sink =
            |f: fn(&crate::server::SinkView) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
                s.sinks
                    .iter()
                    .map(|k| (l("sink", &k.name), ConstCounter::new(f(k))))
                    .collect()
            };
        family(
            &mut e,
            "sink_delivered",
            "Events delivered",
            counter,
            per_sink(|k| k.delivered),
        )?;
        family(
            &mut e,
            "sink_superseded",
            "Dead letters superseded by a newer delivered version of their record (replay skips them)",
            counter,
            per_sink(|k| k.superseded),
        )?;
        family(
            &mut e,
            "sink_retries",
            "Event deliveries retried",
            counter,
            per_sink(|k| k.retries),
        )?;
        let sink_gauge =
            |f: fn(&crate::server::SinkView) -> i64| -> Vec<(Labels, ConstGauge<i64>)> {
                s.sinks
                    .iter()
                    .map(|k| (l("sink", &k.name), ConstGauge::new(f(k))))
                    .collect()
            };
        family(
            &mut e,
            "sink_dead_letters",
            "Dead letters held",
            gauge,
            sink_gauge(|k| k.dead_letters as i64),
        )?;
        family(
            &mut e,
            "sink_backlog",
            "Events waiting for this sink",
            gauge,
            sink_gauge(|k| k.backlog as i64),
        )?;
        family(
            &mut e,
            "sink_failing",
            "1 while the sink's deliveries fail",
            gauge,
            sink_gauge(|k| (k.state != "ok") as i64),
        )?;
        family(
            &mut e,
            "ready",
            "1 when /readyz answers 200",
            gauge,
            vec![(Labels::new(), ConstGauge::new(s.ready as i64))],
        )?;
        Ok(())
    }
}
