//! The state folder `<root>/.ctxsync/agents/`: registry, backups, event log and the lock
//! that keeps two runs (say `agents watch` and a manual `agents sync`) from interleaving.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Paths of the state folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    /// `<root>/.ctxsync/agents`.
    pub dir: PathBuf,
}

impl StateDir {
    /// The state folder of repository `root` (not created yet).
    pub fn new(root: &Path) -> Self {
        StateDir {
            dir: root.join(".ctxsync").join("agents"),
        }
    }
    /// `registry.json`.
    pub fn registry(&self) -> PathBuf {
        self.dir.join("registry.json")
    }
    /// Content-addressed backups.
    pub fn backups(&self) -> PathBuf {
        self.dir.join("backups")
    }
    /// Append-only event log.
    pub fn events(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    /// Takes the exclusive run lock (blocking); released when the guard drops.
    pub fn lock(&self) -> Result<StateLock> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let p = self.dir.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        f.lock().map_err(|e| Error::io(&p, e))?;
        Ok(StateLock { _file: f })
    }
}

/// Holds the run lock.
pub struct StateLock {
    _file: File,
}
