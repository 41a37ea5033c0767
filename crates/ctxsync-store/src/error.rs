//! Errors of the storage layer.

/// Why a store call failed. `Invalid`, `NotFound`, `Exists`, `Gone` and `TooLarge` are the
/// caller's (4xx); `Sqlite`, `Database`, `Corrupt` and `Closed` are ours (5xx).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("context {0:?} does not exist (create it with `ctxsync init --context {0}`)")]
    NotFound(String),
    #[error("context {0:?} already exists")]
    Exists(String),
    #[error("revision {requested} is older than the horizon {horizon}: a full pull is required")]
    Gone { requested: u64, horizon: u64 },
    #[error("revision {requested} does not exist yet (current is {current})")]
    Future { requested: u64, current: u64 },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(
        "document would be {size} bytes, over the quota of {limit} bytes; nothing was applied"
    )]
    TooLarge { size: u64, limit: u64 },
    /// Over the quota even after archiving what the rules allow: what to do about it.
    #[error(
        "document would be {size} bytes, over the quota of {limit} bytes even after archival; \
         nothing was applied ({hint})"
    )]
    OverQuota { size: u64, limit: u64, hint: String },
    /// The push's result breaks the configured JSON Schema; nothing was applied.
    #[error(
        "the result would break the context schema at {instance_path:?}: {rule} \
         (schema rule {schema_path}); nothing was applied"
    )]
    SchemaViolation {
        instance_path: String,
        rule: String,
        schema_path: String,
    },
    /// A push that would pass a bound while applying (size, nesting, work per push).
    #[error("{0}")]
    OverLimit(String),
    #[error(
        "request_id {0:?} was already used for a different push; use a new request_id for new changes"
    )]
    RequestIdReused(String),
    /// The caller may not do this (a role, or another agent's conflict).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A remote store refused the request for a reason it words itself (e.g. a reused
    /// request id); shown as it is.
    #[error("{0}")]
    Refused(String),
    /// No valid credentials (a remote store refused the token).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The store cannot take writes now (its WAL went missing, the disk is full); what
    /// it acknowledged before is safe.
    #[error("the store is not accepting writes: {0}")]
    ReadOnly(String),
    #[error("conflict {0} does not exist or is already resolved")]
    NoSuchConflict(u64),
    #[error("token {0:?} does not exist (see `ctxsync token list`)")]
    NoSuchToken(String),
    #[error("the server could not be reached: {0}")]
    Unavailable(String),
    #[error("cannot use the store's files: {0}")]
    Io(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A database error of a backend other than SQLite (PostgreSQL), as its text.
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("commit failed, nothing of this push was applied: {0}")]
    CommitFailed(String),
    #[error("the store's writer has stopped")]
    Closed,
}

impl StoreError {
    /// True for errors caused by the request rather than the store.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_)
                | Self::Exists(_)
                | Self::Gone { .. }
                | Self::Future { .. }
                | Self::Invalid(_)
                | Self::TooLarge { .. }
                | Self::OverQuota { .. }
                | Self::SchemaViolation { .. }
                | Self::OverLimit(_)
                | Self::RequestIdReused(_)
                | Self::Forbidden(_)
                | Self::Unauthorized(_)
                | Self::Refused(_)
                | Self::NoSuchConflict(_)
                | Self::NoSuchToken(_)
        )
    }
}
