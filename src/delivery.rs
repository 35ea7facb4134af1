//! Drains the outbox into each sink from that sink's own durable cursor.
//! A batch is attempted, the transient failures retried with exponential
//! backoff and jitter until the sink's `max_retry_age`, permanent failures
//! and expired ones dead-lettered; each round's results are stored before
//! the next, so a restart repeats nothing that was settled. The next batch
//! starts only when the current one is settled, so events of one record
//! key reach a sink in detection order. Outbox entries are released once
//! every configured sink has settled them. A slow sink delays only itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::{debug, error, info, warn};

use crate::shutdown::Shutdown;
use crate::sink::{RetryPolicy, Sink, SinkError};
use crate::store::{DeadLetter, Missed, OutboxEntry, Settled, Store};

/// Events per delivery batch.
pub const BATCH: usize = 500;

/// First retry delay (doubled per attempt up to the sink's cap).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Live figures per sink, read by status, readiness and tests.
#[derive(Debug, Clone, Default)]
pub struct SinkStatus {
    /// Events delivered (replays included).
    pub delivered: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// The last failure, as the sink phrased it.
    pub last_error: Option<String>,
    /// Since when nothing has got through (`None`: healthy).
    pub failing_since: Option<DateTime<Utc>>,
    /// Last successful delivery.
    pub last_delivery: Option<DateTime<Utc>>,
    /// The sink's `max_retry_age` (readiness calls a sink stuck past it).
    pub retry_budget: Option<Duration>,
    /// Dead letters marked superseded (a newer version of their record was
    /// delivered, so a replay skips them) since the start.
    pub superseded: u64,
    /// Found at start: events released while this sink was not configured.
    pub missed: Option<Missed>,
}

/// How a batch ended.
enum Batch {
    Settled,
    Interrupted,
    Fatal(String),
}

/// Where a batch came from: it decides how its results are stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Outbox,
    Replay,
}

/// One sink's delivery loop and what it shares.
pub struct Drain<S: Sink> {
    sink: S,
    name: String,
    policy: RetryPolicy,
    store: Store,
    all_sinks: Arc<Vec<String>>,
    status: Arc<Mutex<SinkStatus>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl<S: Sink> Drain<S> {
    /// Prepares the loop for `sink`; `all_sinks` are every configured
    /// sink's names (an entry is released when all have settled it).
    pub fn new(sink: S, store: Store, all_sinks: Arc<Vec<String>>) -> Drain<S> {
        let policy = sink.retry_policy();
        Drain {
            name: sink.name().to_string(),
            policy,
            sink,
            store,
            all_sinks,
            status: Arc::new(Mutex::new(SinkStatus {
                retry_budget: policy.max_retry_age,
                ..SinkStatus::default()
            })),
            metrics: None,
        }
    }

    /// Records each round's latency.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Drain<S> {
        self.metrics = Some(metrics);
        self
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shared live status.
    pub fn status(&self) -> Arc<Mutex<SinkStatus>> {
        self.status.clone()
    }

    /// Runs until shutdown. After shutdown is asked for, it keeps
    /// delivering what is already durable (the caller bounds how long) but
    /// stops retrying; a failing batch stays in the outbox for next time.
    /// An error means the sink cannot go on (the daemon stops).
    pub async fn run(mut self, mut shutdown: Shutdown) -> Result<(), String> {
        let mut wake = self.store.subscribe();
        self.check_missed().await;
        loop {
            // A failing store cannot record progress: delivering now would
            // only repeat after the restart that follows.
            // (The daemon logs the failure once and exits if it lasts.)
            let next = match self.store.failure() {
                Some(_) => Ok((Source::Outbox, Vec::new())),
                None => self.next_batch(),
            };
            let (source, batch) = match next {
                Ok(b) => b,
                Err(e) => {
                    error!(sink = %self.name, error = %e, "cannot read the outbox; retrying in 1 s");
                    (Source::Outbox, Vec::new())
                }
            };
            if batch.is_empty() {
                if shutdown.is_shutdown() {
                    return Ok(());
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = shutdown.recv() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            match self.deliver_batch(source, batch, &mut shutdown).await {
                Batch::Settled => {}
                Batch::Interrupted => {
                    info!(sink = %self.name, "stopping with undelivered events; they stay in the outbox");
                    return Ok(());
                }
                Batch::Fatal(e) => return Err(e),
            }
        }
    }

    /// A sink removed and added again finds its old cursor below what the
    /// outbox still holds: say what it missed instead of skipping silently.
    async fn check_missed(&self) {
        match self.store.record_missed(&self.name).await {
            Ok(Some(m)) => {
                warn!(
                    sink = %self.name,
                    from = m.from,
                    to = m.to,
                    "events {}..={} were released while this sink was not configured and will not reach it; `coupa-changefeed state reset-sink {} --to oldest` acknowledges the gap",
                    m.from, m.to, self.name
                );
                crate::sync::lock(&self.status).missed = Some(m);
            }
            Ok(None) => {}
            Err(e) => warn!(sink = %self.name, error = %e, "cannot check the sink's cursor"),
        }
    }

    /// Replays first (an operator asked for them), then the outbox after
    /// the cursor, skipping what was settled out of order.
    fn next_batch(&self) -> Result<(Source, Vec<(u64, OutboxEntry)>), crate::store::StoreError> {
        let replays = self.store.replays(&self.name, BATCH)?;
        if !replays.is_empty() {
            return Ok((Source::Replay, replays));
        }
        let cursor = self.store.cursor(&self.name)?;
        let mut batch = self.store.outbox_after(cursor, BATCH)?;
        // The entry right after the cursor is never settled (`settle` moves
        // the cursor over settled entries in a row), so this never empties
        // a non-empty batch.
        let acked = self.store.acked_beyond(&self.name)?;
        batch.retain(|(seq, _)| !acked.contains(seq));
        Ok((Source::Outbox, batch))
    }

    /// Delivers one batch until every event is settled, shutdown stops it,
    /// or the sink says it cannot go on.
    async fn deliver_batch(
        &mut self,
        source: Source,
        batch: Vec<(u64, OutboxEntry)>,
        shutdown: &mut Shutdown,
    ) -> Batch {
        let mut pending = batch;
        let mut attempts: HashMap<u64, (u32, DateTime<Utc>, Instant)> = HashMap::new();
        let mut round = 0u32;
        loop {
            round += 1;
            let started = Instant::now();
            let outcomes = self.sink.deliver(&pending).await;
            if let Some(m) = &self.metrics {
                m.observe_delivery(&self.name, started.elapsed().as_secs_f64());
            }
            let mut settled = Settled::default();
            let mut retry = Vec::new();
            let mut delivered = 0u64;
            let mut last_error = None;
            let mut fatal = None;
            for ((seq, entry), outcome) in
                pending
                    .into_iter()
                    .zip(
                        outcomes
                            .into_iter()
                            .chain(std::iter::repeat(Err(SinkError::Transient(
                                "the sink returned no outcome for this event".into(),
                            )))),
                    )
            {
                let dead_reason = match outcome {
                    Ok(()) => {
                        delivered += 1;
                        settled
                            .delivered
                            .push((seq, entry.object.clone(), entry.key.clone()));
                        None
                    }
                    Err(SinkError::Permanent(e)) => Some(e),
                    Err(SinkError::Fatal(e)) => {
                        fatal = Some(e);
                        retry.push((seq, entry));
                        continue;
                    }
                    Err(SinkError::Transient(e)) => {
                        let slot = attempts
                            .entry(seq)
                            .or_insert((0, Utc::now(), Instant::now()));
                        let expired = self
                            .policy
                            .max_retry_age
                            .is_some_and(|age| slot.2.elapsed() >= age);
                        if expired {
                            Some(format!(
                                "gave up after {:?}: {e}",
                                self.policy.max_retry_age.unwrap_or_default()
                            ))
                        } else {
                            slot.0 += 1;
                            last_error = Some(e);
                            retry.push((seq, entry));
                            continue;
                        }
                    }
                };
                if let Some(error) = dead_reason {
                    let (n, first, _) =
                        attempts
                            .get(&seq)
                            .copied()
                            .unwrap_or((0, Utc::now(), Instant::now()));
                    warn!(sink = %self.name, seq, object = %entry.object, key = %entry.key, error = %error, "event dead-lettered");
                    last_error = Some(error.clone());
                    settled.dead.push(DeadLetter {
                        sink: self.name.clone(),
                        seq,
                        entry,
                        error,
                        attempts: n + 1,
                        first_failed: first,
                        last_failed: Utc::now(),
                        superseded_by: None,
                    });
                }
                match source {
                    Source::Outbox => settled.outbox.push(seq),
                    Source::Replay => settled.replayed.push(seq),
                }
            }
            let dead = settled.dead.len() as u64;
            let superseded = match self.store.settle(&self.name, settled).await {
                Ok(n) => n,
                Err(e) => {
                    // Not recorded: the events may be delivered again (same ids).
                    error!(sink = %self.name, error = %e, "cannot record delivery progress");
                    0
                }
            };
            if superseded > 0 {
                info!(sink = %self.name, superseded, "dead letters superseded by a newer delivered version; `dlq replay` skips them");
            }
            if source == Source::Outbox {
                match self.store.release(&self.all_sinks) {
                    Ok(n) if n > 0 => {
                        debug!(sink = %self.name, released = n, "outbox entries released")
                    }
                    Ok(_) => {}
                    Err(e) => warn!(sink = %self.name, error = %e, "cannot release outbox entries"),
                }
            }
            {
                let mut st = crate::sync::lock(&self.status);
                st.delivered += delivered;
                st.superseded += superseded;
                st.retries += retry.len() as u64;
                if delivered > 0 {
                    st.last_delivery = Some(Utc::now());
                }
                if let Some(e) = &last_error {
                    st.last_error = Some(e.clone());
                } else if delivered > 0 {
                    // Recovered: an old error would read as a current one.
                    st.last_error = None;
                }
                // Failing = nothing gets through; a batch settled only by
                // dead letters does not make the sink healthy.
                if delivered > 0 {
                    st.failing_since = None;
                } else if (!retry.is_empty() || dead > 0) && st.failing_since.is_none() {
                    st.failing_since = Some(Utc::now());
                }
            }
            if let Some(e) = fatal {
                error!(sink = %self.name, error = %e, "the sink cannot continue; stopping the daemon (undelivered events stay in the outbox)");
                return Batch::Fatal(e);
            }
            if retry.is_empty() {
                return Batch::Settled;
            }
            pending = retry;
            if shutdown.is_shutdown() {
                return Batch::Interrupted;
            }
            let wait = crate::backoff::full_jitter(round, FIRST_BACKOFF, self.policy.max_backoff);
            warn!(
                sink = %self.name,
                pending = pending.len(),
                attempt = round,
                error = last_error.as_deref().unwrap_or(""),
                retry_in = ?wait,
                "delivery failed; will retry"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.recv() => return Batch::Interrupted,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Outcome;
    use crate::store::ObjectState;
    use std::collections::VecDeque;

    /// A scripted destination: answers from a queue of per-attempt rules,
    /// keeps what it accepted. Tests the loop, not a transport.
    struct Scripted {
        /// Per attempt of a key: what to answer (then `Ok` for ever).
        script: HashMap<String, VecDeque<Outcome>>,
        got: Got,
        policy: RetryPolicy,
    }

    impl Sink for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn retry_policy(&self) -> RetryPolicy {
            self.policy
        }
        async fn deliver(&mut self, batch: &[(u64, OutboxEntry)]) -> Vec<Outcome> {
            let mut blocked = std::collections::HashSet::new();
            batch
                .iter()
                .map(|(seq, e)| {
                    if blocked.contains(&e.key) {
                        return Err(SinkError::Transient("blocked".into()));
                    }
                    let o = self
                        .script
                        .get_mut(&e.key)
                        .and_then(|q| q.pop_front())
                        .unwrap_or(Ok(()));
                    match &o {
                        Ok(()) => self.got.lock().unwrap().push((*seq, e.key.clone())),
                        Err(SinkError::Transient(_) | SinkError::Fatal(_)) => {
                            blocked.insert(e.key.clone());
                        }
                        Err(SinkError::Permanent(_)) => {}
                    }
                    o
                })
                .collect()
        }
    }

    fn entry(key: &str) -> OutboxEntry {
        OutboxEntry {
            object: "purchase_orders".into(),
            key: key.into(),
            event: format!("{{\"subject\":\"{key}\"}}").into_bytes(),
        }
    }

    async fn fill(store: &Store, keys: &[&str]) {
        store
            .commit_page(
                "purchase_orders",
                &ObjectState::default(),
                &[],
                keys.iter().map(|k| entry(k)).collect(),
            )
            .await
            .unwrap();
    }

    /// What a scripted sink accepted: (seq, key).
    type Got = Arc<Mutex<Vec<(u64, String)>>>;

    fn scripted(script: &[(&str, Vec<Outcome>)], age: Option<Duration>) -> (Scripted, Got) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let s = Scripted {
            script: script
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().cloned().collect()))
                .collect(),
            got: got.clone(),
            policy: RetryPolicy {
                max_retry_age: age,
                max_backoff: Duration::from_millis(20),
            },
        };
        (s, got)
    }

    async fn run_until(store: &Store, sink: Scripted, done: impl Fn() -> bool) {
        let (trigger, shutdown) = crate::shutdown::channel();
        let drain = Drain::new(sink, store.clone(), Arc::new(vec!["scripted".into()]));
        let task = tokio::spawn(drain.run(shutdown));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.fire();
        task.await
            .unwrap()
            .expect("the scripted sink never fails fatally");
    }

    fn t(e: &str) -> Outcome {
        Err(SinkError::Transient(e.into()))
    }

    #[tokio::test]
    async fn transient_failures_are_retried_in_key_order_and_permanent_ones_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fill(&store, &["a", "b", "a", "c", "a"]).await;
        let (sink, got) = scripted(
            &[
                ("a", vec![t("500"), t("500")]),
                ("c", vec![Err(SinkError::Permanent("400 bad".into()))]),
            ],
            Some(Duration::from_secs(60)),
        );
        let g = got.clone();
        let s2 = store.clone();
        run_until(&store, sink, move || {
            g.lock().unwrap().len() == 4 && s2.cursor("scripted").unwrap() == 5
        })
        .await;
        let got = got.lock().unwrap().clone();
        let a: Vec<u64> = got.iter().filter(|g| g.1 == "a").map(|g| g.0).collect();
        assert_eq!(
            a,
            vec![1, 3, 5],
            "key `a` in detection order despite retries"
        );
        assert!(got.iter().any(|g| g.1 == "b"));
        let dead = store.dead_letters(Some("scripted")).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].seq, dead[0].entry.key.as_str()), (4, "c"));
        assert!(dead[0].error.contains("400"), "{}", dead[0].error);
        assert_eq!(
            store.cursor("scripted").unwrap(),
            5,
            "dead letters settle too"
        );
        assert_eq!(store.outbox_len(), 0, "released once the only sink settled");
    }

    #[tokio::test]
    async fn replay_delivers_a_dead_letter_and_expired_retries_become_dead() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fill(&store, &["x"]).await;
        // Always failing, with a retry age of zero: dead at the first failure.
        let (sink, _) = scripted(&[("x", vec![t("down"); 100])], Some(Duration::ZERO));
        let s2 = store.clone();
        run_until(&store, sink, move || {
            !s2.dead_letters(None).unwrap().is_empty()
        })
        .await;
        let dead = store.dead_letters(None).unwrap();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].error.contains("gave up"), "{}", dead[0].error);

        assert_eq!(store.replay_dead(Some("scripted"), &[]).await.unwrap(), 1);
        assert!(store.dead_letters(None).unwrap().is_empty());
        let (sink, got) = scripted(&[], None);
        let g = got.clone();
        run_until(&store, sink, move || !g.lock().unwrap().is_empty()).await;
        assert_eq!(got.lock().unwrap().clone(), vec![(1, "x".to_string())]);
        assert!(store.replays("scripted", 10).unwrap().is_empty());
        assert!(store.dead_letters(None).unwrap().is_empty());
    }

    #[tokio::test]
    async fn events_settled_before_a_stop_are_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            fill(&store, &["a", "b", "c"]).await;
            // `a` fails for ever; `b` and `c` succeed out of order.
            let (sink, got) = scripted(&[("a", vec![t("down"); 10_000])], None);
            let g = got.clone();
            run_until(&store, sink, move || g.lock().unwrap().len() == 2).await;
            assert_eq!(store.cursor("scripted").unwrap(), 0, "`a` holds the cursor");
        }
        let store = Store::open(dir.path()).unwrap();
        let (sink, got) = scripted(&[], None);
        let g = got.clone();
        let s2 = store.clone();
        run_until(&store, sink, move || {
            !g.lock().unwrap().is_empty() && s2.cursor("scripted").unwrap() == 3
        })
        .await;
        assert_eq!(
            got.lock().unwrap().clone(),
            vec![(1, "a".to_string())],
            "only the unsettled event is sent after the restart"
        );
        assert!(store.acked_beyond("scripted").unwrap().is_empty());
    }
}
