//! Documentation mirrors of the dashboard's answers (`/v1/overview`,
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
    /// Pushes this server handled in the bucket (whatever their outcome).
    pub pushes: u64,
    /// Of the pushes that did not conflict or fail; null without any.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub conflicts: u64,
    /// Refused or rejected pushes.
    pub failures: u64,
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
    /// Push samples (pushes, latencies, conflicts, failures) start here: when this
    /// server started.
    pub samples_since_ms: u64,
    pub buckets: Vec<TrendBucket>,
}
