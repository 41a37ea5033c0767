//! The PostgreSQL backend of the ctxsync store (issue 13), in progress: what is here is
//! the schema, embedded as numbered migrations that every opening runs under an advisory
//! lock, with the version check that refuses a database written by a newer ctxsync.
//! The `Store` implementation is not written yet.
#![forbid(unsafe_code)]

mod schema;

pub use schema::{migrate, MIGRATIONS, SCHEMA_VERSION};

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
