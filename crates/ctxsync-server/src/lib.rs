//! The ctxsync HTTP server: the REST API over a [`Store`], Server-Sent Events for new
//! revisions, bearer-token auth, Prometheus metrics and an OpenAPI 3.1 description.
//!
//! Architecture, one module per concern:
//!
//! * [`routes`] — the handlers, one file per group (contexts, push, pull, events, admin,
//!   health). Handlers are small: parse, authenticate and call the store on a blocking
//!   thread ([`AppState::blocking`]), answer.
//! * [`auth`] — `Authorization: Bearer`, checked against the store on every request.
//! * [`negotiate`] — JSON/YAML bodies and answers, the size-limited body reader;
//!   [`yaml`] — the YAML writer of answers.
//! * [`errors`] — the single error shape and the mapping of store errors to statuses.
//! * [`view`] — sections, delta filtering and collapsing.
//! * [`budget`] — trimming a document to a token budget (in `ctxsync-core`, re-exported
//!   here, so the MCP server trims the same way).
//! * [`fanout`] — the per-context publisher and broadcast channel behind the event stream.
//! * [`metrics`] — counters, Prometheus text, compression byte counting.
//! * [`openapi`] — the OpenAPI document served at `/openapi.json`.
//! * [`ui`] — the live dashboard at `/ui` (embedded HTML/CSS/JS); [`board`] — the push
//!   samples and integrity checks its endpoints read (`routes::dashboard`).
//! * [`agent_sync`] — the runs and reference checks `serve --watch-agents` pushes in,
//!   for the dashboard's *Agent sync* page (`routes::agent_sync`).
//! * [`mcp`] — `/mcp`, the MCP server (`ctxsync-mcp`) over Streamable HTTP, behind the
//!   Origin and token checks.
//! * `conn` — the accept loop and per-connection limits (cap, header, body and idle
//!   timeouts); [`limits`] — the descriptor limit the cap must fit in.
//!
//! The store is blocking (SQLite); every store call runs under
//! `tokio::task::spawn_blocking`.
#![forbid(unsafe_code)]

pub mod agent_sync;
pub mod auth;
pub mod board;
pub use ctxsync_core::budget;
mod conn;
pub mod errors;
pub mod fanout;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod negotiate;
pub mod openapi;
pub mod routes;
pub mod ui;
pub mod view;
pub mod yaml;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Router;
use ctxsync_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use errors::ApiError;

/// How often publishers poll the store when it also tells of other processes' commits
/// ([`Store::watch_commits`]): only lost hints wait this long.
const HINTED_POLL: Duration = Duration::from_secs(2);

/// Concurrent store reads; below the store's pool of reader connections.
const READERS: usize = 8;

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// How often each event publisher looks for commits made by other processes.
    pub poll_interval: Duration,
    /// Interval of keep-alive comments on event streams.
    pub keep_alive: Duration,
    /// Revisions buffered per context for slow subscribers before they re-read the store.
    pub broadcast_capacity: usize,
    /// Longest wait for a request's head: from the connection's start, and again from
    /// the end of each answer on a kept-alive connection (so this is also the idle
    /// keep-alive timeout). A client sending nothing, or a byte now and then, is dropped.
    pub header_read_timeout: Duration,
    /// Longest time to read a request body; a slower one is answered 408.
    pub body_read_timeout: Duration,
    /// A connection on which no byte moved either way for this long, while no handler
    /// works on it, is closed (a client that stopped reading its answer or event
    /// stream). Must be above `keep_alive`, which keeps quiet event streams moving.
    pub idle_timeout: Duration,
    /// Most connections open at once, lowered to what the descriptor limit allows
    /// ([`limits::connection_cap`]); more wait in the listen backlog.
    pub max_connections: usize,
    /// Storage sizes that raise a warning (`/v1/storage`, `/readyz`).
    pub storage_warnings: ctxsync_store::StorageThresholds,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            poll_interval: Duration::from_millis(200),
            keep_alive: Duration::from_secs(15),
            broadcast_capacity: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            storage_warnings: ctxsync_store::StorageThresholds::default(),
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    config: ServerConfig,
    hub: fanout::Hub,
    metrics: metrics::Metrics,
    closing: watch::Sender<bool>,
    /// Bounds concurrent store reads (token checks, pulls, event catch-up), so they run
    /// on the store's pooled, warm reader connections instead of opening new ones under
    /// load (which costs far more than waiting for a permit).
    read_permits: Arc<tokio::sync::Semaphore>,
    /// The newest encoded full-pull answer per context: (revision, JSON bytes).
    pull_cache: std::sync::Mutex<std::collections::HashMap<String, (u64, axum::body::Bytes)>>,
    /// Tokens that authenticated, valid while the store's token epoch is unchanged (any
    /// `token create`/`revoke`, by any process, changes it and empties this).
    auth_cache: std::sync::Mutex<auth::AuthCache>,
    /// What the dashboard reads that the store does not keep.
    board: board::Board,
    /// The agents watcher's runs, when the binary runs one (`serve --watch-agents`).
    agent_sync: std::sync::OnceLock<Arc<agent_sync::AgentSyncFeed>>,
}

/// What every handler shares: the store, the settings, the fan-out hub and the counters.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let (closing, closing_rx) = watch::channel(false);
        // Commits by other servers on a shared database wake the publishers at once
        // (PostgreSQL's LISTEN/NOTIFY); the poll then only catches lost hints, every
        // few seconds. Hints that come before the state exists find no publisher.
        let woken: Arc<std::sync::OnceLock<std::sync::Weak<Inner>>> = Arc::default();
        let hinted = {
            let woken = Arc::clone(&woken);
            store.watch_commits(Arc::new(move |context: &str, _head: u64| {
                if let Some(inner) = woken.get().and_then(std::sync::Weak::upgrade) {
                    inner.hub.notify(context);
                }
            }))
        };
        let poll_interval = if hinted {
            config.poll_interval.max(HINTED_POLL)
        } else {
            config.poll_interval
        };
        let hub = fanout::Hub::new(
            Arc::clone(&store),
            poll_interval,
            config.broadcast_capacity,
            closing_rx,
        );
        let state = Self(Arc::new(Inner {
            store,
            config,
            hub,
            metrics: metrics::Metrics::default(),
            closing,
            read_permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            pull_cache: std::sync::Mutex::new(std::collections::HashMap::new()),
            auth_cache: std::sync::Mutex::new(auth::AuthCache::default()),
            board: board::Board::new(now_ms()),
            agent_sync: std::sync::OnceLock::new(),
        }));
        let _ = woken.set(Arc::downgrade(&state.0));
        state
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.0.metrics
    }

    pub fn board(&self) -> &board::Board {
        &self.0.board
    }

    /// Attaches the agents watcher's feed (once; a second feed is refused and returned).
    pub fn attach_agent_sync(
        &self,
        feed: Arc<agent_sync::AgentSyncFeed>,
    ) -> Result<(), Arc<agent_sync::AgentSyncFeed>> {
        self.0.agent_sync.set(feed)
    }

    /// The agents watcher's feed, when one is attached.
    pub fn agent_sync(&self) -> Option<&Arc<agent_sync::AgentSyncFeed>> {
        self.0.agent_sync.get()
    }

    pub fn hub(&self) -> &fanout::Hub {
        &self.0.hub
    }

    /// A receiver that turns `true` when the server shuts down (event streams end).
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.0.closing.subscribe()
    }

    /// Ends every event stream and publisher, so a graceful shutdown can finish.
    pub fn shutdown(&self) {
        let _ = self.0.closing.send(true);
    }

    async fn read_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.0.read_permits)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down"))
    }

    /// Authenticates `bearer` and runs `f` as its token, on the blocking pool (one hop for
    /// both), holding a reader permit throughout.
    pub async fn authed<T, F>(&self, bearer: auth::Bearer, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store, ctxsync_store::TokenInfo) -> Result<T, ApiError> + Send + 'static,
    {
        let permit = self.read_permit().await?;
        self.blocking(move |store| {
            let result = bearer.check(store).and_then(|token| f(store, token));
            drop(permit);
            result
        })
        .await
    }

    /// Like [`AppState::authed`], but the permit is given back after the token check:
    /// for work that waits on the store's writer rather than reading (pushes).
    pub async fn authed_write<T, F>(&self, bearer: auth::Bearer, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store, ctxsync_store::TokenInfo) -> Result<T, ApiError> + Send + 'static,
    {
        // A token seen since the last token change needs no store read: the work runs
        // here, without a hop to the blocking pool (pushes only parse and queue).
        let epoch = self.0.store.token_epoch();
        if let Some(token) = self.cached_token(&bearer, epoch) {
            return f(&*self.0.store, token);
        }
        let permit = self.read_permit().await?;
        let state = self.clone();
        self.blocking(move |store| {
            let token = bearer.check(store);
            drop(permit);
            let token = token?;
            state.remember_token(&bearer, epoch, &token);
            f(store, token)
        })
        .await
    }

    fn cached_token(
        &self,
        bearer: &auth::Bearer,
        epoch: Option<u128>,
    ) -> Option<ctxsync_store::TokenInfo> {
        let epoch = epoch?;
        let cache = self.0.auth_cache.lock().ok()?;
        cache.get(bearer, epoch)
    }

    fn remember_token(
        &self,
        bearer: &auth::Bearer,
        epoch: Option<u128>,
        token: &ctxsync_store::TokenInfo,
    ) {
        if let (Some(epoch), Ok(mut cache)) = (epoch, self.0.auth_cache.lock()) {
            cache.put(bearer, epoch, token.clone());
        }
    }

    /// Runs a blocking store read holding a reader permit.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
    {
        let permit = self.read_permit().await?;
        self.blocking(move |store| {
            let result = f(store);
            drop(permit);
            result
        })
        .await
    }

    /// The cached full-pull answer of `context` at `revision`, if there is one.
    pub(crate) fn cached_pull(&self, context: &str, revision: u64) -> Option<axum::body::Bytes> {
        let cache = self.0.pull_cache.lock().ok()?;
        cache
            .get(context)
            .filter(|(r, _)| *r == revision)
            .map(|(_, b)| b.clone())
    }

    /// Remembers the full-pull answer of `context` at `revision` (newer wins).
    pub(crate) fn cache_pull(&self, context: &str, revision: u64, bytes: axum::body::Bytes) {
        if let Ok(mut cache) = self.0.pull_cache.lock() {
            let newer = cache.get(context).is_none_or(|(r, _)| *r <= revision);
            if newer {
                cache.insert(context.to_owned(), (revision, bytes));
            }
        }
    }

    /// Runs blocking store work on the blocking pool.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
    {
        let store = Arc::clone(&self.0.store);
        match tokio::task::spawn_blocking(move || f(&*store)).await {
            Ok(result) => result,
            Err(e) => Err(ApiError::unavailable(format!("the request failed: {e}"))),
        }
    }
}

/// Milliseconds since the Unix epoch (0 on a clock before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The whole HTTP API with its middleware (compression, byte and status counters,
/// panic guard).
pub fn router(state: AppState) -> Router {
    use axum::middleware::{from_fn, from_fn_with_state};
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::compression::CompressionLayer;

    routes::routes()
        .with_state(state.clone())
        .merge(mcp::router(&state))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn(metrics::count_raw))
        .layer(CompressionLayer::new())
        .layer(from_fn_with_state(state, metrics::count_outer))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    ApiError::unavailable("internal error; nothing was applied").into_response()
}

/// Serves `state` on `listener` until `shutdown` completes, then ends the event streams
/// and waits for in-flight requests. Connections are capped and timed out as
/// [`ServerConfig`] says.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    tokio::spawn(hand_over_away(state.clone()));
    conn::serve(listener, app, state, shutdown).await
}

/// How often the server looks for away agents whose expired claims to hand over (the
/// same happens lazily whenever anyone lists the agents).
const AWAY_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Releases the expired claims of away agents, in every context, now and then.
async fn hand_over_away(state: AppState) {
    let mut closing = state.closing();
    let mut tick = tokio::time::interval(AWAY_SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = closing.changed() => return,
        }
        let swept = state
            .blocking(|store| {
                let mut moved = Vec::new();
                for head in store.list_contexts()? {
                    let now = store.now_ms();
                    match store.agents(&head.context, now) {
                        Ok(_) => {
                            if store.head(&head.context)?.revision != head.revision {
                                moved.push(head.context);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(context = %head.context, error = %e, "away sweep failed")
                        }
                    }
                }
                Ok(moved)
            })
            .await;
        match swept {
            Ok(moved) => {
                for context in moved {
                    state.hub().notify(&context);
                }
            }
            Err(e) => tracing::warn!(error = %e, "away sweep failed"),
        }
    }
}
