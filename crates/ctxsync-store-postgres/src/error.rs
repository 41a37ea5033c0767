//! The error type inside the PostgreSQL store: a database error (which aborts the open
//! transaction, and may be worth retrying) or a store error (the caller's, or a corrupt
//! row), converted to [`StoreError`] at the `Store` boundary.

use ctxsync_store::StoreError;

/// SQLSTATEs after which a transaction is retried from the start: serialization failure,
/// deadlock, and a unique violation (another server stored the same key at once; the
/// retry reads what it stored). 25P02 ("in failed transaction") is what the other
/// statements of a pipelined group answer after one of them failed: the cause is one of
/// the others', and a retry of the whole transaction is safe (everything rolled back).
const RETRYABLE: &[&str] = &["40001", "40P01", "23505", "25P02"];

#[derive(Debug)]
pub(crate) enum TxError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl TxError {
    /// Whether running the whole transaction again may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Pg(e) => e
                .code()
                .is_some_and(|code| RETRYABLE.contains(&code.code())),
            Self::Store(_) => false,
        }
    }
}

/// The text of a database error, with the server's message and SQLSTATE when it has them.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Pg(e) => StoreError::Database(describe(&e)),
            TxError::Store(e) => e,
        }
    }
}

pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Database(describe(&e))
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
