//! Queries: heads, documents at a revision (the newest intact snapshot before it and the
//! op log replayed), the op log, history, open conflicts, the verify replay and the sync
//! log behind metrics. Each takes a connection, so writers run them inside their
//! transaction (and see their own uncommitted revisions) and readers outside one.

use ctxsync_core::apply::Edit;
use ctxsync_core::Conflict;
use ctxsync_store::backend;
use ctxsync_store::{Head, HistoryFilter, LogEntry, Metrics, StoredConflict, VerifyReport};
use serde_json::Value;
use tokio_postgres::Row;

use crate::error::{corrupt, TxError};
use crate::pool::Conn;

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn head_of(context: &str, row: &Row) -> Head {
    Head {
        context: context.to_owned(),
        revision: u(row.get(0)),
        checksum: row.get(1),
        size: u(row.get(2)),
        horizon: u(row.get(3)),
    }
}

pub(crate) async fn head(conn: &mut Conn, context: &str) -> Result<Head, TxError> {
    let row = conn
        .query_opt(
            "SELECT revision, checksum, size, horizon FROM contexts WHERE name = $1",
            &[&context],
        )
        .await?;
    match row {
        Some(row) => Ok(head_of(context, &row)),
        None => Err(ctxsync_store::StoreError::NotFound(context.to_owned()).into()),
    }
}

pub(crate) async fn list_contexts(conn: &mut Conn) -> Result<Vec<Head>, TxError> {
    let rows = conn
        .query(
            "SELECT name, revision, checksum, size, horizon FROM contexts ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Head {
            context: row.get(0),
            revision: u(row.get(1)),
            checksum: row.get(2),
            size: u(row.get(3)),
            horizon: u(row.get(4)),
        })
        .collect())
}

/// The newest snapshot at or before `revision` whose document matches its checksum.
pub(crate) async fn snapshot_before(
    conn: &mut Conn,
    context: &str,
    revision: u64,
) -> Result<(u64, Value), TxError> {
    let rows = conn
        .query(
            "SELECT revision, doc, checksum FROM snapshots
             WHERE context = $1 AND revision <= $2 ORDER BY revision DESC",
            &[&context, &(revision as i64)],
        )
        .await?;
    for row in rows {
        let rev = u(row.get(0));
        let (doc, sum): (&str, &str) = (row.get(1), row.get(2));
        if let Some(doc) = backend::intact_snapshot(context, rev, doc, sum) {
            return Ok((rev, doc));
        }
    }
    Err(corrupt(format!(
        "no intact snapshot of {context:?} at or before revision {revision}"
    ))
    .into())
}

/// The document at `revision`.
pub(crate) async fn doc_at(
    conn: &mut Conn,
    context: &str,
    revision: u64,
) -> Result<Value, TxError> {
    let (from, mut doc) = snapshot_before(conn, context, revision).await?;
    let entries = log_range(conn, context, from, revision).await?;
    backend::replay_onto(&mut doc, &entries)?;
    Ok(doc)
}

fn entry_of(row: &Row) -> (LogEntry, String) {
    let level: String = row.get(2);
    (
        LogEntry {
            revision: u(row.get(0)),
            agent: row.get(1),
            level: level.parse().unwrap_or_default(),
            timestamp_ms: u(row.get(3)),
            summary: row.get(4),
            request_id: row.get(5),
            checksum: row.get(7),
            edits: Vec::new(),
        },
        row.get(6),
    )
}

/// Entries with `after < revision <= until`, oldest first.
pub(crate) async fn log_range(
    conn: &mut Conn,
    context: &str,
    after: u64,
    until: u64,
) -> Result<Vec<LogEntry>, TxError> {
    if until <= after {
        return Ok(Vec::new());
    }
    let rows = conn
        .query(
            "SELECT revision, agent, level, ts_ms, summary, request_id, edits, checksum FROM oplog
             WHERE context = $1 AND revision > $2 AND revision <= $3 ORDER BY revision",
            &[&context, &(after as i64), &(until as i64)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let (mut entry, edits) = entry_of(row);
        entry.edits = backend::parse_json::<Vec<Edit>>(
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

pub(crate) async fn history(
    conn: &mut Conn,
    context: &str,
    filter: &HistoryFilter,
) -> Result<Vec<LogEntry>, TxError> {
    head(conn, context).await?;
    let level = filter.level.map(|l| l.as_str().to_owned());
    let limit = filter.last.map(|n| n.min(i64::MAX as usize) as i64);
    let rows = conn
        .query(
            "SELECT revision, agent, level, ts_ms, summary, request_id, edits, checksum FROM oplog
             WHERE context = $1 AND ($2::text IS NULL OR agent = $2)
               AND ($3::text IS NULL OR level = $3)
             ORDER BY revision DESC LIMIT $4",
            &[&context, &filter.agent, &level, &limit],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let (mut entry, edits) = entry_of(row);
        match backend::parse_json(&edits, "op log edits") {
            Ok(edits) => entry.edits = edits,
            // One unreadable row must not hide the rest of the history.
            Err(e) => entry.summary = format!("{} [unreadable: {e}]", entry.summary),
        }
        out.push(entry);
    }
    Ok(out)
}

pub(crate) async fn open_conflicts(
    conn: &mut Conn,
    context: &str,
) -> Result<Vec<StoredConflict>, TxError> {
    let rows = conn
        .query(
            "SELECT id, agent, revision, created_ms, detail FROM conflicts
             WHERE context = $1 AND status = 'open' ORDER BY id",
            &[&context],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let id = u(row.get(0));
        let detail: &str = row.get(4);
        let mut conflict: Conflict = backend::parse_json(detail, "conflict")?;
        conflict.id = Some(id);
        out.push(StoredConflict {
            id,
            agent: row.get(1),
            revision: u(row.get(2)),
            created_ms: u(row.get(3)),
            conflict,
        });
    }
    Ok(out)
}

/// The shared [`backend::Verifier`] over every snapshot and op-log row.
pub(crate) async fn verify(conn: &mut Conn, context: &str) -> Result<VerifyReport, TxError> {
    let head = head(conn, context).await?;
    let mut verifier = backend::Verifier::new(head.clone());
    let rows = conn
        .query(
            "SELECT revision, checksum, doc FROM snapshots WHERE context = $1",
            &[&context],
        )
        .await?;
    for row in &rows {
        verifier.snapshot(u(row.get(0)), row.get(1), row.get(2));
    }
    let (start, doc) = snapshot_before(conn, context, head.horizon).await?;
    verifier.start(start, doc);
    let rows = conn
        .query(
            "SELECT revision, checksum, edits FROM oplog
             WHERE context = $1 AND revision > $2 AND revision <= $3 ORDER BY revision",
            &[&context, &(start as i64), &(head.revision as i64)],
        )
        .await?;
    for row in &rows {
        verifier.row(u(row.get(0)), row.get(1), row.get(2));
    }
    Ok(verifier.finish())
}

pub(crate) async fn metrics(
    conn: &mut Conn,
    context: &str,
    now_ms: u64,
) -> Result<Metrics, TxError> {
    let head = head(conn, context).await?;
    let start = backend::metrics_window_start(now_ms);
    let rows = conn
        .query(
            "SELECT level, duration_us, outcome, ts_ms, conflict_paths FROM sync_log
             WHERE context = $1 AND ts_ms >= $2",
            &[&context, &(start as i64)],
        )
        .await?;
    let samples = rows.iter().map(|r| backend::SyncRow {
        level: r.get(0),
        duration_us: u(r.get(1)),
        outcome: r.get(2),
        ts_ms: u(r.get(3)),
        conflict_paths: r.get(4),
    });
    let samples: Vec<_> = samples.collect();
    let open = conn
        .query_opt(
            "SELECT count(*) FROM conflicts WHERE context = $1 AND status = 'open'",
            &[&context],
        )
        .await?
        .map_or(0, |r| u(r.get(0)));
    Ok(backend::summarize_metrics(&head, samples, open, now_ms))
}
