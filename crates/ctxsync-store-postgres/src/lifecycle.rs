//! A context's lifecycle on PostgreSQL (DESIGN §15), the same decisions as the embedded
//! store through `ctxsync_store::backend`: the archival revision with its archive rows in
//! one transaction, compaction of the op log below a retention, storage use, and the
//! sync log in time buckets for the dashboard's trends.

use std::time::Instant;

use ctxsync_core::archive::plan;
use ctxsync_core::{Level, Ownership, PushResponse};
use ctxsync_store::backend::buckets::{bucket_index, span_bounds};
use ctxsync_store::backend::{self};
use ctxsync_store::{
    ArchiveQuery, ArchiveRecord, BucketSpan, CompactReport, ContextStorage, Head, Retention,
    StorageUsage, StoreError, SyncBucket, SyncCount, SyncOutcome, MAX_ARCHIVE_PAGE,
};

use crate::error::{corrupt, TxError};
use crate::pool::Conn;
use crate::read;
use crate::store::{now_ms, Shared};
use crate::write::{load, push_in_tx, PushRules, TxDocs};

/// Runs archival on `context` inside the caller's transaction when a rule's list is past
/// `keep + slack` (`None`: the automatic slack): one revision by the store's agent, and
/// the moved entries' rows. `None` when nothing was due.
pub(crate) async fn archive_in_tx(
    conn: &mut Conn,
    docs: &mut TxDocs,
    shared: &Shared,
    context: &str,
    slack: Option<usize>,
) -> Result<Option<PushResponse>, TxError> {
    let rules = &shared.options.archive;
    if rules.is_empty() {
        return Ok(None);
    }
    let cached = load(conn, docs, context).await?;
    let slack = slack.unwrap_or_else(|| {
        rules
            .iter()
            .map(|r| ctxsync_core::archive::auto_slack(r.keep))
            .min()
            .unwrap_or(1)
    });
    let Some(plan) = plan(&cached.doc, rules, slack) else {
        return Ok(None);
    };
    let open = Ownership::default();
    let push_rules = PushRules {
        ownership: &open,
        enforce_claims: false,
        stage_recent: false,
        stamp_seed_fields: false,
    };
    let request = backend::archive::archival_request(&plan);
    let response = push_in_tx(
        conn,
        docs,
        shared,
        context,
        request,
        Instant::now(),
        push_rules,
    )
    .await?;
    if response.applied.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "archival of {context:?} did not apply: {:?}",
            response.rejected
        ))
        .into());
    }
    let next: i64 = conn
        .query_opt(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM archive WHERE context = $1",
            &[&context],
        )
        .await?
        .map_or(1, |row| row.get(0));
    let now = now_ms() as i64;
    for (offset, entry) in plan.entries.iter().enumerate() {
        let text = serde_json::to_string(&entry.entry).map_err(corrupt)?;
        conn.execute(
            "INSERT INTO archive(context, seq, list, entry_id, revision, ts_ms, entry)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &context,
                &(next + offset as i64),
                &entry.list,
                &entry.id,
                &(response.revision as i64),
                &now,
                &text,
            ],
        )
        .await?;
    }
    Ok(Some(response))
}

/// Archived entries, oldest first.
pub(crate) async fn archive_list(
    conn: &mut Conn,
    context: &str,
    query: &ArchiveQuery,
) -> Result<Vec<ArchiveRecord>, TxError> {
    read::head(conn, context).await?;
    let list = match &query.list {
        Some(path) => Some(
            ctxsync_core::Path::parse(path)
                .map_err(|e| StoreError::Invalid(e.to_string()))?
                .to_pointer(),
        ),
        None => None,
    };
    let limit = query
        .limit
        .unwrap_or(MAX_ARCHIVE_PAGE)
        .clamp(1, MAX_ARCHIVE_PAGE) as i64;
    let after = query.after.unwrap_or(0).min(i64::MAX as u64) as i64;
    let text = query.text.as_ref().map(|t| t.to_ascii_lowercase());
    let rows = conn
        .query(
            "SELECT seq, list, entry_id, revision, ts_ms, entry FROM archive
             WHERE context = $1 AND seq > $2
               AND ($3::TEXT IS NULL OR list = $3)
               AND ($4::TEXT IS NULL OR entry_id = $4)
               AND ($5::TEXT IS NULL OR strpos(lower(entry), $5) > 0)
             ORDER BY seq LIMIT $6",
            &[&context, &after, &list, &query.id, &text, &limit],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let seq: i64 = row.get(0);
        let entry: String = row.get(5);
        out.push(ArchiveRecord {
            seq: seq as u64,
            list: row.get(1),
            id: row.get(2),
            revision: row.get::<_, i64>(3) as u64,
            ts_ms: row.get::<_, i64>(4) as u64,
            entry: serde_json::from_str(&entry).map_err(|e| {
                StoreError::Corrupt(format!("archived entry {seq} of {context:?}: {e}"))
            })?,
        });
    }
    Ok(out)
}

/// Moves the horizon of `context` (at `head`) as far as `retain` allows, to the newest
/// snapshot at or below the oldest revision it keeps, inside the caller's transaction.
pub(crate) async fn compact_in_tx(
    conn: &mut Conn,
    context: &str,
    head: &Head,
    retain: &Retention,
) -> Result<CompactReport, TxError> {
    let mut report = CompactReport {
        context: context.to_owned(),
        horizon_before: head.horizon,
        horizon: head.horizon,
        removed_revisions: 0,
        removed_snapshots: 0,
    };
    let now = now_ms();
    let mut newest_before = None;
    if let Some(age) = retain.max_age_ms {
        // Read first: the shared bound takes it as a plain value.
        let cutoff = now.saturating_sub(age) as i64;
        newest_before = conn
            .query_opt(
                "SELECT MAX(revision) FROM oplog WHERE context = $1 AND ts_ms < $2",
                &[&context, &cutoff],
            )
            .await?
            .and_then(|row| row.get::<_, Option<i64>>(0))
            .map(|r| r as u64);
    }
    let Some(keep_from) =
        backend::retention::oldest_kept(head, retain, now, |_| Ok::<_, TxError>(newest_before))?
    else {
        return Ok(report);
    };
    let snapshot: Option<i64> = conn
        .query_opt(
            "SELECT MAX(revision) FROM snapshots WHERE context = $1 AND revision <= $2",
            &[&context, &(keep_from as i64)],
        )
        .await?
        .and_then(|row| row.get(0));
    let Some(horizon) = snapshot.map(|s| s as u64).filter(|s| *s > head.horizon) else {
        return Ok(report);
    };
    let h = horizon as i64;
    report.removed_revisions = conn
        .execute(
            "DELETE FROM oplog WHERE context = $1 AND revision <= $2",
            &[&context, &h],
        )
        .await?;
    report.removed_snapshots = conn
        .execute(
            "DELETE FROM snapshots WHERE context = $1 AND revision < $2",
            &[&context, &h],
        )
        .await?;
    conn.execute(
        "UPDATE contexts SET horizon = $1 WHERE name = $2",
        &[&h, &context],
    )
    .await?;
    report.horizon = horizon;
    Ok(report)
}

/// The database's size and, per context, its document, log, snapshots and archive.
pub(crate) async fn storage(conn: &mut Conn) -> Result<StorageUsage, TxError> {
    let database_bytes: i64 = conn
        .query_opt("SELECT pg_database_size(current_database())", &[])
        .await?
        .map_or(0, |row| row.get(0));
    let mut contexts: Vec<ContextStorage> = read::list_contexts(conn)
        .await?
        .into_iter()
        .map(|head| ContextStorage {
            context: head.context,
            document_bytes: head.size,
            ..ContextStorage::default()
        })
        .collect();
    let grouped: [&'static str; 3] = [
        "SELECT context, COUNT(*), COALESCE(SUM(length(edits)), 0)::BIGINT FROM oplog GROUP BY context",
        "SELECT context, COUNT(*), COALESCE(SUM(length(doc)), 0)::BIGINT FROM snapshots GROUP BY context",
        "SELECT context, COUNT(*), COALESCE(SUM(length(entry)), 0)::BIGINT FROM archive GROUP BY context",
    ];
    for (table, sql) in grouped.iter().enumerate() {
        for row in conn.query(sql, &[]).await? {
            let name: String = row.get(0);
            let (count, bytes) = (row.get::<_, i64>(1) as u64, row.get::<_, i64>(2) as u64);
            let Some(c) = contexts.iter_mut().find(|c| c.context == name) else {
                continue;
            };
            match table {
                0 => (c.log_revisions, c.log_bytes) = (count, bytes),
                1 => c.snapshot_bytes = bytes,
                _ => (c.archive_entries, c.archive_bytes) = (count, bytes),
            }
        }
    }
    Ok(StorageUsage {
        database_bytes: database_bytes.max(0) as u64,
        contexts,
    })
}

/// The sync log in buckets: counts by level, agent and outcome, and nearest-rank p50 and
/// p95 of the durations of syncs that neither failed nor were deferred.
pub(crate) async fn sync_buckets(
    conn: &mut Conn,
    context: &str,
    span: &BucketSpan,
) -> Result<Vec<SyncBucket>, TxError> {
    let (from, bucket, to) = span_bounds(span)?;
    read::head(conn, context).await?;
    let mut out: Vec<SyncBucket> = (0..span.buckets)
        .map(|index| SyncBucket {
            index,
            ..SyncBucket::default()
        })
        .collect();
    let counts = conn
        .query(
            "SELECT (ts_ms - $2) / $3 AS b, level, agent, outcome, count(*) FROM sync_log
             WHERE context = $1 AND ts_ms >= $2 AND ts_ms < $4
             GROUP BY b, level, agent, outcome ORDER BY b, level, agent, outcome",
            &[&context, &from, &bucket, &to],
        )
        .await?;
    for row in counts {
        let Some(i) = bucket_index(row.get(0), span.buckets) else {
            continue;
        };
        let Ok(level) = row.get::<_, String>(1).parse::<Level>() else {
            continue;
        };
        out[i].counts.push(SyncCount {
            level,
            agent: row.get(2),
            outcome: SyncOutcome::parse(&row.get::<_, String>(3)),
            count: row.get::<_, i64>(4).max(0) as u64,
        });
    }
    let quantiles = conn
        .query(
            "SELECT b, rn, n, duration_us FROM (
                 SELECT (ts_ms - $2) / $3 AS b, duration_us,
                        row_number() OVER (PARTITION BY (ts_ms - $2) / $3 ORDER BY duration_us) AS rn,
                        count(*) OVER (PARTITION BY (ts_ms - $2) / $3) AS n
                 FROM sync_log
                 WHERE context = $1 AND ts_ms >= $2 AND ts_ms < $4
                   AND outcome NOT IN ('failed', 'deferred')) AS ranked
             WHERE rn = GREATEST(1, (n * 50 + 99) / 100) OR rn = GREATEST(1, (n * 95 + 99) / 100)",
            &[&context, &from, &bucket, &to],
        )
        .await?;
    for row in quantiles {
        let Some(i) = bucket_index(row.get(0), span.buckets) else {
            continue;
        };
        let (rn, n): (i64, i64) = (row.get(1), row.get(2));
        let duration = row.get::<_, i64>(3).max(0) as u64;
        if rn == ((n * 50 + 99) / 100).max(1) {
            out[i].p50_us = Some(duration);
        }
        if rn == ((n * 95 + 99) / 100).max(1) {
            out[i].p95_us = Some(duration);
        }
    }
    Ok(out)
}
