//! The agent-sync feed: what `ctxsync serve --watch-agents` tells the server about its
//! watcher, for the dashboard's *Agent sync* page (`GET /v1/agent-sync`).
//!
//! The watcher lives in the `ctxsync` binary (it needs `ctxsync-agents`, which this
//! crate must not depend on), so the binary pushes each run's record and each
//! reference check here as JSON it built from its own reports; this crate keeps the
//! newest [`MAX_RUNS`] runs and the newest check, in memory, and wakes the long polls
//! waiting for news. Without `--watch-agents` no feed is attached and the endpoint says
//! the watcher is off.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

/// Runs kept (oldest dropped first): a long day of edits, a few MB at most.
pub const MAX_RUNS: usize = 500;

/// One run of the watcher, as the binary reported it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRun {
    /// Position in this feed (1, 2, ...), the cursor of `?after=`.
    pub seq: u64,
    /// The watcher's run number (1 for the initial run).
    pub run: u64,
    /// When it finished (ms since the epoch).
    pub at_ms: u64,
    /// Files whose changes triggered it (empty for the initial run).
    pub trigger: Vec<String>,
    /// Why the run stopped, when it failed as a whole.
    pub error: Option<String>,
    /// The run's report (`ctxsync agents sync --json`), when it did not fail.
    pub report: Option<Value>,
}

/// The newest reference-integrity check (`ctxsync agents check`).
#[derive(Debug, Clone, Serialize)]
pub struct AgentCheck {
    /// The feed position of the run it followed.
    pub after_seq: u64,
    pub at_ms: u64,
    /// Why the check could not run.
    pub error: Option<String>,
    /// The check's report (`ctxsync agents check --json`), when it ran.
    pub report: Option<Value>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: VecDeque<AgentRun>,
    check: Option<AgentCheck>,
    /// Bumped on every change (run or check): what long polls wait on.
    version: u64,
}

/// What one answer of `GET /v1/agent-sync` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The repository being watched.
    pub root: String,
    pub started_ms: u64,
    /// Changes so far (runs and checks); pass it as `?after=` to wait for the next.
    pub version: u64,
    /// Runs recorded so far (dropped old ones included).
    pub runs_total: u64,
    /// Runs after the asked position, oldest first.
    pub runs: Vec<AgentRun>,
    pub check: Option<AgentCheck>,
}

/// The feed the binary pushes into and the endpoint reads.
#[derive(Debug)]
pub struct AgentSyncFeed {
    root: String,
    started_ms: u64,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    match inner.lock() {
        Ok(guard) => guard,
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl AgentSyncFeed {
    /// A feed for the watcher of the repository at `root`, started at `started_ms`.
    pub fn new(root: impl Into<String>, started_ms: u64) -> Self {
        Self {
            root: root.into(),
            started_ms,
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        }
    }

    /// Records a finished run; returns its feed position.
    pub fn record_run(
        &self,
        run: u64,
        at_ms: u64,
        trigger: Vec<String>,
        result: Result<Value, String>,
    ) -> u64 {
        let mut inner = lock(&self.inner);
        let seq = inner.runs.back().map_or(0, |r| r.seq) + 1;
        let (report, error) = match result {
            Ok(report) => (Some(report), None),
            Err(error) => (None, Some(error)),
        };
        if inner.runs.len() >= MAX_RUNS {
            inner.runs.pop_front();
        }
        inner.runs.push_back(AgentRun {
            seq,
            run,
            at_ms,
            trigger,
            error,
            report,
        });
        inner.version += 1;
        let version = inner.version;
        drop(inner);
        self.changed.send_replace(version);
        seq
    }

    /// Records the reference check made after the run at feed position `after_seq`.
    pub fn record_check(&self, after_seq: u64, at_ms: u64, result: Result<Value, String>) {
        let mut inner = lock(&self.inner);
        let (report, error) = match result {
            Ok(report) => (Some(report), None),
            Err(error) => (None, Some(error)),
        };
        inner.check = Some(AgentCheck {
            after_seq,
            at_ms,
            error,
            report,
        });
        inner.version += 1;
        let version = inner.version;
        drop(inner);
        self.changed.send_replace(version);
    }

    /// The current version (changes so far).
    pub fn version(&self) -> u64 {
        lock(&self.inner).version
    }

    /// A receiver that sees each new version.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Long polls waiting for news now (a poll whose client went away stops counting
    /// once the server notices the closed connection).
    pub fn waiting(&self) -> usize {
        self.changed.receiver_count()
    }

    /// The runs after feed position `after_run` (at most `limit`, the newest), and the
    /// newest check.
    pub fn snapshot(&self, after_run: u64, limit: usize) -> Snapshot {
        let inner = lock(&self.inner);
        let start = inner.runs.partition_point(|r| r.seq <= after_run);
        let newer = inner.runs.len() - start;
        let skip = start + newer.saturating_sub(limit);
        Snapshot {
            root: self.root.clone(),
            started_ms: self.started_ms,
            version: inner.version,
            runs_total: inner.runs.back().map_or(0, |r| r.seq),
            runs: inner.runs.range(skip..).cloned().collect(),
            check: inner.check.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_numbered_bounded_and_listed_after_a_position() {
        let feed = AgentSyncFeed::new("/repo", 1);
        let mut rx = feed.subscribe();
        assert_eq!(
            feed.record_run(1, 10, vec![], Ok(serde_json::json!({"g": 1}))),
            1
        );
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert_eq!(
            feed.record_run(2, 20, vec!["a.md".into()], Err("boom".into())),
            2
        );
        feed.record_check(2, 21, Ok(serde_json::json!({"broken_files": []})));
        assert_eq!(*rx.borrow_and_update(), 3);
        let all = feed.snapshot(0, 100);
        assert_eq!(all.runs.len(), 2);
        assert_eq!(all.version, 3);
        assert_eq!(all.runs[1].error.as_deref(), Some("boom"));
        assert_eq!(all.check.as_ref().map(|c| c.after_seq), Some(2));
        assert_eq!(feed.snapshot(1, 100).runs.len(), 1);
        assert_eq!(feed.snapshot(2, 100).runs.len(), 0);
        // A limit keeps the newest.
        assert_eq!(feed.snapshot(0, 1).runs[0].seq, 2);
        for run in 3..=(MAX_RUNS as u64 + 10) {
            feed.record_run(run, run, vec![], Ok(Value::Null));
        }
        let all = feed.snapshot(0, usize::MAX);
        assert_eq!(all.runs.len(), MAX_RUNS);
        assert_eq!(all.runs_total, MAX_RUNS as u64 + 10);
        assert_eq!(all.runs[0].seq, 11);
    }
}
