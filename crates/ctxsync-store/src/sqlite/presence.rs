//! Presence: per agent of a context, the newest revision it has seen, when, and up to
//! which revision it was shown critical revisions; and the queries behind the stale-view
//! notice and the unseen-critical notices.
//!
//! Recording presence is on the path of every pull and push, so it must not cost a
//! transaction (and an fsync) of its own: updates go to the writer as fire-and-forget
//! jobs and are committed with the next batch of pushes (or alone when none come). A copy
//! in memory makes this process's next answer see its own updates at once; updates only
//! ever move forward (`max`), so their order does not matter.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::StoreError;
use crate::types::*;

/// Most critical notices one call returns (the newest ones): an agent that was never
/// shown any gets a readable list, not the whole history.
pub(crate) const CRITICAL_LIMIT: usize = 20;

/// One presence update, as the writer commits it.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    pub context: String,
    pub agent: String,
    /// The agent saw this revision (`None`: only seen alive, e.g. a hook asking).
    pub seen: Option<u64>,
    /// Critical revisions up to this one were shown to it.
    pub critical_shown: Option<u64>,
    pub at_ms: u64,
}

/// A presence row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Row {
    pub seen: u64,
    pub last_seen_ms: u64,
    pub critical_shown: u64,
}

impl Row {
    /// The newer of two views of the same row.
    pub fn max(self, other: Row) -> Row {
        Row {
            seen: self.seen.max(other.seen),
            last_seen_ms: self.last_seen_ms.max(other.last_seen_ms),
            critical_shown: self.critical_shown.max(other.critical_shown),
        }
    }

    /// The row after `update` (a new row starts from `initial`).
    pub fn apply(self, update: &Update) -> Row {
        Row {
            seen: self.seen.max(update.seen.unwrap_or(0)),
            last_seen_ms: self.last_seen_ms.max(update.at_ms),
            critical_shown: self.critical_shown.max(update.critical_shown.unwrap_or(0)),
        }
    }
}

/// Writes updates (inside the caller's transaction).
pub(crate) fn write(conn: &Connection, updates: &[Update]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO presence(context, agent, seen_revision, last_seen_ms, critical_shown)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(context, agent) DO UPDATE SET
            seen_revision = max(seen_revision, excluded.seen_revision),
            last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
            critical_shown = max(critical_shown, excluded.critical_shown)",
    )?;
    for u in updates {
        stmt.execute(params![
            u.context,
            u.agent,
            u.seen.unwrap_or(0) as i64,
            u.at_ms as i64,
            u.critical_shown.unwrap_or(0) as i64
        ])?;
    }
    Ok(())
}

pub(crate) fn row(
    conn: &Connection,
    context: &str,
    agent: &str,
) -> Result<Option<Row>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT seen_revision, last_seen_ms, critical_shown FROM presence
             WHERE context = ?1 AND agent = ?2",
        )?
        .query_row(params![context, agent], |r| {
            Ok(Row {
                seen: r.get::<_, i64>(0)? as u64,
                last_seen_ms: r.get::<_, i64>(1)? as u64,
                critical_shown: r.get::<_, i64>(2)? as u64,
            })
        })
        .optional()?)
}

pub(crate) fn rows(conn: &Connection, context: &str) -> Result<Vec<(String, Row)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent, seen_revision, last_seen_ms, critical_shown FROM presence
         WHERE context = ?1 ORDER BY agent",
    )?;
    let rows = stmt.query_map([context], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Row {
                seen: r.get::<_, i64>(1)? as u64,
                last_seen_ms: r.get::<_, i64>(2)? as u64,
                critical_shown: r.get::<_, i64>(3)? as u64,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The revisions by agents other than `agent` in `(since, through]`: an exact count and
/// the sections of at most the newest [`STALE_SCAN_LIMIT`].
pub(crate) fn stale(
    conn: &Connection,
    context: &str,
    agent: &str,
    since: u64,
    through: u64,
) -> Result<StaleView, StoreError> {
    let mut view = StaleView {
        behind: 0,
        changed_sections: Vec::new(),
        since_revision: since,
    };
    if through <= since {
        return Ok(view);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT sections, CASE WHEN sections IS NULL THEN edits END FROM oplog
         WHERE context = ?1 AND revision > ?2 AND revision <= ?3 AND agent != ?4
         ORDER BY revision DESC LIMIT ?5",
    )?;
    let mut rows = stmt.query(params![
        context,
        since as i64,
        through as i64,
        agent,
        STALE_SCAN_LIMIT as i64
    ])?;
    let mut scanned = 0u64;
    while let Some(row) = rows.next()? {
        scanned += 1;
        let sections: Option<String> = row.get(0)?;
        let found: Vec<String> = match sections {
            Some(text) => serde_json::from_str(&text).unwrap_or_default(),
            // Written before schema 4: read the edits.
            None => {
                let edits: Option<String> = row.get(1)?;
                edits
                    .and_then(|t| serde_json::from_str::<Vec<ctxsync_core::Edit>>(&t).ok())
                    .map(|e| sections_of(&e))
                    .unwrap_or_default()
            }
        };
        view.changed_sections.extend(found);
    }
    view.behind = if scanned < STALE_SCAN_LIMIT as u64 {
        scanned
    } else {
        conn.prepare_cached(
            "SELECT count(*) FROM oplog
             WHERE context = ?1 AND revision > ?2 AND revision <= ?3 AND agent != ?4",
        )?
        .query_row(params![context, since as i64, through as i64, agent], |r| {
            r.get::<_, i64>(0)
        })? as u64
    };
    view.changed_sections.sort();
    view.changed_sections.dedup();
    Ok(view)
}

/// Critical revisions by others after `after`, oldest first, at most the newest
/// [`CRITICAL_LIMIT`] (through the partial index on critical rows, so it stays cheap).
pub(crate) fn critical_after(
    conn: &Connection,
    context: &str,
    agent: &str,
    after: u64,
) -> Result<Vec<CriticalNotice>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT revision, agent, summary, ts_ms, edits FROM oplog
         WHERE context = ?1 AND level = 'critical' AND revision > ?2 AND agent != ?3
         ORDER BY revision DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![context, after as i64, agent, CRITICAL_LIMIT as i64],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, String>(4)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (revision, agent, summary, timestamp_ms, edits) = row?;
        let paths = crate::backend::row_paths(&edits);
        out.push(CriticalNotice {
            revision,
            agent,
            summary,
            paths,
            timestamp_ms,
        });
    }
    out.reverse();
    Ok(out)
}

/// Only the revision numbers of [`critical_after`].
pub(crate) fn critical_revisions_after(
    conn: &Connection,
    context: &str,
    agent: &str,
    after: u64,
) -> Result<Vec<u64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT revision FROM oplog
         WHERE context = ?1 AND level = 'critical' AND revision > ?2 AND agent != ?3
         ORDER BY revision DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![context, after as i64, agent, CRITICAL_LIMIT as i64],
        |r| r.get::<_, i64>(0),
    )?;
    let mut out: Vec<u64> = rows
        .map(|r| r.map(|v| v as u64))
        .collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}
