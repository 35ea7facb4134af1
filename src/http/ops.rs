//! The operator's endpoints: `/healthz`, `/readyz`, `/status`, `/metrics`
//! (the snapshot's counters and gauges plus the latency histograms) and the
//! auto-refreshing page at `/`. Read-only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::ServerState;
use crate::metrics::Metrics;
use crate::status::{snapshot, ObjectView, SinkView, Snapshot};

type Labels = Vec<(String, String)>;

/// Liveness: fails while the store cannot be written, so a supervisor
/// restarts a daemon that cannot make progress.
pub(super) async fn healthz(State(state): State<ServerState>) -> Response {
    match state.handles.store.failure() {
        None => "ok\n".into_response(),
        Some(f) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "store failing for {} s (exit after state.failure_timeout = {} s): {}\n",
                f.since.elapsed().as_secs(),
                state.handles.failure_timeout.as_secs_f64(),
                f.error
            ),
        )
            .into_response(),
    }
}

pub(super) async fn readyz(State(state): State<ServerState>) -> Response {
    let snap = snapshot(&state.handles, state.started);
    let code = if snap.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let paused: Vec<_> = snap
        .objects
        .iter()
        .filter_map(|o| o.paused.as_ref().map(|p| (o.name.clone(), p.clone())))
        .collect();
    let body = serde_json::json!({
        "ready": snap.ready,
        "problems": snap.problems,
        "paused": paused.into_iter().collect::<BTreeMap<_, _>>(),
    });
    (code, Json(body)).into_response()
}

pub(super) async fn status(State(state): State<ServerState>) -> Json<Snapshot> {
    Json(snapshot(&state.handles, state.started))
}

pub(super) async fn metrics(
    State(state): State<ServerState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    match render(
        &state.handles.metrics,
        &snapshot(&state.handles, state.started),
        openmetrics,
    ) {
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Escapes text for HTML (error messages can hold anything a server sent).
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn opt(s: &Option<String>) -> String {
    esc(s.as_deref().unwrap_or("–"))
}

pub(super) async fn page(State(state): State<ServerState>) -> Html<String> {
    let snap = snapshot(&state.handles, state.started);
    let mut rows = String::new();
    for o in &snap.objects {
        rows += &format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            o.state,
            esc(&o.name),
            match &o.backfill {
                Some(b) => format!(
                    "{} · backfill {}%{}",
                    o.state,
                    b.percent,
                    b.eta_seconds
                        .map(|s| format!(", about {s:.0} s left"))
                        .unwrap_or_default()
                ),
                None => o.state.to_string(),
            },
            opt(&o.hwm),
            o.lag_seconds.map_or("–".into(), |l| format!("{l:.0} s")),
            opt(&o.last_success),
            o.events,
            o.repeats,
            esc(o.last_error.as_deref().or(o.paused.as_deref()).unwrap_or("")),
        );
    }
    let mut sink_rows = String::new();
    for s in &snap.sinks {
        sink_rows += &format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            s.state,
            esc(&s.name),
            s.state,
            s.delivered,
            s.backlog,
            s.dead_letters,
            opt(&s.last_delivery),
            esc(s.last_error.as_deref().filter(|_| s.state != "ok").unwrap_or("")),
        );
    }
    let problems: String = snap
        .problems
        .iter()
        .map(|p| {
            format!(
                "<li>{} <b>{}</b>: {}</li>",
                p.component,
                esc(&p.name),
                esc(&p.reason)
            )
        })
        .collect();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>coupa-changefeed — {ready}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #eee; }}
tr.ok td, tr.starting td {{ background: #e8f6e8; }}
tr.failing td, tr.retrying td, tr.paused td {{ background: #fff4d6; }}
tr.behind td, tr.stuck td {{ background: #fbdada; }}
.badge {{ padding: 2px 8px; border-radius: 4px; color: #fff; background: {colour}; }}
</style></head><body>
<h1>coupa-changefeed <span class="badge" id="ready">{ready}</span></h1>
<p>Up {uptime} s · Coupa requests {requests} ({r5xx} 5xx, {r429} rate-limited) · last event #{last_seq}</p>
<ul id="problems">{problems}</ul>
<h2>Objects</h2>
<table id="objects"><tr><th>object</th><th>state</th><th>high-water mark</th><th>lag</th><th>last success</th><th>events</th><th>repeats</th><th>last error</th></tr>
{rows}</table>
<h2>Sinks</h2>
<table id="sinks"><tr><th>sink</th><th>state</th><th>delivered</th><th>backlog</th><th>dead letters</th><th>last delivery</th><th>last error</th></tr>
{sink_rows}</table>
<p><a href="/status">/status</a> · <a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p>
</body></html>
"#,
        ready = if snap.ready { "ready" } else { "not ready" },
        colour = if snap.ready { "#2a8a2a" } else { "#c0392b" },
        uptime = snap.uptime_seconds,
        requests = snap.coupa.requests,
        r5xx = snap.coupa.responses_5xx,
        r429 = snap.coupa.rate_limited,
        last_seq = snap.last_seq,
    ))
}

/// The metrics for a snapshot plus the histograms: OpenMetrics text if
/// `openmetrics`, else the Prometheus text format 0.0.4 (what
/// `promtool check metrics` and older scrapers read).
pub(super) fn render(
    metrics: &Metrics,
    snap: &Snapshot,
    openmetrics: bool,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("coupa_changefeed");
    registry.register(
        "coupa_request_duration_seconds",
        "Coupa API request latency",
        metrics.coupa_latency.clone(),
    );
    registry.register(
        "sink_delivery_duration_seconds",
        "Time a sink takes to accept one batch",
        metrics.delivery_latency.clone(),
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
        let per_object = |f: fn(&ObjectView) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
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

        let per_sink = |f: fn(&SinkView) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
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
        let sink_gauge = |f: fn(&SinkView) -> i64| -> Vec<(Labels, ConstGauge<i64>)> {
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
