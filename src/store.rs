//! The durable state, and the only code that knows sled's key layout:
//! per-object high-water marks and open windows, the seen-set, the event
//! outbox with its sequence counter, and each sink's cursor. Everything an
//! outside party depends on is flushed before the call returns (sled
//! commits are not durable on return). It knows nothing of Coupa or sinks.
//!
//! Trees and keys:
//! - `meta`: `format_version` → u32 BE; `next_seq` → u64 BE;
//!   `missed \0 sink` → two u64 BE: the events a re-added sink missed (kept
//!   until `state reset-sink` acknowledges them).
//! - `objects`: object name → JSON [`ObjectState`].
//! - `seen`: `object \0 ts(i64 µs, sign-flipped BE) id` → sha256 of the record.
//! - `outbox`: seq (u64 BE) → JSON [`OutboxEntry`].
//! - `cursors`: sink name → last delivered seq (u64 BE): every outbox
//!   entry up to it is settled (delivered or dead-lettered) for that sink.
//! - `acked`: `sink \0 seq` → empty: settled beyond the cursor (parallel
//!   lanes finish out of order; kept so a restart repeats nothing).
//! - `dead`: `sink \0 seq` → JSON [`DeadLetter`] without its event, then
//!   `\n`, then the event bytes.
//! - `replay`: `sink \0 seq` → an outbox entry queued again for one sink.
//! - `held`: `sink \0 object \0 key \0 seq` → empty: an index of the
//!   dead letters and queued replays by record, so delivering a newer
//!   version can mark them superseded. One row per dead letter: bounded by
//!   the dead letters held, gone when they are dropped or delivered.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// Bumped whenever the layout above changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// Seen-set timestamp for records without a readable `updated-at`; never pruned.
const UNDATED: i64 = i64::MIN;

/// A store failure, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state dir `{dir}` is in use by another process (is a daemon already running on it?)")]
    Locked { dir: PathBuf },
    #[error("state dir `{dir}` is damaged ({detail}); refusing to start fresh over it — restore a backup or move it away")]
    Damaged { dir: PathBuf, detail: String },
    #[error("state dir `{dir}` cannot be written: {reason} ({detail}); make it writable (check the mount, the owner, free space); its contents were left as they are")]
    Unwritable {
        dir: PathBuf,
        /// `read-only file system`, `permission denied` or `no space left on device`.
        reason: &'static str,
        detail: String,
    },
    #[error("state dir `{dir}` has format version {found}, this build reads {FORMAT_VERSION}; refusing to touch it")]
    Version { dir: PathBuf, found: String },
    #[error("state store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("state record `{key}` is unreadable: {detail}")]
    Decode { key: String, detail: String },
}

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
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.object.len() + self.key.len() + self.event.len());
        for part in [compact_id(&self.object), compact_id(&self.key)] {
            // `compact_id` keeps every part far below u16::MAX.
            v.extend_from_slice(&(part.len() as u16).to_be_bytes());
            v.extend_from_slice(part.as_bytes());
        }
        v.extend_from_slice(&self.event);
        v
    }

    fn decode(mut b: &[u8]) -> Option<OutboxEntry> {
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
struct DeadHead {
    object: String,
    key: String,
    error: String,
    attempts: u32,
    first_failed: DateTime<Utc>,
    last_failed: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    superseded_by: Option<u64>,
}

impl DeadLetter {
    fn encode(&self) -> Vec<u8> {
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

    fn decode(sink: String, seq: u64, b: &[u8]) -> Option<DeadLetter> {
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

/// A seen-set entry written with a page.
#[derive(Debug, Clone)]
pub struct SeenEntry {
    pub updated_at: Option<DateTime<Utc>>,
    pub id: String,
    pub hash: [u8; 32],
}

/// The open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    objects: sled::Tree,
    seen: sled::Tree,
    outbox: sled::Tree,
    cursors: sled::Tree,
    acked: sled::Tree,
    dead: sled::Tree,
    replay: sled::Tree,
    held: sled::Tree,
    /// Serialises outbox commits so sequence order is commit order: a sink
    /// that has read seq n can never later find a smaller seq appear.
    commit: tokio::sync::Mutex<()>,
    /// Next sequence number to hand out (mirrors `meta/next_seq`).
    next_seq: AtomicU64,
    /// Highest seq known flushed to disk; sinks read no further and
    /// subscribe to it to wake when events arrive.
    durable_seq: tokio::sync::watch::Sender<u64>,
    /// The first write or flush error not followed by a success: sled
    /// 0.34 keeps its first IO error and fails every later write, so this
    /// usually lasts until the process restarts.
    failure: std::sync::Mutex<Option<StoreFailure>>,
}

/// A store that stopped accepting writes: since when, and why.
#[derive(Debug, Clone)]
pub struct StoreFailure {
    pub since: std::time::Instant,
    pub error: String,
}

/// The store failed for longer than `state.failure_timeout`: the daemon
/// exits with [`StoreUnusable::EXIT_CODE`] so its supervisor restarts it
/// (reopening sled recovers once the cause, e.g. a full disk, is gone).
#[derive(Debug, thiserror::Error)]
#[error("the state store has failed for {seconds} s (state.failure_timeout): {error}; exiting for a restart")]
pub struct StoreUnusable {
    pub seconds: u64,
    pub error: String,
}

impl StoreUnusable {
    /// sysexits' EX_IOERR.
    pub const EXIT_CODE: u8 = 74;
}

/// Names what an IO error says about the disk, if it is one of the
/// operator-fixable kinds.
fn io_reason(e: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind::*;
    match (e.kind(), e.raw_os_error()) {
        (ReadOnlyFilesystem, _) | (_, Some(30)) => Some("read-only file system"),
        (PermissionDenied, _) | (_, Some(1 | 13)) => Some("permission denied"),
        (StorageFull, _) | (_, Some(28)) => Some("no space left on device"),
        _ => None,
    }
}

impl StoreError {
    /// A write refused by the file system, phrased as such.
    fn unwritable(self, dir: &Path) -> StoreError {
        match &self {
            StoreError::Sled(sled::Error::Io(io)) => match io_reason(io) {
                Some(reason) => StoreError::Unwritable {
                    dir: dir.to_path_buf(),
                    reason,
                    detail: io.to_string(),
                },
                None => self,
            },
            _ => self,
        }
    }
}

fn u64_be(v: &[u8]) -> Option<u64> {
    v.try_into().ok().map(u64::from_be_bytes)
}

fn ts_key(ts: Option<DateTime<Utc>>) -> [u8; 8] {
    let micros = ts.map_or(UNDATED, |t| t.timestamp_micros());
    ((micros as u64) ^ (1 << 63)).to_be_bytes()
}

fn seen_prefix(object: &str) -> Vec<u8> {
    let mut k = object.as_bytes().to_vec();
    k.push(0);
    k
}

/// `sink \0 seq` for the per-sink trees.
fn sink_key(sink: &str, seq: u64) -> Vec<u8> {
    let mut k = seen_prefix(sink);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Splits a per-sink key into sink name and seq.
fn split_sink_key(k: &[u8]) -> Option<(String, u64)> {
    let cut = k.len().checked_sub(9)?;
    if k[cut] != 0 {
        return None;
    }
    let sink = String::from_utf8(k[..cut].to_vec()).ok()?;
    Some((sink, u64_be(&k[cut + 1..])?))
}

fn missed_key(sink: &str) -> Vec<u8> {
    let mut k = b"missed\0".to_vec();
    k.extend_from_slice(sink.as_bytes());
    k
}

/// `sink \0 object \0 key \0` for the `held` index.
fn held_prefix(sink: &str, object: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(sink.len() + object.len() + key.len() + 11);
    for part in [sink, object, key] {
        k.extend_from_slice(part.as_bytes());
        k.push(0);
    }
    k
}

fn held_key(sink: &str, object: &str, key: &str, seq: u64) -> Vec<u8> {
    let mut k = held_prefix(sink, object, key);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn seen_key(object: &str, ts: Option<DateTime<Utc>>, id: &str) -> Vec<u8> {
    let mut k = seen_prefix(object);
    k.extend_from_slice(&ts_key(ts));
    k.extend_from_slice(compact_id(id).as_bytes());
    k
}

/// Ids longer than this are stored (seen-set, outbox key, hence the Kafka
/// key) as `sha256:<hex>` of the id; events still carry the id itself.
/// Part of the on-disk format, so not configurable.
pub const MAX_STORED_ID_BYTES: usize = 512;

/// An id as the store keys it: itself, or its hash past
/// [`MAX_STORED_ID_BYTES`] (Coupa once sent a 70,000-character id).
pub fn compact_id(id: &str) -> std::borrow::Cow<'_, str> {
    use sha2::Digest;
    if id.len() <= MAX_STORED_ID_BYTES {
        return id.into();
    }
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(id.as_bytes()))
    )
    .into()
}

/// A file beside sled's, written once the format version is stored: a dir
/// that has it was initialised, so an empty database in it is damage (a
/// log truncated or replaced), not a first start killed early.
const MARKER: &str = "coupa-changefeed.format";

/// Writes [`MARKER`] durably (the file, then its directory entry).
fn write_marker(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(MARKER);
    std::fs::write(&path, format!("{FORMAT_VERSION}\n"))?;
    std::fs::File::open(&path)?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// sled's page cache. Its default (1 GiB) keeps what was written: filling
/// a million-event outbox took ~900 MiB of RSS; at 16 MiB it takes ~50
/// and writes no slower (benches/memory.rs).
const CACHE_BYTES: u64 = 16 << 20;

/// Whether a database has no key in any tree.
fn holds_nothing(db: &sled::Db) -> bool {
    db.tree_names()
        .iter()
        .all(|name| db.open_tree(name).is_ok_and(|t| t.is_empty()))
}

impl Store {
    /// Opens (or creates) the state dir. A damaged dir, one of another
    /// format version, or one locked by another process is an error, never
    /// a silent fresh start.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_inner(dir).map_err(|e| e.unwritable(dir))
    }

    fn open_inner(dir: &Path) -> Result<Store, StoreError> {
        let existed = dir.join("db").exists() || dir.join("conf").exists();
        let initialised = dir.join(MARKER).exists();
        if !existed
            && dir.exists()
            && std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            return Err(StoreError::Damaged {
                dir: dir.to_path_buf(),
                detail: "the directory is not empty but holds no sled database".into(),
            });
        }
        let path = dir.to_path_buf();
        // sled can panic on a corrupt log (spacejam/sled#1533): contain it.
        let opened = std::panic::catch_unwind(move || {
            sled::Config::new()
                .path(&path)
                .cache_capacity(CACHE_BYTES)
                .open()
        });
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(classify_open_error(dir, e)),
            Err(panic) => {
                let detail = crate::panic_message(panic.as_ref())
                    .unwrap_or_else(|| "sled panicked while opening".into());
                return Err(StoreError::Damaged {
                    dir: dir.to_path_buf(),
                    detail,
                });
            }
        };
        let meta = db.open_tree("meta")?;
        match meta.get("format_version")? {
            Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(|b| u32::from_be_bytes(b).to_string())
                    .unwrap_or_else(|_| format!("{:?}", v.as_ref()));
                return Err(StoreError::Version {
                    dir: dir.to_path_buf(),
                    found,
                });
            }
            // A crash during the very first start can leave sled's files
            // with nothing in them: nothing to lose, so start it. Not so
            // once the dir was initialised (the marker): that is damage.
            None if existed && (initialised || !holds_nothing(&db)) => {
                let detail = if holds_nothing(&db) {
                    format!("no format_version key: the database is empty although `{MARKER}` says it was initialised (a truncated or replaced log?)")
                } else {
                    "no format_version key".into()
                };
                return Err(StoreError::Damaged {
                    dir: dir.to_path_buf(),
                    detail,
                });
            }
            None => {
                meta.insert("format_version", &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
            }
        }
        if !initialised {
            write_marker(dir).map_err(sled::Error::Io)?;
        }
        let next_seq = meta.get("next_seq")?.and_then(|v| u64_be(&v)).unwrap_or(1);
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                objects: db.open_tree("objects")?,
                seen: db.open_tree("seen")?,
                outbox: db.open_tree("outbox")?,
                cursors: db.open_tree("cursors")?,
                acked: db.open_tree("acked")?,
                dead: db.open_tree("dead")?,
                replay: db.open_tree("replay")?,
                held: db.open_tree("held")?,
                meta,
                db,
                commit: tokio::sync::Mutex::new(()),
                next_seq: AtomicU64::new(next_seq),
                durable_seq: tokio::sync::watch::Sender::new(next_seq - 1),
                failure: std::sync::Mutex::new(None),
            }),
        };
        Ok(store)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The store's standing write failure, if any.
    pub fn failure(&self) -> Option<StoreFailure> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a write's outcome: the first failure starts the clock, a
    /// success stops it.
    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        let mut f = self.inner.failure.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(_) => *f = None,
            Err(e) if f.is_none() => {
                // sled shows IO errors in Debug form; say it plainly.
                let error = match e {
                    StoreError::Sled(sled::Error::Io(io)) => format!(
                        "cannot write the state dir `{}`: {io}",
                        self.inner.dir.display()
                    ),
                    e => e.to_string(),
                };
                *f = Some(StoreFailure {
                    since: std::time::Instant::now(),
                    error,
                })
            }
            Err(_) => {}
        }
        r
    }

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

    fn pick_dead(&self, sink: Option<&str>, seqs: &[u64]) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self
            .dead_letters(sink)?
            .into_iter()
            .filter(|d| seqs.is_empty() || seqs.contains(&d.seq))
            .collect())
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

    /// Flushes everything (shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.durable().await
    }

    /// Makes everything written so far durable. sled 0.34's `flush_async`
    /// runs on its small process-wide IO pool, which must also run the log
    /// writes the flush waits for: about seven at once (pollers, backfill
    /// slices, sinks; or several stores in one process) starve it and every
    /// caller hangs for good (spacejam/sled#1308, fixed after the last
    /// release). So one flush at a time in the process; a caller that
    /// waited mostly finds its writes already flushed. (A blocking flush on
    /// tokio's blocking pool also avoids the hang, but each of its threads
    /// grows a malloc arena: RSS rose by ~240 MiB draining 1 M events.)
    async fn durable(&self) -> Result<(), StoreError> {
        static FLUSHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
        let _one = FLUSHING.acquire().await.expect("never closed");
        let flushed = self.inner.db.flush_async().await.map(drop);
        self.note(flushed.map_err(StoreError::from))
    }
}

/// Our transactions never abort: only storage errors remain.
fn tx_error(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(s) => StoreError::Sled(s),
        TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
    }
}

fn classify_open_error(dir: &Path, e: sled::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("lock")
        || text.contains("WouldBlock")
        || text.contains("Resource temporarily unavailable")
    {
        StoreError::Locked {
            dir: dir.to_path_buf(),
        }
    } else if matches!(&e, sled::Error::Io(io) if io_reason(io).is_some()) {
        StoreError::Sled(e).unwritable(dir)
    } else {
        StoreError::Damaged {
            dir: dir.to_path_buf(),
            detail: text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> OutboxEntry {
        OutboxEntry {
            object: "purchase_orders".into(),
            key: n.to_string(),
            event: format!("{{\"n\":{n}}}").into_bytes(),
        }
    }

    #[tokio::test]
    async fn ids_of_any_length_are_stored_and_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let t = Utc::now();
        let long = "7".repeat(70_000);
        let longer = format!("{long}8");
        let entry = OutboxEntry {
            object: "po".into(),
            key: long.clone(),
            event: b"{}".to_vec(),
        };
        let seen = [SeenEntry {
            updated_at: Some(t),
            id: long.clone(),
            hash: [1; 32],
        }];
        s.commit_page("po", &ObjectState::default(), &seen, vec![entry])
            .await
            .unwrap();
        assert_eq!(s.seen("po", Some(t), &long).unwrap(), Some([1; 32]));
        assert_eq!(s.seen("po", Some(t), &longer).unwrap(), None);
        let key = &s.outbox_after(0, 10).unwrap()[0].1.key;
        assert_eq!(key, &*compact_id(&long));
        assert!(key.len() < 100 && key.starts_with("sha256:"));
    }

    #[tokio::test]
    async fn page_commit_survives_reopen_and_sinks_release() {
        let dir = tempfile::tempdir().unwrap();
        let t = Utc::now();
        {
            let s = Store::open(dir.path()).unwrap();
            let state = ObjectState {
                hwm: Some(t),
                floor: Some(t),
                ..ObjectState::default()
            };
            let seen = [SeenEntry {
                updated_at: Some(t),
                id: "1".into(),
                hash: [7; 32],
            }];
            s.commit_page("po", &state, &seen, vec![entry(1), entry(2)])
                .await
                .unwrap();
            assert_eq!(s.outbox_after(0, 10).unwrap().len(), 2);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.object_state("po").unwrap().hwm, Some(t));
        assert_eq!(s.seen("po", Some(t), "1").unwrap(), Some([7; 32]));
        assert_eq!(s.seen("po", Some(t), "2").unwrap(), None);
        let out = s.outbox_after(0, 10).unwrap();
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
        // a later page continues the sequence after reopen
        s.commit_page("po", &ObjectState::default(), &[], vec![entry(3)])
            .await
            .unwrap();
        assert_eq!(s.outbox_after(2, 10).unwrap()[0].0, 3);
        let sinks = vec!["a".to_string(), "b".to_string()];
        let settled = |seqs: &[u64]| Settled {
            outbox: seqs.to_vec(),
            ..Settled::default()
        };
        s.settle("a", settled(&[1, 2, 3])).await.unwrap();
        assert_eq!(s.cursor("a").unwrap(), 3);
        assert_eq!(s.release(&sinks).unwrap(), 0, "b has acked nothing");
        s.settle("b", settled(&[2])).await.unwrap();
        assert_eq!(s.cursor("b").unwrap(), 0, "1 is not settled yet");
        s.settle("b", settled(&[1])).await.unwrap();
        assert_eq!(s.cursor("b").unwrap(), 2);
        assert_eq!(s.release(&sinks).unwrap(), 2);
        assert_eq!(s.outbox_len(), 1);
        assert_eq!(s.backlog(&sinks).unwrap(), 1);
        // A sink added later counts only what is still held.
        let with_new = vec!["a".to_string(), "new".to_string()];
        assert_eq!(s.backlog(&with_new).unwrap(), 1);
        assert_eq!(s.sink_backlog("new").unwrap(), 1);
        assert_eq!(s.sink_backlog("a").unwrap(), 0);
    }

    fn dead(seq: u64, key: &str) -> DeadLetter {
        DeadLetter {
            sink: "s".into(),
            seq,
            entry: OutboxEntry {
                key: key.into(),
                ..entry(seq)
            },
            error: "HTTP 401".into(),
            attempts: 1,
            first_failed: Utc::now(),
            last_failed: Utc::now(),
            superseded_by: None,
        }
    }

    fn delivered(seq: u64, key: &str) -> (u64, String, String) {
        (seq, "purchase_orders".into(), key.into())
    }

    #[tokio::test]
    async fn a_newer_delivered_version_supersedes_older_dead_letters_and_queued_replays() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let entries = (1..=6).map(entry).collect();
        s.commit_page("po", &ObjectState::default(), &[], entries)
            .await
            .unwrap();
        // Record `a`: 1 and 2 dead; record `b`: 3 dead.
        let round = Settled {
            outbox: vec![1, 2, 3],
            dead: vec![dead(1, "a"), dead(2, "a"), dead(3, "b")],
            ..Settled::default()
        };
        assert_eq!(s.settle("s", round).await.unwrap(), 0);
        // 2 is queued for replay, then 4 (a newer `a`) is delivered: 1 is
        // marked, 2 leaves the replay queue and is listed as superseded.
        assert_eq!(s.replay_dead(Some("s"), &[2]).await.unwrap(), 1);
        let round = Settled {
            outbox: vec![4],
            delivered: vec![delivered(4, "a")],
            ..Settled::default()
        };
        assert_eq!(s.settle("s", round).await.unwrap(), 2);
        assert!(s.replays("s", 10).unwrap().is_empty());
        let marks: Vec<(u64, Option<u64>)> = s
            .dead_letters(Some("s"))
            .unwrap()
            .iter()
            .map(|d| (d.seq, d.superseded_by))
            .collect();
        assert_eq!(marks, [(1, Some(4)), (2, Some(4)), (3, None)]);
        // Replay skips the superseded; `b`'s replay delivered leaves the index.
        assert_eq!(s.replay_dead(Some("s"), &[]).await.unwrap(), 1);
        let round = Settled {
            replayed: vec![3],
            delivered: vec![delivered(3, "b")],
            ..Settled::default()
        };
        assert_eq!(s.settle("s", round).await.unwrap(), 0);
        // Dropping clears the rest of the index: nothing is left to mark.
        assert_eq!(s.drop_dead(Some("s"), &[]).await.unwrap(), 2);
        assert_eq!(s.inner.held.len(), 0);
        let round = Settled {
            outbox: vec![5, 6],
            delivered: vec![delivered(5, "a"), delivered(6, "b")],
            ..Settled::default()
        };
        assert_eq!(s.settle("s", round).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn reset_cursor_rewinds_and_forgets_what_was_settled_beyond() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let entries = (1..=4).map(entry).collect();
        s.commit_page("po", &ObjectState::default(), &[], entries)
            .await
            .unwrap();
        let round = Settled {
            outbox: vec![1, 2, 4],
            ..Settled::default()
        };
        s.settle("s", round).await.unwrap();
        assert_eq!(
            (s.cursor("s").unwrap(), s.acked_beyond("s").unwrap().len()),
            (2, 1)
        );
        s.reset_cursor("s", 3, false).await.unwrap();
        assert_eq!(s.acked_beyond("s").unwrap().len(), 1, "4 stays settled");
        s.reset_cursor("s", 1, true).await.unwrap();
        assert_eq!(s.cursor("s").unwrap(), 1);
        assert!(s.acked_beyond("s").unwrap().is_empty(), "2..=4 go again");
        s.reset_cursor("s", 0, true).await.unwrap();
        assert_eq!(s.missed("s").unwrap(), None, "no cursor: a new sink");
    }

    #[tokio::test]
    async fn prune_keeps_recent_and_undated() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let old = Utc::now() - chrono::Duration::hours(2);
        let new = Utc::now();
        let seen = [
            SeenEntry {
                updated_at: Some(old),
                id: "1".into(),
                hash: [1; 32],
            },
            SeenEntry {
                updated_at: Some(new),
                id: "2".into(),
                hash: [2; 32],
            },
            SeenEntry {
                updated_at: None,
                id: "3".into(),
                hash: [3; 32],
            },
        ];
        s.commit_page("po", &ObjectState::default(), &seen, vec![])
            .await
            .unwrap();
        s.commit_page("inv", &ObjectState::default(), &seen, vec![])
            .await
            .unwrap();
        assert_eq!(
            s.prune_seen("po", new - chrono::Duration::hours(1))
                .unwrap(),
            1
        );
        assert_eq!(s.seen("po", Some(old), "1").unwrap(), None);
        assert!(s.seen("po", Some(new), "2").unwrap().is_some());
        assert!(s.seen("po", None, "3").unwrap().is_some());
        assert!(
            s.seen("inv", Some(old), "1").unwrap().is_some(),
            "other objects untouched"
        );
    }

    #[test]
    fn second_open_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().expect("must refuse");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn garbage_and_foreign_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Damaged { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.inner
                .meta
                .insert("format_version", &99u32.to_be_bytes())
                .unwrap();
            s.inner.db.flush().unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("format version 99"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        std::fs::write(dir.path().join("conf"), b"\xff\xfe garbage").unwrap();
        std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
        let err = Store::open(dir.path())
            .err()
            .expect("garbage must be refused");
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    }

    #[test]
    fn an_empty_database_from_a_crashed_first_start_opens_but_data_without_a_version_does_not() {
        let dir = tempfile::tempdir().unwrap();
        // Killed after sled created its files, before the version was written.
        drop(sled::open(dir.path()).unwrap());
        let s = Store::open(dir.path()).expect("nothing in it: safe to start");
        drop(s);
        assert!(Store::open(dir.path()).is_ok(), "and it now has a version");

        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("objects").unwrap().insert("po", "x").unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path())
            .err()
            .expect("data without a version");
        assert!(err.to_string().contains("no format_version"), "{err}");
    }
}
