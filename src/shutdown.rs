//! The one shutdown mechanism: a trigger held by `main` (signals) and
//! cheap listeners passed down to every task. Listening never blocks work;
//! tasks check it between units of work (a page, a batch).

use tokio::sync::watch;

/// Held by whoever decides to stop (signal handler, tests).
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// Passed to tasks; clone freely.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A connected trigger and listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Tells every listener to stop.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// A further listener.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// Whether shutdown has been asked for.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until shutdown is asked for (returns at once if it was).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone: treat as shutdown.
        let _ = self.rx.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn fire_reaches_every_listener() {
        let (t, s) = super::channel();
        let mut a = s.clone();
        let mut b = t.subscribe();
        assert!(!a.is_shutdown());
        t.fire();
        a.recv().await;
        b.recv().await;
        assert!(s.is_shutdown());
    }
}
