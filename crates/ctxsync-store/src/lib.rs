//! Storage for ctxsync contexts: the [`Store`] trait every backend implements, and the
//! embedded SQLite backend ([`SqliteStore`]) that is the default.
//!
//! A store keeps, per context: gap-free revisions, the op log (every revision's agent,
//! level, time, summary and canonical edits with old and new values), periodic
//! snapshots, idempotency keys, open conflicts and a sync log with timings. Pushes are
//! decided by [`ctxsync_core::evaluate`], so every backend decides the same way.
#![forbid(unsafe_code)]

pub mod backend;
mod error;
mod schema_check;
mod sqlite;
mod types;

pub use backend::SYSTEM_AGENT;
pub use error::StoreError;
pub use schema_check::ContextSchema;
pub use sqlite::{
    validate_agent_name, validate_context_name, SqliteStore, StoreOptions, Synchronous,
    DEFAULT_AWAY_AFTER_MS,
};
pub use types::*;

use ctxsync_core::{PushRequest, PushResponse};
use serde_json::Value;

/// Receives the answer of [`Store::push_then`].
pub type PushCallback = Box<dyn FnOnce(Result<PushResponse, StoreError>) + Send>;

/// Told `(context, head)` when some process sharing the store committed to `context`
/// (see [`Store::watch_commits`]). Called from the store's own threads: it must be quick
/// and must not block.
pub type CommitHook = std::sync::Arc<dyn Fn(&str, u64) + Send + Sync>;

/// What every storage backend offers. All methods are blocking; a server calls them from
/// a blocking thread pool.
pub trait Store: Send + Sync {
    /// Creates a context whose revision 0 is `document` (a JSON object).
    fn create_context(&self, name: &str, document: Value) -> Result<Head, StoreError>;
    fn list_contexts(&self) -> Result<Vec<Head>, StoreError>;
    /// Current revision, checksum, size and horizon.
    fn head(&self, context: &str) -> Result<Head, StoreError>;
    /// The document at `revision` (the current one when `None`).
    fn read(&self, context: &str, revision: Option<u64>) -> Result<Snapshot, StoreError>;
    /// Decides and commits a push (DESIGN §3). Returns once the revision is durable.
    fn push(&self, context: &str, request: PushRequest) -> Result<PushResponse, StoreError>;
    /// Like [`Store::push`], but returns at once and calls `done` with the answer when
    /// the revision is durable (or the push failed), so a caller with many pushes in
    /// flight (a server) does not park a thread on each. The default runs `push` here.
    fn push_then(&self, context: &str, request: PushRequest, done: PushCallback) {
        done(self.push(context, request));
    }
    /// Op log entries after `since` (exclusive), oldest first; `Gone` below the horizon.
    fn log_since(&self, context: &str, since: u64) -> Result<Vec<LogEntry>, StoreError>;
    /// Newest first, filtered.
    fn history(&self, context: &str, filter: &HistoryFilter) -> Result<Vec<LogEntry>, StoreError>;
    fn open_conflicts(&self, context: &str) -> Result<Vec<StoredConflict>, StoreError>;
    /// Settles an open conflict: `Mine` applies the stored change (forced), `Theirs`
    /// discards it. Returns the push made for `Mine`. Only the agent whose push
    /// conflicted, or an admin, may settle it (`Forbidden` otherwise).
    fn resolve_conflict(
        &self,
        context: &str,
        id: u64,
        prefer: Prefer,
        actor: &Actor,
    ) -> Result<Option<PushResponse>, StoreError>;
    /// Replays the op log from the snapshots and compares every stored checksum.
    fn verify(&self, context: &str) -> Result<VerifyReport, StoreError>;
    /// Makes a new revision equal to revision `to` (history is never rewritten). It is
    /// checked like the push it is: all or nothing, refused (`rejected`, nothing
    /// applied) when it would change paths the actor does not own, unless the actor is an
    /// admin.
    fn revert(&self, context: &str, to: u64, actor: &Actor) -> Result<PushResponse, StoreError>;
    /// Records a sync that did not go through `push` (deferred, failed, pull, ...).
    fn record_sync(&self, context: &str, sample: &SyncSample) -> Result<(), StoreError>;
    /// The seed's `sync_metrics` and more, over the sync log.
    fn metrics(&self, context: &str, now_ms: u64) -> Result<Metrics, StoreError>;
    /// The sync log of `context` (every process's pushes and recorded syncs) over
    /// `span`, in `span.buckets` buckets, oldest first, every bucket present (empty ones
    /// too): counts by level, agent and outcome, and p50/p95 durations. `Invalid` for a
    /// span of no bucket, of more than [`MAX_SYNC_BUCKETS`], of a zero `bucket_ms` or
    /// past `i64::MAX` ms; `NotFound` for an unknown context.
    fn sync_buckets(&self, context: &str, span: &BucketSpan)
        -> Result<Vec<SyncBucket>, StoreError>;
    /// Writes a snapshot of the current revision now (session end).
    fn snapshot(&self, context: &str) -> Result<Head, StoreError>;
    /// Drops the op log below what `retain` keeps and moves the horizon (to the newest
    /// snapshot it allows); reads below it are then `Gone`.
    fn compact(&self, context: &str, retain: &Retention) -> Result<CompactReport, StoreError>;
    /// What the store takes on disk, in total and per context. Reads every context's
    /// log sizes: for status and periodic metrics, not for every request.
    fn storage(&self) -> Result<StorageUsage, StoreError>;
    /// Runs archival now (`ctxsync archive run`): every rule's list is cut to its newest
    /// `keep` entries in one revision, the rest moved to the archive. `None` when nothing
    /// was due (or the store has no rules).
    fn archive_run(&self, context: &str) -> Result<Option<PushResponse>, StoreError>;
    /// Archived entries matching `query`, oldest first (at most [`MAX_ARCHIVE_PAGE`]).
    fn archive_list(
        &self,
        context: &str,
        query: &ArchiveQuery,
    ) -> Result<Vec<ArchiveRecord>, StoreError>;
    /// Stores a new bearer token acting as `agent` with `role` (only a hash of `secret`
    /// is kept).
    fn create_token(
        &self,
        agent: &str,
        secret: &str,
        label: &str,
        role: Role,
    ) -> Result<TokenInfo, StoreError>;
    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    /// Revokes the token with public id `id`; revoking twice is not an error.
    fn revoke_token(&self, id: &str) -> Result<TokenInfo, StoreError>;
    /// The live (not revoked) token whose secret is `secret`.
    fn authenticate(&self, secret: &str) -> Result<Option<TokenInfo>, StoreError>;
    /// A value that changes whenever any process creates or revokes a token, cheap
    /// enough to read on every request, so a server may cache authentications between
    /// changes. `None`: no such signal, authenticate every time.
    fn token_epoch(&self) -> Option<u128> {
        None
    }
    /// Asks to be told of commits made by any process sharing the store (other servers
    /// on one database), as soon as the backend hears of them: a hint to read the op log,
    /// which stays the truth (a hint may be lost, late or repeated; callers still poll,
    /// less often). Returns `false` when the backend has no such signal (the default).
    fn watch_commits(&self, _wake: CommitHook) -> bool {
        false
    }
    /// Whether a write acknowledged now would be durable: `ReadOnly` with the reason when
    /// the store's files went missing or its disk is full (readiness reports it).
    fn writable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Takes (or, for its holder, renews) a lease of `ttl_ms` on `path` for `agent`: one
    /// CAS revision, so of N concurrent claimants exactly one is `Granted`; the others get
    /// `Held` with the holder and expiry. An expired claim counts as none. Claiming needs
    /// the right to write `path` under the ownership rules (`Forbidden` otherwise).
    fn claim(
        &self,
        context: &str,
        agent: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, StoreError>;
    /// Removes `agent`'s claim on `path` (live or expired) in one revision.
    fn release(&self, context: &str, agent: &str, path: &str)
        -> Result<ReleaseOutcome, StoreError>;
    /// Records that `agent` saw `seen_revision` now (presence) and returns what it had
    /// not seen before: the revisions by others after the one it saw last, up to
    /// `seen_revision`. Cheap: a bounded scan, no replay.
    fn observe(
        &self,
        context: &str,
        agent: &str,
        seen_revision: u64,
    ) -> Result<StaleView, StoreError>;
    /// Every agent seen in `context` (and every holder of a live claim), with last seen
    /// time, lag, live claims and unseen critical revisions. Agents away (unseen past the
    /// store's threshold) have their expired claims released with a handover stub in
    /// `communication.handovers`, here, lazily.
    fn agents(&self, context: &str, now_ms: u64) -> Result<Vec<AgentPresence>, StoreError>;
    /// Critical revisions by others that `agent` has not been shown yet, oldest first (at
    /// most the newest 20); `mark_seen`: they are being shown now.
    fn unseen_critical(
        &self,
        context: &str,
        agent: &str,
        mark_seen: bool,
    ) -> Result<Vec<CriticalNotice>, StoreError>;
    /// The store's clock (ms since the epoch): what claims expire against.
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}
