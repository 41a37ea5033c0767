//! What the dashboard's endpoints read that the store does not keep: when this server
//! started, and the newest integrity check of each context run through this server.
//!
//! Sync samples (latency, conflicts, failures) are not kept here: the trends read them
//! from the store's sync log, which every process writes and which outlives a restart.

use std::collections::HashMap;
use std::sync::Mutex;

use ctxsync_core::records::VerifyReport;

/// The newest integrity check of a context.
#[derive(Debug, Clone)]
pub struct Checked {
    pub report: VerifyReport,
    pub checked_ms: u64,
}

/// The dashboard's own records, shared by every handler.
#[derive(Debug)]
pub struct Board {
    started_ms: u64,
    integrity: Mutex<HashMap<String, Checked>>,
}

fn lock(
    inner: &Mutex<HashMap<String, Checked>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Checked>> {
    match inner.lock() {
        Ok(guard) => guard,
        // A panic while holding the lock leaves plain data behind; keep using it.
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Board {
    pub fn new(started_ms: u64) -> Self {
        Self {
            started_ms,
            integrity: Mutex::new(HashMap::new()),
        }
    }

    /// When this server started.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Remembers the result of a `verify`.
    pub fn checked(&self, report: &VerifyReport, now_ms: u64) {
        lock(&self.integrity).insert(
            report.context.clone(),
            Checked {
                report: report.clone(),
                checked_ms: now_ms,
            },
        );
    }

    /// The newest `verify` of `context` run through this server, if any.
    pub fn integrity(&self, context: &str) -> Option<Checked> {
        lock(&self.integrity).get(context).cloned()
    }
}
