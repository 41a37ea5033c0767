//! One push inside the writer's open transaction: idempotency, the conflict check against
//! what was written since the base, evaluation (ownership, claims, limits), the checksum
//! along the edited paths, the op-log row, snapshots, deferred conflicts and the sync
//! sample. Everything here is O(change), apart from snapshots, which are O(document) but
//! written once a document's worth of log has accumulated.

use std::collections::HashMap;
use std::time::Instant;

use ctxsync_core::limits::{Budget, LimitError};
use ctxsync_core::push::{evaluate_at, PriorWrite, Strategy};
use ctxsync_core::{Edit, Level, Ownership, PushRequest, PushResponse};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;

use super::{corrupt, now_ms, read, Cached, Shared};
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
        docs.insert(context.to_owned(), Cached::new(head, doc));
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
    push_with(
        tx,
        docs,
        shared,
        context,
        request,
        started,
        &shared.options.ownership,
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
) -> Result<PushResponse, StoreError> {
    if request.agent.trim().is_empty() {
        return Err(StoreError::Invalid("a push needs an `agent`".into()));
    }
    super::validate_agent_name(&request.agent)?;
    if request
        .request_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty() || id.len() > 128)
    {
        return Err(StoreError::Invalid(
            "a request_id is 1-128 characters (a ULID or UUID); leave it out for none".into(),
        ));
    }
    let fingerprint = request.request_id.as_ref().map(|_| fingerprint(&request));
    if let Some(id) = &request.request_id {
        let stored: Option<(String, Option<String>)> = tx
            .prepare_cached(
                "SELECT response, fingerprint FROM requests WHERE context = ?1 AND request_id = ?2",
            )?
            .query_row(params![context, id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((stored, stored_fingerprint)) = stored {
            // Keys stored before fingerprints were kept replay as they always did.
            if stored_fingerprint.is_some() && stored_fingerprint != fingerprint {
                return Err(StoreError::RequestIdReused(id.clone()));
            }
            let mut response: PushResponse = serde_json::from_str(&stored)
                .map_err(|e| corrupt(format!("stored answer: {e}")))?;
            response.replayed = true;
            return Ok(response);
        }
    }
    let cached = load(tx, docs, context)?;
    let since_base = match request.base_revision {
        Some(base) if base < cached.head.horizon => {
            return Err(StoreError::Gone {
                requested: base,
                horizon: cached.head.horizon,
            })
        }
        Some(base) if base < cached.head.revision => {
            // From memory when it holds every revision since the base (with 64 agents at
            // work, each push is based ~64 revisions back); from the op log otherwise.
            match shared
                .recent
                .prior_writes(context, base, cached.head.revision)
            {
                Some(writes) => writes,
                None => read::log_range(tx, context, base, cached.head.revision)?
                    .into_iter()
                    .flat_map(|entry| {
                        let (revision, agent) = (entry.revision, entry.agent);
                        entry.edits.into_iter().map(move |e| PriorWrite {
                            revision,
                            agent: agent.clone(),
                            path: e.path,
                        })
                    })
                    .collect(),
            }
        }
        _ => Vec::new(),
    };
    let budget = Budget::for_document(cached.head.size, shared.options.max_document_bytes);
    let now = now_ms();
    let evaluation = evaluate_at(
        &mut cached.doc,
        &request,
        cached.head.revision,
        &since_base,
        ownership,
        budget,
        enforce_claims.then_some(now),
    )
    .map_err(|e| match e.limit {
        Some(LimitError::TooLarge { size, limit }) => StoreError::TooLarge { size, limit },
        // Too deep is a malformed change (400), like a path with too many segments.
        Some(LimitError::TooDeep { .. }) => StoreError::Invalid(e.to_string()),
        Some(_) => StoreError::OverLimit(e.to_string()),
        None => StoreError::Invalid(e.to_string()),
    })?;

    let mut response = PushResponse {
        revision: cached.head.revision,
        applied: evaluation.applied,
        conflicts: evaluation.conflicts,
        rejected: evaluation.rejected,
        checksum: cached.head.checksum.clone(),
        replayed: false,
        stale: None,
    };
    if !evaluation.edits.is_empty() {
        // The checksum is updated along the edited paths: O(change), not O(document).
        cached.tree.note_all(&evaluation.edits);
        let (sum, size) = cached.tree.refresh(&cached.doc);
        let limit = shared.options.max_document_bytes;
        if size > limit {
            ctxsync_core::apply::undo(&mut cached.doc, &evaluation.edits)
                .map_err(|e| corrupt(format!("undo after quota: {e}")))?;
            cached.tree.note_all(
                &evaluation
                    .edits
                    .iter()
                    .rev()
                    .map(Edit::inverse)
                    .collect::<Vec<_>>(),
            );
            return Err(StoreError::TooLarge { size, limit });
        }
        let revision = cached.head.revision + 1;
        let edits = serde_json::to_string(&evaluation.edits).map_err(corrupt)?;
        let section_list = ctxsync_core::records::sections_of(&evaluation.edits);
        let sections = serde_json::to_string(&section_list).map_err(corrupt)?;
        let summary = if request.summary.is_empty() {
            let n = response.applied.len();
            let changes = if n == 1 { "change" } else { "changes" };
            format!("{n} {changes} by {}", request.agent)
        } else {
            request.summary.clone()
        };
        append_revision(
            tx,
            context,
            &NewRevision {
                revision,
                agent: &request.agent,
                level: request.level,
                ts_ms: now,
                summary: &summary,
                request_id: request.request_id.as_deref(),
                edits: &edits,
                checksum: &sum,
                size,
                sections: &sections,
            },
        )?;
        shared.recent.stage(
            context,
            super::recent::Entry {
                revision,
                agent: request.agent.as_str().into(),
                sections: section_list.into(),
                paths: evaluation.edits.iter().map(|e| e.path.clone()).collect(),
            },
        );
        cached.head.revision = revision;
        cached.head.checksum = sum.clone();
        cached.head.size = size;
        response.revision = revision;
        response.checksum = sum;
        shared.replicas.stage(
            context,
            super::replica::Revision {
                head: cached.head.clone(),
                edits: evaluation.edits,
            },
        );
        // A snapshot costs O(document); taken once the log since the last one holds as
        // many bytes as the document (and `snapshot_every` revisions), it costs O(change)
        // per push on average, and a read replays at most about a document's worth of log.
        cached.revisions_since_snapshot += 1;
        cached.log_bytes_since_snapshot += edits.len() as u64;
        if cached.revisions_since_snapshot >= shared.options.snapshot_every.max(1)
            && cached.log_bytes_since_snapshot >= cached.head.size
        {
            write_snapshot(tx, context, cached, shared.options.idempotency_ttl_ms)?;
            cached.revisions_since_snapshot = 0;
            cached.log_bytes_since_snapshot = 0;
        }
    }
    if request.strategy == Strategy::Defer {
        for conflict in &mut response.conflicts {
            let detail = serde_json::to_string(&*conflict).map_err(corrupt)?;
            tx.prepare_cached(
                "INSERT INTO conflicts(context, revision, agent, path, detail, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                context,
                response.revision as i64,
                request.agent,
                conflict.path,
                detail,
                now as i64
            ])?;
            conflict.id = Some(tx.last_insert_rowid() as u64);
        }
    }
    if let Some(id) = &request.request_id {
        let text = serde_json::to_string(&response).map_err(corrupt)?;
        tx.prepare_cached(
            "INSERT INTO requests(context, request_id, response, ts_ms, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![context, id, text, now as i64, fingerprint])?;
    }
    let outcome = if !response.conflicts.is_empty() {
        SyncOutcome::Conflict
    } else if !response.rejected.is_empty() {
        SyncOutcome::Rejected
    } else {
        SyncOutcome::Ok
    };
    insert_sample(
        tx,
        context,
        &SyncSample {
            agent: request.agent,
            level: request.level,
            timestamp_ms: now,
            duration_us: started.elapsed().as_micros() as u64,
            outcome,
            conflict_paths: response.conflicts.iter().map(|c| c.path.clone()).collect(),
        },
    )?;
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

/// What a request asks for, apart from its key: a replay with the same key must ask for the
/// same thing, or it is a different request that reused a key.
fn fingerprint(request: &PushRequest) -> String {
    let mut value = serde_json::to_value(request).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        fields.remove("request_id");
    }
    // The older format on purpose: keys stored before the structural checksum carry it.
    ctxsync_core::legacy_checksum(&value)
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
