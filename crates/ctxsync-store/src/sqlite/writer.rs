//! The single writer: group commit of pushes, and every other write.
//!
//! The writer drains its queue, runs every waiting push against its in-memory copy of the
//! newest document inside one `BEGIN IMMEDIATE` transaction, commits once, and only then
//! answers. If the commit fails, every push of the batch gets the error and the in-memory
//! copies are dropped, so nothing is acknowledged that is not on disk.

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use ctxsync_core::{checksum_and_size, Level, Ownership, Path, PushRequest, PushResponse};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;
use tracing::warn;

use super::push::{
    append_revision, insert_sample, load, push_one, push_with, write_snapshot, NewRevision,
};
use super::{corrupt, now_ms, read, Cached, Shared};
use crate::backend;
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
        self.shared.settle_staged(outcome.is_ok());
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
        self.shared.settle_staged(result.is_ok());
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
        if let Some(schema) = &self.shared.options.schema {
            schema.check(&document)?;
        }
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
            backend::check_settler(actor, &owner, id)?;
            let conflict: ctxsync_core::Conflict =
                serde_json::from_str(&detail).map_err(|e| corrupt(format!("conflict {id}: {e}")))?;
            let response = match prefer {
                Prefer::Theirs => None,
                Prefer::Mine => {
                    let request = backend::resolve_request(agent, id, &conflict);
                    let open = Ownership::default();
                    let ownership = backend::ownership_for(actor, &shared.options.ownership, &open);
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
                        false,
                    )?;
                    backend::check_settled(agent, &r)?;
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
        let agent = actor.agent.as_str();
        self.transaction(context, |tx, docs, shared| {
            let head = read::head(tx, context)?;
            backend::check_revert(actor, to, &head)?;
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
            let request = backend::revert_request(agent, to, &current.doc, &target);
            // A revert is a push like any other: it may not rewrite what others own,
            // unless an admin asks for it.
            let open = Ownership::default();
            let ownership = backend::ownership_for(actor, &shared.options.ownership, &open);
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
                false,
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

    pub(crate) fn compact_now(
        &mut self,
        context: &str,
        retain: &Retention,
    ) -> Result<CompactReport, StoreError> {
        self.transaction(context, |tx, docs, _| {
            let cached = load(tx, docs, context)?;
            let report = super::compact::compact_within(tx, context, &cached.head, retain)?;
            cached.head.horizon = report.horizon;
            Ok(report)
        })
    }

    pub(crate) fn archive_now(
        &mut self,
        context: &str,
    ) -> Result<Option<PushResponse>, StoreError> {
        self.transaction(context, |tx, docs, shared| {
            super::archive::archive_within(tx, docs, shared, context, Some(0))
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
