//! Metric families: the latency histograms recorded as things happen
//! (the client's and the sinks'), and their label sets. Everything else on
//! `/metrics` is read from the status snapshot at scrape time (see
//! `http::ops`). Imports nothing from the crate, so the lowest layers
//! (the Coupa client) may record into it.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

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
}
