//! Presence on PostgreSQL: per agent of a context, the newest revision it has seen, when,
//! and up to which revision it was shown critical revisions; the queries behind the
//! stale-view notice and the unseen-critical notices. Each update is one upsert whose
//! values only move forward (`GREATEST`), so servers recording the same agent at once
//! cannot move a row back.

use ctxsync_store::backend;
use ctxsync_store::{CriticalNotice, StaleView, STALE_SCAN_LIMIT};

use crate::error::TxError;
use crate::pool::Conn;

/// Most critical notices one call returns (the newest ones).
pub(crate) const CRITICAL_LIMIT: i64 = 20;

/// A presence row.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Row {
    pub seen: u64,
    pub last_seen_ms: u64,
    pub critical_shown: u64,
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

/// Records that `agent` was seen at `at_ms`, having seen `seen` and been shown critical
/// revisions up to `critical_shown` (0: unchanged).
pub(crate) async fn upsert(
    conn: &mut Conn,
    context: &str,
    agent: &str,
    seen: u64,
    at_ms: u64,
    critical_shown: u64,
) -> Result<(), TxError> {
    conn.execute(
        "INSERT INTO presence(context, agent, seen_revision, last_seen_ms, critical_shown)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (context, agent) DO UPDATE SET
            seen_revision = GREATEST(presence.seen_revision, excluded.seen_revision),
            last_seen_ms = GREATEST(presence.last_seen_ms, excluded.last_seen_ms),
            critical_shown = GREATEST(presence.critical_shown, excluded.critical_shown)",
        &[
            &context,
            &agent,
            &(seen as i64),
            &(at_ms as i64),
            &(critical_shown as i64),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn row(
    conn: &mut Conn,
    context: &str,
    agent: &str,
) -> Result<Option<Row>, TxError> {
    let row = conn
        .query_opt(
            "SELECT seen_revision, last_seen_ms, critical_shown FROM presence
             WHERE context = $1 AND agent = $2",
            &[&context, &agent],
        )
        .await?;
    Ok(row.map(|r| Row {
        seen: u(r.get(0)),
        last_seen_ms: u(r.get(1)),
        critical_shown: u(r.get(2)),
    }))
}

pub(crate) async fn rows(conn: &mut Conn, context: &str) -> Result<Vec<(String, Row)>, TxError> {
    let rows = conn
        .query(
            "SELECT agent, seen_revision, last_seen_ms, critical_shown FROM presence
             WHERE context = $1 ORDER BY agent",
            &[&context],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                Row {
                    seen: u(r.get(1)),
                    last_seen_ms: u(r.get(2)),
                    critical_shown: u(r.get(3)),
                },
            )
        })
        .collect())
}

/// The revisions by agents other than `agent` in `(since, through]`: an exact count and
/// the sections of at most the newest [`STALE_SCAN_LIMIT`].
pub(crate) async fn stale(
    conn: &mut Conn,
    context: &str,
    agent: &str,
    since: u64,
    through: u64,
) -> Result<StaleView, TxError> {
    let mut view = StaleView {
        behind: 0,
        changed_sections: Vec::new(),
        since_revision: since,
    };
    if through <= since {
        return Ok(view);
    }
    let rows = conn
        .query(
            "SELECT sections, CASE WHEN sections IS NULL THEN edits END FROM oplog
             WHERE context = $1 AND revision > $2 AND revision <= $3 AND agent <> $4
             ORDER BY revision DESC LIMIT $5",
            &[
                &context,
                &(since as i64),
                &(through as i64),
                &agent,
                &(STALE_SCAN_LIMIT as i64),
            ],
        )
        .await?;
    let scanned = rows.len() as u64;
    for row in &rows {
        let sections: Option<&str> = row.get(0);
        let edits: Option<&str> = row.get(1);
        view.changed_sections
            .extend(backend::row_sections(sections, edits));
    }
    view.behind = if scanned < STALE_SCAN_LIMIT as u64 {
        scanned
    } else {
        conn.query_opt(
            "SELECT count(*) FROM oplog
             WHERE context = $1 AND revision > $2 AND revision <= $3 AND agent <> $4",
            &[&context, &(since as i64), &(through as i64), &agent],
        )
        .await?
        .map_or(0, |r| u(r.get(0)))
    };
    view.changed_sections.sort();
    view.changed_sections.dedup();
    Ok(view)
}

/// Critical revisions by others after `after`, oldest first, at most the newest
/// [`CRITICAL_LIMIT`].
pub(crate) async fn critical_after(
    conn: &mut Conn,
    context: &str,
    agent: &str,
    after: u64,
) -> Result<Vec<CriticalNotice>, TxError> {
    let rows = conn
        .query(
            "SELECT revision, agent, summary, ts_ms, edits FROM oplog
             WHERE context = $1 AND level = 'critical' AND revision > $2 AND agent <> $3
             ORDER BY revision DESC LIMIT $4",
            &[&context, &(after as i64), &agent, &CRITICAL_LIMIT],
        )
        .await?;
    let mut out: Vec<CriticalNotice> = rows
        .iter()
        .map(|r| CriticalNotice {
            revision: u(r.get(0)),
            agent: r.get(1),
            summary: r.get(2),
            timestamp_ms: u(r.get(3)),
            paths: backend::row_paths(r.get(4)),
        })
        .collect();
    out.reverse();
    Ok(out)
}
