//! The sync log in time buckets ([`crate::Store::sync_buckets`]): counts by level, agent
//! and outcome grouped in SQL, and per-bucket duration quantiles picked in SQL by a
//! window function, so a 7-day window never ships every sample to the caller.

use ctxsync_core::Level;
use rusqlite::{params, Connection};

use super::read::head;
use crate::backend::buckets::{bucket_index as index, span_bounds};
use crate::error::StoreError;
use crate::types::*;

pub(crate) fn sync_buckets(
    conn: &Connection,
    context: &str,
    span: &BucketSpan,
) -> Result<Vec<SyncBucket>, StoreError> {
    let (from, bucket, to) = span_bounds(span)?;
    head(conn, context)?;
    let mut out: Vec<SyncBucket> = (0..span.buckets)
        .map(|index| SyncBucket {
            index,
            ..SyncBucket::default()
        })
        .collect();
    let mut counts = conn.prepare_cached(
        "SELECT (ts_ms - ?2) / ?3 AS b, level, agent, outcome, count(*) FROM sync_log
         WHERE context = ?1 AND ts_ms >= ?2 AND ts_ms < ?4
         GROUP BY b, level, agent, outcome ORDER BY b, level, agent, outcome",
    )?;
    let mut rows = counts.query(params![context, from, bucket, to])?;
    while let Some(row) = rows.next()? {
        let Some(i) = index(row.get(0)?, span.buckets) else {
            continue;
        };
        let level: String = row.get(1)?;
        // A level this version does not know (written by a newer one) is left out.
        let Ok(level) = level.parse::<Level>() else {
            continue;
        };
        let outcome: String = row.get(3)?;
        out[i].counts.push(SyncCount {
            level,
            agent: row.get(2)?,
            outcome: SyncOutcome::parse(&outcome),
            count: row.get::<_, i64>(4)?.max(0) as u64,
        });
    }
    // Nearest rank: the ceil(n * q)-th smallest duration, q = 0.50 and 0.95.
    let mut quantiles = conn.prepare_cached(
        "SELECT b, rn, n, duration_us FROM (
             SELECT (ts_ms - ?2) / ?3 AS b, duration_us,
                    row_number() OVER (PARTITION BY (ts_ms - ?2) / ?3 ORDER BY duration_us) AS rn,
                    count(*) OVER (PARTITION BY (ts_ms - ?2) / ?3) AS n
             FROM sync_log
             WHERE context = ?1 AND ts_ms >= ?2 AND ts_ms < ?4
               AND outcome NOT IN ('failed', 'deferred'))
         WHERE rn = max(1, (n * 50 + 99) / 100) OR rn = max(1, (n * 95 + 99) / 100)",
    )?;
    let mut rows = quantiles.query(params![context, from, bucket, to])?;
    while let Some(row) = rows.next()? {
        let Some(i) = index(row.get(0)?, span.buckets) else {
            continue;
        };
        let (rn, n): (i64, i64) = (row.get(1)?, row.get(2)?);
        let duration = row.get::<_, i64>(3)?.max(0) as u64;
        if rn == ((n * 50 + 99) / 100).max(1) {
            out[i].p50_us = Some(duration);
        }
        if rn == ((n * 95 + 99) / 100).max(1) {
            out[i].p95_us = Some(duration);
        }
    }
    Ok(out)
}
