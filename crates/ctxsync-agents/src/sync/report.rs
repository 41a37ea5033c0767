//! What a run is asked to do ([`SyncOptions`]) and what it did ([`SyncReport`]).

use super::*;

/// What a run should do.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only this agent.
    pub agent: Option<String>,
    /// Re-render every agent, ignoring the registry's hashes.
    pub full: bool,
    /// Render everything, write nothing, report what is out of date.
    pub check: bool,
    /// Plan, write nothing.
    pub dry_run: bool,
    /// Render and validate, write nothing.
    pub validate_only: bool,
    /// Overwrite hand-edited outputs (a backup is kept).
    pub force: bool,
    /// Three-way merge hand-edited outputs.
    pub merge: bool,
}

impl SyncOptions {
    pub(super) fn read_only(&self) -> bool {
        self.check || self.dry_run || self.validate_only
    }
}

/// A hand-edited or foreign output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConflictInfo {
    /// Output path.
    pub path: String,
    /// Agent that wants to write it.
    pub agent: String,
    /// Why.
    pub reason: String,
    /// `left_alone`, `forced`, `merged`.
    pub resolution: String,
}

/// What a run did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// The generation written, if anything was.
    pub generation: Option<u64>,
    /// Agents in the library.
    pub agents: usize,
    /// Agents rendered this run, in render order.
    pub rendered: Vec<String>,
    /// Agents that got outputs for the first time.
    pub added: Vec<String>,
    /// Agents whose outputs changed.
    pub updated: Vec<String>,
    /// Agents whose outputs were removed.
    pub removed: Vec<String>,
    /// Files written (or that would be).
    pub written: Vec<String>,
    /// Files deleted (or that would be).
    pub deleted: Vec<String>,
    /// Conflicts.
    pub conflicts: Vec<ConflictInfo>,
    /// Rendering and validation problems (nothing was written when non-empty).
    pub validation_errors: Vec<String>,
    /// Renames detected in this batch.
    pub renames: Vec<(String, String)>,
    /// Skipped files and other notes.
    pub warnings: Vec<String>,
    /// What targets dropped or mapped (unknown tools, models, keys; names changed for a
    /// host; files linked instead of inlined), per output of the agents rendered.
    pub notes: Vec<String>,
    /// References of the rendered agents broken by this run (`agent: path`); the
    /// details are in `agents check`.
    pub new_broken_refs: Vec<String>,
    /// Wall time.
    pub duration_ms: f64,
}

impl SyncReport {
    /// 0 ok, 1 conflicts or (with `check`) out of date, 2 invalid input.
    pub fn exit_code(&self, opts: &SyncOptions) -> u8 {
        if !self.validation_errors.is_empty() {
            2
        } else if self.conflicts.iter().any(|c| c.resolution == "left_alone")
            || (opts.check && (!self.written.is_empty() || !self.deleted.is_empty()))
        {
            1
        } else {
            0
        }
    }
}
