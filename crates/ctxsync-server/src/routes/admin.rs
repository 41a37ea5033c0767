//! The rest of a context's API: history and op log, open conflicts and their
//! resolution, verify, revert, recorded syncs, snapshots and metrics.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ctxsync_core::{Level, Prefer, PushResponse};
use ctxsync_store::{HistoryFilter, LogEntry, StoredConflict, SyncSample};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::{FormatQuery, P, Q};
use crate::auth::{self, Bearer};
use crate::errors::ApiError;
use crate::negotiate::{self, Format, RawBody};
use crate::openapi::schemas;
use crate::AppState;

#[derive(Serialize)]
struct Entries {
    entries: Vec<LogEntry>,
}

/// Query of `history`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many entries (newest first); all when absent.
    pub last: Option<usize>,
    /// Only this agent's revisions.
    pub agent: Option<String>,
    /// Only revisions of this level.
    pub level: Option<String>,
    pub format: Option<String>,
}

/// The op log, newest first, filtered.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/history", tag = "admin",
    params(("ctx" = String, Path, description = "Context name"), HistoryQuery),
    responses(
        (status = 200, description = "Entries, newest first", body = schemas::Entries),
        (status = 400, description = "Bad level", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<HistoryQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let level = q
        .level
        .as_deref()
        .map(str::parse::<Level>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let filter = HistoryFilter {
        last: q.last,
        agent: q.agent,
        level,
    };
    let entries = state
        .authed(bearer, move |store, _token| {
            Ok(store.history(&ctx, &filter)?)
        })
        .await?;
    Ok(negotiate::reply(
        format,
        StatusCode::OK,
        &Entries { entries },
    ))
}

/// Query of `log`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Entries after this revision (default 0); 410 below the horizon.
    pub since: Option<u64>,
    pub format: Option<String>,
}

/// The op log after a revision, oldest first.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/log", tag = "admin",
    params(("ctx" = String, Path, description = "Context name"), LogQuery),
    responses(
        (status = 200, description = "Entries, oldest first", body = schemas::Entries),
        (status = 400, description = "`since` in the future", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
        (status = 410, description = "`since` below the horizon", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn log(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let since = q.since.unwrap_or(0);
    let entries = state
        .authed(bearer, move |store, _token| {
            Ok(store.log_since(&ctx, since)?)
        })
        .await?;
    Ok(negotiate::reply(
        format,
        StatusCode::OK,
        &Entries { entries },
    ))
}

#[derive(Serialize)]
struct Conflicts {
    conflicts: Vec<StoredConflict>,
}

/// Open (deferred) conflicts.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/conflicts", tag = "admin",
    params(("ctx" = String, Path, description = "Context name")),
    responses(
        (status = 200, description = "Open conflicts, oldest first", body = schemas::Conflicts),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn conflicts(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let conflicts = state
        .authed(bearer, move |store, _token| Ok(store.open_conflicts(&ctx)?))
        .await?;
    Ok(negotiate::reply(
        format,
        StatusCode::OK,
        &Conflicts { conflicts },
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    prefer: Prefer,
}

#[derive(Serialize)]
struct ResolveAnswer {
    id: u64,
    push: Option<PushResponse>,
}

/// Settles an open conflict: `mine` applies the stored change (forced) as the token's
/// agent, `theirs` discards it.
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/conflicts/{id}/resolve", tag = "admin",
    params(("ctx" = String, Path, description = "Context name"), ("id" = u64, Path, description = "Conflict id")),
    request_body(content = schemas::ResolveBody),
    responses(
        (status = 200, description = "Resolved; `push` is the revision made for `mine`", body = schemas::ResolveAnswer),
        (status = 400, description = "Bad body, or the agent may not write the path", body = schemas::ErrorBody),
        (status = 403, description = "Another agent's conflict (only it or an admin may settle it), or a viewer token", body = schemas::ErrorBody),
        (status = 404, description = "No such context or open conflict", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn resolve(
    State(state): State<AppState>,
    P((ctx, id)): P<(String, u64)>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let context = ctx.clone();
    let push = state
        .authed(bearer, move |store, token| {
            auth::may_write(&token)?;
            let body: ResolveBody = negotiate::parse(body.format, &body.bytes)?;
            Ok(store.resolve_conflict(&context, id, body.prefer, &auth::actor(&token))?)
        })
        .await?;
    if push.as_ref().is_some_and(|p| !p.applied.is_empty()) {
        state.hub().notify(&ctx);
    }
    Ok(negotiate::reply(
        format,
        StatusCode::OK,
        &ResolveAnswer { id, push },
    ))
}

/// Replays the op log and checks every stored checksum (200 even when not ok).
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/verify", tag = "admin",
    params(("ctx" = String, Path, description = "Context name")),
    responses(
        (status = 200, description = "The report; `ok` false lists the problems", body = schemas::VerifyReport),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let report = state
        .authed(bearer, move |store, _token| Ok(store.verify(&ctx)?))
        .await?;
    state.board().checked(&report, now_ms());
    Ok(negotiate::reply(format, StatusCode::OK, &report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevertBody {
    to: u64,
}

/// Makes a new revision equal to revision `to`, as the token's agent: checked like the
/// push it is (all or nothing; 403 with the rejections when it would change paths the
/// agent does not own), unless the token is an admin's.
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/revert", tag = "admin",
    params(("ctx" = String, Path, description = "Context name")),
    request_body(content = schemas::RevertBody),
    responses(
        (status = 200, description = "The revert's push", body = schemas::PushResponse),
        (status = 400, description = "Bad body or `to` in the future", body = schemas::ErrorBody),
        (status = 403, description = "The revert would change paths the agent does not own (a PushResponse with `rejected`; nothing applied), or a viewer token (an ErrorBody)", body = schemas::PushResponse),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
        (status = 410, description = "`to` below the horizon", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revert(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let context = ctx.clone();
    let response = state
        .authed(bearer, move |store, token| {
            auth::may_write(&token)?;
            let body: RevertBody = negotiate::parse(body.format, &body.bytes)?;
            Ok(store.revert(&context, body.to, &auth::actor(&token))?)
        })
        .await?;
    if !response.applied.is_empty() {
        state.hub().notify(&ctx);
    }
    let status = StatusCode::from_u16(response.status()).unwrap_or(StatusCode::OK);
    Ok(negotiate::reply(format, status, &response))
}

/// Records a sync that did not go through push (e.g. a deferred periodic sync).
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/syncs", tag = "admin",
    params(("ctx" = String, Path, description = "Context name")),
    request_body(content = schemas::SyncSample),
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "Bad body", body = schemas::ErrorBody),
        (status = 403, description = "`agent` is not the token's", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn syncs(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    body: RawBody,
) -> Result<Response, ApiError> {
    state
        .authed(bearer, move |store, token| {
            let sample: SyncSample = negotiate::parse(body.format, &body.bytes)?;
            auth::same_agent(&token, &sample.agent, "record a sync")?;
            Ok(store.record_sync(&ctx, &sample)?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Writes a snapshot of the current revision (session end).
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/snapshot", tag = "admin",
    params(("ctx" = String, Path, description = "Context name")),
    responses(
        (status = 200, description = "The head that was snapshotted", body = schemas::Head),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn snapshot(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let head = state
        .authed(bearer, move |store, token| {
            auth::may_write(&token)?;
            Ok(store.snapshot(&ctx)?)
        })
        .await?;
    Ok(negotiate::reply(format, StatusCode::OK, &head))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The seed's sync metrics for this context, with the server's compression ratio.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/metrics", tag = "admin",
    params(("ctx" = String, Path, description = "Context name")),
    responses(
        (status = 200, description = "Metrics", body = schemas::Metrics),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn metrics(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let mut metrics = state
        .authed(bearer, move |store, _token| {
            Ok(store.metrics(&ctx, now_ms())?)
        })
        .await?;
    metrics.compression_ratio = state.metrics().compression_ratio();
    Ok(negotiate::reply(format, StatusCode::OK, &metrics))
}
