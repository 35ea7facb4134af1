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
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use sled::transaction::TransactionError;

mod dead;
mod keys;
mod objects;
mod outbox;
#[cfg(test)]
mod tests;

pub use dead::DeadLetter;
use keys::u64_be;
pub use keys::{compact_id, MAX_STORED_ID_BYTES};
pub use objects::{ObjectState, SeenEntry, Slice, Window};
pub use outbox::{Missed, OutboxEntry, Settled};

/// Bumped whenever the layout above changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

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
        crate::sync::lock(&self.inner.failure).clone()
    }

    /// Records a write's outcome: the first failure starts the clock, a
    /// success stops it.
    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        let mut f = crate::sync::lock(&self.inner.failure);
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
