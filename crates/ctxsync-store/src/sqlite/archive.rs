//! Archival in the SQLite store: the archival revision and its archived rows committed in
//! one transaction (an entry is always in the document or in the archive), run after a
//! push takes a list past its threshold, before a push that would pass the quota, and on
//! demand; and the lazy reads of the archive.

use std::collections::HashMap;
use std::time::Instant;

use ctxsync_core::archive::{plan, ArchivePlan};
use ctxsync_core::{Ownership, PushResponse};
use rusqlite::{params, Connection, Transaction};

use super::push::{load, push_with};
use super::{now_ms, Cached, Shared};
use crate::error::StoreError;
use crate::types::*;

/// Runs archival on `context` when a rule's list is past `keep + slack`: one revision by
/// [`SYSTEM_AGENT`] and the moved entries' rows. `None` when nothing was due.
pub(super) fn archive_within(
    tx: &Transaction<'_>,
    docs: &mut HashMap<String, Cached>,
    shared: &Shared,
    context: &str,
    slack: Option<usize>,
) -> Result<Option<PushResponse>, StoreError> {
    let rules = &shared.options.archive;
    if rules.is_empty() {
        return Ok(None);
    }
    let cached = load(tx, docs, context)?;
    let slack = slack.unwrap_or_else(|| auto_slack(rules));
    let Some(plan) = plan(&cached.doc, rules, slack) else {
        return Ok(None);
    };
    commit_plan(tx, docs, shared, context, plan).map(Some)
}

/// The slack of automatic runs: the smallest rule's, so no list waits for another's.
fn auto_slack(rules: &[ArchiveRule]) -> usize {
    rules
        .iter()
        .map(|r| ctxsync_core::archive::auto_slack(r.keep))
        .min()
        .unwrap_or(1)
}

fn commit_plan(
    tx: &Transaction<'_>,
    docs: &mut HashMap<String, Cached>,
    shared: &Shared,
    context: &str,
    plan: ArchivePlan,
) -> Result<PushResponse, StoreError> {
    let request = crate::backend::archive::archival_request(&plan);
    // Archival is the store's housekeeping: not subject to agents' ownership or claims.
    let open = Ownership::default();
    let response = push_with(
        tx,
        docs,
        shared,
        context,
        request,
        Instant::now(),
        &open,
        false,
        false,
    )?;
    if response.applied.is_empty() {
        // All or nothing, and nothing: the plan no longer matched the document (it was
        // made from it in this transaction, so this is a bug, not a race).
        return Err(StoreError::Corrupt(format!(
            "archival of {context:?} did not apply: {:?}",
            response.rejected
        )));
    }
    let next: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM archive WHERE context = ?1")?
        .query_row([context], |r| r.get(0))?;
    let now = now_ms() as i64;
    let mut insert = tx.prepare_cached(
        "INSERT INTO archive(context, seq, list, entry_id, revision, ts_ms, entry)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (offset, entry) in plan.entries.iter().enumerate() {
        let text = serde_json::to_string(&entry.entry)
            .map_err(|e| StoreError::Corrupt(format!("archived entry: {e}")))?;
        insert.execute(params![
            context,
            next + offset as i64,
            entry.list,
            entry.id,
            response.revision as i64,
            now,
            text
        ])?;
    }
    Ok(response)
}

/// Reads archived entries, oldest first.
pub(super) fn list(
    conn: &Connection,
    context: &str,
    query: &ArchiveQuery,
) -> Result<Vec<ArchiveRecord>, StoreError> {
    super::read::head(conn, context)?;
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
        .clamp(1, MAX_ARCHIVE_PAGE);
    let text = query.text.as_ref().map(|t| t.to_ascii_lowercase());
    let mut statement = conn.prepare_cached(
        "SELECT seq, list, entry_id, revision, ts_ms, entry FROM archive
         WHERE context = ?1 AND seq > ?2
           AND (?3 IS NULL OR list = ?3)
           AND (?4 IS NULL OR entry_id = ?4)
           AND (?5 IS NULL OR instr(lower(entry), ?5) > 0)
         ORDER BY seq LIMIT ?6",
    )?;
    let rows = statement.query_map(
        params![
            context,
            query.after.unwrap_or(0).min(i64::MAX as u64) as i64,
            list,
            query.id,
            text,
            limit as i64
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        },
    )?;
    let mut records = Vec::new();
    for row in rows {
        let (seq, list, id, revision, ts_ms, entry) = row?;
        let entry = serde_json::from_str(&entry).map_err(|e| {
            StoreError::Corrupt(format!("archived entry {seq} of {context:?}: {e}"))
        })?;
        records.push(ArchiveRecord {
            seq: seq as u64,
            list,
            id,
            revision: revision as u64,
            ts_ms: ts_ms as u64,
            entry,
        });
    }
    Ok(records)
}
