//! Writing revisions: one push inside an open transaction, and the writer task that
//! commits the pushes waiting in its queue together (group commit).
//!
//! A revision is taken by an in-place compare-and-swap on the context's head row,
//! `UPDATE contexts SET revision = revision + 1 … WHERE name = $1 AND revision = $2`,
//! under READ COMMITTED, with the op-log row inserted in the same transaction: never a
//! sequence, never a read-compute-write-back. The push is decided (through
//! `ctxsync_core::evaluate`, by the shared [`backend::decide`]) against the newest
//! document at the head the transaction read; when the CAS updates no row, another
//! server committed in between (READ COMMITTED re-checks the `WHERE` on the row it
//! waited for), so the push is decided again against the new head. Once a transaction
//! updated a context's head it holds that row's lock until it commits, so every later
//! push of the batch to the same context sees the head it wrote itself.
//!
//! A database error aborts the whole transaction: the batch is rolled back, the cached
//! documents it touched are dropped, and it is run again from the start on a
//! serialization failure, a deadlock or a unique violation (another server stored the
//! same request id at once: the retry replays its answer); otherwise every push of the
//! batch gets the error. A push refused on its own (invalid, over the quota) is answered
//! alone and the rest of the batch commits.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ctxsync_core::{Ownership, PushRequest, PushResponse};
use ctxsync_store::backend::{self, Cached};
use ctxsync_store::{PushCallback, StoreError, SyncSample};
use tokio::sync::mpsc;

use crate::error::{corrupt, describe, TxError};
use crate::pool::Conn;
use crate::read;
use crate::store::{now_ms, Shared};

/// How often a push is decided again when its CAS finds the head moved by another server.
const CAS_ATTEMPTS: usize = 64;
/// How often a whole transaction is run again after a retryable database error.
pub(crate) const TX_ATTEMPTS: u32 = 8;

/// The newest documents a transaction works on, and the contexts whose head row it
/// has updated (and so holds locked until it ends: no other transaction can move those
/// heads, so their documents need no re-check against the database).
#[derive(Default)]
pub(crate) struct TxDocs {
    docs: HashMap<String, Cached>,
    held: HashSet<String>,
}

impl TxDocs {
    pub fn get(&self, context: &str) -> Option<&Cached> {
        self.docs.get(context)
    }

    fn get_mut(&mut self, context: &str) -> Result<&mut Cached, TxError> {
        self.docs
            .get_mut(context)
            .ok_or_else(|| corrupt("document cache").into())
    }

    /// Forgets a document (its transaction failed, or it may have moved).
    pub fn forget(&mut self, context: &str) {
        self.docs.remove(context);
        self.held.remove(context);
    }

    /// A new transaction starts: it holds no head row yet.
    pub fn release(&mut self) {
        self.held.clear();
    }
}

/// The newest document of `context`, reloaded when the head moved under it (not looked
/// up again while this transaction holds the head row).
pub(crate) async fn load<'a>(
    conn: &mut Conn,
    docs: &'a mut TxDocs,
    context: &str,
) -> Result<&'a mut Cached, TxError> {
    if docs.held.contains(context) && docs.docs.contains_key(context) {
        return docs.get_mut(context);
    }
    let head = read::head(conn, context).await?;
    if !docs.docs.get(context).is_some_and(|c| c.head == head) {
        let doc = read::doc_at(conn, context, head.revision).await?;
        docs.docs.insert(context.to_owned(), Cached::new(head, doc));
    }
    docs.get_mut(context)
}

/// How a push is checked, besides the request.
pub(crate) struct PushRules<'a> {
    pub ownership: &'a Ownership,
    pub enforce_claims: bool,
    /// Stage the revision in the shared recent-revisions cache (only the writer task does:
    /// the cache settles what was staged when the writer's transaction ends).
    pub stage_recent: bool,
    /// An agent's own push: stamp the seed's `last_sync` / `sync_level`.
    pub stamp_seed_fields: bool,
}

/// One push inside the caller's open transaction.
pub(crate) async fn push_in_tx(
    conn: &mut Conn,
    docs: &mut TxDocs,
    shared: &Shared,
    context: &str,
    request: PushRequest,
    started: Instant,
    rules: PushRules<'_>,
) -> Result<PushResponse, TxError> {
    let fingerprint = backend::check_request(&request)?;
    if let Some(id) = &request.request_id {
        let stored = conn
            .query_opt(
                "SELECT response, fingerprint FROM requests WHERE context = $1 AND request_id = $2",
                &[&context, id],
            )
            .await?;
        if let Some(row) = stored {
            let stored_fingerprint: Option<String> = row.get(1);
            return Ok(backend::replay_stored(
                id,
                row.get(0),
                stored_fingerprint.as_deref(),
                fingerprint.as_deref(),
            )?);
        }
    }
    let limits = backend::DecideLimits {
        ownership: rules.ownership,
        max_document_bytes: shared.options.max_document_bytes,
        enforce_claims: rules.enforce_claims,
        schema: shared.options.schema.as_ref(),
        stamp_seed_fields: rules.stamp_seed_fields,
    };
    for _ in 0..CAS_ATTEMPTS {
        let cached = load(conn, docs, context).await?;
        backend::check_base(&request, &cached.head)?;
        let since_base = match backend::since_base_range(&request, &cached.head) {
            Some((base, head)) => match shared.recent.prior_writes(context, base, head) {
                Some(writes) => writes,
                None => {
                    // `cached` borrows `docs`; the op log is read and the copy found again.
                    let entries = read::log_range(conn, context, base, head).await?;
                    backend::prior_writes(entries)
                }
            },
            None => Vec::new(),
        };
        let cached = docs.get_mut(context)?;
        let now = now_ms();
        let decided =
            match backend::decide(cached, request.clone(), &since_base, limits, now, started) {
                Ok(decided) => decided,
                Err(e) => {
                    docs.forget(context);
                    return Err(e.into());
                }
            };
        let mut response = decided.response;
        if let Some(r) = &decided.revision {
            let moved = conn
                .execute(
                    "UPDATE contexts SET revision = revision + 1, checksum = $3, size = $4
                     WHERE name = $1 AND revision = $2",
                    &[
                        &context,
                        &((r.revision - 1) as i64),
                        &r.checksum,
                        &(r.size as i64),
                    ],
                )
                .await?;
            if moved == 0 {
                // Another server took this revision: decide again against its head.
                docs.forget(context);
                continue;
            }
            docs.held.insert(context.to_owned());
            if rules.stage_recent {
                shared.recent.stage(context, r.recent_entry());
            }
        }
        if decided.defer {
            for conflict in &mut response.conflicts {
                let detail = serde_json::to_string(&*conflict).map_err(corrupt)?;
                let row = conn
                    .query_opt(
                        "INSERT INTO conflicts(context, revision, agent, path, detail, created_ms)
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                        &[
                            &context,
                            &(response.revision as i64),
                            &decided.sample.agent,
                            &conflict.path,
                            &detail,
                            &(now as i64),
                        ],
                    )
                    .await?;
                conflict.id = row.map(|r| r.get::<_, i64>(0) as u64);
            }
        }
        let answer = match &request.request_id {
            Some(_) => Some(serde_json::to_string(&response).map_err(corrupt)?),
            None => None,
        };
        write_rows(
            conn,
            context,
            decided.revision.as_ref(),
            request.request_id.as_deref().zip(answer.as_deref()),
            fingerprint.as_deref(),
            now,
            &decided.sample,
        )
        .await?;
        if decided.revision.is_some() {
            let cached = docs.get_mut(context)?;
            if cached.take_snapshot_due(shared.options.snapshot_every) {
                write_snapshot(conn, context, cached, shared.options.idempotency_ttl_ms).await?;
                if shared.options.retain.is_set() {
                    let head = cached.head.clone();
                    let report = crate::lifecycle::compact_in_tx(
                        conn,
                        context,
                        &head,
                        &shared.options.retain,
                    )
                    .await?;
                    docs.get_mut(context)?.head.horizon = report.horizon;
                }
            }
        }
        return Ok(response);
    }
    Err(StoreError::Refused(format!(
        "the head of {context:?} kept moving under {CAS_ATTEMPTS} attempts; try again"
    ))
    .into())
}

/// The rows one push adds, sent at once (tokio-postgres pipelines statements polled
/// together on one connection, so this is one round trip, not three): the op-log row
/// of its revision, its idempotency key with the answer, its sync sample.
async fn write_rows(
    conn: &mut Conn,
    context: &str,
    revision: Option<&backend::DecidedRevision>,
    key: Option<(&str, &str)>,
    fingerprint: Option<&str>,
    now: u64,
    sample: &SyncSample,
) -> Result<(), TxError> {
    let oplog = conn
        .prepare(
            "INSERT INTO oplog(context, revision, agent, level, ts_ms, summary, request_id,
                               edits, checksum, sections)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?;
    let requests = conn
        .prepare(
            "INSERT INTO requests(context, request_id, response, ts_ms, fingerprint)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    let samples = conn.prepare(SAMPLE_SQL).await?;
    let paths = sample_paths(sample)?;
    let params = sample_params(context, sample, &paths);
    let client = &conn.client;
    let op_row = async {
        if let Some(r) = revision {
            client
                .execute(
                    &oplog,
                    &[
                        &context,
                        &(r.revision as i64),
                        &r.agent,
                        &r.level.as_str(),
                        &(r.ts_ms as i64),
                        &r.summary,
                        &r.request_id,
                        &r.edits_json,
                        &r.checksum,
                        &r.sections_json,
                    ],
                )
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let key_row = async {
        if let Some((id, answer)) = key {
            client
                .execute(
                    &requests,
                    &[&context, &id, &answer, &(now as i64), &fingerprint],
                )
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let sample_row = async {
        client
            .execute(&samples, &params.as_slice())
            .await
            .map(|_| ())
    };
    tokio::try_join!(op_row, key_row, sample_row)?;
    Ok(())
}

/// Writes a snapshot of the newest document, and drops idempotency keys past their time.
pub(crate) async fn write_snapshot(
    conn: &mut Conn,
    context: &str,
    cached: &Cached,
    ttl_ms: u64,
) -> Result<(), TxError> {
    let cutoff = now_ms().saturating_sub(ttl_ms.max(24 * 3600 * 1000));
    conn.execute("DELETE FROM requests WHERE ts_ms < $1", &[&(cutoff as i64)])
        .await?;
    let text = serde_json::to_string(&cached.doc).map_err(corrupt)?;
    conn.execute(
        "INSERT INTO snapshots(context, revision, doc, checksum) VALUES ($1, $2, $3, $4)
         ON CONFLICT (context, revision) DO UPDATE SET doc = excluded.doc, checksum = excluded.checksum",
        &[
            &context,
            &(cached.head.revision as i64),
            &text,
            &cached.head.checksum,
        ],
    )
    .await?;
    Ok(())
}

const SAMPLE_SQL: &str =
    "INSERT INTO sync_log(context, agent, level, ts_ms, duration_us, outcome, conflict_paths)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// A sample's conflict paths as the JSON text the sync log stores.
fn sample_paths(sample: &SyncSample) -> Result<Option<String>, TxError> {
    if sample.conflict_paths.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        serde_json::to_string(&sample.conflict_paths).map_err(corrupt)?,
    ))
}

/// The parameters of [`SAMPLE_SQL`].
fn sample_params<'a>(
    context: &'a str,
    sample: &'a SyncSample,
    paths: &'a Option<String>,
) -> SampleParams<'a> {
    SampleParams {
        context,
        agent: &sample.agent,
        level: sample.level.as_str(),
        ts_ms: sample.timestamp_ms as i64,
        duration_us: sample.duration_us as i64,
        outcome: sample.outcome.as_str(),
        paths,
    }
}

struct SampleParams<'a> {
    context: &'a str,
    agent: &'a str,
    level: &'a str,
    ts_ms: i64,
    duration_us: i64,
    outcome: &'a str,
    paths: &'a Option<String>,
}

impl SampleParams<'_> {
    fn as_slice(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.context,
            &self.agent,
            &self.level,
            &self.ts_ms,
            &self.duration_us,
            &self.outcome,
            self.paths,
        ]
    }
}

pub(crate) async fn insert_sample(
    conn: &mut Conn,
    context: &str,
    sample: &SyncSample,
) -> Result<(), TxError> {
    let paths = sample_paths(sample)?;
    let statement = conn.prepare(SAMPLE_SQL).await?;
    let params = sample_params(context, sample, &paths);
    conn.client.execute(&statement, &params.as_slice()).await?;
    Ok(())
}

/// A push waiting for the writer.
pub(crate) struct PushJob {
    pub context: String,
    pub request: PushRequest,
    pub started: Instant,
    pub done: PushCallback,
}

/// A queued push without its callback.
struct Pending {
    context: String,
    request: PushRequest,
    started: Instant,
}

/// The writer task: takes every push waiting in the queue (up to `max_batch`) and commits
/// them in one transaction, each its own revision, answering each only after the commit.
pub(crate) async fn run_writer(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<PushJob>) {
    let max = shared.options.max_batch.max(1);
    let mut conn: Option<Conn> = None;
    let mut docs = TxDocs::default();
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&shared, &mut conn, &mut docs, batch).await;
    }
}

async fn commit_batch(
    shared: &Shared,
    conn: &mut Option<Conn>,
    docs: &mut TxDocs,
    batch: Vec<PushJob>,
) {
    // The callbacks are `Send` but not `Sync`: kept apart from what crosses awaits.
    let (dones, batch): (Vec<PushCallback>, Vec<Pending>) = batch
        .into_iter()
        .map(|j| {
            (
                j.done,
                Pending {
                    context: j.context,
                    request: j.request,
                    started: j.started,
                },
            )
        })
        .unzip();
    let touched: BTreeSet<String> = batch.iter().map(|j| j.context.clone()).collect();
    let mut attempt = 0;
    let outcome = loop {
        let c = match conn.take() {
            Some(c) if !c.client.is_closed() => conn.insert(c),
            _ => match Conn::connect(shared.pool.url()).await {
                Ok(c) => conn.insert(c),
                Err(e) => break Err(TxError::Pg(e)),
            },
        };
        let result = run_batch(shared, c, docs, &batch).await;
        let result = match result {
            Ok(results) => c.finish(Ok::<_, TxError>(results)).await,
            Err(e) => c.finish(Err(e)).await,
        };
        match result {
            Ok(results) => {
                shared.recent.commit();
                break Ok(results);
            }
            Err(e) => {
                shared.recent.abort();
                for context in &touched {
                    docs.forget(context);
                }
                if e.retryable() && attempt < TX_ATTEMPTS {
                    attempt += 1;
                    tracing::debug!(attempt, "group commit retried");
                    continue;
                }
                break Err(e);
            }
        }
    };
    match outcome {
        Ok(results) => {
            for context in &touched {
                if let Some(cached) = docs.get(context) {
                    shared.publish(context, cached);
                }
            }
            for (done, result) in dones.into_iter().zip(results) {
                done(result);
            }
        }
        Err(e) => {
            let message = match &e {
                TxError::Pg(e) => describe(e),
                TxError::Store(e) => e.to_string(),
            };
            tracing::warn!(error = %message, "group commit failed; no push of the batch was applied");
            for done in dones {
                done(Err(StoreError::CommitFailed(message.clone())));
            }
        }
    }
}

/// The batch inside one open transaction: `Err` only for a database error (which aborts
/// the transaction); a push refused on its own is an `Err` in the list.
async fn run_batch(
    shared: &Shared,
    conn: &mut Conn,
    docs: &mut TxDocs,
    batch: &[Pending],
) -> Result<Vec<Result<PushResponse, StoreError>>, TxError> {
    docs.release();
    conn.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut notify: BTreeSet<&str> = BTreeSet::new();
    for job in batch {
        match push_archiving(conn, docs, shared, job).await {
            Err(TxError::Pg(e)) => return Err(TxError::Pg(e)),
            Err(TxError::Store(e)) => results.push(Err(e)),
            Ok(response) => {
                if !response.replayed && !response.applied.is_empty() {
                    notify.insert(&job.context);
                }
                results.push(Ok(response));
            }
        }
    }
    for context in notify {
        notify_head(conn, docs, context).await?;
    }
    Ok(results)
}

/// An agent's queued push, with archival (DESIGN §15): before it when it would pass the
/// quota and archiving makes it fit (otherwise refused with the numbers), and after it
/// when it took a list past its threshold.
async fn push_archiving(
    conn: &mut Conn,
    docs: &mut TxDocs,
    shared: &Shared,
    job: &Pending,
) -> Result<PushResponse, TxError> {
    let archive = !shared.options.archive.is_empty();
    let response = match push_job(conn, docs, shared, job).await {
        Err(TxError::Store(StoreError::TooLarge { size, limit })) if archive => {
            let cached = load(conn, docs, &job.context).await?;
            let rules = &shared.options.archive;
            let fits =
                backend::archive::would_fit_after_archival(cached, rules, &job.request, limit);
            if fits != Some(true) {
                let hint = backend::archive::archivable_hint(cached, rules);
                return Err(StoreError::OverQuota { size, limit, hint }.into());
            }
            crate::lifecycle::archive_in_tx(conn, docs, shared, &job.context, Some(0)).await?;
            return push_job(conn, docs, shared, job).await;
        }
        other => other?,
    };
    if archive && !response.replayed && !response.applied.is_empty() {
        crate::lifecycle::archive_in_tx(conn, docs, shared, &job.context, None).await?;
    }
    Ok(response)
}

async fn push_job(
    conn: &mut Conn,
    docs: &mut TxDocs,
    shared: &Shared,
    job: &Pending,
) -> Result<PushResponse, TxError> {
    let rules = PushRules {
        ownership: &shared.options.ownership,
        enforce_claims: true,
        stage_recent: true,
        stamp_seed_fields: true,
    };
    push_in_tx(
        conn,
        docs,
        shared,
        &job.context,
        job.request.clone(),
        job.started,
        rules,
    )
    .await
}

/// The channel other servers listen on for new revisions.
pub const CHANNEL: &str = "ctxsync_revisions";

/// `NOTIFY` (in the committing transaction, so it is sent only if the revision commits):
/// a hint of the context and its new head, far under PostgreSQL's 8,000-byte limit
/// (context names are at most 64 bytes). Listeners read the revisions from the op log.
pub(crate) async fn notify_head(
    conn: &mut Conn,
    docs: &TxDocs,
    context: &str,
) -> Result<(), TxError> {
    let Some(cached) = docs.get(context) else {
        return Ok(());
    };
    let payload = format!("{context} {}", cached.head.revision);
    conn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await?;
    Ok(())
}
