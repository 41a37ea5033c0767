//! The registry: each agent's dependencies and outputs with hashes, the rename map and
//! the generation history used by rollback, kept in three files of the state folder:
//!
//! * `registry.json`: agents, renames, the current generation (format 2);
//! * `generations.jsonl`: one line per generation, appended as runs write (a run never
//!   rewrites the history, except when retention drops old generations);
//! * `index`: the scan cache (what the library looked like at the last run: path →
//!   size, mtime, hash; folder mtimes), see [`crate::index`].
//!
//! Format 1 kept all of it in `registry.json`; it is still read, and the next save
//! writes format 2.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::deploy::write_atomic_streamed;
use crate::error::{Error, Result};
use crate::index::{Index, Stamp};
use crate::parse::Priority;

/// Current format version.
pub const FORMAT: u32 = 2;

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
    /// The agents its handoffs name, so that a run which does not render it still
    /// checks them against the agents that exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handoffs: Vec<String>,
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
    /// Agents by name.
    pub agents: BTreeMap<String, AgentRec>,
    /// Renames, oldest first.
    pub renames: Vec<Rename>,
    /// When the oldest generation still kept was written (ms), so retention can be
    /// checked without reading the history.
    #[serde(default)]
    pub oldest_generation_ms: Option<u64>,
    /// When the library was last scanned (ns): files modified at or after it are re-hashed
    /// even when size and mtime match (the "racy clean" case). In the index.
    #[serde(default, skip_serializing)]
    pub scanned_at_ns: u64,
    /// Library files. In the index.
    #[serde(default, skip_serializing)]
    pub files: BTreeMap<String, FileRec>,
    /// Library folders whose listing can be reused while their mtime (ns) is unchanged.
    /// In the index.
    #[serde(default, skip_serializing)]
    pub dirs: BTreeMap<String, u64>,
    /// The sources and excludes `dirs` was recorded under; another value voids it.
    #[serde(default, skip_serializing)]
    pub dirs_key: String,
    /// Generations still kept, oldest first. In `generations.jsonl`; only those
    /// added by this process until [`Registry::load_history`] is called (a run that
    /// writes needs to append, not to read).
    #[serde(default, skip_serializing)]
    pub generations: Vec<GenRec>,
    /// Every agent of the library was registered as found by the last scan (so the
    /// index alone can tell a no-op). Set by a sync run; kept in the index.
    #[serde(skip)]
    pub scan_complete: bool,
    /// Read from format 1: the next run saves it as format 2.
    #[serde(skip)]
    pub migrate: bool,
    #[serde(skip)]
    history: History,
}

/// Where `generations` stands against `generations.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct History {
    /// `generations` holds the whole history (not just this process's additions).
    loaded: bool,
    /// The first `persisted` entries of `generations` are in the file as they are.
    persisted: usize,
    /// The file must be rewritten (retention dropped entries, or a format-1 migration).
    rewrite: bool,
}

/// The files of a registry, beside `registry.json`.
fn sibling(registry: &Path, name: &str) -> std::path::PathBuf {
    registry.with_file_name(name)
}

/// `generations.jsonl` beside `registry`.
pub fn history_path(registry: &Path) -> std::path::PathBuf {
    sibling(registry, "generations.jsonl")
}

/// `index` beside `registry`.
pub fn index_path(registry: &Path) -> std::path::PathBuf {
    sibling(registry, "index")
}

impl Registry {
    /// Loads everything: the registry, its scan index and the generation history.
    /// An absent registry is an empty one.
    pub fn load(path: &Path) -> Result<Self> {
        let index = Index::load(&index_path(path), path);
        let mut r = Self::load_with_index(path, index)?;
        r.load_history(path)?;
        Ok(r)
    }

    /// Loads the registry and the scan cache from `index` (already read and checked
    /// against this registry by the caller), but not the generation history.
    pub fn load_with_index(path: &Path, index: Option<Index>) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Registry {
                    format: FORMAT,
                    history: History {
                        loaded: !history_path(path).exists(),
                        ..Default::default()
                    },
                    ..Default::default()
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut r: Registry = serde_json::from_slice(&bytes).map_err(|e| Error::Registry {
            path: path.to_path_buf(),
            message: format!(
                "{e} (move it away to start over; outputs will then be treated as not owned)"
            ),
        })?;
        match r.format {
            1 => {
                // Format 1 carried the scan cache and the history inline: keep both, and
                // have the next save write the history file.
                r.history = History {
                    loaded: true,
                    persisted: 0,
                    rewrite: true,
                };
                r.oldest_generation_ms = r.generations.first().map(|g| g.at_ms);
                r.migrate = true;
            }
            FORMAT => {
                if let Some(ix) = index {
                    r.scan_complete = ix.complete;
                    r.scanned_at_ns = ix.scanned_at_ns;
                    r.files = ix.files;
                    r.dirs = ix.dirs;
                    r.dirs_key = ix.dirs_key;
                }
            }
            other => {
                return Err(Error::Registry {
                    path: path.to_path_buf(),
                    message: format!("format {other} is not supported (expected {FORMAT})"),
                })
            }
        }
        r.format = FORMAT;
        Ok(r)
    }

    /// Reads the whole generation history (kept before this process's additions).
    pub fn load_history(&mut self, path: &Path) -> Result<()> {
        if self.history.loaded {
            return Ok(());
        }
        let hp = history_path(path);
        let text = match std::fs::read_to_string(&hp) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(hp, e)),
        };
        let mut on_disk: Vec<GenRec> = Vec::new();
        let lines = text.lines().filter(|l| !l.trim().is_empty());
        let count = lines.clone().count();
        for (i, line) in lines.enumerate() {
            match serde_json::from_str::<GenRec>(line) {
                Ok(g) => {
                    // A run that died after appending but before saving the registry left
                    // a generation the registry never adopted: the next run reuses its
                    // number, and the later line wins.
                    on_disk.retain(|x| x.generation < g.generation);
                    on_disk.push(g);
                }
                // Only a last line cut short by a crash is forgiven.
                Err(_) if i + 1 == count => {
                    tracing::warn!("{}: last line is torn, ignored", hp.display())
                }
                Err(e) => {
                    return Err(Error::Registry {
                        path: hp,
                        message: format!("line {}: {e}", i + 1),
                    })
                }
            }
        }
        on_disk.retain(|g| g.generation <= self.generation);
        let persisted = on_disk.len();
        on_disk.append(&mut self.generations);
        self.generations = on_disk;
        self.history.loaded = true;
        self.history.persisted = persisted;
        Ok(())
    }

    /// Keeps only the generations for which `keep` is true (loads the history first).
    /// Returns whether any was dropped.
    pub fn retain_generations(
        &mut self,
        path: &Path,
        keep: impl FnMut(&GenRec) -> bool,
    ) -> Result<bool> {
        self.load_history(path)?;
        let before = self.generations.len();
        self.generations.retain(keep);
        let dropped = self.generations.len() != before;
        if dropped {
            self.history.rewrite = true;
        }
        self.oldest_generation_ms = self.generations.first().map(|g| g.at_ms);
        Ok(dropped)
    }

    /// Saves atomically and durably: the history first (an appended generation the
    /// registry does not adopt yet is harmless), then `registry.json`, then the index.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.save_history(path)?;
        if self.oldest_generation_ms.is_none() {
            self.oldest_generation_ms = self.generations.first().map(|g| g.at_ms);
        }
        let ip = index_path(path);
        // The index names the registry it belongs to by its stamp, but an index must never
        // outlive a registry it no longer matches in case the stamp repeats.
        Index::remove(&ip)?;
        let this = &*self;
        // The index is encoded on another thread while the registry is written; it
        // only needs the registry's stamp, filled in once the registry is in place.
        std::thread::scope(|s| {
            let index = s.spawn(|| Index::encode_registry(this));
            write_atomic_streamed(path, |out| {
                serde_json::to_writer(out, this).map_err(std::io::Error::other)
            })?;
            let written = index
                .join()
                .map_err(|_| Error::Input("index encoder panicked".into()))
                .and_then(|bytes| {
                    let stamp = Stamp::of(path)
                        .ok_or_else(|| Error::Input("registry vanished after saving".into()))?;
                    Index::write_encoded(bytes, stamp, &ip)
                });
            if let Err(e) = written {
                tracing::warn!("{e}; the next run will rescan the library");
            }
            Ok(())
        })
    }

    /// Rewrites only the index (the scan cache changed, `registry.json` did not). A
    /// failure is logged, not returned: the next run rescans instead.
    pub fn save_index(&self, path: &Path) {
        let Some(stamp) = Stamp::of(path) else {
            return; // No registry yet: nothing for an index to describe.
        };
        if let Err(e) = Index::save_registry(self, stamp, &index_path(path)) {
            tracing::warn!("{e}; the next run will rescan the library");
        }
    }

    fn save_history(&mut self, path: &Path) -> Result<()> {
        use std::io::Write;
        let hp = history_path(path);
        let line = |g: &GenRec| -> Result<Vec<u8>> {
            let mut v = serde_json::to_vec(g).map_err(|e| Error::Registry {
                path: hp.clone(),
                message: e.to_string(),
            })?;
            v.push(b'\n');
            Ok(v)
        };
        if self.history.rewrite {
            let mut all = Vec::new();
            for g in &self.generations {
                all.extend(line(g)?);
            }
            crate::deploy::write_atomic(&hp, &all, true)?;
        } else if self.generations.len() > self.history.persisted {
            let mut new = Vec::new();
            for g in &self.generations[self.history.persisted..] {
                new.extend(line(g)?);
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&hp)
                .map_err(|e| Error::io(&hp, e))?;
            f.write_all(&new).map_err(|e| Error::io(&hp, e))?;
            f.sync_data().map_err(|e| Error::io(&hp, e))?;
            // A newly created history file's folder entry is made durable by the
            // folder fsync that saving `registry.json` (same folder) does next; until
            // then the registry does not name the new generation either.
        } else {
            return Ok(());
        }
        self.history.rewrite = false;
        self.history.persisted = self.generations.len();
        Ok(())
    }

    /// `owner`'s record, created empty if it has none, marked as changed in generation
    /// `gen` (a rollback or a recovered run writing outputs for it).
    pub fn touched_agent(&mut self, owner: String, gen: u64) -> &mut AgentRec {
        let rec = self.agents.entry(owner).or_insert_with(|| AgentRec {
            entry: String::new(),
            version: None,
            priority: Default::default(),
            sources: Default::default(),
            outputs: Default::default(),
            generation: gen,
            handoffs: Vec::new(),
        });
        rec.generation = gen;
        rec
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
