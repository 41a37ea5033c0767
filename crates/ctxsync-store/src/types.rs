//! The records a store hands out; defined in `ctxsync-core` so the server and the client
//! share them, plus the sync-log aggregate of [`crate::Store::sync_buckets`].

pub use ctxsync_core::archive::{ArchiveQuery, ArchiveRecord, ArchiveRule, MAX_ARCHIVE_PAGE};
pub use ctxsync_core::claims::{Claim, ClaimView};
pub use ctxsync_core::records::*;
use ctxsync_core::Level;
pub use ctxsync_core::Prefer;

/// Most buckets one [`crate::Store::sync_buckets`] call may ask for.
pub const MAX_SYNC_BUCKETS: u32 = 1_000;

/// The time range of [`crate::Store::sync_buckets`]: `buckets` consecutive buckets of
/// `bucket_ms` each, the first starting at `from_ms` (samples with
/// `from_ms <= timestamp_ms < from_ms + buckets * bucket_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpan {
    pub from_ms: u64,
    pub bucket_ms: u64,
    pub buckets: u32,
}

impl BucketSpan {
    /// The end of the span (exclusive), saturating.
    pub fn to_ms(&self) -> u64 {
        self.from_ms
            .saturating_add(self.bucket_ms.saturating_mul(u64::from(self.buckets)))
    }
}

/// How many sync-log samples of one (level, agent, outcome) fell in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCount {
    pub level: Level,
    pub agent: String,
    pub outcome: SyncOutcome,
    pub count: u64,
}

/// One bucket of the sync log: counts by level, agent and outcome, and the duration
/// quantiles (nearest rank) of its samples that were not `failed` or `deferred` (the
/// ones [`Metrics`] times too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncBucket {
    /// Index in the span: the bucket starts at `from_ms + index * bucket_ms`.
    pub index: u32,
    /// Sorted by level, agent, outcome.
    pub counts: Vec<SyncCount>,
    pub p50_us: Option<u64>,
    pub p95_us: Option<u64>,
}
