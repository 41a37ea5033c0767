//! `ctxsync.toml`: found by walking up from the working directory like `.git`; every
//! setting has a default, so no file is needed to start. `CTXSYNC_*` variables override.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use ctxsync_core::level::PeriodicPolicy;
use ctxsync_core::{Level, Ownership, OwnershipRule};
use ctxsync_store::{StoreOptions, Synchronous};
use serde::Deserialize;

pub const CONFIG_FILE: &str = "ctxsync.toml";
pub const STATE_DIR: &str = ".ctxsync";

/// The file's shape. Unknown keys are refused so typos do not pass silently; `[agents]`
/// belongs to agent sync, which reads it itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The context commands use when `--context` is not given.
    pub context: Option<String>,
    /// The agent commands act as when `--agent` is not given.
    pub agent: Option<String>,
    /// Server URL (remote mode).
    pub server: Option<String>,
    /// A JSON Schema file (JSON or YAML; relative to this file) every new revision of
    /// every context must satisfy; a push that breaks it is refused (422 / exit 2).
    pub schema: Option<PathBuf>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub periodic: PeriodicPolicy,
    #[serde(default)]
    pub ownership: Vec<OwnershipRule>,
    #[serde(default)]
    pub watch: WatchConfig,
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// Agent sync's table; parsed by ctxsync-agents, accepted here.
    #[serde(default, rename = "agents")]
    pub _agents: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file; default `.ctxsync/ctxsync.db`.
    pub path: Option<PathBuf>,
    /// A store URL instead of the file: `postgres://…` (or `sqlite://PATH`);
    /// `--db` and `CTXSYNC_DB` override it.
    pub url: Option<String>,
    pub synchronous: Option<Synchronous>,
    pub snapshot_every: Option<u64>,
    pub max_document_bytes: Option<u64>,
    /// An agent unseen this long is `away` (its expired claims are handed over), e.g.
    /// `"30m"` (the default); `CTXSYNC_AWAY_AFTER` overrides.
    pub away_after: Option<String>,
    /// Op-log retention: keep at least this many newest revisions (compaction after each
    /// snapshot drops the rest; `ctxsync compact` on demand). Unset: keep all.
    pub retain_revisions: Option<u64>,
    /// Op-log retention: keep at least this many days of revisions. Unset: keep all.
    pub retain_days: Option<u64>,
    /// Storage warnings (`status`, `/v1/storage`, `/readyz`): the store's files above
    /// this many bytes.
    pub warn_database_bytes: Option<u64>,
    /// A context's document above this many bytes.
    pub warn_context_bytes: Option<u64>,
    /// A context's op log above this many bytes.
    pub warn_log_bytes: Option<u64>,
}

/// `[archive]`: which lists archival keeps short (DESIGN §15). On by default: the seed
/// template's `decisions_log.recent` and `project_state.completed_tasks` keep their newest
/// `keep` entries (a document without them is not touched); `[[archive.lists]]` adds
/// others, each with its own `keep`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    pub enabled: bool,
    /// Entries the seed lists keep.
    pub keep: usize,
    pub lists: Vec<ArchiveListConfig>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keep: ctxsync_core::archive::DEFAULT_KEEP,
            lists: Vec::new(),
        }
    }
}

/// One `[[archive.lists]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveListConfig {
    /// The list's path, e.g. `communication.handovers`.
    pub path: String,
    pub keep: usize,
    /// A number field counting what was archived (optional).
    pub counter: Option<String>,
}

impl ArchiveConfig {
    /// The rules the store runs, checked.
    pub fn rules(&self) -> Result<Vec<ctxsync_core::ArchiveRule>> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        let mut rules = ctxsync_core::archive::seed_rules(self.keep);
        for list in &self.lists {
            rules.retain(|r| r.path != list.path);
            rules.push(ctxsync_core::ArchiveRule {
                path: list.path.clone(),
                keep: list.keep,
                counter: list.counter.clone(),
            });
        }
        ctxsync_core::archive::check_rules(&rules)
            .map_err(|e| crate::InputError(format!("{CONFIG_FILE} [archive]: {e}")))?;
        Ok(rules)
    }
}

/// `[watch]`: how `ctxsync watch` turns edits of a working copy into syncs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Quiet time after the last save before syncing, in milliseconds.
    pub debounce_ms: u64,
    /// Embedded mode: how often to look for revisions made by others, in milliseconds.
    pub poll_ms: u64,
    /// Level of edits no rule in `levels` matches.
    pub default_level: Level,
    /// Path prefix -> level; the longest matching prefix wins, and a sync takes the most
    /// urgent level among its changes.
    pub levels: BTreeMap<String, Level>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            debounce_ms: 300,
            poll_ms: 500,
            default_level: Level::Periodic,
            levels: [
                ("project_state.blocked_tasks", Level::Critical),
                ("communication.last_handover", Level::Checkpoint),
                ("project_state.completed_tasks", Level::Checkpoint),
                ("project_state.current_phase", Level::Checkpoint),
                ("decisions_log", Level::Checkpoint),
                ("technical_context.architecture", Level::Checkpoint),
            ]
            .into_iter()
            .map(|(p, l)| (p.to_owned(), l))
            .collect(),
        }
    }
}

/// The resolved configuration of one invocation.
#[derive(Debug)]
pub struct Config {
    pub root: PathBuf,
    pub file: FileConfig,
    /// Whether a `ctxsync.toml` was found.
    pub found: bool,
}

/// The directory holding `ctxsync.toml`, searching upward from `start`.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(CONFIG_FILE).is_file())
        .map(Path::to_path_buf)
}

impl Config {
    /// Loads the config for `root` (or the one found above the working directory).
    pub fn load(root: Option<&Path>) -> Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the working directory")?;
        let (root, found) = match root {
            Some(r) => (r.to_path_buf(), r.join(CONFIG_FILE).is_file()),
            None => match find_root(&cwd) {
                Some(r) => (r, true),
                None => (cwd, false),
            },
        };
        let file = if found {
            let path = root.join(CONFIG_FILE);
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let text = ctxsync_client::decode_text(bytes, &path.display().to_string())?;
            toml::from_str(ctxsync_core::limits::strip_bom(&text))
                .map_err(|e| crate::InputError(format!("{}: {e}", path.display())))?
        } else {
            FileConfig::default()
        };
        Ok(Self { root, file, found })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    pub fn db_path(&self) -> PathBuf {
        match &self.file.store.path {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => self.root.join(p),
            None => self.state_dir().join("ctxsync.db"),
        }
    }

    /// `--context`, then `CTXSYNC_CONTEXT` (clap reads it), then the file, then `default`.
    pub fn context(&self, flag: Option<&str>) -> String {
        flag.map(str::to_owned)
            .or_else(|| self.file.context.clone())
            .unwrap_or_else(|| "default".into())
    }

    /// `--agent`, then `CTXSYNC_AGENT` (clap reads it), then the file; `None` when none
    /// names one (there is no default agent: see `Env::writer`).
    pub fn agent(&self, flag: Option<&str>) -> Option<String> {
        flag.map(str::to_owned)
            .filter(|a| !a.is_empty())
            .or_else(|| self.file.agent.clone())
    }

    /// `[store] warn_*`.
    pub fn storage_thresholds(&self) -> ctxsync_store::StorageThresholds {
        let s = &self.file.store;
        ctxsync_store::StorageThresholds {
            database_bytes: s.warn_database_bytes,
            context_bytes: s.warn_context_bytes,
            log_bytes: s.warn_log_bytes,
        }
    }

    /// The compiled `schema`, when the file names one.
    pub fn schema(&self) -> Result<Option<ctxsync_store::ContextSchema>> {
        let Some(path) = &self.file.schema else {
            return Ok(None);
        };
        let path = if path.is_absolute() {
            path.clone()
        } else {
            self.root.join(path)
        };
        let shown = path.display().to_string();
        let bytes =
            std::fs::read(&path).map_err(|e| crate::InputError(format!("schema {shown}: {e}")))?;
        let text = ctxsync_client::decode_text(bytes, &shown)?;
        let schema = ctxsync_client::parse_document(&text, &shown)?;
        Ok(Some(
            ctxsync_store::ContextSchema::compile(&schema, shown)
                .map_err(|e| crate::InputError(e.to_string()))?,
        ))
    }

    /// The op-log retention: flags first, then `[store] retain_revisions` / `retain_days`.
    pub fn retention(
        &self,
        revisions: Option<u64>,
        days: Option<u64>,
    ) -> Result<ctxsync_store::Retention> {
        let revisions = revisions.or(self.file.store.retain_revisions);
        let days = days.or(self.file.store.retain_days);
        let max_age_ms = match days {
            None => None,
            Some(d) => Some(
                d.checked_mul(24 * 3600 * 1000)
                    .filter(|ms| *ms <= i64::MAX as u64)
                    .ok_or_else(|| crate::InputError(format!("retain_days {d} is too large")))?,
            ),
        };
        Ok(ctxsync_store::Retention {
            revisions,
            max_age_ms,
        })
    }

    pub fn store_options(&self) -> Result<StoreOptions> {
        let defaults = StoreOptions::default();
        let s = &self.file.store;
        Ok(StoreOptions {
            synchronous: s.synchronous.unwrap_or(defaults.synchronous),
            snapshot_every: s.snapshot_every.unwrap_or(defaults.snapshot_every),
            max_document_bytes: s.max_document_bytes.unwrap_or(defaults.max_document_bytes),
            ownership: Ownership::new(self.file.ownership.clone())
                .map_err(|e| crate::InputError(format!("{CONFIG_FILE}: {e}")))?,
            away_after_ms: match std::env::var("CTXSYNC_AWAY_AFTER")
                .ok()
                .filter(|v| !v.is_empty())
                .or(s.away_after.clone())
            {
                Some(text) => crate::context::claims::parse_duration(&text)
                    .map_err(|e| crate::InputError(format!("away_after: {e}")))?,
                None => defaults.away_after_ms,
            },
            archive: self.file.archive.rules()?,
            retain: self.retention(None, None)?,
            schema: self.schema()?,
            ..defaults
        })
    }
}
