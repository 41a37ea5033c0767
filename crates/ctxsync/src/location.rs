//! Where the store is: a SQLite file (the default, `.ctxsync/ctxsync.db`) or a PostgreSQL
//! database. Every command that opens the store itself resolves it the same way:
//! `--db PATH|URL`, else `CTXSYNC_DB`, else `[store] url` in ctxsync.toml, else
//! `[store] path`, else the default file.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use ctxsync_store::{SqliteStore, Store, StoreOptions};
use ctxsync_store_postgres::{is_postgres_url, PgStore};

use crate::config::Config;
use crate::InputError;

/// A resolved store location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// `flag` (`--db`, which clap also fills from `CTXSYNC_DB`), then `CTXSYNC_DB` (for
    /// callers without the flag), then the config.
    pub fn resolve(flag: Option<&str>, config: &Config) -> Result<Self> {
        let env = std::env::var("CTXSYNC_DB").ok().filter(|v| !v.is_empty());
        let named = flag
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .or(env)
            .or_else(|| config.file.store.url.clone());
        let Some(db) = named else {
            return Ok(Self::Sqlite(config.db_path()));
        };
        if is_postgres_url(&db) {
            return Ok(Self::Postgres(db));
        }
        if let Some((scheme, _)) = db.split_once("://") {
            if scheme != "sqlite" {
                return Err(InputError(format!(
                    "unknown store URL scheme {scheme:?} (expected a path, sqlite://PATH or \
                     postgres://…)"
                ))
                .into());
            }
        }
        let path = PathBuf::from(db.strip_prefix("sqlite://").unwrap_or(&db));
        Ok(Self::Sqlite(if path.is_absolute() {
            path
        } else {
            config.root.join(path)
        }))
    }

    /// Whether there is a store to open (a SQLite file must exist; a database is
    /// reached when opened).
    pub fn exists(&self) -> bool {
        match self {
            Self::Sqlite(path) => path.exists(),
            Self::Postgres(_) => true,
        }
    }

    /// Opens (creating if needed) the store.
    pub fn open(&self, options: StoreOptions) -> Result<Box<dyn Store>> {
        match self {
            Self::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let store = SqliteStore::open(path, options)
                    .with_context(|| format!("cannot open the store at {}", path.display()))?;
                Ok(Box::new(store))
            }
            Self::Postgres(url) => {
                let store = PgStore::open(url, options)
                    .with_context(|| format!("cannot open the store at {self}"))?;
                Ok(Box::new(store))
            }
        }
    }
}

impl std::fmt::Display for Location {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{}", redact(url)),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((auth, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
