//! `ctxsync mcp`: the MCP server (crate `ctxsync-mcp`) on standard input and output, for
//! clients that spawn one server per agent.
//!
//! The store is the one every context command uses: the embedded SQLite store in
//! `.ctxsync/`, or in remote mode (`CTXSYNC_SERVER` + `CTXSYNC_TOKEN`) the server, with
//! pushes that cannot reach it kept in the same outbox the CLI uses ([`QueuingStore`]).
//! Standard output carries MCP messages only: diagnostics go to standard error (the
//! binary's logger writes there, without colours for this command).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use ctxsync_client::{Outbox, RemoteClient};
use ctxsync_core::{PushRequest, PushResponse};
use ctxsync_store::{
    Actor, AgentPresence, ArchiveQuery, ArchiveRecord, ClaimOutcome, CompactReport, CriticalNotice,
    Head, HistoryFilter, LogEntry, Metrics, Prefer, ReleaseOutcome, Retention, Role, Snapshot,
    StaleView, Store, StoreError, StoredConflict, SyncSample, TokenInfo, VerifyReport,
};
use serde_json::Value;

use crate::Common;

/// Options of `ctxsync mcp`.
#[derive(Args, Debug)]
pub struct McpArgs {
    /// Agent every tool call acts as (default: CTXSYNC_AGENT, else `agent` in
    /// ctxsync.toml). Without one, the read tools work and the write tools say how to
    /// name one.
    #[arg(long, env = "CTXSYNC_AGENT")]
    pub agent: Option<String>,
    /// Context the tools act on when a call names none (default: `context` in
    /// ctxsync.toml, else `default`).
    #[arg(long, env = "CTXSYNC_CONTEXT")]
    pub context: Option<String>,
    /// Repository root holding ctxsync.toml and .ctxsync/ (default: found by walking up).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub root: Option<std::path::PathBuf>,
    /// Store to open in embedded mode: a SQLite file path or `postgres://…` (default: the
    /// config's).
    #[arg(long, env = "CTXSYNC_DB", value_name = "PATH|URL")]
    pub db: Option<String>,
}

pub fn run(args: &McpArgs) -> Result<ExitCode> {
    let common = Common {
        context: args.context.clone(),
        root: args.root.clone(),
        json: false,
        db: args.db.clone(),
    };
    let env = crate::context::commands::open(&common)?;
    let mut agent = env.config.agent(args.agent.as_deref());
    if let Some(agent) = &agent {
        ctxsync_store::validate_agent_name(agent).map_err(|e| crate::InputError(e.to_string()))?;
    }
    // Remote mode: the token names the agent. A server that cannot be reached now leaves
    // the agent unnamed (writes say how to name one) rather than the server unstarted.
    if let (None, Some(remote)) = (&agent, &env.remote) {
        match remote.token_agent() {
            Ok(name) => agent = Some(name),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "no agent for MCP writes"),
        }
    }
    let remote = env.remote.is_some();
    let store: Arc<dyn Store> = match env.remote {
        Some(remote) => Arc::new(QueuingStore {
            inner: env.store,
            client: remote.client,
            outbox: remote.outbox,
        }),
        None => Arc::from(env.store),
    };
    let options = ctxsync_mcp::McpOptions {
        context: env.context,
        agent,
        // Over HTTP each head read is a request: poll a remote server less often.
        poll_interval: Duration::from_millis(if remote { 250 } else { 20 }),
        ..ctxsync_mcp::McpOptions::default()
    };
    tracing::info!(context = %options.context, agent = ?options.agent, remote, "MCP server on stdio");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let server = ctxsync_mcp::CtxsyncMcp::new(store, options);
    runtime
        .block_on(ctxsync_mcp::serve_stdio(server))
        .context("MCP over stdio")?;
    // A tool call blocked on the store must not keep the process alive after the client
    // has gone.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

/// The remote store with the CLI's outbox: a push first delivers what is queued, and one
/// that cannot reach the server is queued (durably) and reported as unavailable, so the
/// agent learns it is not applied yet and the next call retries it.
struct QueuingStore {
    inner: Box<dyn Store>,
    client: RemoteClient,
    outbox: Outbox,
}

impl QueuingStore {
    fn queue(&self, context: &str, request: PushRequest, why: &str) -> StoreError {
        let id = request.request_id.clone().unwrap_or_default();
        match self
            .outbox
            .enqueue(context, request, why, ctxsync_mcp::now_ms())
        {
            Ok(item) => StoreError::Unavailable(format!(
                "{why}; the push (request {id}) is queued as #{} in {} and is sent with the next push",
                item.seq,
                self.outbox.dir().display()
            )),
            Err(e) => StoreError::Unavailable(format!("{why}; and it could not be queued: {e}")),
        }
    }
}

impl Store for QueuingStore {
    fn create_context(&self, name: &str, document: Value) -> Result<Head, StoreError> {
        self.inner.create_context(name, document)
    }
    fn list_contexts(&self) -> Result<Vec<Head>, StoreError> {
        self.inner.list_contexts()
    }
    fn head(&self, context: &str) -> Result<Head, StoreError> {
        self.inner.head(context)
    }
    fn read(&self, context: &str, revision: Option<u64>) -> Result<Snapshot, StoreError> {
        self.inner.read(context, revision)
    }
    fn push(&self, context: &str, request: PushRequest) -> Result<PushResponse, StoreError> {
        let flushed = self
            .outbox
            .flush(|item| self.client.push(&item.context, &item.request));
        let pending = match flushed {
            Ok(report) => report.remaining,
            Err(e) => return Err(StoreError::Io(format!("the outbox: {e}"))),
        };
        if pending > 0 {
            return Err(self.queue(context, request, "earlier pushes are still queued"));
        }
        match self.client.push(context, &request) {
            Ok(answer) => Ok(answer),
            Err(e) if e.is_unavailable() => {
                let why = e.to_string();
                Err(self.queue(context, request, &why))
            }
            Err(e) => Err(crate::remote::store_error(context, e)),
        }
    }
    fn log_since(&self, context: &str, since: u64) -> Result<Vec<LogEntry>, StoreError> {
        self.inner.log_since(context, since)
    }
    fn history(&self, context: &str, filter: &HistoryFilter) -> Result<Vec<LogEntry>, StoreError> {
        self.inner.history(context, filter)
    }
    fn open_conflicts(&self, context: &str) -> Result<Vec<StoredConflict>, StoreError> {
        self.inner.open_conflicts(context)
    }
    fn resolve_conflict(
        &self,
        context: &str,
        id: u64,
        prefer: Prefer,
        actor: &Actor,
    ) -> Result<Option<PushResponse>, StoreError> {
        self.inner.resolve_conflict(context, id, prefer, actor)
    }
    fn verify(&self, context: &str) -> Result<VerifyReport, StoreError> {
        self.inner.verify(context)
    }
    fn revert(&self, context: &str, to: u64, actor: &Actor) -> Result<PushResponse, StoreError> {
        self.inner.revert(context, to, actor)
    }
    fn record_sync(&self, context: &str, sample: &SyncSample) -> Result<(), StoreError> {
        self.inner.record_sync(context, sample)
    }
    fn metrics(&self, context: &str, now_ms: u64) -> Result<Metrics, StoreError> {
        self.inner.metrics(context, now_ms)
    }
    fn sync_buckets(
        &self,
        context: &str,
        span: &ctxsync_store::BucketSpan,
    ) -> Result<Vec<ctxsync_store::SyncBucket>, StoreError> {
        self.inner.sync_buckets(context, span)
    }
    fn snapshot(&self, context: &str) -> Result<Head, StoreError> {
        self.inner.snapshot(context)
    }
    fn storage(&self) -> Result<ctxsync_store::StorageUsage, StoreError> {
        self.inner.storage()
    }
    fn compact(&self, context: &str, retain: &Retention) -> Result<CompactReport, StoreError> {
        self.inner.compact(context, retain)
    }
    fn archive_run(&self, context: &str) -> Result<Option<PushResponse>, StoreError> {
        self.inner.archive_run(context)
    }
    fn archive_list(
        &self,
        context: &str,
        query: &ArchiveQuery,
    ) -> Result<Vec<ArchiveRecord>, StoreError> {
        self.inner.archive_list(context, query)
    }
    fn create_token(
        &self,
        agent: &str,
        secret: &str,
        label: &str,
        role: Role,
    ) -> Result<TokenInfo, StoreError> {
        self.inner.create_token(agent, secret, label, role)
    }
    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.inner.list_tokens()
    }
    fn revoke_token(&self, id: &str) -> Result<TokenInfo, StoreError> {
        self.inner.revoke_token(id)
    }
    fn authenticate(&self, secret: &str) -> Result<Option<TokenInfo>, StoreError> {
        self.inner.authenticate(secret)
    }
    fn claim(
        &self,
        context: &str,
        agent: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        self.inner.claim(context, agent, path, ttl_ms)
    }
    fn release(
        &self,
        context: &str,
        agent: &str,
        path: &str,
    ) -> Result<ReleaseOutcome, StoreError> {
        self.inner.release(context, agent, path)
    }
    fn observe(&self, context: &str, agent: &str, seen: u64) -> Result<StaleView, StoreError> {
        self.inner.observe(context, agent, seen)
    }
    fn agents(&self, context: &str, now_ms: u64) -> Result<Vec<AgentPresence>, StoreError> {
        self.inner.agents(context, now_ms)
    }
    fn unseen_critical(
        &self,
        context: &str,
        agent: &str,
        mark_seen: bool,
    ) -> Result<Vec<CriticalNotice>, StoreError> {
        self.inner.unseen_critical(context, agent, mark_seen)
    }
    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }
}
