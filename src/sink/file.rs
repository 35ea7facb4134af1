//! The file sink: one CloudEvent per line (JSON Lines), appended to a file
//! or written to stdout (`-`), the embedded default. A batch is written and
//! synced to disk before it counts as delivered.

use std::io::Write;
use std::path::PathBuf;

use super::{Sink, SinkError};
use crate::store::OutboxEntry;

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

    async fn deliver(&mut self, batch: &[(u64, OutboxEntry)]) -> Result<(), SinkError> {
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
                    .map_err(|e| SinkError::Transient(format!("sink `{name}`: stdout: {e}")))
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
        sink.deliver(&[e(1), e(2)]).await.unwrap();
        sink.deliver(&[e(3)]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n");
        assert!(FileSink::open("f".into(), "/nonexistent/dir/x.jsonl").is_err());
    }
}
