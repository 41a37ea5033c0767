//! Archival in the SQLite store: the archival revision and its archived rows committed in
//! one transaction (an entry is always in the document or in the archive), run after a
//! push takes a list past its threshold, before a push that would pass the quota, and on
//! demand; and the lazy reads of the archive.

use std::collections::HashMap;
use std::time::Instant;

use ctxsync_core::archive::{plan, ArchivePlan};
use ctxsync_core::{Level, Ownership, PushRequest, PushResponse, Strategy};
use rusqlite::{params, Connection, Transaction};

use super::push::{load, push_with};
use super::{now_ms, Cached, Shared};
use crate::backend::SYSTEM_AGENT;
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
    let request = archival_request(&plan);
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

fn archival_request(plan: &ArchivePlan) -> PushRequest {
    PushRequest {
        agent: SYSTEM_AGENT.to_owned(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        strategy: Strategy::Atomic,
        summary: plan.summary.clone(),
        changes: plan.changes.clone(),
    }
}

/// Whether archival could make room for `request`: the document with the due entries
/// archived and the request applied, measured. Only on the rare over-quota path (it
/// copies the document).
pub(super) fn would_fit_after_archival(
    cached: &Cached,
    rules: &[ArchiveRule],
    request: &PushRequest,
    limit: u64,
) -> Option<bool> {
    let plan = plan(&cached.doc, rules, 0)?;
    let mut doc = cached.doc.clone();
    ctxsync_core::apply_all(&mut doc, &plan.changes).ok()?;
    // Changes that fail on the archived document would be conflicts or rejections of
    // the real push; skipping them here only makes the estimate smaller.
    for change in &request.changes {
        let _ = ctxsync_core::apply_change(&mut doc, change);
    }
    Some(ctxsync_core::canonical_json(&doc).len() as u64 <= limit)
}

/// What archival would free now, for the message of a push that is still too large.
pub(super) fn archivable_hint(cached: &Cached, rules: &[ArchiveRule]) -> String {
    let mut largest: Vec<(String, usize, u64)> = Vec::new();
    if let Some(obj) = cached.doc.as_object() {
        for (key, value) in obj {
            largest.push((
                key.clone(),
                0,
                ctxsync_core::canonical_json(value).len() as u64,
            ));
        }
    }
    largest.sort_by(|a, b| b.2.cmp(&a.2));
    let sections: Vec<String> = largest
        .iter()
        .take(3)
        .map(|(k, _, bytes)| format!("{k} {bytes} bytes"))
        .collect();
    let lists: Vec<String> = rules
        .iter()
        .filter_map(|r| {
            let path = ctxsync_core::Path::parse(&r.path).ok()?;
            let len = ctxsync_core::get(&cached.doc, &path)?.as_array()?.len();
            Some(format!("{} holds {len} (keeps {})", r.path, r.keep))
        })
        .collect();
    let mut hint = format!("largest sections: {}", sections.join(", "));
    if !lists.is_empty() {
        hint.push_str(&format!(
            "; archived lists: {} (lower `keep` in [archive] or remove entries)",
            lists.join(", ")
        ));
    }
    hint
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
