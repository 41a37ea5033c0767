//! Documentation mirrors of the dashboard's answers (`/v1/overview`, `/v1/agent-sync`,
//! `/v1/contexts/{ctx}/trends`), field for field with `routes::dashboard`.
#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::ToSchema;

use super::schemas::Level;

/// The newest revision of a context.
#[derive(ToSchema)]
pub struct LastChange {
    pub revision: u64,
    pub agent: String,
    pub level: Level,
    pub timestamp_ms: u64,
    pub summary: String,
}

/// The newest `verify` of a context run through this server.
#[derive(ToSchema)]
pub struct Integrity {
    pub ok: bool,
    pub revision: u64,
    /// Revisions whose checksum was recomputed.
    pub checked: u64,
    pub checked_ms: u64,
    pub problems: Vec<String>,
}

/// The span of a trends answer.
#[derive(ToSchema)]
pub enum TrendWindow {
    #[schema(rename = "1h")]
    Hour,
    #[schema(rename = "24h")]
    Day,
    #[schema(rename = "7d")]
    Week,
}

/// One context at a glance.
#[derive(ToSchema)]
pub struct ContextSummary {
    pub context: String,
    pub revision: u64,
    /// Canonical JSON size in bytes.
    pub size: u64,
    pub horizon: u64,
    pub checksum: String,
    /// Null for a context with no revision yet.
    pub last_change: Option<LastChange>,
    /// Revisions of the last 60 s by level (critical, checkpoint, periodic, session).
    pub syncs_last_minute: BTreeMap<String, u64>,
    pub syncs_today: u64,
    pub sync_failures: u64,
    pub conflicts_last_hour: u64,
    pub open_conflicts: u64,
    pub p95_sync_ms: f64,
    /// Null until a `verify` ran through this server.
    pub integrity: Option<Integrity>,
}

#[derive(ToSchema)]
pub struct StoreHealth {
    /// The store answers and can take durable writes.
    pub ready: bool,
    /// Why not, when not.
    pub message: Option<String>,
}

#[derive(ToSchema)]
pub struct ServerHealth {
    pub version: String,
    pub started_ms: u64,
    pub uptime_s: u64,
    /// Open event streams.
    pub event_subscribers: i64,
    /// Sum of the contexts' sizes.
    pub storage_bytes: u64,
    pub store: StoreHealth,
}

/// `GET /v1/overview`.
#[derive(ToSchema)]
pub struct Overview {
    pub now_ms: u64,
    pub server: ServerHealth,
    pub contexts: Vec<ContextSummary>,
}

/// One time bucket of a trends answer.
#[derive(ToSchema)]
pub struct TrendBucket {
    pub start_ms: u64,
    /// Revisions committed in the bucket (op log; every writer).
    pub revisions: u64,
    pub by_level: BTreeMap<String, u64>,
    pub by_agent: BTreeMap<String, u64>,
    /// Syncs in the store's sync log (every process's pushes and recorded syncs,
    /// whatever their outcome); kept across restarts.
    pub pushes: u64,
    pub pushes_by_level: BTreeMap<String, u64>,
    /// Store time of the syncs that were not `failed` or `deferred` (nearest rank);
    /// null without any.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// Syncs that conflicted.
    pub conflicts: u64,
    /// Syncs rejected (ownership) or failed.
    pub failures: u64,
    pub failures_by_level: BTreeMap<String, u64>,
    /// Conflicts plus failures, by agent (only agents that had any).
    pub trouble_by_agent: BTreeMap<String, u64>,
}

/// `GET /v1/contexts/{ctx}/trends`.
#[derive(ToSchema)]
pub struct Trends {
    pub context: String,
    /// 1h, 24h or 7d.
    pub window: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub bucket_ms: u64,
    pub buckets: Vec<TrendBucket>,
}

/// One run of the agents watcher (`serve --watch-agents`).
#[derive(ToSchema)]
pub struct AgentRun {
    /// Position in the feed (1, 2, ...): the cursor of `?after=`.
    pub seq: u64,
    /// The watcher's run number (1 for the initial run).
    pub run: u64,
    /// When it finished (ms since the epoch).
    pub at_ms: u64,
    /// Files whose changes triggered it (empty for the initial run).
    pub trigger: Vec<String>,
    /// Why the run failed as a whole; null when it ran.
    pub error: Option<String>,
    /// The run's report, as `ctxsync agents sync --json` prints it: `generation` (null
    /// when nothing was written), `agents`, `rendered`, `added`, `updated`, `removed`,
    /// `written`, `deleted`, `conflicts` (hand-edited outputs: `path`, `agent`,
    /// `reason`, `resolution`), `validation_errors`, `renames`, `warnings`, `notes`,
    /// `new_broken_refs`, `duration_ms`.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
}

/// The newest reference-integrity check of the library, made after a run.
#[derive(ToSchema)]
pub struct AgentCheck {
    /// The feed position of the run it followed.
    pub after_seq: u64,
    pub at_ms: u64,
    /// Why the check could not run; null when it ran.
    pub error: Option<String>,
    /// As `ctxsync agents check --json` prints it: `files_checked`, `references`,
    /// `broken_files`, `broken_anchors`, `via_rename` (each a list of `file`, `line`,
    /// `reference`, `target`, `message`), `unreferenced`, `cycles`, `warnings`.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
}

/// `GET /v1/agent-sync`. Without `--watch-agents` only `enabled: false`.
#[derive(ToSchema)]
pub struct AgentSync {
    /// Whether this server runs the agents watcher.
    pub enabled: bool,
    /// The repository watched.
    pub root: Option<String>,
    pub started_ms: Option<u64>,
    /// Changes so far (runs and checks): pass it back as `?version=` with `wait`.
    pub version: Option<u64>,
    /// Runs recorded so far, old ones no longer listed included.
    pub runs_total: Option<u64>,
    /// Runs after `?after=`, oldest first.
    pub runs: Option<Vec<AgentRun>>,
    pub check: Option<AgentCheck>,
}
