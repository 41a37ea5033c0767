//! [`PgStore`]: the [`Store`] trait on PostgreSQL.
//!
//! # Threads and the runtime
//!
//! The trait is blocking (the server calls some methods, such as `observe`, inline on its
//! own async worker threads), while tokio-postgres is async. The store therefore owns a
//! small multi-threaded tokio runtime of its own, and every method *spawns* its work onto
//! that runtime and waits for the answer on a `std::sync::mpsc` channel. It never calls
//! `block_on`: `Runtime::block_on` panics when the calling thread is already inside a
//! runtime (a server's worker), and `Handle::block_on` from such a thread would park a
//! worker of the caller's runtime while driving ours on it. Waiting on a plain channel
//! is what any blocking call does (the SQLite store waits for its writer thread the same
//! way): it costs the calling thread, never the PG runtime's, so the connections' driver
//! tasks keep running whatever the callers do. The runtime is shut down in the
//! background when the store is dropped (after the writer has answered what was queued),
//! which is safe from any thread, async or not.
//!
//! # Writes
//!
//! Pushes go to one writer task per store, which commits everything waiting in its queue
//! in one transaction (group commit, see [`crate::write`]); other writes run in their own
//! transactions on pooled connections ([`crate::ops`]). Revisions are taken by a CAS on
//! the context's head row, so any number of stores (servers) share one database.
//!
//! # Reads and caches
//!
//! Reads use pooled connections. The newest document of each context is cached in
//! memory and used only when the database's head (revision and checksum) still matches
//! it, so another server's commit is seen at the next read. Tokens are read from the
//! database on every `authenticate` ([`Store::token_epoch`] is `None`), so a revocation
//! through any server is refused by every server at its next request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ctxsync_core::{PushRequest, PushResponse};
use ctxsync_store::backend::{self, recent::Recent, Cached};
use ctxsync_store::{
    validate_agent_name, validate_context_name, Actor, AgentPresence, ClaimOutcome, CriticalNotice,
    Head, HistoryFilter, LogEntry, Metrics, Prefer, PushCallback, ReleaseOutcome, Role, Snapshot,
    StaleView, Store, StoreError, StoreOptions, StoredConflict, SyncSample, TokenInfo,
    VerifyReport,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{db, TxError};
use crate::pool::{Conn, Pool};
use crate::write::PushJob;
use crate::{ops, presence, read, write};

/// Connections per store, besides the writer's own.
const POOL_SIZE: usize = 16;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) struct Shared {
    pub pool: Arc<Pool>,
    pub options: StoreOptions,
    /// The newest revisions this store committed (stale views, conflict checks).
    pub recent: Recent,
    /// Readers' copies of the newest documents, valid while the head matches.
    current: Mutex<HashMap<String, Arc<Cached>>>,
}

impl Shared {
    /// Gives readers a copy of a document the writer committed.
    pub fn publish(&self, context: &str, cached: &Cached) {
        if let Ok(mut current) = self.current.lock() {
            current.insert(context.to_owned(), Arc::new(cached.clone()));
        }
    }

    /// The newest document, from the cache when it is at the database's head.
    async fn current(&self, conn: &mut Conn, context: &str) -> Result<Arc<Cached>, TxError> {
        let head = read::head(conn, context).await?;
        let hit = self
            .current
            .lock()
            .ok()
            .and_then(|c| c.get(context).filter(|c| c.head == head).cloned());
        if let Some(cached) = hit {
            return Ok(cached);
        }
        let doc = read::doc_at(conn, context, head.revision).await?;
        let cached = Arc::new(Cached::new(head, doc));
        if let Ok(mut current) = self.current.lock() {
            current.insert(context.to_owned(), Arc::clone(&cached));
        }
        Ok(cached)
    }
}

/// The PostgreSQL store. Open with [`PgStore::open`].
pub struct PgStore {
    shared: Arc<Shared>,
    jobs: Mutex<Option<mpsc::UnboundedSender<PushJob>>>,
    /// Closed by the writer task when it has answered everything queued.
    writer_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`), brings the schema to the current version
    /// (under an advisory lock, refusing a newer one) and starts the writer.
    pub fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ctxsync-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let shared = Arc::new(Shared {
            pool: Pool::new(url, POOL_SIZE),
            options,
            recent: Recent::default(),
            current: Mutex::new(HashMap::new()),
        });
        let url_owned = url.to_owned();
        spawn_wait(runtime.handle(), async move {
            let (mut client, connection) =
                tokio_postgres::connect(&url_owned, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| {
                        StoreError::Unavailable(format!(
                            "PostgreSQL: {}",
                            crate::error::describe(&e)
                        ))
                    })?;
            let driver = tokio::spawn(connection);
            let migrated = crate::migrate(&mut client).await;
            drop(client);
            let _ = driver.await;
            migrated.map(|_| ()).map_err(|e| match e {
                crate::PgError::Db(e) => db(e),
                other => StoreError::Invalid(other.to_string()),
            })
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let writer_shared = Arc::clone(&shared);
        runtime.spawn(async move {
            write::run_writer(writer_shared, rx).await;
            drop(done_tx);
        });
        Ok(Self {
            shared,
            jobs: Mutex::new(Some(tx)),
            writer_done: Mutex::new(Some(done_rx)),
            runtime: Some(runtime),
        })
    }

    pub fn options(&self) -> &StoreOptions {
        &self.shared.options
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Runs `work` on the store's runtime and waits for it (for the crate's other
    /// modules).
    pub(crate) fn run_async<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, TxError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(work)
    }

    /// Drops every cached document (after the database was written behind the writer).
    pub(crate) fn forget_cached(&self) {
        if let Ok(mut current) = self.shared.current.lock() {
            current.clear();
        }
    }

    /// Runs `work` on the store's runtime and waits for it (see the module doc).
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, TxError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        spawn_wait(runtime.handle(), async move {
            work.await.map_err(StoreError::from)
        })
    }

    /// Runs `work` with a pooled connection.
    fn with_conn<T: Send + 'static, F>(
        &self,
        work: impl FnOnce(Arc<Shared>, crate::pool::Pooled) -> F + Send + 'static,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, TxError>> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        self.run(async move {
            let conn = shared.pool.get().await?;
            work(shared, conn).await
        })
    }

    /// Records that `agent` is alive (a claim or release) without moving what it saw.
    fn note_alive(&self, context: &str, agent: &str) {
        if validate_agent_name(agent).is_err() {
            return;
        }
        let (context, agent) = (context.to_owned(), agent.to_owned());
        let noted = self.with_conn(move |_, mut conn| async move {
            presence::upsert(&mut conn, &context, &agent, 0, now_ms(), 0).await
        });
        if let Err(e) = noted {
            tracing::warn!(error = %e, "presence not recorded");
        }
    }

    fn current_doc(&self, context: &str) -> Result<Value, StoreError> {
        let context = context.to_owned();
        self.with_conn(move |shared, mut conn| async move {
            Ok(shared.current(&mut conn, &context).await?.doc.clone())
        })
    }
}

/// Spawns `work` on `handle` and waits for its answer on a std channel.
fn spawn_wait<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = reply.send(work.await);
    });
    answer.recv().map_err(|_| StoreError::Closed)?
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer answer what it has, then end.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(done) = self.writer_done.lock().ok().and_then(|mut d| d.take()) {
            let _ = done.recv_timeout(Duration::from_secs(30));
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for PgStore {
    fn create_context(&self, name: &str, document: Value) -> Result<Head, StoreError> {
        validate_context_name(name)?;
        if !document.is_object() {
            return Err(StoreError::Invalid(
                "a context document must be a JSON object".into(),
            ));
        }
        let name = name.to_owned();
        let shared = Arc::clone(&self.shared);
        self.run(async move { ops::create_context(&shared, &name, document).await })
    }

    fn list_contexts(&self) -> Result<Vec<Head>, StoreError> {
        self.with_conn(|_, mut conn| async move { read::list_contexts(&mut conn).await })
    }

    fn head(&self, context: &str) -> Result<Head, StoreError> {
        let context = context.to_owned();
        self.with_conn(move |_, mut conn| async move { read::head(&mut conn, &context).await })
    }

    fn read(&self, context: &str, revision: Option<u64>) -> Result<Snapshot, StoreError> {
        let context = context.to_owned();
        self.with_conn(move |shared, mut conn| async move {
            let head = read::head(&mut conn, &context).await?;
            match revision {
                Some(r) if r > head.revision => Err(StoreError::Future {
                    requested: r,
                    current: head.revision,
                }
                .into()),
                Some(r) if r < head.horizon => Err(StoreError::Gone {
                    requested: r,
                    horizon: head.horizon,
                }
                .into()),
                // An older revision is read on its own, without the newest document.
                Some(r) if r < head.revision => {
                    let doc = read::doc_at(&mut conn, &context, r).await?;
                    Ok(Snapshot {
                        revision: r,
                        checksum: ctxsync_core::checksum(&doc),
                        document: doc,
                    })
                }
                _ => {
                    let current = shared.current(&mut conn, &context).await?;
                    Ok(Snapshot {
                        revision: current.head.revision,
                        checksum: current.head.checksum.clone(),
                        document: current.doc.clone(),
                    })
                }
            }
        })
    }

    fn push(&self, context: &str, request: PushRequest) -> Result<PushResponse, StoreError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.push_then(
            context,
            request,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn push_then(&self, context: &str, request: PushRequest, done: PushCallback) {
        let job = PushJob {
            context: context.to_owned(),
            request,
            started: Instant::now(),
            done,
        };
        let sent = match self.jobs.lock() {
            Ok(jobs) => match jobs.as_ref() {
                Some(sender) => sender.send(job).map_err(|e| e.0),
                None => Err(job),
            },
            Err(_) => Err(job),
        };
        if let Err(job) = sent {
            (job.done)(Err(StoreError::Closed));
        }
    }

    fn log_since(&self, context: &str, since: u64) -> Result<Vec<LogEntry>, StoreError> {
        let context = context.to_owned();
        self.with_conn(move |_, mut conn| async move {
            let head = read::head(&mut conn, &context).await?;
            if since < head.horizon {
                return Err(StoreError::Gone {
                    requested: since,
                    horizon: head.horizon,
                }
                .into());
            }
            if since > head.revision {
                return Err(StoreError::Future {
                    requested: since,
                    current: head.revision,
                }
                .into());
            }
            read::log_range(&mut conn, &context, since, head.revision).await
        })
    }

    fn history(&self, context: &str, filter: &HistoryFilter) -> Result<Vec<LogEntry>, StoreError> {
        let (context, filter) = (context.to_owned(), filter.clone());
        self.with_conn(move |_, mut conn| async move {
            read::history(&mut conn, &context, &filter).await
        })
    }

    fn open_conflicts(&self, context: &str) -> Result<Vec<StoredConflict>, StoreError> {
        let context = context.to_owned();
        self.with_conn(move |_, mut conn| async move {
            read::head(&mut conn, &context).await?;
            read::open_conflicts(&mut conn, &context).await
        })
    }

    fn resolve_conflict(
        &self,
        context: &str,
        id: u64,
        prefer: Prefer,
        actor: &Actor,
    ) -> Result<Option<PushResponse>, StoreError> {
        let (context, actor) = (context.to_owned(), actor.clone());
        let shared = Arc::clone(&self.shared);
        self.run(async move { ops::resolve_conflict(&shared, &context, id, prefer, &actor).await })
    }

    fn verify(&self, context: &str) -> Result<VerifyReport, StoreError> {
        let context = context.to_owned();
        self.with_conn(move |_, mut conn| async move { read::verify(&mut conn, &context).await })
    }

    fn revert(&self, context: &str, to: u64, actor: &Actor) -> Result<PushResponse, StoreError> {
        let (context, actor) = (context.to_owned(), actor.clone());
        let shared = Arc::clone(&self.shared);
        self.run(async move { ops::revert(&shared, &context, to, &actor).await })
    }

    fn record_sync(&self, context: &str, sample: &SyncSample) -> Result<(), StoreError> {
        let (context, sample) = (context.to_owned(), sample.clone());
        let shared = Arc::clone(&self.shared);
        self.run(async move { ops::record_sync(&shared, &context, &sample).await })
    }

    fn sync_buckets(
        &self,
        context: &str,
        span: &ctxsync_store::BucketSpan,
    ) -> Result<Vec<ctxsync_store::SyncBucket>, StoreError> {
        let (context, span) = (context.to_owned(), *span);
        self.with_conn(move |_, mut conn| async move {
            crate::lifecycle::sync_buckets(&mut conn, &context, &span).await
        })
    }

    fn archive_run(&self, context: &str) -> Result<Option<PushResponse>, StoreError> {
        let context = context.to_owned();
        let shared = Arc::clone(&self.shared);
        let result = self.run(async move { ops::archive_run(&shared, &context).await });
        // The writer's and readers' copies may hold the document before the archival.
        self.forget_cached();
        result
    }

    fn archive_list(
        &self,
        context: &str,
        query: &ctxsync_store::ArchiveQuery,
    ) -> Result<Vec<ctxsync_store::ArchiveRecord>, StoreError> {
        let (context, query) = (context.to_owned(), query.clone());
        self.with_conn(move |_, mut conn| async move {
            crate::lifecycle::archive_list(&mut conn, &context, &query).await
        })
    }

    fn compact(
        &self,
        context: &str,
        retain: &ctxsync_store::Retention,
    ) -> Result<ctxsync_store::CompactReport, StoreError> {
        let (context, retain) = (context.to_owned(), *retain);
        let shared = Arc::clone(&self.shared);
        let result = self.run(async move { ops::compact(&shared, &context, &retain).await });
        // Cached heads carry the old horizon.
        self.forget_cached();
        result
    }

    fn storage(&self) -> Result<ctxsync_store::StorageUsage, StoreError> {
        self.with_conn(move |_, mut conn| async move { crate::lifecycle::storage(&mut conn).await })
    }

    fn metrics(&self, context: &str, now_ms: u64) -> Result<Metrics, StoreError> {
        let context = context.to_owned();
        self.with_conn(move |_, mut conn| async move {
            read::metrics(&mut conn, &context, now_ms).await
        })
    }

    fn snapshot(&self, context: &str) -> Result<Head, StoreError> {
        let context = context.to_owned();
        let shared = Arc::clone(&self.shared);
        self.run(async move { ops::snapshot_now(&shared, &context).await })
    }

    fn create_token(
        &self,
        agent: &str,
        secret: &str,
        label: &str,
        role: Role,
    ) -> Result<TokenInfo, StoreError> {
        backend::check_new_token(agent, secret)?;
        let (agent, secret, label) = (agent.to_owned(), secret.to_owned(), label.to_owned());
        self.with_conn(move |_, mut conn| async move {
            ops::create_token(&mut conn, &agent, &secret, &label, role).await
        })
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.with_conn(|_, mut conn| async move { ops::list_tokens(&mut conn).await })
    }

    fn revoke_token(&self, id: &str) -> Result<TokenInfo, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |_, mut conn| async move { ops::revoke_token(&mut conn, &id).await })
    }

    fn authenticate(&self, secret: &str) -> Result<Option<TokenInfo>, StoreError> {
        let secret = secret.to_owned();
        self.with_conn(
            move |_, mut conn| async move { ops::authenticate(&mut conn, &secret).await },
        )
    }

    fn watch_commits(&self, wake: ctxsync_store::CommitHook) -> bool {
        let Some(runtime) = self.runtime.as_ref() else {
            return false;
        };
        runtime.spawn(crate::listen::listen_loop(
            self.shared.pool.url().to_owned(),
            wake,
        ));
        true
    }

    fn claim(
        &self,
        context: &str,
        agent: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        self.note_alive(context, agent);
        backend::claim_cas(
            &self.shared.options.ownership,
            agent,
            path,
            ttl_ms,
            now_ms,
            || self.current_doc(context),
            |request| self.push(context, request),
        )
    }

    fn release(
        &self,
        context: &str,
        agent: &str,
        path: &str,
    ) -> Result<ReleaseOutcome, StoreError> {
        self.note_alive(context, agent);
        backend::release_cas(
            agent,
            path,
            now_ms,
            || self.current_doc(context),
            |request| self.push(context, request),
        )
    }

    fn observe(
        &self,
        context: &str,
        agent: &str,
        seen_revision: u64,
    ) -> Result<StaleView, StoreError> {
        validate_agent_name(agent)?;
        let (context, agent) = (context.to_owned(), agent.to_owned());
        self.with_conn(move |shared, mut conn| async move {
            let head = read::head(&mut conn, &context).await?;
            let seen = seen_revision.min(head.revision);
            let row = presence::row(&mut conn, &context, &agent).await?;
            // Never seen before: everything by others is news.
            let since = row.map_or(0, |r| r.seen);
            let view = match shared.recent.stale(&context, &agent, since, seen) {
                Some(view) => view,
                None => presence::stale(&mut conn, &context, &agent, since, seen).await?,
            };
            // First contact: the view it now has supersedes older critical notices.
            let critical = if row.is_none() { seen } else { 0 };
            presence::upsert(&mut conn, &context, &agent, seen, now_ms(), critical).await?;
            Ok(view)
        })
    }

    fn agents(&self, context: &str, now_ms: u64) -> Result<Vec<AgentPresence>, StoreError> {
        let away_after = self.shared.options.away_after_ms;
        let list = |context: String| {
            self.with_conn(move |shared, mut conn| async move {
                let current = shared.current(&mut conn, &context).await?;
                let mut rows = presence::rows(&mut conn, &context).await?;
                let claims = ctxsync_core::claims::live_claims(&current.doc, now_ms);
                // Holders of claims that never pulled or pushed are listed too.
                for claim in &claims {
                    if !rows.iter().any(|(a, _)| *a == claim.holder) {
                        rows.push((claim.holder.clone(), presence::Row::default()));
                    }
                }
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out = Vec::with_capacity(rows.len());
                for (agent, row) in rows {
                    let unseen =
                        presence::critical_after(&mut conn, &context, &agent, row.critical_shown)
                            .await?;
                    out.push(AgentPresence {
                        unseen_critical: unseen.iter().map(|n| n.revision).collect(),
                        claims: claims
                            .iter()
                            .filter(|c| c.holder == agent)
                            .cloned()
                            .collect(),
                        last_seen_ms: row.last_seen_ms,
                        seen_revision: row.seen,
                        lag: current.head.revision.saturating_sub(row.seen),
                        away: now_ms.saturating_sub(row.last_seen_ms) > away_after,
                        agent,
                    });
                }
                Ok((out, current))
            })
        };
        let (listed, current) = list(context.to_owned())?;
        // Away agents' expired claims are released lazily, here.
        let expired_away: Vec<String> = listed
            .iter()
            .filter(|p| p.away)
            .filter(|p| {
                !ctxsync_core::claims::expired_claims_of(&current.doc, &p.agent, now_ms).is_empty()
            })
            .map(|p| p.agent.clone())
            .collect();
        if expired_away.is_empty() {
            return Ok(listed);
        }
        let (ctx, shared) = (context.to_owned(), Arc::clone(&self.shared));
        self.run(async move { ops::hand_over_away(&shared, &ctx, &expired_away).await })?;
        Ok(list(context.to_owned())?.0)
    }

    fn unseen_critical(
        &self,
        context: &str,
        agent: &str,
        mark_seen: bool,
    ) -> Result<Vec<CriticalNotice>, StoreError> {
        validate_agent_name(agent)?;
        let (context, agent) = (context.to_owned(), agent.to_owned());
        self.with_conn(move |_, mut conn| async move {
            let head = read::head(&mut conn, &context).await?;
            let row = presence::row(&mut conn, &context, &agent).await?;
            let shown = row.map_or(0, |r| r.critical_shown);
            let notices = presence::critical_after(&mut conn, &context, &agent, shown).await?;
            if mark_seen {
                presence::upsert(&mut conn, &context, &agent, 0, now_ms(), head.revision).await?;
            }
            Ok(notices)
        })
    }
}
