//! The outbox: events by sequence number, each sink's cursor and what it
//! settled beyond it, missed ranges, and release once every sink settled.

use chrono::Utc;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::keys::{
    compact_id, held_key, held_prefix, missed_key, seen_prefix, sink_key, split_sink_key, u64_be,
};
use super::{tx_error, DeadLetter, Store, StoreError};

/// One event waiting in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Catalogue or config name of the object.
    pub object: String,
    /// Record id: the ordering and partition key.
    pub key: String,
    /// The CloudEvent as JSON bytes, ready to send as they are.
    pub event: Vec<u8>,
}

impl OutboxEntry {
    /// The event parsed (tools and tests; sinks send the bytes).
    pub fn event_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.event).unwrap_or(serde_json::Value::Null)
    }

    /// `u16 len | object | u16 len | key | event`: no parse on the hot path.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.object.len() + self.key.len() + self.event.len());
        for part in [compact_id(&self.object), compact_id(&self.key)] {
            // `compact_id` keeps every part far below u16::MAX.
            v.extend_from_slice(&(part.len() as u16).to_be_bytes());
            v.extend_from_slice(part.as_bytes());
        }
        v.extend_from_slice(&self.event);
        v
    }

    pub(super) fn decode(mut b: &[u8]) -> Option<OutboxEntry> {
        let mut part = || -> Option<String> {
            let len = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
            let s = String::from_utf8(b.get(2..2 + len)?.to_vec()).ok()?;
            b = &b[2 + len..];
            Some(s)
        };
        let object = part()?;
        let key = part()?;
        Some(OutboxEntry {
            object,
            key,
            event: b.to_vec(),
        })
    }
}

/// What one delivery round settled for a sink, written in one transaction.
#[derive(Debug, Default)]
pub struct Settled {
    /// Outbox seqs now delivered or dead-lettered.
    pub outbox: Vec<u64>,
    /// Replayed seqs now delivered or dead-lettered again.
    pub replayed: Vec<u64>,
    /// New dead letters (from either source).
    pub dead: Vec<DeadLetter>,
    /// `(seq, object, key)` of the events that reached the sink (either
    /// source): older dead letters of those records become superseded.
    pub delivered: Vec<(u64, String, String)>,
}

/// A sink's cursor lies below the oldest event still held: the events in
/// `from..=to` were released while the sink was not configured and will
/// never reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Missed {
    pub from: u64,
    pub to: u64,
}

impl Store {
    /// Up to `max` outbox entries after `after`, only those flushed to disk.
    pub fn outbox_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        let durable = *self.inner.durable_seq.borrow();
        if after >= durable {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(max.min(1024));
        for kv in self
            .inner
            .outbox
            .range((after + 1).to_be_bytes()..=durable.to_be_bytes())
        {
            let (k, v) = kv?;
            let seq = u64_be(&k).unwrap_or(0);
            let entry = OutboxEntry::decode(&v).ok_or_else(|| StoreError::Decode {
                key: format!("outbox/{seq}"),
                detail: "truncated entry".into(),
            })?;
            out.push((seq, entry));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Wakes when new events become durable (the value is the highest seq).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.durable_seq.subscribe()
    }

    /// Events waiting in the outbox (not yet released by every sink).
    /// Counts entries: O(n), for tools and tests; see [`Store::backlog`].
    pub fn outbox_len(&self) -> usize {
        self.inner.outbox.len()
    }

    /// Highest durable seq (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        *self.inner.durable_seq.borrow()
    }

    /// Events not yet settled by the slowest of `sinks`: O(sinks). A sink
    /// behind the oldest entry still held (one added since) counts from it.
    pub fn backlog(&self, sinks: &[String]) -> Result<u64, StoreError> {
        let mut min = u64::MAX;
        for s in sinks {
            min = min.min(self.cursor(s)?);
        }
        let Some((first, _)) = self.inner.outbox.first()? else {
            return Ok(0);
        };
        let floor = u64_be(&first).unwrap_or(1).saturating_sub(1);
        Ok(self.last_seq().saturating_sub(min.max(floor)))
    }

    /// Events one sink has still to settle.
    pub fn sink_backlog(&self, sink: &str) -> Result<u64, StoreError> {
        let ahead = self.acked_beyond(sink)?.len() as u64;
        Ok(self.backlog(&[sink.to_string()])?.saturating_sub(ahead))
    }

    /// Outbox seqs `sink` settled beyond its cursor.
    pub fn acked_beyond(&self, sink: &str) -> Result<std::collections::BTreeSet<u64>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        for kv in self.inner.acked.scan_prefix(seen_prefix(sink)) {
            if let Some((_, seq)) = split_sink_key(&kv?.0) {
                out.insert(seq);
            }
        }
        Ok(out)
    }

    /// Records what a delivery round settled and moves the sink's cursor
    /// over every settled entry in a row, in one transaction, then
    /// flushes. Nothing settled is delivered again after a restart. Older
    /// dead letters (and queued replays) of a record a newer version of
    /// which was delivered are marked superseded in the same transaction.
    /// Returns how many were.
    pub async fn settle(&self, sink: &str, mut done: Settled) -> Result<u64, StoreError> {
        let i = &self.inner;
        // Work out the new cursor first, so entries settled in order (the
        // usual case) move the cursor without passing through `acked`.
        let stored = self.acked_beyond(sink)?;
        let mut ahead = stored.clone();
        ahead.extend(done.outbox.iter().copied());
        let old = self.cursor(sink)?;
        let mut cursor = old;
        // Over settled entries in a row; entries below the oldest one still
        // in the outbox count as settled.
        for k in i.outbox.range((old + 1).to_be_bytes()..).keys() {
            let seq = u64_be(&k?).unwrap_or(u64::MAX);
            if !ahead.remove(&seq) {
                break;
            }
            cursor = seq;
        }
        // The newest version of each record delivered this round.
        let mut newest: std::collections::HashMap<(String, String), u64> =
            std::collections::HashMap::new();
        for (seq, object, key) in &done.delivered {
            let n = newest.entry((object.clone(), key.clone())).or_default();
            *n = (*n).max(*seq);
        }
        let mut fresh_superseded = 0;
        for d in &mut done.dead {
            let record = (d.entry.object.clone(), d.entry.key.clone());
            if let Some(&n) = newest.get(&record).filter(|n| **n > d.seq) {
                d.superseded_by = Some(n);
                fresh_superseded += 1;
            }
        }
        // Older ones held from earlier rounds, found through the index (a
        // sink without dead letters pays one empty scan).
        let replayed: std::collections::HashSet<u64> = done.replayed.iter().copied().collect();
        let now_dead: std::collections::HashSet<u64> = done.dead.iter().map(|d| d.seq).collect();
        let mut older: Vec<(u64, u64)> = Vec::new();
        if !newest.is_empty() && i.held.scan_prefix(seen_prefix(sink)).next().is_some() {
            for ((object, key), n) in &newest {
                let prefix = held_prefix(sink, object, key);
                for k in i.held.scan_prefix(&prefix).keys() {
                    let k = k?;
                    let Some(seq) = k.get(prefix.len()..).and_then(u64_be) else {
                        continue;
                    };
                    if seq < *n && !replayed.contains(&seq) && !now_dead.contains(&seq) {
                        older.push((seq, *n));
                    }
                }
            }
        }
        // Replays delivered now leave the index.
        let unheld: Vec<Vec<u8>> = done
            .delivered
            .iter()
            .filter(|(seq, ..)| replayed.contains(seq))
            .map(|(seq, object, key)| held_key(sink, object, key, *seq))
            .collect();
        let superseded = std::cell::Cell::new(0u64);
        let result: Result<(), TransactionError<()>> = (
            &i.acked, &i.dead, &i.replay, &i.cursors, &i.held,
        )
            .transaction(|(acked, dead, replay, cursors, held)| {
                superseded.set(fresh_superseded);
                for seq in stored.iter().filter(|s| **s <= cursor) {
                    acked.remove(sink_key(sink, *seq))?;
                }
                for seq in done.outbox.iter().filter(|s| **s > cursor) {
                    acked.insert(sink_key(sink, *seq), &[][..])?;
                }
                if cursor != old {
                    cursors.insert(sink.as_bytes(), &cursor.to_be_bytes())?;
                }
                for seq in &done.replayed {
                    replay.remove(sink_key(sink, *seq))?;
                }
                for k in &unheld {
                    held.remove(k.as_slice())?;
                }
                for d in &done.dead {
                    dead.insert(sink_key(sink, d.seq), d.encode())?;
                    held.insert(
                        held_key(sink, &d.entry.object, &d.entry.key, d.seq),
                        &[][..],
                    )?;
                }
                for (seq, by) in &older {
                    let k = sink_key(sink, *seq);
                    if let Some(v) = dead.get(&k)? {
                        let Some(mut d) = DeadLetter::decode(sink.to_string(), *seq, &v) else {
                            continue;
                        };
                        if d.superseded_by.is_none() {
                            d.superseded_by = Some(*by);
                            dead.insert(k, d.encode())?;
                            superseded.set(superseded.get() + 1);
                        }
                    } else if let Some(v) = replay.get(&k)? {
                        // Queued for replay but not sent yet: sending it
                        // now would land after the newer version.
                        let Some(entry) = OutboxEntry::decode(&v) else {
                            continue;
                        };
                        let now = Utc::now();
                        let d = DeadLetter {
                            sink: sink.to_string(),
                            seq: *seq,
                            entry,
                            error: "queued for replay when a newer version was delivered".into(),
                            attempts: 0,
                            first_failed: now,
                            last_failed: now,
                            superseded_by: Some(*by),
                        };
                        replay.remove(k.clone())?;
                        dead.insert(k, d.encode())?;
                        superseded.set(superseded.get() + 1);
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        self.note(result.map_err(tx_error))?;
        self.durable().await?;
        Ok(superseded.get())
    }

    /// The last seq a sink acknowledged (0 = none).
    pub fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .cursors
            .get(sink)?
            .and_then(|v| u64_be(&v))
            .unwrap_or(0))
    }

    /// The oldest seq still in the outbox, or the next to come when empty.
    pub fn oldest_held(&self) -> Result<u64, StoreError> {
        Ok(match self.inner.outbox.first()? {
            Some((k, _)) => u64_be(&k).unwrap_or(1),
            None => self.last_seq() + 1,
        })
    }

    /// Events released while `sink` was not configured: a gap recorded
    /// earlier, or its stored cursor lying below the oldest held entry now.
    /// A sink without a cursor is new and starts from what is held.
    pub fn missed(&self, sink: &str) -> Result<Option<Missed>, StoreError> {
        let stored = self.inner.meta.get(missed_key(sink))?.and_then(|v| {
            Some(Missed {
                from: u64_be(v.get(..8)?)?,
                to: u64_be(v.get(8..16)?)?,
            })
        });
        let Some(c) = self.inner.cursors.get(sink)?.and_then(|v| u64_be(&v)) else {
            return Ok(stored);
        };
        let oldest = self.oldest_held()?;
        let now = (c + 1 < oldest).then_some(Missed {
            from: c + 1,
            to: oldest - 1,
        });
        Ok(match (stored, now) {
            (Some(a), Some(b)) => Some(Missed {
                from: a.from.min(b.from),
                to: a.to.max(b.to),
            }),
            (a, b) => a.or(b),
        })
    }

    /// [`Store::missed`], recorded so it outlives the sink's catching up
    /// (the daemon calls it as a sink starts).
    pub async fn record_missed(&self, sink: &str) -> Result<Option<Missed>, StoreError> {
        let m = self.missed(sink)?;
        if let Some(m) = m {
            let mut v = m.from.to_be_bytes().to_vec();
            v.extend_from_slice(&m.to.to_be_bytes());
            self.inner.meta.insert(missed_key(sink), v)?;
            self.durable().await?;
        }
        Ok(m)
    }

    /// Accepts what `sink` missed: moves a cursor lying below the oldest
    /// held entry up to just before it and forgets the recorded gap.
    /// Returns the gap, if there was one.
    pub async fn acknowledge_missed(&self, sink: &str) -> Result<Option<Missed>, StoreError> {
        let m = self.missed(sink)?;
        if m.is_some() {
            let floor = self.oldest_held()? - 1;
            if self.inner.cursors.contains_key(sink)? && self.cursor(sink)? < floor {
                self.reset_cursor(sink, floor, false).await?;
            }
            self.inner.meta.remove(missed_key(sink))?;
            self.durable().await?;
        }
        Ok(m)
    }

    /// Sets `sink`'s cursor to `to` (0: none, as a new sink). With
    /// `redeliver`, it also forgets what it settled beyond `to`, so every
    /// held event after `to` is delivered to it again. Only while no
    /// daemon runs on the state dir.
    pub async fn reset_cursor(
        &self,
        sink: &str,
        to: u64,
        redeliver: bool,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let mut acked = Vec::new();
        for k in i.acked.scan_prefix(seen_prefix(sink)).keys() {
            let k = k?;
            if redeliver || split_sink_key(&k).is_some_and(|(_, seq)| seq <= to) {
                acked.push(k);
            }
        }
        let result: Result<(), TransactionError<()>> =
            (&i.acked, &i.cursors).transaction(|(a, cursors)| {
                for k in &acked {
                    a.remove(k)?;
                }
                if to == 0 {
                    cursors.remove(sink.as_bytes())?;
                } else {
                    cursors.insert(sink.as_bytes(), &to.to_be_bytes())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(tx_error)?;
        self.durable().await
    }

    /// Deletes outbox entries that every one of `sinks` has acknowledged.
    /// Returns how many were released.
    pub fn release(&self, sinks: &[String]) -> Result<usize, StoreError> {
        let mut min = u64::MAX;
        for s in sinks {
            min = min.min(self.cursor(s)?);
        }
        if sinks.is_empty() || min == 0 {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.inner.outbox.range(..=min.to_be_bytes()) {
            batch.remove(kv?.0);
            n += 1;
        }
        self.inner.outbox.apply_batch(batch)?;
        Ok(n)
    }
}
