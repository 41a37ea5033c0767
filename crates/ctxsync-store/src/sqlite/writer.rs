//! The single writer: group commit of pushes, and every other write.
//!
//! The writer drains its queue, runs every waiting push against its in-memory copy of the
//! newest document inside one `BEGIN IMMEDIATE` transaction, commits once, and only then
//! answers. If the commit fails, every push of the batch gets the error and the in-memory
//! copies are dropped, so nothing is acknowledged that is not on disk.

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use ctxsync_core::limits::{Budget, LimitError};
use ctxsync_core::push::{evaluate_at, PriorWrite, Strategy};
use ctxsync_core::{
    checksum_and_size, Change, Edit, Level, Ownership, Path, PushRequest, PushResponse,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;
use tracing::warn;

use super::{corrupt, now_ms, read, Cached, Shared};
use crate::error::StoreError;
use crate::types::*;

/// Called with the answer to a push once it is durable (or failed).
pub(crate) type PushDone = crate::PushCallback;

pub(crate) enum Job {
    Push {
        context: String,
        request: PushRequest,
        started: Instant,
        done: PushDone,
    },
    Exec(Box<dyn FnOnce(&mut Writer) + Send>),
    /// Fire and forget: committed with the next batch (see [`super::presence`]).
    Presence(super::presence::Update),
}

/// Commits between background checkpoints (each commit appends a few WAL frames, so this
/// keeps the WAL around SQLite's default of 1000 frames).
const CHECKPOINT_EVERY_COMMITS: u32 = 200;

pub(crate) struct Writer {
    conn: Connection,
    /// Wakes the checkpointer thread; `None` when this writer checkpoints inline.
    checkpoints: Option<mpsc::SyncSender<()>>,
    commits_since_checkpoint: u32,
    shared: Arc<Shared>,
    /// The newest document per context as this writer last committed or read it.
    docs: HashMap<String, Cached>,
    /// Presence updates waiting for the next commit.
    presence: Vec<super::presence::Update>,
}

impl Writer {
    /// The writer's own connection, for small writes outside the push path (tokens).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn new(conn: Connection, shared: Arc<Shared>) -> Self {
        Self {
            conn,
            checkpoints: None,
            commits_since_checkpoint: 0,
            shared,
            docs: HashMap::new(),
            presence: Vec::new(),
        }
    }

    pub(crate) fn run(mut self, jobs: mpsc::Receiver<Job>) {
        let max = self.shared.options.max_batch.max(1);
        let window = self.shared.options.group_commit_window;
        // How many pushes the last batch held: that many writers are likely waiting to
        // send their next push the moment they get their answer, so the writer waits
        // (briefly) for them instead of committing a batch of one. When fewer come, the
        // window passes and the expectation drops, so a lone writer pays it only once.
        let mut expected = 1;
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            let deadline = Instant::now() + window;
            while batch.len() < max {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(mpsc::TryRecvError::Empty) if batch.len() < expected => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match jobs.recv_timeout(left) {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    Err(_) => break,
                }
            }
            expected = batch
                .iter()
                .filter(|job| matches!(job, Job::Push { .. }))
                .count()
                .max(1);
            let mut pushes = Vec::new();
            for job in batch {
                match job {
                    Job::Push {
                        context,
                        request,
                        started,
                        done,
                    } => pushes.push((context, request, started, done)),
                    Job::Exec(f) => {
                        // Keep the queue's order: pushes sent before this job commit first.
                        self.commit_pushes(std::mem::take(&mut pushes));
                        f(&mut self);
                    }
                    Job::Presence(update) => self.presence.push(update),
                }
            }
            self.commit_pushes(pushes);
            self.flush_presence();
            self.maybe_checkpoint();
        }
    }

    /// Moves WAL checkpoints off the commit path: SQLite would otherwise copy the WAL
    /// into the database (and fsync it) inside the commit of whichever push crossed the
    /// threshold. A checkpointer thread with its own connection does it in the background.
    pub(crate) fn checkpoint_in_background(
        &mut self,
        path: &std::path::Path,
    ) -> Result<(), StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("ctxsync-store-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        warn!(error = %e, "background WAL checkpoint failed; will retry");
                    }
                }
            })
            .map_err(|e| StoreError::Invalid(format!("cannot start the checkpointer: {e}")))?;
        self.checkpoints = Some(wake);
        Ok(())
    }

    fn maybe_checkpoint(&mut self) {
        let Some(wake) = &self.checkpoints else {
            return;
        };
        self.commits_since_checkpoint += 1;
        if self.commits_since_checkpoint >= CHECKPOINT_EVERY_COMMITS {
            // A full channel means one is already pending: nothing to add.
            if wake.try_send(()).is_ok() {
                self.commits_since_checkpoint = 0;
            }
        }
    }

    fn commit_pushes(&mut self, pushes: Vec<(String, PushRequest, Instant, PushDone)>) {
        if pushes.is_empty() {
            return;
        }
        let mut replies = Vec::with_capacity(pushes.len());
        let mut requests = Vec::with_capacity(pushes.len());
        for (context, request, started, reply) in pushes {
            replies.push(reply);
            requests.push((context, request, started));
        }
        if let Err(e) = self.check_durable() {
            for done in replies {
                done(Err(StoreError::ReadOnly(e.clone())));
            }
            return;
        }
        // Each context once, to drop the writer's copies if the batch fails.
        let touched: std::collections::BTreeSet<String> =
            requests.iter().map(|p| p.0.clone()).collect();
        let outcome = (|| -> Result<Vec<Result<PushResponse, StoreError>>, StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut results = Vec::with_capacity(requests.len());
            // Presence rides along with the pushes' commit (a failure there only loses
            // presence, which the next answer records again).
            if !self.presence.is_empty() {
                if let Err(e) = super::presence::write(&tx, &self.presence) {
                    warn!(error = %e, "presence not recorded");
                }
                self.presence.clear();
            }
            for (context, request, started) in requests {
                match push_one(
                    &tx,
                    &mut self.docs,
                    &self.shared,
                    &context,
                    request,
                    started,
                ) {
                    Err(e @ (StoreError::Sqlite(_) | StoreError::Corrupt(_))) => return Err(e),
                    other => results.push(other),
                }
            }
            tx.commit()?;
            self.shared.health.note_wal();
            Ok(results)
        })();
        match &outcome {
            Ok(_) => {
                self.shared.recent.commit();
                // Readers' copies learn the batch's edits, not a copy of each document.
                self.shared.replicas.commit();
            }
            Err(_) => {
                self.shared.recent.abort();
                self.shared.replicas.abort();
            }
        }
        match outcome {
            Ok(results) => {
                for (done, result) in replies.into_iter().zip(results) {
                    done(result);
                }
            }
            Err(e) => {
                warn!(error = %e, "group commit failed; no push of the batch was applied");
                for context in &touched {
                    self.docs.remove(context);
                    self.shared.forget(context);
                }
                let message = e.to_string();
                for done in replies {
                    done(Err(StoreError::CommitFailed(message.clone())));
                }
            }
        }
    }

    /// Commits presence updates that no push took along.
    fn flush_presence(&mut self) {
        if self.presence.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.presence);
        if self.check_durable().is_err() {
            return;
        }
        let result = (|| -> Result<(), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            super::presence::write(&tx, &updates)?;
            tx.commit()?;
            self.shared.health.note_wal();
            Ok(())
        })();
        if let Err(e) = result {
            warn!(error = %e, "presence not recorded");
        }
    }

    /// Gives readers a copy of the writer's document unless the edits committed with it
    /// already brought theirs to the same revision.
    fn publish(&self, context: &str) {
        if let Some(cached) = self.docs.get(context) {
            if self.shared.replicas.newest_revision(context) != Some(cached.head.revision) {
                self.shared.publish(context, Arc::new(cached.clone()));
            }
        }
    }

    /// Refuses to commit once the WAL has lost its name: what it holds is copied into the
    /// database first (the handle still reads it), so every push acknowledged so far stays,
    /// and nothing more is acknowledged that a crash would lose.
    fn check_durable(&mut self) -> Result<(), String> {
        if let Some(reason) = self.shared.health.stopped() {
            return Err(reason);
        }
        let Some(damage) = self.shared.health.wal_damage() else {
            return Ok(());
        };
        let saved = self
            .conn
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |r| r.get::<_, i64>(0))
            .map_err(|e| e.to_string());
        let wal = self.shared.health.wal_path().display().to_string();
        let reason = match saved {
            Ok(0) if damage == "deleted" => format!(
                "the write-ahead log {wal} was deleted while the store was open; every acknowledged \
                 push was copied into the database; writes are refused until the store is reopened \
                 (restart the server)"
            ),
            other => format!(
                "the write-ahead log {wal} was {damage} while the store was open; what it held may \
                 not all be in the database ({other:?}); writes are refused; back up the database \
                 and run `ctxsync verify` before restarting"
            ),
        };
        tracing::error!("{reason}");
        self.shared.health.stop(reason.clone());
        Err(reason)
    }

    /// Runs `f` in its own immediate transaction; on failure forgets cached documents.
    pub(super) fn transaction<T>(
        &mut self,
        context: &str,
        f: impl FnOnce(&Transaction<'_>, &mut HashMap<String, Cached>, &Shared) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.check_durable().map_err(StoreError::ReadOnly)?;
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx, &mut self.docs, &self.shared)?;
            tx.commit()?;
            self.shared.health.note_wal();
            Ok(value)
        })();
        match &result {
            Ok(_) => {
                self.shared.recent.commit();
                self.shared.replicas.commit();
            }
            Err(_) => {
                self.shared.recent.abort();
                self.shared.replicas.abort();
            }
        }
        match &result {
            Ok(_) => self.publish(context),
            Err(_) => {
                self.docs.remove(context);
                self.shared.forget(context);
            }
        }
        result
    }

    pub(crate) fn create_context(
        &mut self,
        name: &str,
        document: Value,
    ) -> Result<Head, StoreError> {
        let limit = self.shared.options.max_document_bytes;
        self.transaction(name, |tx, docs, _| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM contexts WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::Exists(name.to_owned()));
            }
            let (sum, size) = checksum_and_size(&document);
            if size > limit {
                return Err(StoreError::TooLarge { size, limit });
            }
            let text = serde_json::to_string(&document).map_err(corrupt)?;
            let now = now_ms() as i64;
            tx.execute(
                "INSERT INTO contexts(name, revision, checksum, size, horizon, created_ms)
                 VALUES (?1, 0, ?2, ?3, 0, ?4)",
                params![name, sum, size as i64, now],
            )?;
            tx.execute(
                "INSERT INTO snapshots(context, revision, doc, checksum) VALUES (?1, 0, ?2, ?3)",
                params![name, text, sum],
            )?;
            let head = Head {
                context: name.to_owned(),
                revision: 0,
                checksum: sum,
                size,
                horizon: 0,
            };
            docs.insert(name.to_owned(), Cached::new(head.clone(), document));
            Ok(head)
        })
    }

    pub(crate) fn resolve_conflict(
        &mut self,
        context: &str,
        id: u64,
        prefer: Prefer,
        actor: &Actor,
    ) -> Result<Option<PushResponse>, StoreError> {
        let agent = actor.agent.as_str();
        self.transaction(context, |tx, docs, shared| {
            let row: Option<(String, String)> = tx
                .query_row(
                    "SELECT detail, agent FROM conflicts WHERE id = ?1 AND context = ?2 AND status = 'open'",
                    params![id as i64, context],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (detail, owner) = row.ok_or(StoreError::NoSuchConflict(id))?;
            if actor.role == Role::Viewer {
                return Err(StoreError::Forbidden("a viewer cannot settle conflicts".into()));
            }
            if owner != agent && actor.role != Role::Admin {
                return Err(StoreError::Forbidden(format!(
                    "conflict {id} is {owner}'s to settle (or an admin's), not {agent}'s"
                )));
            }
            let conflict: ctxsync_core::Conflict =
                serde_json::from_str(&detail).map_err(|e| corrupt(format!("conflict {id}: {e}")))?;
            let response = match prefer {
                Prefer::Theirs => None,
                Prefer::Mine => {
                    let request = PushRequest {
                        agent: agent.to_owned(),
                        level: Level::Checkpoint,
                        base_revision: None,
                        request_id: None,
                        strategy: Strategy::Force,
                        summary: format!("resolve conflict {id} at {} (mine)", conflict.path),
                        changes: vec![ctxsync_core::push::force_change(&conflict)],
                    };
                    let open = Ownership::default();
                    let ownership = if actor.role == Role::Admin {
                        &open
                    } else {
                        &shared.options.ownership
                    };
                    // Settling "mine" is forced like the push it stands for.
                    let r = push_with(
                        tx,
                        docs,
                        shared,
                        context,
                        request,
                        Instant::now(),
                        ownership,
                        true,
                    )?;
                    if let Some(rejected) = r.rejected.first() {
                        return Err(StoreError::Invalid(format!(
                            "{agent} may not write {} (owners: {})",
                            rejected.path,
                            rejected.owners.join(", ")
                        )));
                    }
                    Some(r)
                }
            };
            tx.execute(
                "UPDATE conflicts SET status = 'resolved', resolution = ?1, resolved_ms = ?2 WHERE id = ?3",
                params![
                    match prefer {
                        Prefer::Mine => "mine",
                        Prefer::Theirs => "theirs",
                    },
                    now_ms() as i64,
                    id as i64
                ],
            )?;
            Ok(response)
        })
    }

    pub(crate) fn revert(
        &mut self,
        context: &str,
        to: u64,
        actor: &Actor,
    ) -> Result<PushResponse, StoreError> {
        if actor.role == Role::Viewer {
            return Err(StoreError::Forbidden("a viewer cannot revert".into()));
        }
        let agent = actor.agent.as_str();
        self.transaction(context, |tx, docs, shared| {
            let head = read::head(tx, context)?;
            if to > head.revision {
                return Err(StoreError::Future {
                    requested: to,
                    current: head.revision,
                });
            }
            if to < head.horizon {
                return Err(StoreError::Gone {
                    requested: to,
                    horizon: head.horizon,
                });
            }
            match load(tx, docs, context) {
                Ok(_) => {}
                // The newest document cannot be rebuilt (an op-log row after the last
                // snapshot is unreadable): an admin's revert to a readable revision is
                // the way back.
                Err(StoreError::Corrupt(reason)) if actor.role == Role::Admin => {
                    return rebuild_from(tx, docs, shared, context, head, to, agent, &reason);
                }
                Err(StoreError::Corrupt(reason)) => {
                    return Err(StoreError::Corrupt(format!(
                        "{reason}; an admin's `revert --to R` (R before the unreadable revision) \
                         makes the context usable again"
                    )))
                }
                Err(e) => return Err(e),
            }
            let current = load(tx, docs, context)?;
            let target = read::doc_at(tx, context, to)?;
            let changes = whole_key_changes(&current.doc, &target);
            let request = PushRequest {
                agent: agent.to_owned(),
                level: Level::Checkpoint,
                base_revision: None,
                request_id: None,
                // All or nothing: half a revert is a state no revision ever had.
                strategy: Strategy::Atomic,
                summary: format!("revert to revision {to}"),
                changes,
            };
            // A revert is a push like any other: it may not rewrite what others own,
            // unless an admin asks for it.
            let open = Ownership::default();
            let ownership = if actor.role == Role::Admin {
                &open
            } else {
                &shared.options.ownership
            };
            push_with(
                tx,
                docs,
                shared,
                context,
                request,
                Instant::now(),
                ownership,
                // An admin's revert is the way out of any state, claims included.
                actor.role != Role::Admin,
            )
        })
    }

    pub(crate) fn record_sync(
        &mut self,
        context: &str,
        sample: &SyncSample,
    ) -> Result<(), StoreError> {
        self.transaction(context, |tx, _, _| {
            read::head(tx, context)?;
            insert_sample(tx, context, sample)
        })
    }

    pub(crate) fn snapshot_now(&mut self, context: &str) -> Result<Head, StoreError> {
        let ttl = self.shared.options.idempotency_ttl_ms;
        self.transaction(context, |tx, docs, _| {
            let cached = load(tx, docs, context)?;
            write_snapshot(tx, context, cached, ttl)?;
            Ok(cached.head.clone())
        })
    }
}

/// A new revision equal to revision `to`, written as one root replacement with a snapshot
/// beside it, for a context whose newest document cannot be rebuilt from its log: reads
/// start from the new snapshot, so the context is usable again, and the unreadable row
/// stays in the history (and in `verify`'s report) as it was.
#[allow(clippy::too_many_arguments)]
fn rebuild_from(
    tx: &Transaction<'_>,
    docs: &mut HashMap<String, Cached>,
    shared: &Shared,
    context: &str,
    head: Head,
    to: u64,
    agent: &str,
    reason: &str,
) -> Result<PushResponse, StoreError> {
    let target = read::doc_at(tx, context, to)?;
    let (sum, size) = checksum_and_size(&target);
    let revision = head.revision + 1;
    let edit = ctxsync_core::Edit {
        op: ctxsync_core::EditOp::Replace,
        path: Path::root(),
        pointer: String::new(),
        // What was there cannot be read; the history says why.
        old: None,
        new: Some(target.clone()),
    };
    let edits = serde_json::to_string(&[edit]).map_err(corrupt)?;
    let summary =
        format!("rebuild from revision {to}: the newest document could not be read ({reason})");
    append_revision(
        tx,
        context,
        &NewRevision {
            revision,
            agent,
            level: Level::Checkpoint,
            ts_ms: now_ms(),
            summary: &summary,
            request_id: None,
            edits: &edits,
            checksum: &sum,
            size,
            sections: "[\"\"]",
        },
    )?;
    let cached = Cached::new(
        Head {
            revision,
            checksum: sum.clone(),
            size,
            ..head
        },
        target,
    );
    write_snapshot(tx, context, &cached, shared.options.idempotency_ttl_ms)?;
    docs.insert(context.to_owned(), cached);
    Ok(PushResponse {
        revision,
        applied: vec![ctxsync_core::push::Applied {
            index: 0,
            op: "set".into(),
            path: String::new(),
        }],
        conflicts: Vec::new(),
        rejected: Vec::new(),
        checksum: sum,
        replayed: false,
        stale: None,
    })
}

/// The changes that turn `from` into `to` exactly: whole top-level values, so list order
/// and everything else come back byte for byte.
fn whole_key_changes(from: &Value, to: &Value) -> Vec<Change> {
    let (Some(from), Some(to)) = (from.as_object(), to.as_object()) else {
        return vec![Change::set(Path::root(), to.clone())];
    };
    let mut changes = Vec::new();
    for key in from.keys() {
        if !to.contains_key(key) {
            changes.push(Change {
                path: Path::root().key(key),
                op: ctxsync_core::Op::Remove,
                expect: None,
            });
        }
    }
    for (key, value) in to {
        if from.get(key) != Some(value) {
            changes.push(Change::set(Path::root().key(key), value.clone()));
        }
    }
    changes
}

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

fn push_one(
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
struct NewRevision<'a> {
    revision: u64,
    agent: &'a str,
    level: Level,
    ts_ms: u64,
    summary: &'a str,
    request_id: Option<&'a str>,
    /// The edits, as the JSON text the op log stores.
    edits: &'a str,
    checksum: &'a str,
    size: u64,
    /// The sections written, as the JSON text the op log stores.
    sections: &'a str,
}

/// Appends a revision to the op log and moves the context's head to it.
fn append_revision(tx: &Connection, context: &str, r: &NewRevision<'_>) -> Result<(), StoreError> {
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
fn write_snapshot(
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

fn insert_sample(tx: &Connection, context: &str, sample: &SyncSample) -> Result<(), StoreError> {
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
