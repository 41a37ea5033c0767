//! Claims, presence and critical notices (DESIGN §13): `POST`/`DELETE
//! /v1/contexts/{ctx}/claims`, `GET /v1/contexts/{ctx}/agents` and `GET
//! /v1/contexts/{ctx}/agents/{agent}/critical`. Every one acts as the token's agent.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ctxsync_store::{
    AgentPresence, ClaimOutcome, CriticalNotice, ReleaseOutcome, StaleView, Store, TokenInfo,
};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::{FormatQuery, P, Q};
use crate::auth::{self, Bearer};
use crate::errors::ApiError;
use crate::negotiate::{self, Format, RawBody};
use crate::openapi::schemas;
use crate::AppState;

/// Body of `POST /v1/contexts/{ctx}/claims`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    path: String,
    ttl_ms: u64,
    /// Optional; must be the token's agent when given.
    #[serde(default)]
    agent: Option<String>,
}

/// A claim or release answer with the caller's stale view.
#[derive(Serialize)]
struct WithStale<T: Serialize> {
    #[serde(flatten)]
    answer: T,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stale: Option<StaleView>,
}

/// Records that the token's agent saw `revision` and returns what it had not seen;
/// viewers (dashboards, not agents) are not recorded. Presence is a side note: a failure
/// to record it never fails the request.
pub(crate) fn observe(
    store: &dyn Store,
    context: &str,
    token: &TokenInfo,
    revision: u64,
) -> Option<StaleView> {
    if token.role == ctxsync_store::Role::Viewer {
        return None;
    }
    match store.observe(context, &token.agent, revision) {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::debug!(error = %e, context, "presence not recorded");
            None
        }
    }
}

/// Takes (or renews) a lease on a path for the token's agent.
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/claims", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name")),
    request_body(content = schemas::ClaimRequest),
    responses(
        (status = 200, description = "Granted (or renewed): one new revision", body = schemas::ClaimOutcome),
        (status = 400, description = "Bad path or ttl", body = schemas::ErrorBody),
        (status = 403, description = "A viewer token, another agent, or a path the agent may not write", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
        (status = 409, description = "Held by another agent: the holder and expiry", body = schemas::ClaimOutcome),
    ),
    security(("bearer" = []))
)]
pub async fn claim(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    headers: HeaderMap,
    Q(q): Q<FormatQuery>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let context = ctx.clone();
    let (outcome, stale) = state
        .authed(bearer, move |store, token| {
            let body: ClaimBody = negotiate::parse(body.format, &body.bytes)?;
            let agent = body.agent.as_deref().unwrap_or(&token.agent);
            auth::same_agent(&token, agent, "claim")?;
            let outcome = store.claim(&context, &token.agent, &body.path, body.ttl_ms)?;
            let seen = match &outcome {
                ClaimOutcome::Granted { revision, .. } => *revision,
                ClaimOutcome::Held { .. } => store.head(&context)?.revision,
            };
            let stale = observe(store, &context, &token, seen);
            Ok((outcome, stale))
        })
        .await?;
    let status = if outcome.granted() {
        state.hub().notify(&ctx);
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok(negotiate::reply(
        format,
        status,
        &WithStale {
            answer: outcome,
            stale,
        },
    ))
}

/// Query of `DELETE /v1/contexts/{ctx}/claims`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReleaseQuery {
    /// The claimed path (as claimed, or in its canonical form).
    pub path: String,
    pub format: Option<String>,
}

/// Releases the token's agent's claim on a path.
#[utoipa::path(
    delete, path = "/v1/contexts/{ctx}/claims", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name"), ReleaseQuery),
    responses(
        (status = 200, description = "Released (one new revision), or not held by this agent", body = schemas::ReleaseOutcome),
        (status = 400, description = "Bad path", body = schemas::ErrorBody),
        (status = 403, description = "A viewer token", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
        (status = 409, description = "Held by another agent", body = schemas::ReleaseOutcome),
    ),
    security(("bearer" = []))
)]
pub async fn release(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    headers: HeaderMap,
    Q(q): Q<ReleaseQuery>,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let context = ctx.clone();
    let (outcome, stale) = state
        .authed(bearer, move |store, token| {
            auth::may_write(&token)?;
            let outcome = store.release(&context, &token.agent, &q.path)?;
            let seen = match &outcome {
                ReleaseOutcome::Released { revision } => *revision,
                _ => store.head(&context)?.revision,
            };
            let stale = observe(store, &context, &token, seen);
            Ok((outcome, stale))
        })
        .await?;
    let status = match &outcome {
        ReleaseOutcome::Released { .. } => {
            state.hub().notify(&ctx);
            StatusCode::OK
        }
        ReleaseOutcome::NotHeld => StatusCode::OK,
        ReleaseOutcome::HeldByOther { .. } => StatusCode::CONFLICT,
    };
    Ok(negotiate::reply(
        format,
        status,
        &WithStale {
            answer: outcome,
            stale,
        },
    ))
}

#[derive(Serialize)]
struct Agents {
    context: String,
    now_ms: u64,
    agents: Vec<AgentPresence>,
}

/// The agents of a context: last seen, lag, live claims, unseen critical revisions
/// (away agents' expired claims are handed over first).
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/agents", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name"), ("format" = Option<String>, Query, description = "json (default) or yaml")),
    responses(
        (status = 200, description = "Every agent seen, by name", body = schemas::AgentList),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn agents(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    headers: HeaderMap,
    Q(q): Q<FormatQuery>,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let context = ctx.clone();
    let answer = state
        .authed(bearer, move |store, _token| {
            let now_ms = store.now_ms();
            let before = store.head(&context)?.revision;
            let agents = store.agents(&context, now_ms)?;
            Ok((
                store.head(&context)?.revision != before,
                Agents {
                    context,
                    now_ms,
                    agents,
                },
            ))
        })
        .await;
    let (handed_over, answer) = answer?;
    if handed_over {
        state.hub().notify(&ctx);
    }
    Ok(negotiate::reply(format, StatusCode::OK, &answer))
}

/// Query of the critical notices.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CriticalQuery {
    /// The notices are being shown now: the next call leaves them out (only for the
    /// token's own agent).
    pub mark_seen: Option<bool>,
    pub format: Option<String>,
}

#[derive(Serialize)]
struct Notices {
    agent: String,
    notices: Vec<CriticalNotice>,
}

/// Critical revisions by others that an agent has not been shown yet, oldest first.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/agents/{agent}/critical", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name"),
        ("agent" = String, Path, description = "Agent name"), CriticalQuery),
    responses(
        (status = 200, description = "The unseen critical revisions (at most the newest 20)", body = schemas::CriticalList),
        (status = 400, description = "Bad agent name", body = schemas::ErrorBody),
        (status = 403, description = "mark_seen for another agent than the token's", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn critical(
    State(state): State<AppState>,
    P((ctx, agent)): P<(String, String)>,
    bearer: Bearer,
    headers: HeaderMap,
    Q(q): Q<CriticalQuery>,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let mark_seen = q.mark_seen.unwrap_or(false);
    let answer = state
        .authed(bearer, move |store, token| {
            if mark_seen {
                auth::same_agent(&token, &agent, "mark critical notices seen")?;
            }
            let notices = store.unseen_critical(&ctx, &agent, mark_seen)?;
            Ok(Notices { agent, notices })
        })
        .await?;
    Ok(negotiate::reply(format, StatusCode::OK, &answer))
}

/// Body of `POST /v1/contexts/{ctx}/seen`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeenBody {
    revision: u64,
}

/// Records that the token's agent has seen a revision (a client that read it some other
/// way, e.g. from an event stream) and answers what it had not seen before.
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/seen", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name")),
    request_body(content = schemas::SeenRequest),
    responses(
        (status = 200, description = "The revisions by others it had not seen", body = schemas::StaleView),
        (status = 403, description = "A viewer token (viewers have no presence)", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn seen(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    headers: HeaderMap,
    Q(q): Q<FormatQuery>,
    body: RawBody,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let view = state
        .authed(bearer, move |store, token| {
            let body: SeenBody = negotiate::parse(body.format, &body.bytes)?;
            auth::may_write(&token)?;
            Ok(store.observe(&ctx, &token.agent, body.revision)?)
        })
        .await?;
    Ok(negotiate::reply(format, StatusCode::OK, &view))
}
