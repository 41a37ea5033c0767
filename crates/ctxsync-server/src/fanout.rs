//! Fan-out of new revisions to event-stream subscribers.
//!
//! One publisher task per context (started with its first subscriber) owns the question
//! "what has been committed since I last looked?". It wakes when this server commits a
//! push (`notify`, no batching, so a critical revision goes out at once) and every
//! `poll_interval` to catch commits made by other processes on the same store (the CLI,
//! another server). It reads `log_since(last_published)` from the store and sends each
//! entry, serialized once, on a `broadcast` channel.
//!
//! A subscriber subscribes to the channel *before* replaying the store from its resume
//! point, then follows the channel, dropping revisions it already sent. On a gap (it
//! lagged, or the publisher skipped ahead) it re-reads the store, so delivery is in
//! revision order, with nothing lost and nothing repeated; when the store no longer has
//! the revisions it needs (below the horizon) it is told to resync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctxsync_store::{LogEntry, Store, StoreError};
use tokio::sync::{broadcast, watch, Notify};

/// One committed revision, with its JSON serialized once for every subscriber.
#[derive(Debug)]
pub struct Published {
    pub entry: LogEntry,
    pub json: String,
}

/// The broadcast point of one context.
#[derive(Debug)]
pub struct Channel {
    pub tx: broadcast::Sender<Arc<Published>>,
    wake: Notify,
}

/// Every context's channel.
pub struct Hub {
    store: Arc<dyn Store>,
    poll_interval: Duration,
    capacity: usize,
    closing: watch::Receiver<bool>,
    channels: Mutex<HashMap<String, Arc<Channel>>>,
}

impl Hub {
    pub fn new(
        store: Arc<dyn Store>,
        poll_interval: Duration,
        capacity: usize,
        closing: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            poll_interval,
            capacity: capacity.max(16),
            closing,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The channel of `context`, starting its publisher if there is none yet. `start` is
    /// the revision the publisher begins after (a head the caller just read).
    pub fn channel(&self, context: &str, start: u64) -> Arc<Channel> {
        let mut channels = match self.channels.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(channel) = channels.get(context) {
            return Arc::clone(channel);
        }
        let (tx, _) = broadcast::channel(self.capacity);
        let channel = Arc::new(Channel {
            tx,
            wake: Notify::new(),
        });
        channels.insert(context.to_owned(), Arc::clone(&channel));
        tokio::spawn(publish_loop(
            Arc::clone(&self.store),
            context.to_owned(),
            Arc::clone(&channel),
            start,
            self.poll_interval,
            self.closing.clone(),
        ));
        channel
    }

    /// Wakes the publisher of `context` (after this server committed a revision).
    pub fn notify(&self, context: &str) {
        let channels = match self.channels.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(channel) = channels.get(context) {
            channel.wake.notify_one();
        }
    }
}

async fn publish_loop(
    store: Arc<dyn Store>,
    context: String,
    channel: Arc<Channel>,
    mut last: u64,
    poll: Duration,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        if *closing.borrow() {
            return;
        }
        tokio::select! {
            _ = channel.wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = closing.changed() => return,
        }
        let nobody = channel.tx.receiver_count() == 0;
        let store2 = Arc::clone(&store);
        let ctx = context.clone();
        let read = tokio::task::spawn_blocking(move || {
            if nobody {
                // No one listens: only keep up with the head, read no log.
                store2.head(&ctx).map(|h| Err(h.revision))
            } else {
                match store2.log_since(&ctx, last) {
                    Ok(entries) => Ok(Ok(entries)),
                    // Compacted past us: skip ahead; subscribers see the gap and resync.
                    Err(StoreError::Gone { .. }) => store2.head(&ctx).map(|h| Err(h.revision)),
                    Err(e) => Err(e),
                }
            }
        })
        .await;
        match read {
            Ok(Ok(Ok(entries))) => {
                for entry in entries {
                    let json = match serde_json::to_string(&entry) {
                        Ok(json) => json,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot encode a log entry");
                            continue;
                        }
                    };
                    last = entry.revision;
                    // An error only means nobody listens right now.
                    let _ = channel.tx.send(Arc::new(Published { entry, json }));
                }
            }
            Ok(Ok(Err(head))) => last = last.max(head),
            Ok(Err(e)) => tracing::debug!(error = %e, context, "publisher: store read failed"),
            Err(e) => tracing::warn!(error = %e, context, "publisher: blocking task failed"),
        }
    }
}
