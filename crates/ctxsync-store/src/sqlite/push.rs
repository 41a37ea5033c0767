//! One push inside the writer's open transaction: idempotency, the conflict check against
//! what was written since the base, evaluation (ownership, claims, limits), the checksum
//! along the edited paths, the op-log row, snapshots, deferred conflicts and the sync
//! sample. Everything here is O(change), apart from snapshots, which are O(document) but
//! written once a document's worth of log has accumulated.

use std::collections::HashMap;
use std::time::Instant;

use ctxsync_core::{Level, Ownership, PushRequest, PushResponse};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{corrupt, now_ms, read, Cached, Shared};
use crate::backend;
use crate::error::StoreError;
use crate::types::*;

/// The writer's copy of the newest document, reloaded when another process moved it.
pub(super) fn load<'a>(
    tx: &Connection,
    docs: &'a mut HashMap<String, Cached>,
    context: &str,
) -> Result<&'a mut Cached, StoreError> {
    let head = read::head(tx, context)?;
    let fresh = docs.get(context).is_some_and(|c| c.head == head);
    if !fresh {
        let doc = read::doc_at(tx, context, head.revision)?;
        let mut cached = Cached::new(head, doc);
        // What was written since the last snapshot counts towards the next one, also in a
        // process that was not there to write it (each CLI command is a new process).
        let (revisions, bytes): (i64, i64) = tx
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(length(edits)), 0) FROM oplog
                 WHERE context = ?1
                   AND revision > (SELECT COALESCE(MAX(revision), 0) FROM snapshots WHERE context = ?1)",
            )?
            .query_row([context], |r| Ok((r.get(0)?, r.get(1)?)))?;
        cached.revisions_since_snapshot = revisions as u64;
        cached.log_bytes_since_snapshot = bytes as u64;
        docs.insert(context.to_owned(), cached);
    }
    docs.get_mut(context)
        .ok_or_else(|| corrupt("document cache"))
}

pub(super) fn push_one(
    tx: &Transaction<'_>,
    docs: &mut HashMap<String, Cached>,
    shared: &Shared,
    context: &str,
    request: PushRequest,
    started: Instant,
) -> Result<PushResponse, StoreError> {
    let attempt = if shared.options.archive.is_empty() {
        None
    } else {
        // Kept for a retry when the push would pass the quota (DESIGN §15).
        Some(request.clone())
    };
    let response = match push_with(
        tx,
        docs,
        shared,
        context,
        request,
        started,
        &shared.options.ownership,
        true,
        true,
    ) {
        Err(StoreError::TooLarge { size, limit }) => {
            let Some(request) = attempt else {
                return Err(StoreError::TooLarge { size, limit });
            };
            return push_after_archival(tx, docs, shared, context, request, started, size, limit);
        }
        other => other?,
    };
    if !response.applied.is_empty() && !response.replayed {
        super::archive::archive_within(tx, docs, shared, context, None)?;
    }
    Ok(response)
}

/// A push over the quota: archive what is due first and retry, when that makes it fit;
/// otherwise refuse it with the numbers and what could be archived, nothing applied.
#[allow(clippy::too_many_arguments)]
fn push_after_archival(
    tx: &Transaction<'_>,
    docs: &mut HashMap<String, Cached>,
    shared: &Shared,
    context: &str,
    request: PushRequest,
    started: Instant,
    size: u64,
    limit: u64,
) -> Result<PushResponse, StoreError> {
    let rules = &shared.options.archive;
    let cached = load(tx, docs, context)?;
    let fits = backend::archive::would_fit_after_archival(cached, rules, &request, limit);
    if fits != Some(true) {
        let hint = backend::archive::archivable_hint(cached, rules);
        return Err(StoreError::OverQuota { size, limit, hint });
    }
    super::archive::archive_within(tx, docs, shared, context, Some(0))?;
    push_with(
        tx,
        docs,
        shared,
        context,
        request,
        started,
        &shared.options.ownership,
        true,
        true,
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn push_with(
    tx: &Transaction<'_>,
    docs: &mut HashMap<String, Cached>,
    shared: &Shared,
    context: &str,
    request: PushRequest,
    started: Instant,
    ownership: &Ownership,
    enforce_claims: bool,
    stamp_seed_fields: bool,
) -> Result<PushResponse, StoreError> {
    let fingerprint = backend::check_request(&request)?;
    if let Some(id) = &request.request_id {
        let stored: Option<(String, Option<String>)> = tx
            .prepare_cached(
                "SELECT response, fingerprint FROM requests WHERE context = ?1 AND request_id = ?2",
            )?
            .query_row(params![context, id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((stored, stored_fingerprint)) = stored {
            return backend::replay_stored(
                id,
                &stored,
                stored_fingerprint.as_deref(),
                fingerprint.as_deref(),
            );
        }
    }
    let cached = load(tx, docs, context)?;
    backend::check_base(&request, &cached.head)?;
    let since_base = match backend::since_base_range(&request, &cached.head) {
        // From memory when it holds every revision since the base (with 64 agents at
        // work, each push is based ~64 revisions back); from the op log otherwise.
        Some((base, head)) => match shared.recent.prior_writes(context, base, head) {
            Some(writes) => writes,
            None => backend::prior_writes(read::log_range(tx, context, base, head)?),
        },
        None => Vec::new(),
    };
    let now = now_ms();
    let limits = backend::DecideLimits {
        ownership,
        max_document_bytes: shared.options.max_document_bytes,
        enforce_claims,
        schema: shared.options.schema.as_ref(),
        stamp_seed_fields,
    };
    let request_id = request.request_id.clone();
    let decided = backend::decide(cached, request, &since_base, limits, now, started)?;
    let mut response = decided.response;
    if let Some(r) = &decided.revision {
        append_revision(
            tx,
            context,
            &NewRevision {
                revision: r.revision,
                agent: &r.agent,
                level: r.level,
                ts_ms: r.ts_ms,
                summary: &r.summary,
                request_id: r.request_id.as_deref(),
                edits: &r.edits_json,
                checksum: &r.checksum,
                size: r.size,
                sections: &r.sections_json,
            },
        )?;
        shared.recent.stage(context, r.recent_entry());
    }
    if let Some(r) = decided.revision {
        if cached.take_snapshot_due(shared.options.snapshot_every) {
            write_snapshot(tx, context, cached, shared.options.idempotency_ttl_ms)?;
            if shared.options.retain.is_set() {
                // Before staging, so readers' copy carries the new horizon.
                let report = super::compact::compact_within(
                    tx,
                    context,
                    &cached.head,
                    &shared.options.retain,
                )?;
                cached.head.horizon = report.horizon;
            }
        }
        shared.replicas.stage(
            context,
            super::replica::Revision {
                head: cached.head.clone(),
                edits: r.edits,
            },
        );
    }
    if decided.defer {
        for conflict in &mut response.conflicts {
            let detail = serde_json::to_string(&*conflict).map_err(corrupt)?;
            tx.prepare_cached(
                "INSERT INTO conflicts(context, revision, agent, path, detail, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                context,
                response.revision as i64,
                decided.sample.agent,
                conflict.path,
                detail,
                now as i64
            ])?;
            conflict.id = Some(tx.last_insert_rowid() as u64);
        }
    }
    if let Some(id) = &request_id {
        let text = serde_json::to_string(&response).map_err(corrupt)?;
        tx.prepare_cached(
            "INSERT INTO requests(context, request_id, response, ts_ms, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![context, id, text, now as i64, fingerprint])?;
    }
    insert_sample(tx, context, &decided.sample)?;
    Ok(response)
}

/// One op-log row and the head it moves the context to.
pub(super) struct NewRevision<'a> {
    pub revision: u64,
    pub agent: &'a str,
    pub level: Level,
    pub ts_ms: u64,
    pub summary: &'a str,
    pub request_id: Option<&'a str>,
    /// The edits, as the JSON text the op log stores.
    pub edits: &'a str,
    pub checksum: &'a str,
    pub size: u64,
    /// The sections written, as the JSON text the op log stores.
    pub sections: &'a str,
}

/// Appends a revision to the op log and moves the context's head to it.
pub(super) fn append_revision(
    tx: &Connection,
    context: &str,
    r: &NewRevision<'_>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO oplog(context, revision, agent, level, ts_ms, summary, request_id, edits, checksum, sections)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        context,
        r.revision as i64,
        r.agent,
        r.level.as_str(),
        r.ts_ms as i64,
        r.summary,
        r.request_id,
        r.edits,
        r.checksum,
        r.sections
    ])?;
    tx.prepare_cached(
        "UPDATE contexts SET revision = ?1, checksum = ?2, size = ?3 WHERE name = ?4",
    )?
    .execute(params![
        r.revision as i64,
        r.checksum,
        r.size as i64,
        context
    ])?;
    Ok(())
}

/// Writes a snapshot of the newest document, and drops idempotency keys past their time
/// (here because it runs now and then, not on every push).
pub(super) fn write_snapshot(
    tx: &Connection,
    context: &str,
    cached: &Cached,
    ttl_ms: u64,
) -> Result<(), StoreError> {
    let cutoff = now_ms().saturating_sub(ttl_ms.max(24 * 3600 * 1000));
    tx.prepare_cached("DELETE FROM requests WHERE ts_ms < ?1")?
        .execute([cutoff as i64])?;
    let text = serde_json::to_string(&cached.doc).map_err(corrupt)?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO snapshots(context, revision, doc, checksum) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![context, cached.head.revision as i64, text, cached.head.checksum])?;
    Ok(())
}

pub(super) fn insert_sample(
    tx: &Connection,
    context: &str,
    sample: &SyncSample,
) -> Result<(), StoreError> {
    let paths = if sample.conflict_paths.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&sample.conflict_paths).map_err(corrupt)?)
    };
    tx.prepare_cached(
        "INSERT INTO sync_log(context, agent, level, ts_ms, duration_us, outcome, conflict_paths)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        context,
        sample.agent,
        sample.level.as_str(),
        sample.timestamp_ms as i64,
        sample.duration_us as i64,
        sample.outcome.as_str(),
        paths
    ])?;
    Ok(())
}
