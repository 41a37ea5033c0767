//! A context's lifecycle (DESIGN §15): the archive of what archival moved out of its
//! lists, read lazily (`GET /v1/contexts/{ctx}/archive`); an archival run on demand
//! (`POST /v1/contexts/{ctx}/archive/run`); and compaction of the op log
//! (`POST /v1/contexts/{ctx}/compact`, admins only: it drops history); and what the
//! store takes on disk (`GET /v1/storage`), with the configured warnings.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ctxsync_store::{ArchiveQuery, ArchiveRecord, Retention, Role};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::{FormatQuery, P, Q};
use crate::auth::{self, Bearer};
use crate::errors::ApiError;
use crate::negotiate::{self, Format, RawBody};
use crate::openapi::schemas;
use crate::AppState;

/// Query of `archive`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArchiveParams {
    /// Only entries archived from this list (dotted path or JSON Pointer).
    pub list: Option<String>,
    /// Only the entry with this `id`.
    pub id: Option<String>,
    /// Only entries whose JSON contains this text (ASCII case ignored).
    pub q: Option<String>,
    /// Only entries after this position (paging: the last `seq` of the previous page).
    pub after: Option<u64>,
    /// At most this many (1..=1000; 1000 when absent).
    pub limit: Option<u64>,
    pub format: Option<String>,
}

#[derive(Serialize)]
struct Page {
    entries: Vec<ArchiveRecord>,
    /// The `after` of the next page, when this one was full.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<u64>,
}

/// Archived entries, oldest first.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/archive", tag = "admin",
    params(("ctx" = String, Path, description = "Context name"), ArchiveParams),
    responses(
        (status = 200, description = "Archived entries, oldest first", body = schemas::ArchivePage),
        (status = 400, description = "Bad list path or limit", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn archive(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<ArchiveParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    if q.limit == Some(0) || q.limit.is_some_and(|l| l > ctxsync_store::MAX_ARCHIVE_PAGE) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={}",
            ctxsync_store::MAX_ARCHIVE_PAGE
        )));
    }
    let limit = q.limit.unwrap_or(ctxsync_store::MAX_ARCHIVE_PAGE);
    let query = ArchiveQuery {
        list: q.list,
        id: q.id,
        text: q.q,
        after: q.after,
        limit: Some(limit),
    };
    let entries = state
        .authed(bearer, move |store, _token| {
            Ok(store.archive_list(&ctx, &query)?)
        })
        .await?;
    let next_after = (entries.len() as u64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(negotiate::reply(
        format,
        StatusCode::OK,
        &Page {
            entries,
            next_after,
        },
    ))
}

#[derive(Serialize)]
struct RunAnswer {
    /// The archival revision, when anything was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<ctxsync_core::PushResponse>,
}

/// Runs archival now: every configured list is cut to its newest entries in one revision.
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/archive/run", tag = "admin",
    params(("ctx" = String, Path, description = "Context name")),
    responses(
        (status = 200, description = "The archival revision (`push`), absent when nothing was due", body = schemas::ArchiveRun),
        (status = 403, description = "A read-only token", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn run(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let push = state
        .authed(bearer, move |store, token| {
            auth::may_write(&token)?;
            Ok(store.archive_run(&ctx)?)
        })
        .await?;
    Ok(negotiate::reply(
        format,
        StatusCode::OK,
        &RunAnswer { push },
    ))
}

/// Body of `compact`: how much history to keep; at least one limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactBody {
    retain_revisions: Option<u64>,
    retain_days: Option<u64>,
}

/// Drops the op log below the retention and moves the horizon (to the newest snapshot it
/// allows); reads and deltas below it are then 410 with `full_required`.
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/compact", tag = "admin",
    params(("ctx" = String, Path, description = "Context name")),
    request_body(content = schemas::CompactBody),
    responses(
        (status = 200, description = "What was dropped and the new horizon", body = schemas::CompactReport),
        (status = 400, description = "No retention given, or a malformed body", body = schemas::ErrorBody),
        (status = 403, description = "Not an admin token", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn compact(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let report = state
        .authed(bearer, move |store, token| {
            if token.role != Role::Admin {
                return Err(ApiError::forbidden(format!(
                    "token {} may not compact: dropping history needs an admin token",
                    token.id
                )));
            }
            let body: CompactBody = negotiate::parse(body.format, &body.bytes)?;
            let retain = retention(body.retain_revisions, body.retain_days)
                .map_err(ApiError::bad_request)?;
            Ok(store.compact(&ctx, &retain)?)
        })
        .await?;
    Ok(negotiate::reply(format, StatusCode::OK, &report))
}

/// A retention from its two spellings; at least one, and days that fit in milliseconds.
pub fn retention(revisions: Option<u64>, days: Option<u64>) -> Result<Retention, String> {
    if revisions.is_none() && days.is_none() {
        return Err("say how much history to keep: retain_revisions and/or retain_days".into());
    }
    let max_age_ms = match days {
        None => None,
        Some(d) => Some(
            d.checked_mul(24 * 3600 * 1000)
                .filter(|ms| *ms <= i64::MAX as u64)
                .ok_or_else(|| format!("retain_days {d} is too large"))?,
        ),
    };
    Ok(Retention {
        revisions,
        max_age_ms,
    })
}

/// What the store takes on disk, in total and per context, with a warning per
/// configured threshold passed (`[store] warn_*`).
#[utoipa::path(
    get, path = "/v1/storage", tag = "admin",
    responses(
        (status = 200, description = "Storage use and warnings", body = schemas::Storage),
    ),
    security(("bearer" = []))
)]
pub async fn storage(
    State(state): State<AppState>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let usage = state
        .authed(bearer, move |store, _token| Ok(store.storage()?))
        .await?;
    let warnings = state.config().storage_warnings.warnings(&usage);
    let mut body =
        serde_json::to_value(&usage).map_err(|e| ApiError::unavailable(e.to_string()))?;
    body["warnings"] = serde_json::json!(warnings);
    Ok(negotiate::reply(format, StatusCode::OK, &body))
}
