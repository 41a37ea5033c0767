//! The registry (`.ctxsync/agents/registry.json`): what the library looked like at the
//! last run (path → size, mtime, hash), each agent's dependencies and outputs with
//! hashes, the rename map, and the generation history used by rollback.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::deploy::write_atomic_streamed;
use crate::error::{Error, Result};
use crate::parse::Priority;

/// Current format version.
pub const FORMAT: u32 = 1;

/// A library file as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRec {
    /// BLAKE3 hex.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns).
    pub mtime_ns: u64,
}

/// An output file as last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutRec {
    /// BLAKE3 hex of the bytes on disk after the write.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time after the write (ns), for the fast unchanged check.
    pub mtime_ns: u64,
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRec {
    /// Entry file.
    pub entry: String,
    /// Declared version.
    #[serde(default)]
    pub version: Option<String>,
    /// Priority.
    #[serde(default)]
    pub priority: Priority,
    /// Dependencies → hash (`None`: looked for and missing).
    pub sources: BTreeMap<String, Option<String>>,
    /// Owned outputs.
    pub outputs: BTreeMap<String, OutRec>,
    /// Last generation that wrote one of its outputs.
    pub generation: u64,
}

/// A rename detected in one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    /// Old path.
    pub from: String,
    /// New path.
    pub to: String,
    /// Generation (run) when it was seen.
    pub generation: u64,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
}

/// One file changed by a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// The agent that owned the file.
    #[serde(default)]
    pub agent: Option<String>,
    /// Output path.
    pub path: String,
    /// Hash before (`None`: absent).
    pub before: Option<String>,
    /// Hash after (`None`: removed).
    pub after: Option<String>,
}

/// A run that wrote something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenRec {
    /// Number, from 1.
    pub generation: u64,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// `sync`, `rollback`, `fix-refs`.
    pub kind: String,
    /// Files changed.
    pub changes: Vec<FileChange>,
}

/// The whole registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Format version.
    pub format: u32,
    /// Last generation number.
    pub generation: u64,
    /// Settings that shaped the outputs.
    pub config_fingerprint: String,
    /// When the library was last scanned (ns): files modified at or after it are re-hashed
    /// even when size and mtime match (the "racy clean" case).
    pub scanned_at_ns: u64,
    /// Library files.
    pub files: BTreeMap<String, FileRec>,
    /// Library folders whose listing can be reused while their mtime (ns) is unchanged.
    #[serde(default)]
    pub dirs: BTreeMap<String, u64>,
    /// The sources and excludes `dirs` was recorded under; another value voids it.
    #[serde(default)]
    pub dirs_key: String,
    /// Agents by name.
    pub agents: BTreeMap<String, AgentRec>,
    /// Renames, oldest first.
    pub renames: Vec<Rename>,
    /// Generations still kept.
    pub generations: Vec<GenRec>,
}

impl Registry {
    /// Loads the registry; an absent file is an empty registry.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Registry {
                    format: FORMAT,
                    ..Default::default()
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let r: Registry = serde_json::from_slice(&bytes).map_err(|e| Error::Registry {
            path: path.to_path_buf(),
            message: format!(
                "{e} (move it away to start over; outputs will then be treated as not owned)"
            ),
        })?;
        if r.format != FORMAT {
            return Err(Error::Registry {
                path: path.to_path_buf(),
                message: format!("format {} is not supported (expected {FORMAT})", r.format),
            });
        }
        Ok(r)
    }

    /// Saves atomically and durably.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic_streamed(path, |out| {
            serde_json::to_writer(out, self).map_err(std::io::Error::other)
        })
    }

    /// Which agent owns output `path`.
    pub fn owner_of(&self, path: &str) -> Option<&str> {
        self.agents
            .iter()
            .find(|(_, a)| a.outputs.contains_key(path))
            .map(|(n, _)| n.as_str())
    }

    /// Old path → new path for every recorded rename.
    pub fn rename_map(&self) -> BTreeMap<String, String> {
        self.renames
            .iter()
            .map(|r| (r.from.clone(), r.to.clone()))
            .collect()
    }
}
