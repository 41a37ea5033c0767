//! Library error type: every failure carries the path or the setting it concerns so the
//! CLI can print one clear line.

use std::path::PathBuf;

/// Errors from the agent-sync library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `ctxsync.toml` could not be read or has a bad `[agents]` setting.
    #[error("config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// The registry under `.ctxsync/agents/` is unreadable; refusing to guess ownership.
    #[error("registry {}: {message}", path.display())]
    Registry { path: PathBuf, message: String },
    /// Bad input from the user or the library (names, paths, generations, sizes).
    #[error("{0}")]
    Input(String),
    /// The file watcher failed.
    #[error("watch: {0}")]
    Watch(String),
}

/// Result alias for the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
