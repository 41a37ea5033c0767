//! `sync`: push the working copy's edits, merge the remote document back, move the base.

use ctxsync_core::level::PeriodicPolicy;
use ctxsync_core::{
    diff, merge3, Level, MergeConflict, Prefer, PushRequest, PushResponse, Strategy,
};
use serde::Serialize;
use serde_json::Value;

use crate::workcopy::{Base, WorkingCopy};
use crate::ClientError;

/// What kind of failure a backend reports, so the CLI can choose its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The request is wrong (bad path, unknown context, ...).
    Input,
    /// The backend could not be reached or failed.
    Unavailable,
    /// The revision asked about is below the horizon (compacted away).
    Gone,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub message: String,
}

/// Where a working copy syncs to: the embedded store or a server.
pub trait Backend {
    /// The current revision, checksum and document of `context`.
    fn read(&self, context: &str) -> Result<(u64, String, Value), BackendError>;
    /// The current revision, checksum and document, given that the caller already has
    /// `base` at `base_revision` (a backend may send just the difference).
    fn read_newer(
        &self,
        context: &str,
        base_revision: u64,
        base: &Value,
    ) -> Result<(u64, String, Value), BackendError> {
        let _ = (base_revision, base);
        self.read(context)
    }
    fn push(&self, context: &str, request: PushRequest) -> Result<PushResponse, BackendError>;
    /// Notes a periodic sync that was deferred (for the metrics).
    fn record_deferred(&self, context: &str, agent: &str) -> Result<(), BackendError>;
}

/// How to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    // `request_id`: empty derives one from the edits and their base (see
    // `derived_request_id`), which is what retries want.
    pub context: String,
    pub level: Level,
    pub strategy: Strategy,
    pub periodic: PeriodicPolicy,
    pub now_unix: u64,
    pub request_id: String,
    pub summary: String,
}

/// What a sync did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub agent: String,
    pub level: Level,
    /// Local changes found in the working copy.
    pub local_changes: usize,
    /// Set when the periodic policy held the changes back.
    pub deferred: bool,
    pub pushed: Option<PushResponse>,
    /// The revision the working copy is now based on.
    pub revision: u64,
    pub checksum: String,
    /// Paths where the merge back kept the remote value over a local edit.
    pub merge_conflicts: Vec<MergeConflict>,
    /// Set when the working copy's base revision had been compacted away: the edits
    /// were pushed with their field tests only (no base revision), and the base is now
    /// a fresh pull.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebased_from: Option<u64>,
}

/// The idempotency key of a working-copy push: the same edits from the same base give the
/// same key, so a sync retried after its answer was lost is answered `replayed` instead
/// of colliding with its own earlier push.
fn derived_request_id(
    context: &str,
    agent: &str,
    base: u64,
    changes: &[ctxsync_core::Change],
) -> String {
    let changes: Vec<Value> = changes.iter().map(|c| c.to_json()).collect();
    let key =
        serde_json::json!({"context": context, "agent": agent, "base": base, "changes": changes});
    format!("wc-{}", &ctxsync_core::checksum(&key)[..32])
}

/// Pulls `context` into a fresh working copy (overwriting it).
pub fn pull_into(
    wc: &WorkingCopy,
    backend: &dyn Backend,
    context: &str,
    keep_periodic: Option<u64>,
) -> Result<Base, ClientError> {
    let (revision, checksum, document) = backend.read(context)?;
    let base = Base {
        context: context.to_owned(),
        revision,
        checksum,
        document,
        last_periodic_flush: keep_periodic,
    };
    wc.save(&base.document, &base)?;
    Ok(base)
}

/// Writes the file of a working copy that has gone (deleted by hand, or with its folder)
/// again: from its base when that is still there (an editor may yet save a file derived
/// from it, which must diff against that base; a sync then brings it up to date), else
/// pulled afresh. Never replaces a file: `None`, with nothing written, when the file
/// exists again.
pub fn recreate_working_copy(
    wc: &WorkingCopy,
    backend: &dyn Backend,
    context: &str,
) -> Result<Option<Base>, ClientError> {
    if wc.file().exists() {
        return Ok(None);
    }
    let base = match wc.load_base() {
        Ok(base) if base.context == context => base,
        _ => {
            let (revision, checksum, document) = backend.read(context)?;
            Base {
                context: context.to_owned(),
                revision,
                checksum,
                document,
                last_periodic_flush: None,
            }
        }
    };
    Ok(wc.create(&base.document, &base)?.then_some(base))
}

/// Local changes of the working copy against its base.
pub fn local_changes(
    wc: &WorkingCopy,
) -> Result<(Base, Value, Vec<ctxsync_core::Change>), ClientError> {
    let base = wc.load_base()?;
    let mine = wc.load_mine()?;
    // The store stamps these itself on every sync: a working copy that shows an older
    // stamp has not edited it.
    let changes = diff(
        &ctxsync_core::template::without_stamps(&base.document),
        &ctxsync_core::template::without_stamps(&mine),
    );
    Ok((base, mine, changes))
}

/// Syncs one agent's working copy.
pub fn sync(
    wc: &WorkingCopy,
    backend: &dyn Backend,
    options: &SyncOptions,
) -> Result<SyncReport, ClientError> {
    let (base, mine, changes) = local_changes(wc)?;
    if base.context != options.context {
        return Err(ClientError::Input(format!(
            "the working copy of {:?} is of context {:?}, not {:?}",
            wc.agent, base.context, options.context
        )));
    }
    let mut last_periodic_flush = base.last_periodic_flush;
    if options.level == Level::Periodic && !changes.is_empty() {
        let due = options
            .periodic
            .due(base.last_periodic_flush, options.now_unix, &changes);
        if due.is_none() {
            backend.record_deferred(&options.context, &wc.agent)?;
            return Ok(SyncReport {
                agent: wc.agent.clone(),
                level: options.level,
                local_changes: changes.len(),
                deferred: true,
                pushed: None,
                revision: base.revision,
                checksum: base.checksum,
                merge_conflicts: Vec::new(),
                rebased_from: None,
            });
        }
        last_periodic_flush = Some(options.now_unix);
    }
    let local_changes = changes.len();
    let mut rebased_from = None;
    let pushed = if changes.is_empty() {
        None
    } else {
        let mut request = PushRequest {
            agent: wc.agent.clone(),
            level: options.level,
            base_revision: Some(base.revision),
            request_id: Some(if options.request_id.is_empty() {
                derived_request_id(&options.context, &wc.agent, base.revision, &changes)
            } else {
                options.request_id.clone()
            }),
            strategy: options.strategy,
            summary: options.summary.clone(),
            changes,
        };
        match backend.push(&options.context, request.clone()) {
            // The base was compacted away: every change carries its field test (`from`,
            // from the diff against the base), which is what decides conflicts without
            // a base revision; so push again without one.
            Err(e) if e.kind == BackendErrorKind::Gone => {
                rebased_from = Some(base.revision);
                request.base_revision = None;
                if options.request_id.is_empty() {
                    request.request_id = Some(format!(
                        "{}-rebased",
                        request.request_id.unwrap_or_default()
                    ));
                }
                Some(backend.push(&options.context, request)?)
            }
            other => Some(other?),
        }
    };
    let (revision, checksum, theirs) =
        backend.read_newer(&options.context, base.revision, &base.document)?;
    // A file left alone by an earlier sync shows older stamps: not an edit to merge.
    let mine_merged = ctxsync_core::template::with_stamps_of(&mine, &base.document);
    let merge = merge3(&base.document, &mine_merged, &theirs, Prefer::Theirs);
    let new_base = Base {
        context: options.context.clone(),
        revision,
        checksum: checksum.clone(),
        document: theirs,
        last_periodic_flush,
    };
    write_back(wc, &mine, &merge.merged, &new_base)?;
    Ok(SyncReport {
        agent: wc.agent.clone(),
        level: options.level,
        local_changes,
        deferred: false,
        pushed,
        revision,
        checksum,
        merge_conflicts: merge.conflicts,
        rebased_from,
    })
}

/// How often [`write_back`] re-merges a file the agent keeps saving before it writes
/// regardless.
const WRITE_BACK_ATTEMPTS: usize = 5;

/// Writes `merged` (what the file read as `mine` becomes with the remote document merged
/// in) and then `new_base`; returns the document the file now holds.
///
/// The agent may save the file while we talk to the backend (`ctxsync watch` syncs while
/// it works): those newer edits are folded in (they win, and stay local changes against
/// the new base), and the file is replaced only if it still holds what was merged into,
/// re-checked right before the rename. A file that already says what the merge says is
/// left alone (no rewrite to race with an editor) and only the base moves.
fn write_back(
    wc: &WorkingCopy,
    mine: &Value,
    merged: &Value,
    new_base: &Base,
) -> Result<Value, ClientError> {
    for _ in 0..WRITE_BACK_ATTEMPTS {
        let (bytes, again) = match wc.read_mine() {
            Ok(read) => read,
            // Deleted meanwhile: that is the agent's latest word, not resurrected here
            // (`watch` writes a deleted working copy again, and says so).
            Err(_) if !wc.file().exists() => {
                wc.save_base(new_base)?;
                return Ok(merged.clone());
            }
            // Unreadable now (mid-save, or broken): replaced below as before, since the
            // base must not move without the remote changes in the file.
            Err(_) => break,
        };
        let target = if again == *mine {
            merged.clone()
        } else {
            merge3(mine, &again, merged, Prefer::Mine).merged
        };
        // A file that differs from the merge only in the store's stamps is left alone
        // too (its comments and layout stay): they are not the agent's to edit.
        if target == again
            || ctxsync_core::template::without_stamps(&target)
                == ctxsync_core::template::without_stamps(&again)
        {
            wc.save_base(new_base)?;
            return Ok(again);
        }
        if wc.replace_if_unchanged(&bytes, &target)? {
            wc.save_base(new_base)?;
            return Ok(target);
        }
    }
    wc.save(merged, new_base)?;
    Ok(merged.clone())
}

/// Merges the backend's newer revisions into the working copy while its local edits stay
/// pending (periodic edits that are not due yet); the base moves to the remote revision.
/// `None`, with nothing written, when the edits collide with the remote changes: the
/// caller should push them so the store decides (and keeps) the conflict.
pub fn merge_remote_keeping_edits(
    wc: &WorkingCopy,
    backend: &dyn Backend,
    context: &str,
) -> Result<Option<SyncReport>, ClientError> {
    let (base, mine, _) = local_changes(wc)?;
    let (revision, checksum, theirs) =
        backend.read_newer(context, base.revision, &base.document)?;
    let mine_merged = ctxsync_core::template::with_stamps_of(&mine, &base.document);
    let merge = merge3(&base.document, &mine_merged, &theirs, Prefer::Mine);
    if !merge.conflicts.is_empty() {
        return Ok(None);
    }
    let new_base = Base {
        context: context.to_owned(),
        revision,
        checksum: checksum.clone(),
        document: theirs,
        last_periodic_flush: base.last_periodic_flush,
    };
    let written = write_back(wc, &mine, &merge.merged, &new_base)?;
    let pending = diff(
        &ctxsync_core::template::without_stamps(&new_base.document),
        &ctxsync_core::template::without_stamps(&written),
    )
    .len();
    Ok(Some(SyncReport {
        agent: wc.agent.clone(),
        level: Level::Periodic,
        local_changes: pending,
        deferred: true,
        pushed: None,
        revision,
        checksum,
        merge_conflicts: Vec::new(),
        rebased_from: None,
    }))
}
