//! The file sink: one CloudEvent per line (JSON Lines), appended to a file
//! or written to stdout (`-`), the embedded default. A batch is written and
//! synced to disk before it counts as delivered.

use std::io::Write;
use std::path::PathBuf;

use serde::Deserialize;

use super::{same_for_all, Outcome, RetryPolicy, Sink, SinkError};
use crate::setting::ConfigError;
use crate::store::OutboxEntry;

/// `[[sinks]] type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Unique sink name (default: `file`).
    #[serde(default)]
    pub name: Option<String>,
    /// `-` for stdout.
    pub path: String,
}

impl FileConfig {
    pub(crate) fn prepare(&mut self, key: &str) -> Result<(), ConfigError> {
        if self.path.trim().is_empty() {
            return Err(ConfigError::new(format!("{key}.path"), "is empty"));
        }
        Ok(())
    }
}

/// Where the lines go.
enum Target {
    Stdout,
    File(PathBuf),
}

/// JSON Lines to a file or stdout.
pub struct FileSink {
    name: String,
    target: Target,
    /// Reused line buffer: a batch is one write.
    buf: Vec<u8>,
    /// The file is known to end at a line boundary (set by our own
    /// complete writes; unknown at start and after a failed write).
    whole_lines: bool,
    /// The file's length before a batch that failed part-way and could
    /// not be cut back then: cut to it before the next attempt.
    cut_to: Option<u64>,
}

impl FileSink {
    /// Prepares the sink; a file's directory must exist.
    pub fn open(name: String, path: &str) -> Result<FileSink, SinkError> {
        let target = if path == "-" {
            Target::Stdout
        } else {
            let p = PathBuf::from(path);
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(SinkError::Permanent(format!(
                        "sink `{name}`: directory `{}` does not exist",
                        dir.display()
                    )));
                }
            }
            Target::File(p)
        };
        Ok(FileSink {
            name,
            target,
            buf: Vec::new(),
            whole_lines: false,
            cut_to: None,
        })
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// A full disk or closed pipe is waited out, never dead-lettered.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retry_age: None,
            max_backoff: std::time::Duration::from_secs(30),
        }
    }

    async fn deliver(&mut self, batch: &[(u64, OutboxEntry)]) -> Vec<Outcome> {
        let outcome = self.write(batch).await;
        same_for_all(batch, outcome)
    }
}

impl FileSink {
    /// Writes the whole batch as one append, synced.
    async fn write(&mut self, batch: &[(u64, OutboxEntry)]) -> Outcome {
        self.buf.clear();
        for (_, e) in batch {
            self.buf.extend_from_slice(&e.event);
            self.buf.push(b'\n');
        }
        let name = &self.name;
        match &self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&self.buf)
                    .and_then(|_| out.flush())
                    .map_err(|e| {
                        let msg = format!("sink `{name}`: stdout: {e}");
                        // Nobody reads any more: waiting cannot help.
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            SinkError::Fatal(msg)
                        } else {
                            SinkError::Transient(msg)
                        }
                    })
            }
            Target::File(path) => {
                let buf = std::mem::take(&mut self.buf);
                let path = path.clone();
                let whole_lines = self.whole_lines;
                let cut_to = self.cut_to;
                // Blocking file I/O and fsync off the async threads.
                let (res, cut_to, buf) = tokio::task::spawn_blocking(move || {
                    let (res, cut_to) = append_batch(&path, &buf, whole_lines, cut_to);
                    (
                        res.map_err(|e| format!("`{}`: {e}", path.display())),
                        cut_to,
                        buf,
                    )
                })
                .await
                .map_err(|e| {
                    SinkError::Transient(format!("sink `{name}`: writer task failed: {e}"))
                })?;
                self.buf = buf;
                self.cut_to = cut_to;
                self.whole_lines = res.is_ok();
                res.map_err(|e| SinkError::Transient(format!("sink `{name}`: {e}")))
            }
        }
    }
}

/// Appends one batch and syncs it. A batch that fails part-way (a full
/// disk) is cut back to the file's length before it, so the retry writes
/// its lines once, not the written part twice. Returns the length to cut
/// to before the next attempt if that cut failed too.
fn append_batch(
    path: &std::path::Path,
    buf: &[u8],
    whole_lines: bool,
    cut_to: Option<u64>,
) -> (std::io::Result<()>, Option<u64>) {
    let mut f = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return (Err(e), cut_to),
    };
    let prepared = match cut_to {
        Some(len) => f.set_len(len).and_then(|_| f.sync_data()),
        None if !whole_lines => drop_partial_line(path),
        None => Ok(()),
    };
    if let Err(e) = prepared {
        return (Err(e), cut_to);
    }
    let start = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => return (Err(e), None),
    };
    match f.write_all(buf).and_then(|_| f.sync_data()) {
        Ok(()) => (Ok(()), None),
        Err(e) => {
            let cut = f.set_len(start).and_then(|_| f.sync_data());
            if let Err(c) = &cut {
                tracing::warn!(path = %path.display(), error = %c, "cannot cut a failed batch back yet; will before the retry");
            }
            (Err(e), cut.err().map(|_| start))
        }
    }
}

/// Cuts a last line left unfinished by a killed process or a failed write,
/// so the next append starts a line of its own. That event was never
/// acknowledged, so it is written again in full.
fn drop_partial_line(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    // Scan backwards for the last newline.
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(path = %path.display(), bytes = len - end, "cutting an unfinished last line (a crash mid-write); its event is written again");
        f.set_len(end)?;
        f.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_one_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut sink = FileSink::open("file".into(), path.to_str().unwrap()).unwrap();
        let e = |n: u64| {
            (
                n,
                OutboxEntry {
                    object: "po".into(),
                    key: n.to_string(),
                    event: format!("{{\"id\":{n}}}").into_bytes(),
                },
            )
        };
        assert!(sink.deliver(&[e(1), e(2)]).await.iter().all(|o| o.is_ok()));
        assert!(sink.deliver(&[e(3)]).await.iter().all(|o| o.is_ok()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n");
        assert!(FileSink::open("f".into(), "/nonexistent/dir/x.jsonl").is_err());
    }

    #[test]
    fn a_batch_that_could_not_be_cut_back_is_cut_before_the_next_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        // 4 bytes of an earlier batch, then a failed batch's whole lines.
        std::fs::write(&path, "{}\n\n{\"a\":1}\n{\"a\":2}\n").unwrap();
        let (res, cut) = append_batch(&path, b"{\"a\":1}\n{\"a\":2}\n", true, Some(4));
        assert!(res.is_ok() && cut.is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{}\n\n{\"a\":1}\n{\"a\":2}\n", "written once");
        // A directory where the file should be: the open fails, the cut waits.
        let (res, cut) = append_batch(dir.path(), b"x\n", true, Some(7));
        assert!(res.is_err());
        assert_eq!(cut, Some(7));
    }

    #[tokio::test]
    async fn an_unfinished_last_line_from_a_crash_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"id\":1}\n{\"id\":2,\"da").unwrap();
        let mut sink = FileSink::open("file".into(), path.to_str().unwrap()).unwrap();
        let e = OutboxEntry {
            object: "po".into(),
            key: "2".into(),
            event: b"{\"id\":2}".to_vec(),
        };
        assert!(sink.deliver(&[(2, e)]).await.iter().all(|o| o.is_ok()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"id\":1}\n{\"id\":2}\n");
        // Only a partial line: the file is emptied before the append.
        std::fs::write(&path, "{\"id\":9").unwrap();
        drop_partial_line(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        // Whole lines are left alone.
        std::fs::write(&path, "{}\n").unwrap();
        drop_partial_line(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
    }
}
