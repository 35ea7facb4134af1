//! The file sink: one CloudEvent per line (JSON Lines), appended to a file
//! or written to stdout (`-`), the embedded default. A batch is written and
//! synced to disk before it counts as delivered.

use std::io::Write;
use std::path::PathBuf;

use serde::Deserialize;

use super::{same_for_all, Outcome, RetryPolicy, Sink, SinkError};
use crate::config::ConfigError;
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
                // Blocking file I/O and fsync off the async threads.
                let (res, buf) = tokio::task::spawn_blocking(move || {
                    let res = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| {
                            f.write_all(&buf)?;
                            f.sync_data()
                        })
                        .map_err(|e| format!("`{}`: {e}", path.display()));
                    (res, buf)
                })
                .await
                .map_err(|e| {
                    SinkError::Transient(format!("sink `{name}`: writer task failed: {e}"))
                })?;
                self.buf = buf;
                res.map_err(|e| SinkError::Transient(format!("sink `{name}`: {e}")))
            }
        }
    }
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
}
