//! Dead letters: what a sink could not deliver, kept per sink with the
//! event; listed, queued for replay or dropped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::keys::{held_key, seen_prefix, sink_key, split_sink_key};
use super::{tx_error, OutboxEntry, Store, StoreError};

/// An event a sink could not deliver, kept until replayed or dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub sink: String,
    /// Its outbox sequence number (the handle for replay and drop).
    pub seq: u64,
    #[serde(skip)]
    pub entry: OutboxEntry,
    /// The last error, as the sink phrased it.
    pub error: String,
    /// Attempts made before giving up.
    pub attempts: u32,
    pub first_failed: DateTime<Utc>,
    pub last_failed: DateTime<Utc>,
    /// The seq of a newer version of the same record this sink delivered
    /// since: replaying this one would leave the consumer on a stale
    /// version, so `replay` skips it (it stays listed until dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<u64>,
}

/// Head of a stored dead letter (the entry is stored beside it).
#[derive(Serialize, Deserialize)]
pub(super) struct DeadHead {
    pub(super) object: String,
    pub(super) key: String,
    pub(super) error: String,
    pub(super) attempts: u32,
    pub(super) first_failed: DateTime<Utc>,
    pub(super) last_failed: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) superseded_by: Option<u64>,
}

impl DeadLetter {
    /// One dead letter as `dlq list --json` and `GET /admin/dlq` show it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["object"] = self.entry.object.clone().into();
        v["key"] = self.entry.key.clone().into();
        v["event"] = self.entry.event_json();
        v
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let head = DeadHead {
            object: self.entry.object.clone(),
            key: self.entry.key.clone(),
            error: self.error.clone(),
            attempts: self.attempts,
            first_failed: self.first_failed,
            last_failed: self.last_failed,
            superseded_by: self.superseded_by,
        };
        let mut v = serde_json::to_vec(&head).expect("head serialises");
        v.push(b'\n');
        v.extend_from_slice(&self.entry.event);
        v
    }

    pub(super) fn decode(sink: String, seq: u64, b: &[u8]) -> Option<DeadLetter> {
        let cut = b.iter().position(|&c| c == b'\n')?;
        let head: DeadHead = serde_json::from_slice(&b[..cut]).ok()?;
        Some(DeadLetter {
            sink,
            seq,
            entry: OutboxEntry {
                object: head.object,
                key: head.key,
                event: b[cut + 1..].to_vec(),
            },
            error: head.error,
            attempts: head.attempts,
            first_failed: head.first_failed,
            last_failed: head.last_failed,
            superseded_by: head.superseded_by,
        })
    }
}

impl Store {
    /// Entries queued for `sink` by [`Store::replay_dead`], oldest first.
    pub fn replays(&self, sink: &str, max: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.replay.scan_prefix(seen_prefix(sink)).take(max) {
            let (k, v) = kv?;
            let seq = split_sink_key(&k).map_or(0, |(_, s)| s);
            let entry = OutboxEntry::decode(&v).ok_or_else(|| StoreError::Decode {
                key: format!("replay/{sink}/{seq}"),
                detail: "truncated entry".into(),
            })?;
            out.push((seq, entry));
        }
        Ok(out)
    }

    /// Dead letters of one sink (or all), by sink then seq.
    pub fn dead_letters(&self, sink: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let prefix = sink.map(seen_prefix).unwrap_or_default();
        let mut out = Vec::new();
        for kv in self.inner.dead.scan_prefix(prefix) {
            let (k, v) = kv?;
            let (name, seq) = split_sink_key(&k).ok_or_else(|| StoreError::Decode {
                key: format!("dead/{}", String::from_utf8_lossy(&k)),
                detail: "bad key".into(),
            })?;
            let d =
                DeadLetter::decode(name.clone(), seq, &v).ok_or_else(|| StoreError::Decode {
                    key: format!("dead/{name}/{seq}"),
                    detail: "unreadable dead letter".into(),
                })?;
            out.push(d);
        }
        Ok(out)
    }

    /// How many dead letters `sink` holds (keys only: cheap enough per scrape).
    pub fn dead_count(&self, sink: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for k in self.inner.dead.scan_prefix(seen_prefix(sink)).keys() {
            k?;
            n += 1;
        }
        Ok(n)
    }

    /// Moves dead letters (of `sink` or all; `seqs` empty = every one) back
    /// to their sink's replay queue; a running daemon delivers them next.
    /// Returns how many.
    /// Superseded ones (see [`DeadLetter::superseded_by`]) are skipped:
    /// they would land after the newer version and leave it stale.
    pub async fn replay_dead(&self, sink: Option<&str>, seqs: &[u64]) -> Result<usize, StoreError> {
        let mut picked = self.pick_dead(sink, seqs)?;
        picked.retain(|d| d.superseded_by.is_none());
        let i = &self.inner;
        let result: Result<(), TransactionError<()>> =
            (&i.dead, &i.replay).transaction(|(dead, replay)| {
                for d in &picked {
                    let k = sink_key(&d.sink, d.seq);
                    dead.remove(k.clone())?;
                    replay.insert(k, d.entry.encode())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(tx_error)?;
        self.durable().await?;
        // Wake idle sinks (the value is unchanged; receivers still wake).
        i.durable_seq.send_modify(|_| {});
        Ok(picked.len())
    }

    /// Deletes dead letters (of `sink` or all; `seqs` empty = every one).
    pub async fn drop_dead(&self, sink: Option<&str>, seqs: &[u64]) -> Result<usize, StoreError> {
        let picked = self.pick_dead(sink, seqs)?;
        let i = &self.inner;
        let result: Result<(), TransactionError<()>> =
            (&i.dead, &i.held).transaction(|(dead, held)| {
                for d in &picked {
                    dead.remove(sink_key(&d.sink, d.seq))?;
                    held.remove(held_key(&d.sink, &d.entry.object, &d.entry.key, d.seq))?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(tx_error)?;
        self.durable().await?;
        Ok(picked.len())
    }

    pub(super) fn pick_dead(
        &self,
        sink: Option<&str>,
        seqs: &[u64],
    ) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self
            .dead_letters(sink)?
            .into_iter()
            .filter(|d| seqs.is_empty() || seqs.contains(&d.seq))
            .collect())
    }
}
