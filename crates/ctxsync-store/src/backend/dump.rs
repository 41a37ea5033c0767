//! A whole store as rows, backend-neutral: what `ctxsync migrate` reads from one backend
//! and writes into another. Every text column is carried as it is stored (documents,
//! edits and answers byte for byte), so checksums and history stay identical.

/// One context with everything stored for it.
#[derive(Debug, Clone, Default)]
pub struct ContextDump {
    pub name: String,
    pub revision: u64,
    pub checksum: String,
    pub size: u64,
    pub horizon: u64,
    pub created_ms: u64,
    pub oplog: Vec<OplogRow>,
    pub snapshots: Vec<SnapshotRow>,
    pub requests: Vec<RequestRow>,
    pub conflicts: Vec<ConflictRow>,
    pub sync_log: Vec<SyncLogRow>,
    pub presence: Vec<PresenceRow>,
    pub archive: Vec<ArchiveRow>,
}

#[derive(Debug, Clone)]
pub struct OplogRow {
    pub revision: u64,
    pub agent: String,
    pub level: String,
    pub ts_ms: u64,
    pub summary: String,
    pub request_id: Option<String>,
    pub edits: String,
    pub checksum: String,
    pub sections: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SnapshotRow {
    pub revision: u64,
    pub doc: String,
    pub checksum: String,
}

#[derive(Debug, Clone)]
pub struct RequestRow {
    pub request_id: String,
    pub response: String,
    pub ts_ms: u64,
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ConflictRow {
    pub id: u64,
    pub revision: u64,
    pub agent: String,
    pub path: String,
    pub detail: String,
    pub status: String,
    pub resolution: Option<String>,
    pub created_ms: u64,
    pub resolved_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct SyncLogRow {
    pub agent: String,
    pub level: String,
    pub ts_ms: u64,
    pub duration_us: u64,
    pub outcome: String,
    pub conflict_paths: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PresenceRow {
    pub agent: String,
    pub seen_revision: u64,
    pub last_seen_ms: u64,
    pub critical_shown: u64,
}

/// One archived list entry, as stored.
#[derive(Debug, Clone)]
pub struct ArchiveRow {
    pub seq: u64,
    pub list: String,
    pub entry_id: Option<String>,
    pub revision: u64,
    pub ts_ms: u64,
    pub entry: String,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub hash: String,
    pub agent: String,
    pub label: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
    pub role: String,
}

/// Every context and every token of a store.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub contexts: Vec<ContextDump>,
    pub tokens: Vec<TokenRow>,
}

impl Dump {
    /// Revisions over all contexts.
    pub fn revisions(&self) -> u64 {
        self.contexts.iter().map(|c| c.oplog.len() as u64).sum()
    }
}
