//! Queries: heads, documents at a revision (snapshot + replay), the op log, conflicts,
//! verification and metrics. Every function takes a plain connection, so the writer can
//! run them inside its transaction and readers outside it.

use ctxsync_core::apply::{apply_edit, Edit};
use ctxsync_core::{matches_stored, Conflict};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::corrupt;
use crate::backend;
use crate::error::StoreError;
use crate::types::*;

pub(crate) fn head(conn: &Connection, context: &str) -> Result<Head, StoreError> {
    conn.prepare_cached("SELECT revision, checksum, size, horizon FROM contexts WHERE name = ?1")?
        .query_row([context], |row| {
            Ok(Head {
                context: context.to_owned(),
                revision: row.get::<_, i64>(0)? as u64,
                checksum: row.get(1)?,
                size: row.get::<_, i64>(2)? as u64,
                horizon: row.get::<_, i64>(3)? as u64,
            })
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound(context.to_owned()))
}

pub(crate) fn list_contexts(conn: &Connection) -> Result<Vec<Head>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT name, revision, checksum, size, horizon FROM contexts ORDER BY name")?;
    let rows = stmt.query_map([], |row| {
        Ok(Head {
            context: row.get(0)?,
            revision: row.get::<_, i64>(1)? as u64,
            checksum: row.get(2)?,
            size: row.get::<_, i64>(3)? as u64,
            horizon: row.get::<_, i64>(4)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what}: {e}")))
}

/// The newest snapshot at or before `revision` whose document matches its checksum. A
/// snapshot that does not (tampered with, or damaged) is skipped with a warning, and the
/// one before it is used instead: a read never starts from data it cannot vouch for.
pub(crate) fn snapshot_before(
    conn: &Connection,
    context: &str,
    revision: u64,
) -> Result<(u64, Value, String), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT revision, doc, checksum FROM snapshots
         WHERE context = ?1 AND revision <= ?2 ORDER BY revision DESC",
    )?;
    let mut rows = stmt.query(params![context, revision as i64])?;
    while let Some(row) = rows.next()? {
        let (rev, doc, sum): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        match serde_json::from_str::<Value>(&doc) {
            Ok(doc) if matches_stored(&doc, &sum) => return Ok((rev as u64, doc, sum)),
            _ => tracing::warn!(
                context,
                revision = rev,
                "snapshot does not match its checksum; reading from an older one (run `ctxsync verify`)"
            ),
        }
    }
    Err(corrupt(format!(
        "no intact snapshot of {context:?} at or before revision {revision}"
    )))
}

/// The document at `revision`: the snapshot before it plus the op log replayed.
pub(crate) fn doc_at(conn: &Connection, context: &str, revision: u64) -> Result<Value, StoreError> {
    let (from, mut doc, _) = snapshot_before(conn, context, revision)?;
    for entry in log_range(conn, context, from, revision)? {
        for edit in &entry.edits {
            apply_edit(&mut doc, edit)
                .map_err(|e| corrupt(format!("replaying revision {}: {e}", entry.revision)))?;
        }
    }
    Ok(doc)
}

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(LogEntry, String)> {
    let level: String = row.get(2)?;
    Ok((
        LogEntry {
            revision: row.get::<_, i64>(0)? as u64,
            agent: row.get(1)?,
            level: level.parse().unwrap_or_default(),
            timestamp_ms: row.get::<_, i64>(3)? as u64,
            summary: row.get(4)?,
            request_id: row.get(5)?,
            checksum: row.get(7)?,
            edits: Vec::new(),
        },
        row.get(6)?,
    ))
}

const ENTRY_COLUMNS: &str = "revision, agent, level, ts_ms, summary, request_id, edits, checksum";

/// Entries with `after < revision <= until`, oldest first.
pub(crate) fn log_range(
    conn: &Connection,
    context: &str,
    after: u64,
    until: u64,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} FROM oplog
         WHERE context = ?1 AND revision > ?2 AND revision <= ?3 ORDER BY revision"
    ))?;
    let rows = stmt.query_map(params![context, after as i64, until as i64], entry_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut entry, edits) = row?;
        entry.edits = parse_json::<Vec<Edit>>(
            &edits,
            &format!(
                "revision {} of {context:?} in the op log (`ctxsync verify` lists every problem)",
                entry.revision
            ),
        )?;
        out.push(entry);
    }
    Ok(out)
}

pub(crate) fn history(
    conn: &Connection,
    context: &str,
    filter: &HistoryFilter,
) -> Result<Vec<LogEntry>, StoreError> {
    head(conn, context)?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {ENTRY_COLUMNS} FROM oplog
         WHERE context = ?1 AND (?2 IS NULL OR agent = ?2) AND (?3 IS NULL OR level = ?3)
         ORDER BY revision DESC LIMIT ?4"
    ))?;
    let limit = filter.last.map_or(-1, |n| n as i64);
    let rows = stmt.query_map(
        params![
            context,
            filter.agent,
            filter.level.map(|l| l.as_str().to_owned()),
            limit
        ],
        entry_from_row,
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (mut entry, edits) = row?;
        match parse_json(&edits, "op log edits") {
            Ok(edits) => entry.edits = edits,
            // One unreadable row must not hide the rest of the history: it is listed,
            // marked, without its edits (`verify` reports it in full).
            Err(e) => entry.summary = format!("{} [unreadable: {e}]", entry.summary),
        }
        out.push(entry);
    }
    Ok(out)
}

pub(crate) fn open_conflicts(
    conn: &Connection,
    context: &str,
) -> Result<Vec<StoredConflict>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, agent, revision, created_ms, detail FROM conflicts
         WHERE context = ?1 AND status = 'open' ORDER BY id",
    )?;
    let rows = stmt.query_map([context], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, agent, revision, created_ms, detail) = row?;
        let mut conflict: Conflict = parse_json(&detail, "conflict")?;
        conflict.id = Some(id as u64);
        out.push(StoredConflict {
            id: id as u64,
            agent,
            revision: revision as u64,
            created_ms: created_ms as u64,
            conflict,
        });
    }
    Ok(out)
}

/// Replays the log from the oldest snapshot and checks every stored checksum (the shared
/// [`backend::Verifier`]).
pub(crate) fn verify(conn: &Connection, context: &str) -> Result<VerifyReport, StoreError> {
    let head = head(conn, context)?;
    let mut verifier = backend::Verifier::new(head.clone());
    {
        let mut stmt =
            conn.prepare("SELECT revision, checksum, doc FROM snapshots WHERE context = ?1")?;
        let mut rows = stmt.query([context])?;
        while let Some(row) = rows.next()? {
            let (rev, sum, doc): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            verifier.snapshot(rev as u64, sum, &doc);
        }
    }
    let (start, doc, _) = snapshot_before(conn, context, head.horizon)?;
    verifier.start(start, doc);
    let mut stmt = conn.prepare(
        "SELECT revision, checksum, edits FROM oplog
         WHERE context = ?1 AND revision > ?2 AND revision <= ?3 ORDER BY revision",
    )?;
    let mut rows = stmt.query(params![context, start as i64, head.revision as i64])?;
    while let Some(row) = rows.next()? {
        let (rev, sum, edits): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        verifier.row(rev as u64, &sum, &edits);
    }
    Ok(verifier.finish())
}

pub(crate) fn metrics(
    conn: &Connection,
    context: &str,
    now_ms: u64,
) -> Result<Metrics, StoreError> {
    let head = head(conn, context)?;
    let mut stmt = conn.prepare(
        "SELECT level, duration_us, outcome, ts_ms, conflict_paths FROM sync_log
         WHERE context = ?1 AND ts_ms >= ?2",
    )?;
    let start = backend::metrics_window_start(now_ms);
    let rows = stmt
        .query_map(params![context, start as i64], |r| {
            Ok(backend::SyncRow {
                level: r.get(0)?,
                duration_us: r.get::<_, i64>(1)? as u64,
                outcome: r.get(2)?,
                ts_ms: r.get::<_, i64>(3)? as u64,
                conflict_paths: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let open: i64 = conn.query_row(
        "SELECT count(*) FROM conflicts WHERE context = ?1 AND status = 'open'",
        [context],
        |r| r.get(0),
    )?;
    Ok(backend::summarize_metrics(&head, rows, open as u64, now_ms))
}

/// Per context: document size, op-log rows and bytes, snapshot bytes, archive entries and
/// bytes (one grouped scan of each table).
pub(crate) fn storage(conn: &Connection) -> Result<Vec<ContextStorage>, StoreError> {
    let mut by_name: std::collections::BTreeMap<String, ContextStorage> = Default::default();
    for head in list_contexts(conn)? {
        by_name.insert(
            head.context.clone(),
            ContextStorage {
                context: head.context,
                document_bytes: head.size,
                ..ContextStorage::default()
            },
        );
    }
    let grouped = [
        "SELECT context, COUNT(*), COALESCE(SUM(length(edits)), 0) FROM oplog GROUP BY context",
        "SELECT context, COUNT(*), COALESCE(SUM(length(doc)), 0) FROM snapshots GROUP BY context",
        "SELECT context, COUNT(*), COALESCE(SUM(length(entry)), 0) FROM archive GROUP BY context",
    ];
    for (table, sql) in grouped.iter().enumerate() {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            let (count, bytes) = (row.get::<_, i64>(1)? as u64, row.get::<_, i64>(2)? as u64);
            let Some(c) = by_name.get_mut(&name) else {
                continue;
            };
            match table {
                0 => (c.log_revisions, c.log_bytes) = (count, bytes),
                1 => c.snapshot_bytes = bytes,
                _ => (c.archive_entries, c.archive_bytes) = (count, bytes),
            }
        }
    }
    Ok(by_name.into_values().collect())
}
