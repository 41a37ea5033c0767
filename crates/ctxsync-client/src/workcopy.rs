//! An agent's working copy: `.ctxsync/agents/<agent>/context.yaml` plus its base
//! (`base.json`: the revision and document it was written from, and periodic-sync state).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::files::{
    atomic_create, atomic_replace_if, atomic_write, decode_text, parse_document, to_yaml,
};
use crate::ClientError;

/// What the working copy was last synced from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Base {
    pub context: String,
    pub revision: u64,
    pub checksum: String,
    pub document: Value,
    /// When this agent last flushed a periodic sync (Unix seconds).
    #[serde(default)]
    pub last_periodic_flush: Option<u64>,
}

/// The files of one agent's working copy.
#[derive(Debug, Clone)]
pub struct WorkingCopy {
    pub agent: String,
    dir: PathBuf,
}

/// Agent names become folder names: keep them to a safe alphabet.
fn validate_agent(agent: &str) -> Result<(), ClientError> {
    let ok = !agent.is_empty()
        && agent.len() <= 64
        && agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !agent.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ClientError::Input(format!(
            "bad agent name {agent:?}: use 1-64 of A-Z a-z 0-9 . _ - (not starting with '.')"
        )))
    }
}

impl WorkingCopy {
    /// The working copy of `agent` under `state_dir` (the `.ctxsync` folder).
    pub fn new(state_dir: &Path, agent: &str) -> Result<Self, ClientError> {
        validate_agent(agent)?;
        Ok(Self {
            agent: agent.to_owned(),
            dir: state_dir.join("agents").join(agent),
        })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("context.yaml")
    }

    fn base_file(&self) -> PathBuf {
        self.dir.join("base.json")
    }

    pub fn exists(&self) -> bool {
        self.base_file().exists()
    }

    pub fn load_base(&self) -> Result<Base, ClientError> {
        let path = self.base_file();
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ClientError::Input(format!(
                    "agent {:?} has no working copy yet: run `ctxsync pull --agent {}` first",
                    self.agent, self.agent
                ))
            } else {
                ClientError::Io {
                    path: path.clone(),
                    error: source,
                }
            }
        })?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Input(format!("{}: corrupt base: {e}", path.display())))
    }

    /// The agent's edited document. It must still be a mapping.
    pub fn load_mine(&self) -> Result<Value, ClientError> {
        Ok(self.read_mine()?.1)
    }

    /// The bytes of the agent's file and the document they hold (a mapping).
    pub fn read_mine(&self) -> Result<(Vec<u8>, Value), ClientError> {
        let path = self.file();
        let bytes = std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ClientError::Input(format!(
                    "{} is gone: `ctxsync pull --agent {}` writes it again (edits not synced are lost with it)",
                    path.display(),
                    self.agent
                ))
            } else {
                ClientError::Io {
                    path: path.clone(),
                    error: source,
                }
            }
        })?;
        let what = path.display().to_string();
        let doc = parse_document(&decode_text(bytes.clone(), &what)?, &what)?;
        if !doc.is_object() {
            return Err(ClientError::Input(format!(
                "{}: the working copy must be a mapping at the top level",
                path.display()
            )));
        }
        Ok((bytes, doc))
    }

    /// Replaces the agent's file with `document` if it still holds `expected` (see
    /// [`atomic_replace_if`]); the base is not touched.
    pub fn replace_if_unchanged(
        &self,
        expected: &[u8],
        document: &Value,
    ) -> Result<bool, ClientError> {
        atomic_replace_if(&self.file(), expected, to_yaml(document).as_bytes())
    }

    /// Writes the working copy and then its base. The base goes last so that a crash in
    /// between leaves a working copy that diffs against its old base (a re-sync repeats
    /// the push safely) rather than a new base with an old file (lost edits).
    pub fn save(&self, document: &Value, base: &Base) -> Result<(), ClientError> {
        atomic_write(&self.file(), to_yaml(document).as_bytes())?;
        self.save_base(base)
    }

    /// Writes a working copy whose file is missing, then its base; `false`, with nothing
    /// written, if the file exists (again) by the time it would be written.
    pub fn create(&self, document: &Value, base: &Base) -> Result<bool, ClientError> {
        if !atomic_create(&self.file(), to_yaml(document).as_bytes())? {
            return Ok(false);
        }
        self.save_base(base)?;
        Ok(true)
    }

    pub fn save_base(&self, base: &Base) -> Result<(), ClientError> {
        let text = serde_json::to_vec(base)
            .map_err(|e| ClientError::Input(format!("cannot encode the base: {e}")))?;
        atomic_write(&self.base_file(), &text)
    }
}
