//! The records a store hands out and the wire protocol carries: heads, snapshots, op log
//! entries, conflicts kept for later, verify reports, sync samples and metrics. They live
//! here, beside the document model, so the store, the server and the client share them.

use crate::apply::Edit;
use crate::{Conflict, Level};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The state of a context at its newest revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub context: String,
    pub revision: u64,
    pub checksum: String,
    /// Canonical JSON size in bytes.
    pub size: u64,
    /// The oldest revision the op log still holds.
    pub horizon: u64,
}

/// A document at a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub revision: u64,
    pub checksum: String,
    pub document: Value,
}

/// One revision of the op log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub revision: u64,
    pub agent: String,
    pub level: Level,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub summary: String,
    pub checksum: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub edits: Vec<Edit>,
}

/// Which op log entries `history` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub last: Option<usize>,
    pub agent: Option<String>,
    pub level: Option<Level>,
}

/// A conflict kept for later (strategy `defer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredConflict {
    pub id: u64,
    pub agent: String,
    /// The revision current when the conflict was recorded.
    pub revision: u64,
    pub created_ms: u64,
    pub conflict: Conflict,
}

/// How much op log compaction keeps (DESIGN §15): at least `revisions` revisions *and*
/// everything newer than `max_age_ms`; a limit not set keeps nothing by itself. Both
/// unset: compaction does nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub revisions: Option<u64>,
    pub max_age_ms: Option<u64>,
}

impl Retention {
    pub fn is_set(&self) -> bool {
        self.revisions.is_some() || self.max_age_ms.is_some()
    }
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactReport {
    pub context: String,
    pub horizon_before: u64,
    /// The new horizon: the oldest revision still readable (a snapshot is kept there).
    pub horizon: u64,
    pub removed_revisions: u64,
    pub removed_snapshots: u64,
}

/// What a store takes on disk (DESIGN §15): its files, and per context the document,
/// the op log, snapshots and archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageUsage {
    /// The store's files (database and write-ahead log), in bytes.
    pub database_bytes: u64,
    pub contexts: Vec<ContextStorage>,
}

/// One context's share of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextStorage {
    pub context: String,
    /// Canonical JSON size of the newest document.
    pub document_bytes: u64,
    pub log_revisions: u64,
    /// Stored edits of the op log (old and new values).
    pub log_bytes: u64,
    pub snapshot_bytes: u64,
    pub archive_entries: u64,
    pub archive_bytes: u64,
}

/// Sizes above which storage is reported as a warning (`[store] warn_*`); unset: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageThresholds {
    pub database_bytes: Option<u64>,
    pub context_bytes: Option<u64>,
    pub log_bytes: Option<u64>,
}

impl StorageThresholds {
    /// One sentence per threshold `usage` passes.
    pub fn warnings(&self, usage: &StorageUsage) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(limit) = self.database_bytes.filter(|l| usage.database_bytes > *l) {
            out.push(format!(
                "the store takes {} bytes, over warn_database_bytes = {limit} (compact, archive or move to a larger disk)",
                usage.database_bytes
            ));
        }
        for c in &usage.contexts {
            if let Some(limit) = self.context_bytes.filter(|l| c.document_bytes > *l) {
                out.push(format!(
                    "context {:?} is {} bytes, over warn_context_bytes = {limit} (`ctxsync archive run`, or lower [archive] keep)",
                    c.context, c.document_bytes
                ));
            }
            if let Some(limit) = self.log_bytes.filter(|l| c.log_bytes > *l) {
                out.push(format!(
                    "the op log of {:?} holds {} bytes, over warn_log_bytes = {limit} (`ctxsync compact`, or set retain_revisions)",
                    c.context, c.log_bytes
                ));
            }
        }
        out
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub context: String,
    pub ok: bool,
    /// Revisions whose checksum was recomputed.
    pub checked: u64,
    pub revision: u64,
    pub problems: Vec<String>,
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncOutcome {
    Ok,
    Conflict,
    Rejected,
    Deferred,
    Failed,
}

impl SyncOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Conflict => "conflict",
            Self::Rejected => "rejected",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "ok" => Self::Ok,
            "conflict" => Self::Conflict,
            "rejected" => Self::Rejected,
            "deferred" => Self::Deferred,
            _ => Self::Failed,
        }
    }
}

/// One sync, for the metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncSample {
    pub agent: String,
    pub level: Level,
    pub timestamp_ms: u64,
    pub duration_us: u64,
    pub outcome: SyncOutcome,
    #[serde(default)]
    pub conflict_paths: Vec<String>,
}

/// The seed's `sync_metrics` block, plus conflict statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub context: String,
    pub revision: u64,
    pub total_syncs_today: u64,
    pub sync_failures: u64,
    pub deferred: u64,
    pub context_size_bytes: u64,
    /// Bytes sent over bytes before compression; filled in by the server, which is
    /// where compression happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_ratio: Option<f64>,
    pub by_level: std::collections::BTreeMap<String, u64>,
    pub performance: Performance,
    pub conflicts_last_hour: u64,
    pub open_conflicts: u64,
    pub hottest_conflict_paths: Vec<(String, u64)>,
}

/// Sync timings over today's syncs, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    pub average_sync_ms: f64,
    pub fastest_sync_ms: f64,
    pub slowest_sync_ms: f64,
    pub p95_sync_ms: f64,
}

/// A server bearer token, as listed (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id, used to revoke it.
    pub id: String,
    pub agent: String,
    pub label: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
    #[serde(default)]
    pub role: Role,
}

/// What a token (or a local caller) may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads, and writes as its agent under the ownership rules (the default).
    #[default]
    Agent,
    /// Also reverts and settles conflicts whatever the ownership rules say.
    Admin,
    /// Reads only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Admin => "admin",
            Self::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Self::Agent),
            "admin" => Ok(Self::Admin),
            "viewer" => Ok(Self::Viewer),
            other => Err(format!(
                "unknown role {other:?} (expected agent, admin or viewer)"
            )),
        }
    }
}

/// Who asks for a write that is not a plain push (revert, conflict resolution): an agent
/// and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub agent: String,
    pub role: Role,
}

impl Actor {
    /// An agent with the ordinary role.
    pub fn agent(name: impl Into<String>) -> Self {
        Self {
            agent: name.into(),
            role: Role::Agent,
        }
    }
}

/// What an agent has not seen: the revisions by *other* agents after the revision it last
/// saw (DESIGN §13). Every answer to an agent carries it as `behind` and
/// `changed_sections`, so an agent learns it acted on an old view without another call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleView {
    /// How many revisions by others came after `since_revision`.
    pub behind: u64,
    /// The sections those revisions wrote: the first two segments of each written
    /// canonical path (`project_state.active_tasks`), deduplicated, sorted. Gathered from
    /// at most the newest [`STALE_SCAN_LIMIT`] of them.
    pub changed_sections: Vec<String>,
    /// The revision the agent had seen before this answer.
    pub since_revision: u64,
}

/// How many of the revisions an agent missed are read to name the changed sections (the
/// count itself is exact): the notice stays cheap however far behind an agent is.
pub const STALE_SCAN_LIMIT: usize = 64;

/// The answer to a claim: granted (one new revision), or held by someone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ClaimOutcome {
    Granted {
        revision: u64,
        claim: crate::claims::ClaimView,
        /// True when the holder extended its own live claim.
        renewed: bool,
    },
    Held {
        claim: crate::claims::ClaimView,
    },
}

impl ClaimOutcome {
    pub fn claim(&self) -> &crate::claims::ClaimView {
        match self {
            Self::Granted { claim, .. } | Self::Held { claim } => claim,
        }
    }
    pub fn granted(&self) -> bool {
        matches!(self, Self::Granted { .. })
    }
}

/// The answer to a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReleaseOutcome {
    /// The claim entry was removed in `revision`.
    Released { revision: u64 },
    /// There was no claim of this agent's on the path.
    NotHeld,
    /// Another agent holds a live claim on it.
    HeldByOther { claim: crate::claims::ClaimView },
}

/// One agent as `who` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPresence {
    pub agent: String,
    /// When the agent last pulled, pushed, waited or subscribed (ms since the epoch).
    pub last_seen_ms: u64,
    /// The newest revision it has seen.
    pub seen_revision: u64,
    /// Revisions between what it saw and the current one.
    pub lag: u64,
    /// Unseen for longer than the away threshold.
    pub away: bool,
    /// Its live claims.
    pub claims: Vec<crate::claims::ClaimView>,
    /// Critical revisions by others it has not been shown yet.
    pub unseen_critical: Vec<u64>,
}

/// A critical revision an agent has not been shown yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriticalNotice {
    pub revision: u64,
    pub agent: String,
    pub summary: String,
    /// The canonical paths it wrote.
    pub paths: Vec<String>,
    pub timestamp_ms: u64,
}

/// The section a write at `path` belongs to, for the stale-view notice: its first two
/// segments when both are keys (`project_state.active_tasks`), else its first one
/// (`decisions_log` for `decisions_log[id=d1]`); the root is `""`.
pub fn section_of(path: &crate::Path) -> String {
    use crate::path::Segment;
    let keys: Vec<Segment> = path
        .segments()
        .iter()
        .take(2)
        .take_while(|s| matches!(s, Segment::Key(_)))
        .cloned()
        .collect();
    crate::Path::from_segments(keys).to_string()
}

/// The sections written by `edits`, deduplicated and sorted.
pub fn sections_of(edits: &[Edit]) -> Vec<String> {
    let mut out: Vec<String> = edits.iter().map(|e| section_of(&e.path)).collect();
    out.sort();
    out.dedup();
    out
}
