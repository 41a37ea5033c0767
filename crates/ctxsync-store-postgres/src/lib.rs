//! The PostgreSQL backend of the ctxsync store (DESIGN §14): the same [`Store`] trait as
//! the embedded SQLite store, so several `ctxsync serve` processes (on several hosts) can
//! share one database.
//!
//! - [`PgStore`] ([`store`]): a blocking façade over its own tokio runtime.
//! - Revisions by an in-place CAS on the context's head row under READ COMMITTED, with the
//!   op-log row in the same transaction; group commit of the pushes waiting in the
//!   writer's queue; retry on serialization failure and deadlock ([`write`]).
//! - Every decision goes through the backend-neutral `ctxsync_store::backend` (and so
//!   through `ctxsync_core::evaluate`): both backends decide the same way.
//! - The schema as embedded, numbered migrations run at every opening under an advisory
//!   lock, with a version check ([`schema`]).
//! - Each commit that makes revisions sends `NOTIFY ctxsync_revisions, '<context> <head>'`
//!   in the committing transaction ([`CHANNEL`]): a hint for other servers, which read
//!   the revisions from the op log; [`Store::watch_commits`] starts a `LISTEN` task that
//!   hears them ([`listen`]).
//!
//! Documents, edits and answers are stored as TEXT (not `jsonb`, which reorders keys), so
//! what was written reads back byte for byte.
#![forbid(unsafe_code)]

mod error;
mod import;
mod lifecycle;
pub mod listen;
mod ops;
mod pool;
mod presence;
mod read;
mod schema;
pub mod store;
pub mod write;

pub use ctxsync_store::Store;
pub use schema::{migrate, MIGRATIONS, SCHEMA_VERSION};
pub use store::PgStore;
pub use write::CHANNEL;

/// Why a PostgreSQL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "this database has ctxsync schema version {found}, written by a newer ctxsync \
         (this one reads up to {supported}); upgrade ctxsync"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

/// Whether `location` names a PostgreSQL database (`postgres://` or `postgresql://`)
/// rather than a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Connects to `url` and brings its schema to [`SCHEMA_VERSION`]; returns the version the
/// database had before. Blocking: it runs on a runtime of its own, so a CLI command (no
/// runtime) and a server's blocking pool can both call it.
pub fn migrate_url(url: &str) -> Result<i64, PgError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PgError::Runtime(e.to_string()))?;
    runtime.block_on(async {
        let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        let result = migrate(&mut client).await;
        drop(client);
        let _ = driver.await;
        result
    })
}
