//! Drains the outbox into each sink from that sink's own durable cursor,
//! in sequence order (so per record key in detection order), retrying with
//! exponential backoff and jitter, and releases outbox entries once every
//! configured sink has acknowledged them. A slow sink delays only itself.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::store::Store;

/// Events per delivery batch.
pub const BATCH: usize = 500;

/// Runs one sink until shutdown; on shutdown, delivers what is already
/// durable once more (bounded by the caller's timeout), then returns.
pub async fn drain<S: Sink>(
    mut sink: S,
    store: Store,
    all_sinks: Arc<Vec<String>>,
    mut shutdown: Shutdown,
) {
    let name = sink.name().to_string();
    let mut wake = store.subscribe();
    let mut failures = 0u32;
    loop {
        let cursor = match store.cursor(&name) {
            Ok(c) => c,
            Err(e) => {
                warn!(sink = %name, error = %e, "cannot read cursor");
                0
            }
        };
        let batch = match store.outbox_after(cursor, BATCH) {
            Ok(b) => b,
            Err(e) => {
                warn!(sink = %name, error = %e, "cannot read outbox");
                Vec::new()
            }
        };
        if batch.is_empty() {
            if shutdown.is_shutdown() {
                return;
            }
            tokio::select! {
                _ = wake.changed() => {}
                _ = shutdown.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let last = batch.last().map(|b| b.0).unwrap_or(cursor);
        match sink.deliver(&batch).await {
            Ok(()) => {
                failures = 0;
                if let Err(e) = store.ack(&name, last).await {
                    warn!(sink = %name, error = %e, "cannot store cursor; the batch may be repeated");
                }
                match store.release(&all_sinks) {
                    Ok(n) if n > 0 => debug!(sink = %name, released = n, "outbox entries released"),
                    Ok(_) => {}
                    Err(e) => warn!(sink = %name, error = %e, "cannot release outbox entries"),
                }
            }
            Err(e) => {
                failures += 1;
                let wait = crate::backoff::full_jitter(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(30),
                );
                warn!(sink = %name, error = %e, attempt = failures, retry_in = ?wait, "delivery failed; will retry");
                if shutdown.is_shutdown() {
                    info!(sink = %name, "shutting down with undelivered events; they stay in the outbox");
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.recv() => {}
                }
            }
        }
    }
}
