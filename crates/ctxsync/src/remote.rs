//! Remote mode: the [`Store`] trait over a ctxsync server, so every context command runs
//! unchanged (same output, same exit codes) whether the store is embedded or remote.
//!
//! Server answers are mapped back onto the store's own errors: a 404 is
//! `StoreError::NotFound`, a 410 is `Gone`, other 4xx are `Invalid` (exit 2), and an
//! unreachable server or a 5xx is `Unavailable` (exit 3, and pushes go to the outbox).

use std::time::Duration;

use ctxsync_client::{PullQuery, Pulled, RemoteClient, RemoteError};
use ctxsync_core::{PushRequest, PushResponse};
use ctxsync_store::{
    Actor, AgentPresence, ArchiveQuery, ArchiveRecord, ClaimOutcome, CompactReport, CriticalNotice,
    Head, HistoryFilter, LogEntry, Metrics, Prefer, ReleaseOutcome, Retention, Role, Snapshot,
    StaleView, Store, StoreError, StoredConflict, SyncSample, TokenInfo, VerifyReport,
};
use serde_json::Value;

/// How long one request may take before it counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A server seen through the [`Store`] trait.
pub struct RemoteStore {
    pub client: RemoteClient,
}

impl RemoteStore {
    pub fn new(url: &str, token: Option<String>) -> Self {
        Self {
            client: RemoteClient::new(url, token, REQUEST_TIMEOUT),
        }
    }
}

/// The store error a remote error stands for, worded by the server's own message
/// (without a second "invalid request:").
pub fn store_error(context: &str, e: RemoteError) -> StoreError {
    match &e {
        RemoteError::Status {
            status: 404, code, ..
        } if code == "not_found" || code.is_empty() => StoreError::NotFound(context.to_owned()),
        RemoteError::Status {
            status: 409, code, ..
        } if code == "exists" => StoreError::Exists(context.to_owned()),
        RemoteError::Status {
            status: 409,
            code,
            message,
        } if code == "request_id_reused" => StoreError::Refused(message.clone()),
        RemoteError::Status {
            status: 401,
            message,
            ..
        } => StoreError::Unauthorized(format!(
            "{message} (the CLI sends CTXSYNC_TOKEN, else the token in .ctxsync/token)"
        )),
        RemoteError::Status {
            status: 403,
            message,
            ..
        } => StoreError::Forbidden(
            message
                .strip_prefix("forbidden: ")
                .unwrap_or(message)
                .to_owned(),
        ),
        // A 410 is our own `Gone`, worded by the server's store ("revision R is older
        // than the horizon H"): the numbers are read back so callers can act on it.
        RemoteError::Status {
            status: 410,
            message,
            ..
        } => match gone_numbers(message) {
            Some((requested, horizon)) => StoreError::Gone { requested, horizon },
            None => StoreError::Invalid(format!("{message} [gone]")),
        },
        RemoteError::Status {
            status: 413,
            message,
            ..
        } => StoreError::OverLimit(format!("too large: {message}")),
        RemoteError::Status {
            status,
            message,
            code,
        } if (400..500).contains(status) => {
            // The server words its store errors itself, "invalid request: " included;
            // `Invalid` adds it again.
            let message = message.strip_prefix("invalid request: ").unwrap_or(message);
            StoreError::Invalid(if code.is_empty() {
                message.to_owned()
            } else {
                format!("{message} [{code}]")
            })
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// `(R, H)` from "revision R is older than the horizon H…".
fn gone_numbers(message: &str) -> Option<(u64, u64)> {
    let rest = message.split("revision ").nth(1)?;
    let requested = rest.split_whitespace().next()?.parse().ok()?;
    let rest = rest.split("horizon ").nth(1)?;
    let horizon = rest
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((requested, horizon))
}

impl Store for RemoteStore {
    fn create_context(&self, name: &str, document: Value) -> Result<Head, StoreError> {
        self.client
            .create_context(name, document)
            .map_err(|e| store_error(name, e))
    }

    fn list_contexts(&self) -> Result<Vec<Head>, StoreError> {
        self.client.list_contexts().map_err(|e| store_error("", e))
    }

    fn head(&self, context: &str) -> Result<Head, StoreError> {
        self.client
            .head(context)
            .map_err(|e| store_error(context, e))
    }

    fn read(&self, context: &str, revision: Option<u64>) -> Result<Snapshot, StoreError> {
        let query = PullQuery {
            at: revision,
            ..PullQuery::default()
        };
        match self.client.pull(context, &query) {
            Ok(Pulled::Full {
                revision,
                checksum,
                document,
                ..
            }) => Ok(Snapshot {
                revision,
                checksum,
                document,
            }),
            Ok(Pulled::Delta { .. }) => Err(StoreError::Unavailable(
                "the server answered a full read with a delta".into(),
            )),
            Err(e) => Err(store_error(context, e)),
        }
    }

    fn push(&self, context: &str, request: PushRequest) -> Result<PushResponse, StoreError> {
        self.client
            .push(context, &request)
            .map_err(|e| store_error(context, e))
    }

    fn log_since(&self, context: &str, since: u64) -> Result<Vec<LogEntry>, StoreError> {
        self.client
            .log_since(context, since)
            .map_err(|e| store_error(context, e))
    }

    fn history(&self, context: &str, filter: &HistoryFilter) -> Result<Vec<LogEntry>, StoreError> {
        self.client
            .history(context, filter)
            .map_err(|e| store_error(context, e))
    }

    fn open_conflicts(&self, context: &str) -> Result<Vec<StoredConflict>, StoreError> {
        self.client
            .conflicts(context)
            .map_err(|e| store_error(context, e))
    }

    fn resolve_conflict(
        &self,
        context: &str,
        id: u64,
        prefer: Prefer,
        _actor: &Actor,
    ) -> Result<Option<PushResponse>, StoreError> {
        // The server acts as the token's agent.
        self.client
            .resolve_conflict(context, id, prefer)
            .map_err(|e| match e {
                RemoteError::Status { status: 404, .. } => StoreError::NoSuchConflict(id),
                e => store_error(context, e),
            })
    }

    fn verify(&self, context: &str) -> Result<VerifyReport, StoreError> {
        self.client
            .verify(context)
            .map_err(|e| store_error(context, e))
    }

    fn revert(&self, context: &str, to: u64, _actor: &Actor) -> Result<PushResponse, StoreError> {
        self.client
            .revert(context, to)
            .map_err(|e| store_error(context, e))
    }

    fn record_sync(&self, context: &str, sample: &SyncSample) -> Result<(), StoreError> {
        self.client
            .record_sync(context, sample)
            .map_err(|e| store_error(context, e))
    }

    fn metrics(&self, context: &str, _now_ms: u64) -> Result<Metrics, StoreError> {
        self.client
            .metrics(context)
            .map_err(|e| store_error(context, e))
    }

    fn sync_buckets(
        &self,
        _context: &str,
        _span: &ctxsync_store::BucketSpan,
    ) -> Result<Vec<ctxsync_store::SyncBucket>, StoreError> {
        // The server aggregates its own sync log: `GET /v1/contexts/{ctx}/trends`.
        Err(StoreError::Unavailable(
            "a remote store's sync log is read through the server's trends endpoint".into(),
        ))
    }

    fn snapshot(&self, context: &str) -> Result<Head, StoreError> {
        self.client
            .snapshot(context)
            .map_err(|e| store_error(context, e))
    }

    fn storage(&self) -> Result<ctxsync_store::StorageUsage, StoreError> {
        self.client.storage().map_err(|e| store_error("", e))
    }

    fn compact(&self, context: &str, retain: &Retention) -> Result<CompactReport, StoreError> {
        self.client
            .compact(context, retain)
            .map_err(|e| store_error(context, e))
    }

    fn archive_run(&self, context: &str) -> Result<Option<PushResponse>, StoreError> {
        self.client
            .archive_run(context)
            .map_err(|e| store_error(context, e))
    }

    fn archive_list(
        &self,
        context: &str,
        query: &ArchiveQuery,
    ) -> Result<Vec<ArchiveRecord>, StoreError> {
        self.client
            .archive_list(context, query)
            .map_err(|e| store_error(context, e))
    }

    fn create_token(&self, _: &str, _: &str, _: &str, _: Role) -> Result<TokenInfo, StoreError> {
        Err(tokens_are_local())
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        Err(tokens_are_local())
    }

    fn revoke_token(&self, _: &str) -> Result<TokenInfo, StoreError> {
        Err(tokens_are_local())
    }

    fn authenticate(&self, _: &str) -> Result<Option<TokenInfo>, StoreError> {
        Err(tokens_are_local())
    }

    // The server acts as the token's agent: `agent` is not sent (a token for another
    // agent is refused there).
    fn claim(
        &self,
        context: &str,
        _agent: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        self.client
            .claim(context, path, ttl_ms)
            .map_err(|e| store_error(context, e))
    }

    fn release(
        &self,
        context: &str,
        _agent: &str,
        path: &str,
    ) -> Result<ReleaseOutcome, StoreError> {
        self.client
            .release(context, path)
            .map_err(|e| store_error(context, e))
    }

    fn observe(
        &self,
        context: &str,
        _agent: &str,
        seen_revision: u64,
    ) -> Result<StaleView, StoreError> {
        self.client
            .seen(context, seen_revision)
            .map_err(|e| store_error(context, e))
    }

    fn agents(&self, context: &str, _now_ms: u64) -> Result<Vec<AgentPresence>, StoreError> {
        self.client
            .agents(context)
            .map_err(|e| store_error(context, e))
    }

    fn unseen_critical(
        &self,
        context: &str,
        agent: &str,
        mark_seen: bool,
    ) -> Result<Vec<CriticalNotice>, StoreError> {
        self.client
            .unseen_critical(context, agent, mark_seen)
            .map_err(|e| store_error(context, e))
    }
}

fn tokens_are_local() -> StoreError {
    StoreError::Invalid(
        "tokens are managed on the server's machine, against its store (unset CTXSYNC_SERVER there)"
            .into(),
    )
}
