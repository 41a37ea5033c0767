//! Compaction (DESIGN §15): the op log below a retention is dropped and the horizon moves
//! up to the newest snapshot the retention allows, so the store stops growing with its
//! history while every revision at or above the horizon stays exactly readable. Runs after
//! each snapshot when `[store] retain_*` is set, and by `ctxsync compact`.

use rusqlite::{params, OptionalExtension, Transaction};

use super::now_ms;
use crate::error::StoreError;
use crate::types::*;

/// Moves the horizon of `context` (at `head`) as far as `retain` allows: to the newest
/// snapshot at or below the oldest revision the retention keeps. Never past the head, and
/// never to a revision without a snapshot (the horizon's document must be readable).
pub(super) fn compact_within(
    tx: &Transaction<'_>,
    context: &str,
    head: &Head,
    retain: &Retention,
) -> Result<CompactReport, StoreError> {
    let mut report = CompactReport {
        context: context.to_owned(),
        horizon_before: head.horizon,
        horizon: head.horizon,
        removed_revisions: 0,
        removed_snapshots: 0,
    };
    let Some(keep_from) = oldest_kept(tx, context, head, retain)? else {
        return Ok(report);
    };
    let snapshot: Option<i64> = tx
        .prepare_cached(
            "SELECT MAX(revision) FROM snapshots WHERE context = ?1 AND revision <= ?2",
        )?
        .query_row(params![context, keep_from as i64], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(horizon) = snapshot.map(|s| s as u64).filter(|s| *s > head.horizon) else {
        return Ok(report);
    };
    report.removed_revisions = tx
        .prepare_cached("DELETE FROM oplog WHERE context = ?1 AND revision <= ?2")?
        .execute(params![context, horizon as i64])? as u64;
    report.removed_snapshots = tx
        .prepare_cached("DELETE FROM snapshots WHERE context = ?1 AND revision < ?2")?
        .execute(params![context, horizon as i64])? as u64;
    tx.prepare_cached("UPDATE contexts SET horizon = ?1 WHERE name = ?2")?
        .execute(params![horizon as i64, context])?;
    report.horizon = horizon;
    Ok(report)
}

/// The oldest revision `retain` keeps ([`crate::backend::retention::oldest_kept`]).
fn oldest_kept(
    tx: &Transaction<'_>,
    context: &str,
    head: &Head,
    retain: &Retention,
) -> Result<Option<u64>, StoreError> {
    crate::backend::retention::oldest_kept(head, retain, now_ms(), |cutoff| {
        let newest: Option<i64> = tx
            .prepare_cached("SELECT MAX(revision) FROM oplog WHERE context = ?1 AND ts_ms < ?2")?
            .query_row(params![context, cutoff as i64], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(newest.map(|r| r as u64))
    })
}
