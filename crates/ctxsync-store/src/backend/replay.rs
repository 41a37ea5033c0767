//! Reading back what a backend stored: choosing the snapshot a read starts from, the
//! verify replay over every op-log row, and the metrics summary over the sync log.

use std::collections::{BTreeMap, HashMap};

use ctxsync_core::apply::{apply_edit, Edit};
use ctxsync_core::{legacy_checksum, matches_stored, ChecksumTree, Level};
use serde_json::Value;

use crate::error::StoreError;
use crate::types::*;

/// Parses stored JSON, `Corrupt` naming `what` when it does not parse.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Whether a stored snapshot can be read from: its document parses and matches its
/// checksum. One that does not (tampered with, or damaged) is skipped with a warning, so a
/// read never starts from data it cannot vouch for.
pub fn intact_snapshot(context: &str, revision: u64, doc: &str, sum: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(doc) {
        Ok(doc) if matches_stored(&doc, sum) => Some(doc),
        _ => {
            tracing::warn!(
                context,
                revision,
                "snapshot does not match its checksum; reading from an older one (run `ctxsync verify`)"
            );
            None
        }
    }
}

/// Applies the entries' edits to `doc` (a snapshot's document moved to a later revision).
pub fn replay_onto(doc: &mut Value, entries: &[LogEntry]) -> Result<(), StoreError> {
    for entry in entries {
        for edit in &entry.edits {
            apply_edit(doc, edit).map_err(|e| {
                StoreError::Corrupt(format!("replaying revision {}: {e}", entry.revision))
            })?;
        }
    }
    Ok(())
}

/// The verify replay (DESIGN §7): fed every snapshot and then every op-log row after the
/// starting snapshot in order, it checks every stored checksum, the op log's, the head's,
/// and every snapshot's twice (its document against its own checksum, and its checksum
/// against the replay). An unreadable row is reported and the check goes on.
pub struct Verifier {
    head: Head,
    problems: Vec<String>,
    snapshots: HashMap<u64, String>,
    doc: Value,
    tree: ChecksumTree,
    checked: u64,
    expected_revision: u64,
}

impl Verifier {
    pub fn new(head: Head) -> Self {
        Self {
            head,
            problems: Vec::new(),
            snapshots: HashMap::new(),
            doc: Value::Null,
            tree: ChecksumTree::new(),
            checked: 0,
            expected_revision: 1,
        }
    }

    /// One stored snapshot (before [`Verifier::start`]).
    pub fn snapshot(&mut self, revision: u64, sum: String, doc: &str) {
        match serde_json::from_str::<Value>(doc) {
            Ok(doc) if matches_stored(&doc, &sum) => {}
            Ok(_) => self.problems.push(format!(
                "snapshot at revision {revision}: its document does not match its checksum"
            )),
            Err(e) => self
                .problems
                .push(format!("snapshot at revision {revision}: unreadable: {e}")),
        }
        self.snapshots.insert(revision, sum);
    }

    /// The replay starts from the (intact) snapshot at `revision`.
    pub fn start(&mut self, revision: u64, doc: Value) {
        self.doc = doc;
        self.expected_revision = revision + 1;
    }

    /// The next op-log row: its entry (without edits) and its stored edits text.
    pub fn row(&mut self, revision: u64, checksum: &str, edits: &str) {
        if revision != self.expected_revision {
            self.problems.push(format!(
                "gap in the op log: expected revision {}, found {revision}",
                self.expected_revision
            ));
        }
        self.expected_revision = revision + 1;
        // The replay keeps the structural hashes along the edits, so checking every
        // revision costs O(change) each; a stored checksum in the older format is checked
        // against the canonical-JSON hash instead.
        match parse_json::<Vec<Edit>>(edits, "op log edits") {
            Ok(edits) => {
                for edit in &edits {
                    if let Err(e) = apply_edit(&mut self.doc, edit) {
                        self.problems
                            .push(format!("revision {revision}: edit does not replay: {e}"));
                    }
                    self.tree.note(edit);
                }
            }
            Err(e) => self
                .problems
                .push(format!("revision {revision}: unreadable: {e}")),
        }
        let sum = self.tree.refresh(&self.doc).0;
        self.checked += 1;
        if !fits(&self.doc, &sum, checksum) {
            self.problems
                .push(format!("revision {revision}: checksum mismatch"));
        }
        if let Some(snap) = self.snapshots.get(&revision) {
            if !fits(&self.doc, &sum, snap) {
                self.problems.push(format!(
                    "snapshot at revision {revision}: checksum does not match the replay"
                ));
            }
        }
    }

    pub fn finish(mut self) -> VerifyReport {
        if self.expected_revision != self.head.revision + 1 {
            self.problems.push(format!(
                "op log ends at revision {} but the head is at {}",
                self.expected_revision - 1,
                self.head.revision
            ));
        }
        // The head from scratch, independently of the tree the replay kept.
        if !matches_stored(&self.doc, &self.head.checksum) {
            self.problems
                .push("head checksum does not match the replayed document".into());
        }
        VerifyReport {
            context: self.head.context.clone(),
            ok: self.problems.is_empty(),
            checked: self.checked,
            revision: self.head.revision,
            problems: self.problems,
        }
    }
}

/// Whether `stored` is the checksum of `doc`, whose structural checksum is `structural`.
fn fits(doc: &Value, structural: &str, stored: &str) -> bool {
    structural == stored || legacy_checksum(doc) == stored
}

/// One row of the sync log, as stored.
#[derive(Debug, Clone)]
pub struct SyncRow {
    pub level: String,
    pub duration_us: u64,
    pub outcome: String,
    pub ts_ms: u64,
    /// A JSON list of paths, or none.
    pub conflict_paths: Option<String>,
}

/// The oldest sync-log time [`summarize_metrics`] looks at, for `now_ms`.
pub fn metrics_window_start(now_ms: u64) -> u64 {
    let day_start = now_ms - now_ms % (24 * 3600 * 1000);
    let hour_ago = now_ms.saturating_sub(3600 * 1000);
    day_start.min(hour_ago)
}

/// The seed's `sync_metrics` and more, over the sync rows since
/// [`metrics_window_start`].
pub fn summarize_metrics(
    head: &Head,
    rows: impl IntoIterator<Item = SyncRow>,
    open_conflicts: u64,
    now_ms: u64,
) -> Metrics {
    let day_start = now_ms - now_ms % (24 * 3600 * 1000);
    let hour_ago = now_ms.saturating_sub(3600 * 1000);
    let mut by_level: BTreeMap<String, u64> = Level::ALL
        .iter()
        .map(|l| (l.as_str().to_owned(), 0))
        .collect();
    let (mut total, mut failures, mut deferred, mut conflicts_last_hour) = (0, 0, 0, 0);
    let mut durations = Vec::new();
    let mut hot: HashMap<String, u64> = HashMap::new();
    for row in rows {
        let paths: Vec<String> = row
            .conflict_paths
            .as_deref()
            .map(|p| serde_json::from_str(p).unwrap_or_default())
            .unwrap_or_default();
        if row.ts_ms >= hour_ago {
            conflicts_last_hour += paths.len() as u64;
        }
        for p in paths {
            *hot.entry(p).or_default() += 1;
        }
        if row.ts_ms < day_start {
            continue;
        }
        total += 1;
        *by_level.entry(row.level).or_default() += 1;
        match SyncOutcome::parse(&row.outcome) {
            SyncOutcome::Failed => failures += 1,
            SyncOutcome::Deferred => deferred += 1,
            _ => durations.push(row.duration_us as f64 / 1000.0),
        }
    }
    durations.sort_by(f64::total_cmp);
    let performance = if durations.is_empty() {
        Performance::default()
    } else {
        let p95_index = ((durations.len() as f64) * 0.95).ceil() as usize;
        Performance {
            average_sync_ms: durations.iter().sum::<f64>() / durations.len() as f64,
            fastest_sync_ms: durations[0],
            slowest_sync_ms: durations[durations.len() - 1],
            p95_sync_ms: durations[p95_index.clamp(1, durations.len()) - 1],
        }
    };
    let mut hottest: Vec<(String, u64)> = hot.into_iter().collect();
    hottest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    hottest.truncate(5);
    Metrics {
        context: head.context.clone(),
        revision: head.revision,
        total_syncs_today: total,
        sync_failures: failures,
        deferred,
        context_size_bytes: head.size,
        compression_ratio: None,
        by_level,
        performance,
        conflicts_last_hour,
        open_conflicts,
        hottest_conflict_paths: hottest,
    }
}

/// The sections a stored op-log row wrote: its `sections` list, or (rows written before
/// sections were stored) those of its edits.
pub fn row_sections(sections: Option<&str>, edits: Option<&str>) -> Vec<String> {
    match sections {
        Some(text) => serde_json::from_str(text).unwrap_or_default(),
        None => edits
            .and_then(|t| serde_json::from_str::<Vec<Edit>>(t).ok())
            .map(|e| sections_of(&e))
            .unwrap_or_default(),
    }
}

/// The paths of a stored op-log row's edits (for critical notices).
/// The seed's stamps (`last_sync`, `sync_level`) are left out: every agent's sync sets
/// them, so naming them says nothing.
pub fn row_paths(edits: &str) -> Vec<String> {
    serde_json::from_str::<Vec<Edit>>(edits)
        .map(|e| {
            e.iter()
                .map(|e| e.path.to_string())
                .filter(|p| !ctxsync_core::template::STAMPED_FIELDS.contains(&p.as_str()))
                .collect()
        })
        .unwrap_or_default()
}
