//! Object state: each object's high-water mark and open window, the
//! seen-set, and the page commit that writes both with the events.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::keys::{seen_key, seen_prefix, ts_key};
use super::{tx_error, OutboxEntry, Store, StoreError};

/// The window being paged, persisted so a crash resumes where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive lower bound of `updated-at`.
    pub lo: DateTime<Utc>,
    /// Exclusive upper bound of `updated-at`, frozen from Coupa's clock.
    pub hi: DateTime<Utc>,
    /// Last record id committed in the current list (`id[gt]` resumes after it).
    pub last_id: Option<u64>,
    /// Nested objects: parents with an id up to this one are done.
    #[serde(default)]
    pub parents_done: Option<u64>,
    /// Nested objects: the parent whose children are being paged.
    #[serde(default)]
    pub parent: Option<u64>,
    /// Offset paging (for servers that ignore `id[gt]`): the next offset.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Nested objects whose parent list ignores `id[gt]`: the offset of
    /// the next parent page (its first parent already done: the anchor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_offset: Option<u64>,
    /// Backfill: the window cut into time slices read concurrently, each
    /// with its own position. Empty: the window is one list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slices: Vec<Slice>,
}

/// One time slice of a backfill window, `[lo, hi)`, paged on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub lo: DateTime<Utc>,
    pub hi: DateTime<Utc>,
    /// Last record id committed (`id[gt]` resumes after it).
    #[serde(default)]
    pub last_id: Option<u64>,
    /// Offset paging: the next offset.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Read to its end (an empty page).
    #[serde(default)]
    pub done: bool,
}

/// One object's durable polling state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectState {
    /// Everything with `updated-at` below this has been read.
    pub hwm: Option<DateTime<Utc>>,
    /// Windows never reach below this (the configured start), so a first run
    /// does not replay the lookback before `start_from`.
    pub floor: Option<DateTime<Utc>>,
    /// The open window, if a poll is under way.
    pub window: Option<Window>,
    /// The server ignores `id[gt]` or the id order: page by offset.
    #[serde(default)]
    pub offset_paging: bool,
    /// Seen entries below this were pruned: no window reaches below it,
    /// so a lookback raised between restarts cannot re-read (and
    /// republish) versions the seen-set has forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_below: Option<DateTime<Utc>>,
    /// The `fields` selection the published versions were read with (`""`:
    /// all). Another selection changes every record's content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<String>,
    /// Set when `fields` changed: versions below this were published under
    /// the old selection, so a re-read whose key the seen-set holds is a
    /// repeat whatever its hash (no republishing); cleared once no window
    /// reaches below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseed_below: Option<DateTime<Utc>>,
}

/// A seen-set entry written with a page.
#[derive(Debug, Clone)]
pub struct SeenEntry {
    pub updated_at: Option<DateTime<Utc>>,
    pub id: String,
    pub hash: [u8; 32],
}

impl Store {
    /// One object's state; default when never polled.
    pub fn object_state(&self, object: &str) -> Result<ObjectState, StoreError> {
        match self.inner.objects.get(object)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Decode {
                key: format!("objects/{object}"),
                detail: e.to_string(),
            }),
            None => Ok(ObjectState::default()),
        }
    }

    /// Every object with state, by name.
    pub fn object_states(&self) -> Result<Vec<(String, ObjectState)>, StoreError> {
        self.inner
            .objects
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let name = String::from_utf8_lossy(&k).into_owned();
                let state = serde_json::from_slice(&v).map_err(|e| StoreError::Decode {
                    key: format!("objects/{name}"),
                    detail: e.to_string(),
                })?;
                Ok((name, state))
            })
            .collect()
    }

    /// Writes an object's state and flushes.
    pub async fn put_object_state(
        &self,
        object: &str,
        state: &ObjectState,
    ) -> Result<(), StoreError> {
        self.commit_page(object, state, &[], Vec::new()).await
    }

    /// The stored hash of one record version, if seen.
    pub fn seen(
        &self,
        object: &str,
        updated_at: Option<DateTime<Utc>>,
        id: &str,
    ) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self
            .inner
            .seen
            .get(seen_key(object, updated_at, id))?
            .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok()))
    }

    /// Commits one page atomically: the object's new state (paging
    /// position), its seen-set entries and its events; then flushes, and
    /// only then makes the events visible to sinks.
    pub async fn commit_page(
        &self,
        object: &str,
        state: &ObjectState,
        seen: &[SeenEntry],
        events: Vec<OutboxEntry>,
    ) -> Result<(), StoreError> {
        let i = &self.inner;
        let state_bytes = serde_json::to_vec(state).expect("state serialises");
        let seen_rows: Vec<(Vec<u8>, [u8; 32])> = seen
            .iter()
            .map(|s| (seen_key(object, s.updated_at, &s.id), s.hash))
            .collect();
        let event_rows: Vec<Vec<u8>> = events.iter().map(OutboxEntry::encode).collect();
        let _guard = i.commit.lock().await;
        let first = i.next_seq.load(Ordering::SeqCst);
        let next = first + event_rows.len() as u64;
        let result: Result<(), TransactionError<()>> = (&i.objects, &i.seen, &i.outbox, &i.meta)
            .transaction(|(objects, seen_t, outbox, meta)| {
                objects.insert(object.as_bytes(), state_bytes.as_slice())?;
                for (k, h) in &seen_rows {
                    seen_t.insert(k.as_slice(), &h[..])?;
                }
                for (n, row) in event_rows.iter().enumerate() {
                    outbox.insert(&(first + n as u64).to_be_bytes(), row.as_slice())?;
                }
                if !event_rows.is_empty() {
                    meta.insert("next_seq", &next.to_be_bytes())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        self.note(result.map_err(tx_error))?;
        // Before the await: if this future is dropped mid-flush, the next
        // commit must still not reuse these sequence numbers.
        i.next_seq.store(next, Ordering::SeqCst);
        self.durable().await?;
        i.durable_seq.send_replace(next - 1);
        Ok(())
    }

    /// Drops seen-set entries of `object` with `updated-at` below `below`
    /// (they can no longer be re-read). Returns how many.
    pub fn prune_seen(&self, object: &str, below: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut from = seen_prefix(object);
        from.extend_from_slice(&ts_key(Some(DateTime::<Utc>::MIN_UTC)));
        let mut to = seen_prefix(object);
        to.extend_from_slice(&ts_key(Some(below)));
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.inner.seen.range(from..to) {
            batch.remove(kv?.0);
            n += 1;
        }
        self.inner.seen.apply_batch(batch)?;
        Ok(n)
    }

    /// Forgets an object's position and seen-set so it replays from `to`
    /// (or from its configured start when `None`).
    pub async fn reset_object(
        &self,
        object: &str,
        to: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for kv in self.inner.seen.scan_prefix(seen_prefix(object)) {
            batch.remove(kv?.0);
        }
        self.inner.seen.apply_batch(batch)?;
        match to {
            Some(t) => {
                let state = ObjectState {
                    hwm: Some(t),
                    floor: Some(t),
                    window: None,
                    // What the server supports does not change with a rewind.
                    offset_paging: self.object_state(object)?.offset_paging,
                    // The seen-set is cleared: nothing is pruned any more.
                    pruned_below: None,
                    fields: None,
                    reseed_below: None,
                };
                self.put_object_state(object, &state).await?;
            }
            None => {
                self.inner.objects.remove(object)?;
                self.durable().await?;
            }
        }
        Ok(())
    }
}
