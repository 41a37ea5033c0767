//! What the dashboard's endpoints read that the store does not keep: the syncs this
//! server measured (time, agent, level, duration, outcome), for the trends plots, and
//! the newest integrity check of each context run through this server.
//!
//! The store's own `sync_log` holds every push's sample too, but the `Store` trait has
//! no way to list them by time yet; until it has, the latency, conflict and failure
//! series come from here and start when the server starts (the trends answer says
//! since when). Revision counts come from the op log, which is complete.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctxsync_core::records::VerifyReport;
use ctxsync_core::Level;

use crate::metrics::PushOutcome;

/// Most samples kept (oldest dropped first); a week at about 1.6 pushes/s.
const MAX_SAMPLES: usize = 1_000_000;

/// Samples older than the longest trends window are dropped.
const KEEP_MS: u64 = 7 * 24 * 3600 * 1000;

/// One push as this server saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub timestamp_ms: u64,
    pub context: Arc<str>,
    pub agent: Arc<str>,
    pub level: Level,
    pub duration_us: u64,
    pub outcome: PushOutcome,
}

/// The newest integrity check of a context.
#[derive(Debug, Clone)]
pub struct Checked {
    pub report: VerifyReport,
    pub checked_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    samples: VecDeque<Sample>,
    /// Interned names, so a million samples do not hold a million strings.
    names: HashMap<String, Arc<str>>,
    integrity: HashMap<String, Checked>,
}

/// The dashboard's own records, shared by every handler.
#[derive(Debug)]
pub struct Board {
    started_ms: u64,
    inner: Mutex<Inner>,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    match inner.lock() {
        Ok(guard) => guard,
        // A panic while holding the lock leaves plain data behind; keep using it.
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Inner {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(name) = self.names.get(name) {
            return Arc::clone(name);
        }
        let shared: Arc<str> = Arc::from(name);
        // Bounded: a flood of made-up agent names cannot grow this without end.
        if self.names.len() < 10_000 {
            self.names.insert(name.to_owned(), Arc::clone(&shared));
        }
        shared
    }
}

impl Board {
    pub fn new(started_ms: u64) -> Self {
        Self {
            started_ms,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// When this server started (the first sample it can have).
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Records one push handled by this server.
    pub fn record(
        &self,
        now_ms: u64,
        context: &str,
        agent: &str,
        level: Level,
        elapsed: Duration,
        outcome: PushOutcome,
    ) {
        let mut inner = lock(&self.inner);
        let context = inner.intern(context);
        let agent = inner.intern(agent);
        let cutoff = now_ms.saturating_sub(KEEP_MS);
        while inner
            .samples
            .front()
            .is_some_and(|s| s.timestamp_ms < cutoff || inner.samples.len() >= MAX_SAMPLES)
        {
            inner.samples.pop_front();
        }
        inner.samples.push_back(Sample {
            timestamp_ms: now_ms,
            context,
            agent,
            level,
            duration_us: elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
            outcome,
        });
    }

    /// The samples of `context` at or after `from_ms`, oldest first.
    pub fn samples(&self, context: &str, from_ms: u64) -> Vec<Sample> {
        let inner = lock(&self.inner);
        let start = inner.samples.partition_point(|s| s.timestamp_ms < from_ms);
        inner
            .samples
            .range(start..)
            .filter(|s| &*s.context == context)
            .cloned()
            .collect()
    }

    /// Remembers the result of a `verify`.
    pub fn checked(&self, report: &VerifyReport, now_ms: u64) {
        let mut inner = lock(&self.inner);
        inner.integrity.insert(
            report.context.clone(),
            Checked {
                report: report.clone(),
                checked_ms: now_ms,
            },
        );
    }

    /// The newest `verify` of `context` run through this server, if any.
    pub fn integrity(&self, context: &str) -> Option<Checked> {
        lock(&self.inner).integrity.get(context).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_kept_by_context_and_time() {
        let board = Board::new(0);
        let day = 24 * 3600 * 1000;
        board.record(
            1_000,
            "a",
            "x",
            Level::Periodic,
            Duration::from_millis(2),
            PushOutcome::Applied,
        );
        board.record(
            2_000,
            "b",
            "x",
            Level::Critical,
            Duration::from_millis(3),
            PushOutcome::Conflict,
        );
        board.record(
            3_000,
            "a",
            "y",
            Level::Session,
            Duration::from_millis(4),
            PushOutcome::Refused,
        );
        assert_eq!(board.samples("a", 0).len(), 2);
        assert_eq!(board.samples("a", 1_500).len(), 1);
        assert_eq!(board.samples("b", 0)[0].duration_us, 3_000);
        // A week later the old ones are gone.
        board.record(
            8 * day,
            "a",
            "x",
            Level::Periodic,
            Duration::ZERO,
            PushOutcome::Applied,
        );
        assert_eq!(board.samples("a", 0).len(), 1);
    }
}
