//! The client side of ctxsync: an agent's working copy of a context and the sync that
//! keeps it in step with a backend (the embedded store or a server), the HTTP client of
//! the server's `/v1` protocol, and the durable outbox of pushes waiting for a server.
//!
//! Agents work the way they already do, by editing a YAML file. [`WorkingCopy`] remembers
//! the revision and document the file was written from (its *base*); [`sync`] diffs the
//! file against its base, pushes the changes with `from` tests, then three-way merges the
//! remote document back and moves the base.
#![forbid(unsafe_code)]

mod claims;
mod files;
pub mod outbox;
pub mod remote;
mod sync;
mod workcopy;

pub use files::{atomic_write, decode_text, parse_document, to_yaml};
pub use outbox::{Outbox, OutboxItem, OutboxStatus};
pub use remote::{PullQuery, Pulled, RemoteClient, RemoteError, StreamEvent};
pub use sync::{
    local_changes, merge_remote_keeping_edits, pull_into, recreate_working_copy, sync, Backend,
    BackendError, BackendErrorKind, SyncOptions, SyncReport,
};
pub use workcopy::{Base, WorkingCopy};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The working copy or a given file is unreadable or malformed (exit 2).
    #[error("{0}")]
    Input(String),
    /// Not `source`: the message already says it, and a source would be printed twice
    /// in an error chain.
    #[error("{path}: {error}")]
    Io {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}
