//! The embedded SQLite backend.
//!
//! One writer thread per open store takes every write from a queue and commits the
//! pushes waiting in it together (group commit): one transaction and one fsync for many
//! pushes, each still its own revision and each answered only after the commit. Readers
//! use their own connections (WAL), served from a cache of the newest document that is
//! checked against the database's revision, so several processes sharing one file stay
//! correct: each transaction re-reads the head under SQLite's write lock.

mod archive;
mod claims;
mod compact;
mod export;
mod health;
mod presence;
mod push;
mod read;
mod replica;
mod schema;
mod tokens;
mod trends;
mod writer;

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ctxsync_core::{Ownership, PushRequest, PushResponse};
use rusqlite::Connection;
use serde_json::Value;

use crate::error::StoreError;
use crate::types::*;
use crate::{PushCallback, Store};
use writer::{Job, Writer};

/// How hard SQLite works to make a commit survive an OS crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged push survives an OS crash (default).
    #[default]
    Full,
    /// WAL without fsync per commit: survives a process crash, not an OS crash.
    Normal,
}

/// Settings of an open store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub synchronous: Synchronous,
    /// A snapshot is written once at least this many revisions *and* a document's worth
    /// of op-log bytes have been written since the last one: it bounds what a read
    /// replays, at a cost per push proportional to the change, not to the document.
    pub snapshot_every: u64,
    /// Largest document (canonical JSON bytes) a push may produce.
    pub max_document_bytes: u64,
    pub ownership: Ownership,
    /// How long idempotency keys are kept (at least 24 h).
    pub idempotency_ttl_ms: u64,
    /// Most pushes committed in one transaction.
    pub max_batch: usize,
    /// How long the writer may wait for the pushes it expects (as many as the last batch
    /// held) before committing: group commit under a closed loop of writers.
    pub group_commit_window: std::time::Duration,
    /// Checkpoint the WAL from a background thread instead of inside commits.
    pub background_checkpoint: bool,
    /// An agent unseen for longer than this is `away` (its expired claims are released
    /// with a handover stub). Default 30 minutes.
    pub away_after_ms: u64,
    /// Archival rules (DESIGN §15): lists cut to their newest entries after a push takes
    /// them past the threshold, and before a push that would pass the quota. None by
    /// default here; the CLI turns on the seed template's.
    pub archive: Vec<ArchiveRule>,
    /// Op-log retention (DESIGN §15): applied after every snapshot. None by default
    /// (history kept forever).
    pub retain: Retention,
    /// The JSON Schema every new revision must satisfy (`schema` in ctxsync.toml).
    pub schema: Option<crate::ContextSchema>,
}

/// The default of [`StoreOptions::away_after_ms`]: 30 minutes.
pub const DEFAULT_AWAY_AFTER_MS: u64 = 30 * 60 * 1000;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            snapshot_every: 100,
            max_document_bytes: 8 * 1024 * 1024,
            ownership: Ownership::default(),
            idempotency_ttl_ms: 7 * 24 * 3600 * 1000,
            max_batch: 512,
            group_commit_window: std::time::Duration::from_micros(300),
            background_checkpoint: true,
            away_after_ms: DEFAULT_AWAY_AFTER_MS,
            archive: Vec::new(),
            retain: Retention::default(),
            schema: None,
        }
    }
}

use crate::backend::recent;
pub(crate) use crate::backend::Cached;

pub(crate) struct Shared {
    path: PathBuf,
    health: health::Health,
    options: StoreOptions,
    /// Readers' copies of the newest documents.
    replicas: replica::Replicas,
    readers: Mutex<Vec<Connection>>,
    /// This process's newest view of each (context, agent) presence row, ahead of the
    /// database until the writer commits it.
    presence: Mutex<HashMap<(String, String), presence::Row>>,
    /// The newest revisions this process committed, for the stale-view notice.
    recent: recent::Recent,
}

/// The embedded store: a SQLite file.
pub struct SqliteStore {
    shared: Arc<Shared>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The document at `r`; `Gone` when a compaction moved the horizon past `r` while this
/// read was under way (its snapshot and log went between two statements).
fn doc_at_or_gone(conn: &Connection, context: &str, r: u64) -> Result<Value, StoreError> {
    match read::doc_at(conn, context, r) {
        Err(StoreError::Corrupt(reason)) => {
            let head = read::head(conn, context)?;
            if r < head.horizon {
                Err(StoreError::Gone {
                    requested: r,
                    horizon: head.horizon,
                })
            } else {
                Err(StoreError::Corrupt(reason))
            }
        }
        other => other,
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: impl AsRef<FsPath>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        health::create_private(&path)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", path.display())))?;
        let mut conn = Connection::open(&path)?;
        schema::configure(&conn, options.synchronous)?;
        schema::migrate(&mut conn)?;
        let shared = Arc::new(Shared {
            health: health::Health::new(&path),
            path,
            options,
            replicas: replica::Replicas::default(),
            readers: Mutex::new(Vec::new()),
            presence: Mutex::new(HashMap::new()),
            recent: recent::Recent::default(),
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::new(conn, Arc::clone(&shared));
        if shared.options.background_checkpoint {
            writer.checkpoint_in_background(&shared.path)?;
        }
        let thread = std::thread::Builder::new()
            .name("ctxsync-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Invalid(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            shared,
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn path(&self) -> &FsPath {
        &self.shared.path
    }

    pub fn options(&self) -> &StoreOptions {
        &self.shared.options
    }

    /// Sends a job to the writer and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(mpsc::SyncSender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let jobs = self.jobs.lock().map_err(|_| StoreError::Closed)?;
            let sender = jobs.as_ref().ok_or(StoreError::Closed)?;
            sender.send(job(reply)).map_err(|_| StoreError::Closed)?;
        }
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call(move |reply| {
            Job::Exec(Box::new(move |writer: &mut Writer| {
                let _ = reply.send(f(writer));
            }))
        })
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.shared.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.shared.path)?;
                schema::configure(&conn, self.shared.options.synchronous)?;
                conn
            }
        };
        let result = f(&conn);
        if let Ok(mut readers) = self.shared.readers.lock() {
            if readers.len() < 16 {
                readers.push(conn);
            }
        }
        result
    }

    /// Records a presence update: in memory now, in the database with the next commit.
    fn note_presence(&self, update: presence::Update, db_row: Option<presence::Row>) {
        if let Ok(mut map) = self.shared.presence.lock() {
            let key = (update.context.clone(), update.agent.clone());
            let row = map.get(&key).copied().or(db_row).unwrap_or_default();
            map.insert(key, row.apply(&update));
        }
        if let Ok(jobs) = self.jobs.lock() {
            if let Some(sender) = jobs.as_ref() {
                let _ = sender.send(Job::Presence(update));
            }
        }
    }

    /// Records that `agent` is alive (a claim or release), without moving what it saw.
    fn note_alive(&self, context: &str, agent: &str) {
        if validate_agent_name(agent).is_err() {
            return;
        }
        let update = presence::Update {
            context: context.to_owned(),
            agent: agent.to_owned(),
            seen: None,
            critical_shown: None,
            at_ms: now_ms(),
        };
        let db_row = self
            .with_reader(|conn| presence::row(conn, context, agent))
            .ok()
            .flatten();
        self.note_presence(update, db_row);
    }

    /// [`Store::observe`] without touching the database, when this process has the
    /// agent's presence row and the revisions up to `seen_revision` in memory.
    fn observe_from_memory(
        &self,
        context: &str,
        agent: &str,
        seen_revision: u64,
    ) -> Option<StaleView> {
        let head = self.shared.replicas.newest_revision(context)?;
        if seen_revision > head {
            return None;
        }
        let key = (context.to_owned(), agent.to_owned());
        let row = self.shared.presence.lock().ok()?.get(&key).copied()?;
        let view = self
            .shared
            .recent
            .stale(context, agent, row.seen, seen_revision)?;
        let update = presence::Update {
            context: key.0,
            agent: key.1,
            seen: Some(seen_revision),
            critical_shown: None,
            at_ms: now_ms(),
        };
        self.note_presence(update, Some(row));
        Some(view)
    }

    /// The presence row of `agent`, this process's updates included.
    fn presence_row(
        &self,
        conn: &Connection,
        context: &str,
        agent: &str,
    ) -> Result<Option<presence::Row>, StoreError> {
        let db = presence::row(conn, context, agent)?;
        let mine = self
            .shared
            .presence
            .lock()
            .ok()
            .and_then(|m| m.get(&(context.to_owned(), agent.to_owned())).copied());
        Ok(match (db, mine) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        })
    }

    /// The newest document, from the cache when it is current.
    fn current(&self, conn: &Connection, context: &str) -> Result<Arc<Cached>, StoreError> {
        let head = read::head(conn, context)?;
        if let Some(cached) = self.shared.replicas.get(context, &head) {
            return Ok(cached);
        }
        let doc = read::doc_at(conn, context, head.revision)?;
        let cached = Arc::new(Cached::new(head, doc));
        self.shared.publish(context, Arc::clone(&cached));
        Ok(cached)
    }
}

impl Shared {
    fn publish(&self, context: &str, cached: Arc<Cached>) {
        self.replicas.publish_copy(context, cached);
    }

    fn forget(&self, context: &str) {
        self.replicas.forget(context);
    }

    /// After the writer's transaction: what it staged in memory (the recent revisions for
    /// the stale view and conflict checks, the edits for readers' copies) joins what is
    /// known if it committed, and is dropped if it did not.
    fn settle_staged(&self, committed: bool) {
        if committed {
            self.recent.commit();
            self.replicas.commit();
        } else {
            self.recent.abort();
            self.replicas.abort();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what it has and exit.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

/// Refuses names outside `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn validate_context_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "bad context name {name:?}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit"
        )))
    }
}

impl Store for SqliteStore {
    fn create_context(&self, name: &str, document: Value) -> Result<Head, StoreError> {
        validate_context_name(name)?;
        if !document.is_object() {
            return Err(StoreError::Invalid(
                "a context document must be a JSON object".into(),
            ));
        }
        let name = name.to_owned();
        self.exec(move |w| w.create_context(&name, document))
    }

    fn list_contexts(&self) -> Result<Vec<Head>, StoreError> {
        self.with_reader(read::list_contexts)
    }

    fn head(&self, context: &str) -> Result<Head, StoreError> {
        self.with_reader(|conn| read::head(conn, context))
    }

    fn read(&self, context: &str, revision: Option<u64>) -> Result<Snapshot, StoreError> {
        self.with_reader(|conn| {
            if let Some(r) = revision {
                // An older revision is read on its own, without building the newest
                // document, so it stays readable even when the newest is not.
                let head = read::head(conn, context)?;
                if r < head.revision && r >= head.horizon {
                    let doc = doc_at_or_gone(conn, context, r)?;
                    return Ok(Snapshot {
                        revision: r,
                        checksum: ctxsync_core::checksum(&doc),
                        document: doc,
                    });
                }
            }
            let current = self.current(conn, context)?;
            match revision {
                None => Ok(Snapshot {
                    revision: current.head.revision,
                    checksum: current.head.checksum.clone(),
                    document: current.doc.clone(),
                }),
                Some(r) if r == current.head.revision => Ok(Snapshot {
                    revision: r,
                    checksum: current.head.checksum.clone(),
                    document: current.doc.clone(),
                }),
                Some(r) if r > current.head.revision => Err(StoreError::Future {
                    requested: r,
                    current: current.head.revision,
                }),
                Some(r) if r < current.head.horizon => Err(StoreError::Gone {
                    requested: r,
                    horizon: current.head.horizon,
                }),
                Some(r) => {
                    let doc = doc_at_or_gone(conn, context, r)?;
                    Ok(Snapshot {
                        revision: r,
                        checksum: ctxsync_core::checksum(&doc),
                        document: doc,
                    })
                }
            }
        })
    }

    fn push(&self, context: &str, request: PushRequest) -> Result<PushResponse, StoreError> {
        let context = context.to_owned();
        let started = std::time::Instant::now();
        self.call(move |reply| Job::Push {
            context,
            request,
            started,
            done: Box::new(move |result| {
                let _ = reply.send(result);
            }),
        })
    }

    fn push_then(&self, context: &str, request: PushRequest, done: PushCallback) {
        let job = Job::Push {
            context: context.to_owned(),
            request,
            started: std::time::Instant::now(),
            done,
        };
        let sent = match self.jobs.lock() {
            Ok(jobs) => match jobs.as_ref() {
                Some(sender) => sender.send(job).map_err(|e| e.0),
                None => Err(job),
            },
            Err(_) => Err(job),
        };
        if let Err(Job::Push { done, .. }) = sent {
            done(Err(StoreError::Closed));
        }
    }

    fn log_since(&self, context: &str, since: u64) -> Result<Vec<LogEntry>, StoreError> {
        self.with_reader(|conn| {
            let head = read::head(conn, context)?;
            if since < head.horizon {
                return Err(StoreError::Gone {
                    requested: since,
                    horizon: head.horizon,
                });
            }
            if since > head.revision {
                return Err(StoreError::Future {
                    requested: since,
                    current: head.revision,
                });
            }
            read::log_range(conn, context, since, head.revision)
        })
    }

    fn history(&self, context: &str, filter: &HistoryFilter) -> Result<Vec<LogEntry>, StoreError> {
        self.with_reader(|conn| read::history(conn, context, filter))
    }

    fn open_conflicts(&self, context: &str) -> Result<Vec<StoredConflict>, StoreError> {
        self.with_reader(|conn| {
            read::head(conn, context)?;
            read::open_conflicts(conn, context)
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
        self.exec(move |w| w.resolve_conflict(&context, id, prefer, &actor))
    }

    fn verify(&self, context: &str) -> Result<VerifyReport, StoreError> {
        self.with_reader(|conn| read::verify(conn, context))
    }

    fn revert(&self, context: &str, to: u64, actor: &Actor) -> Result<PushResponse, StoreError> {
        let (context, actor) = (context.to_owned(), actor.clone());
        self.exec(move |w| w.revert(&context, to, &actor))
    }

    fn record_sync(&self, context: &str, sample: &SyncSample) -> Result<(), StoreError> {
        let (context, sample) = (context.to_owned(), sample.clone());
        self.exec(move |w| w.record_sync(&context, &sample))
    }

    fn metrics(&self, context: &str, now_ms: u64) -> Result<Metrics, StoreError> {
        self.with_reader(|conn| read::metrics(conn, context, now_ms))
    }

    fn sync_buckets(
        &self,
        context: &str,
        span: &BucketSpan,
    ) -> Result<Vec<SyncBucket>, StoreError> {
        self.with_reader(|conn| trends::sync_buckets(conn, context, span))
    }

    fn snapshot(&self, context: &str) -> Result<Head, StoreError> {
        let context = context.to_owned();
        self.exec(move |w| w.snapshot_now(&context))
    }

    fn storage(&self) -> Result<StorageUsage, StoreError> {
        // The database and its write-ahead log (SQLite names it `<file>-wal`).
        let mut wal = self.shared.path.clone().into_os_string();
        wal.push("-wal");
        let mut database_bytes = 0;
        for file in [self.shared.path.clone(), PathBuf::from(wal)] {
            if let Ok(meta) = std::fs::metadata(&file) {
                database_bytes += meta.len();
            }
        }
        let contexts = self.with_reader(read::storage)?;
        Ok(StorageUsage {
            database_bytes,
            contexts,
        })
    }

    fn compact(&self, context: &str, retain: &Retention) -> Result<CompactReport, StoreError> {
        let (context, retain) = (context.to_owned(), *retain);
        self.exec(move |w| w.compact_now(&context, &retain))
    }

    fn archive_run(&self, context: &str) -> Result<Option<PushResponse>, StoreError> {
        let context = context.to_owned();
        self.exec(move |w| w.archive_now(&context))
    }

    fn archive_list(
        &self,
        context: &str,
        query: &ArchiveQuery,
    ) -> Result<Vec<ArchiveRecord>, StoreError> {
        self.with_reader(|conn| archive::list(conn, context, query))
    }

    fn create_token(
        &self,
        agent: &str,
        secret: &str,
        label: &str,
        role: Role,
    ) -> Result<TokenInfo, StoreError> {
        crate::backend::check_new_token(agent, secret)?;
        let (agent, secret, label) = (agent.to_owned(), secret.to_owned(), label.to_owned());
        let info =
            self.exec(move |w| tokens::create(w.connection(), &agent, &secret, &label, role))?;
        tokens::bump_epoch(&self.shared.path);
        Ok(info)
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.with_reader(tokens::list)
    }

    fn revoke_token(&self, id: &str) -> Result<TokenInfo, StoreError> {
        let id = id.to_owned();
        let info = self.exec(move |w| tokens::revoke(w.connection(), &id))?;
        tokens::bump_epoch(&self.shared.path);
        Ok(info)
    }

    fn authenticate(&self, secret: &str) -> Result<Option<TokenInfo>, StoreError> {
        self.with_reader(|conn| tokens::authenticate(conn, secret))
    }

    fn token_epoch(&self) -> Option<u128> {
        tokens::epoch(&self.shared.path)
    }

    fn writable(&self) -> Result<(), StoreError> {
        self.shared.health.check(&self.shared.path)
    }

    fn claim(
        &self,
        context: &str,
        agent: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        self.note_alive(context, agent);
        self.claim_cas(context, agent, path, ttl_ms)
    }

    fn release(
        &self,
        context: &str,
        agent: &str,
        path: &str,
    ) -> Result<ReleaseOutcome, StoreError> {
        self.note_alive(context, agent);
        self.release_cas(context, agent, path)
    }

    fn observe(
        &self,
        context: &str,
        agent: &str,
        seen_revision: u64,
    ) -> Result<StaleView, StoreError> {
        validate_agent_name(agent)?;
        // The common case on a server: this process knows the agent and committed the
        // revisions in between, so no query is needed (another process recording the
        // same agent at once could make a notice be told twice; never lost).
        if let Some(fast) = self.observe_from_memory(context, agent, seen_revision) {
            return Ok(fast);
        }
        let (view, row) = self.with_reader(|conn| {
            let head = read::head(conn, context)?;
            let seen = seen_revision.min(head.revision);
            let row = self.presence_row(conn, context, agent)?;
            // Never seen before: everything by others is news.
            let since = row.map_or(0, |r| r.seen);
            let view = match self.shared.recent.stale(context, agent, since, seen) {
                Some(view) => view,
                None => presence::stale(conn, context, agent, since, seen)?,
            };
            Ok((view, (row, seen)))
        })?;
        let (db_row, seen) = row;
        self.note_presence(
            presence::Update {
                context: context.to_owned(),
                agent: agent.to_owned(),
                seen: Some(seen),
                // First contact: the view it now has supersedes older critical notices.
                critical_shown: db_row.is_none().then_some(seen),
                at_ms: now_ms(),
            },
            db_row,
        );
        Ok(view)
    }

    fn agents(&self, context: &str, now_ms: u64) -> Result<Vec<AgentPresence>, StoreError> {
        let away_after = self.shared.options.away_after_ms;
        let list = |conn: &Connection| -> Result<Vec<AgentPresence>, StoreError> {
            let current = self.current(conn, context)?;
            let mut rows = presence::rows(conn, context)?;
            if let Ok(mine) = self.shared.presence.lock() {
                for ((ctx, agent), row) in mine.iter() {
                    if ctx != context {
                        continue;
                    }
                    match rows.iter_mut().find(|(a, _)| a == agent) {
                        Some((_, r)) => *r = r.max(*row),
                        None => rows.push((agent.clone(), *row)),
                    }
                }
            }
            let claims = ctxsync_core::claims::live_claims(&current.doc, now_ms);
            // Holders of claims that never pulled or pushed are listed too.
            for claim in &claims {
                if !rows.iter().any(|(a, _)| *a == claim.holder) {
                    rows.push((claim.holder.clone(), presence::Row::default()));
                }
            }
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            rows.into_iter()
                .map(|(agent, row)| {
                    Ok(AgentPresence {
                        unseen_critical: presence::critical_revisions_after(
                            conn,
                            context,
                            &agent,
                            row.critical_shown,
                        )?,
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
                    })
                })
                .collect()
        };
        let listed = self.with_reader(list)?;
        // Away agents' expired claims are released lazily, here.
        let expired_away: Vec<String> = {
            let doc = self.with_reader(|conn| Ok(self.current(conn, context)?.doc.clone()))?;
            listed
                .iter()
                .filter(|p| p.away)
                .filter(|p| {
                    !ctxsync_core::claims::expired_claims_of(&doc, &p.agent, now_ms).is_empty()
                })
                .map(|p| p.agent.clone())
                .collect()
        };
        if expired_away.is_empty() {
            return Ok(listed);
        }
        let ctx = context.to_owned();
        self.exec(move |w| w.hand_over_away(&ctx, expired_away))?;
        self.with_reader(list)
    }

    fn unseen_critical(
        &self,
        context: &str,
        agent: &str,
        mark_seen: bool,
    ) -> Result<Vec<CriticalNotice>, StoreError> {
        validate_agent_name(agent)?;
        let (notices, db_row, head) = self.with_reader(|conn| {
            let head = read::head(conn, context)?;
            let row = self.presence_row(conn, context, agent)?;
            let shown = row.map_or(0, |r| r.critical_shown);
            let notices = presence::critical_after(conn, context, agent, shown)?;
            Ok((notices, row, head.revision))
        })?;
        if mark_seen {
            self.note_presence(
                presence::Update {
                    context: context.to_owned(),
                    agent: agent.to_owned(),
                    seen: None,
                    critical_shown: Some(head),
                    at_ms: now_ms(),
                },
                db_row,
            );
        }
        Ok(notices)
    }
}

/// Refuses agent names that could not be told apart in logs and paths: 1-64 of
/// `A-Za-z0-9._-`.
pub fn validate_agent_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "bad agent name {name:?}: use 1-64 of A-Z a-z 0-9 . _ -"
        )))
    }
}
