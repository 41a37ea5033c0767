//! The audit log: one JSON object per line in `events.jsonl`, appended and fsynced, so a
//! record survives a crash right after the run that produced it.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new agent got its outputs.
    AgentAdded,
    /// An agent's outputs changed.
    AgentUpdated,
    /// An agent's outputs were removed.
    AgentRemoved,
    /// An output was edited by hand (or not ours) and left alone, or overwritten/merged.
    Conflict,
    /// A rollback restored a generation.
    Rollback,
    /// Rendering or validation failed; nothing was written.
    ValidationFailed,
    /// A source file was renamed (detected within one batch).
    Renamed,
    /// `fix-refs --apply` rewrote references.
    RefsFixed,
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub ts_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The agent concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Files written, removed or concerned.
    #[serde(default)]
    pub files: Vec<String>,
    /// Generation the change belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Duration of the run, milliseconds.
    pub duration_ms: f64,
    /// `ok`, `conflict`, `forced`, `merged`, `failed`, …
    pub result: String,
    /// Details for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends events durably.
pub fn append(path: &Path, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let mut buf = Vec::new();
    for e in events {
        serde_json::to_writer(&mut buf, e).map_err(|e| Error::Input(e.to_string()))?;
        buf.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(&buf).map_err(|e| Error::io(path, e))?;
    f.sync_data().map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Reads the last `n` events (all with `None`); unparsable lines (a torn last line after a
/// crash) are skipped.
pub fn read_last(path: &Path, n: Option<usize>) -> Result<Vec<Event>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if let Ok(ev) = serde_json::from_str::<Event>(&line) {
            out.push_back(ev);
            if let Some(n) = n {
                while out.len() > n {
                    out.pop_front();
                }
            }
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.jsonl");
        let ev = |k| Event {
            ts_ms: 1,
            kind: k,
            agent: None,
            files: vec![],
            generation: None,
            duration_ms: 0.0,
            result: "ok".into(),
            message: String::new(),
        };
        append(&p, &[ev(EventKind::AgentAdded), ev(EventKind::Conflict)]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{torn")
            .unwrap();
        let last = read_last(&p, Some(1)).unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].kind, EventKind::Conflict);
    }
}
