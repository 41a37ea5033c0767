//! The audit log: one JSON object per line in `events.jsonl`, appended and fsynced, so a
//! record survives a crash right after the run that produced it.
//!
//! The log is bounded: once `events.jsonl` reaches [`ROTATE_AT_BYTES`], it becomes
//! `events.1.jsonl` (replacing the one before) and a new log starts, so at most the last
//! two segments are kept. Readers look at both.

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

/// Size from which the log moves to its previous segment before an append.
pub const ROTATE_AT_BYTES: u64 = 16 * 1024 * 1024;

/// The previous segment of the log at `path` (`events.jsonl` -> `events.1.jsonl`).
pub fn previous_segment(path: &Path) -> std::path::PathBuf {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("events");
    path.with_file_name(format!("{stem}.1.jsonl"))
}

/// Appends events durably (rotating the log first when it is full).
pub fn append(path: &Path, events: &[Event]) -> Result<()> {
    append_rotating_at(path, events, ROTATE_AT_BYTES)
}

fn append_rotating_at(path: &Path, events: &[Event], rotate_at: u64) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= rotate_at) {
        // A rename: the full segment is kept whole, and a crash leaves either name.
        let prev = previous_segment(path);
        std::fs::rename(path, &prev).map_err(|e| Error::io(&prev, e))?;
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

/// Reads the last `n` events (all with `None`), oldest first, from the log and its
/// previous segment; unparsable lines (a torn last line after a crash) are skipped.
pub fn read_last(path: &Path, n: Option<usize>) -> Result<Vec<Event>> {
    let mut out = std::collections::VecDeque::new();
    read_segment(&previous_segment(path), n, &mut out)?;
    read_segment(path, n, &mut out)?;
    Ok(out.into())
}

fn read_segment(
    path: &Path,
    n: Option<usize>,
    out: &mut std::collections::VecDeque<Event>,
) -> Result<()> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
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
    Ok(())
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

    #[test]
    fn a_full_log_moves_to_its_previous_segment_and_reads_span_both() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("events.jsonl");
        let ev = |ts| Event {
            ts_ms: ts,
            kind: EventKind::AgentUpdated,
            agent: Some("a".into()),
            files: vec![],
            generation: None,
            duration_ms: 0.0,
            result: "ok".into(),
            message: String::new(),
        };
        // Each event is a line of ~90 bytes: rotating at 200 bytes starts a new
        // segment every third event.
        for ts in 0..10 {
            append_rotating_at(&p, &[ev(ts)], 200).unwrap();
        }
        let prev = previous_segment(&p);
        assert_eq!(prev, d.path().join("events.1.jsonl"));
        assert!(std::fs::metadata(&p).unwrap().len() < 200);
        assert!(std::fs::metadata(&prev).unwrap().len() < 300);
        let ts: Vec<u64> = read_last(&p, None)
            .unwrap()
            .iter()
            .map(|e| e.ts_ms)
            .collect();
        // The newest events, in order, across both segments; the oldest are gone.
        assert_eq!(ts, vec![6, 7, 8, 9]);
        let last3: Vec<u64> = read_last(&p, Some(3))
            .unwrap()
            .iter()
            .map(|e| e.ts_ms)
            .collect();
        assert_eq!(last3, vec![7, 8, 9]);
    }
}
