//! `POST /v1/contexts/{ctx}/push`: the store decides (DESIGN §3); the server checks the
//! agent against the token, picks the status from the answer and wakes the fan-out.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use ctxsync_core::PushRequest;

use super::P;
use crate::auth::{self, Bearer};
use crate::errors::ApiError;
use crate::metrics::PushOutcome;
use crate::negotiate::{self, Answer, RawBody};
use crate::openapi::schemas;
use crate::AppState;

/// Bodies up to this size are parsed where the request runs (cheap: a few hundred
/// microseconds at most); larger ones on the blocking pool.
const PARSE_INLINE_MAX_BYTES: usize = 64 * 1024;

/// Pushes changes; answers once the revision is durable.
#[utoipa::path(
    post, path = "/v1/contexts/{ctx}/push", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name")),
    request_body(content = schemas::PushRequest, description = "JSON, or YAML with Content-Type application/yaml"),
    responses(
        (status = 200, description = "Something applied, or nothing conflicted", body = schemas::PushResponse),
        (status = 400, description = "Malformed body, bad path or op, base_revision ahead", body = schemas::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token", body = schemas::ErrorBody),
        (status = 403, description = "Every change was not_owner (a PushResponse), or the token acts for another agent or only reads (an ErrorBody)", body = schemas::PushResponse),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
        (status = 409, description = "Nothing applied because of conflicts", body = schemas::PushResponse),
        (status = 410, description = "base_revision below the horizon", body = schemas::ErrorBody),
        (status = 413, description = "Body over the limit, or the document over its quota", body = schemas::ErrorBody),
        (status = 503, description = "The store failed; nothing applied", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn push(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Answer(format): Answer,
    body: RawBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let context = ctx.clone();
    // The blocking hop only authenticates, parses and queues the push; the answer
    // comes back through a channel once the store's writer has committed it, so no
    // thread waits out the fsync.
    let heavy = body.bytes.len() > PARSE_INLINE_MAX_BYTES;
    let parse_and_queue = move |store: &dyn ctxsync_store::Store, token| {
        let request: PushRequest = negotiate::parse(body.format, &body.bytes)?;
        auth::same_agent(&token, &request.agent, "push")?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        store.push_then(
            &context,
            request,
            Box::new(move |result| {
                let _ = answer.send(result);
            }),
        );
        Ok((answered, token))
    };
    // A large body is parsed on the blocking pool, never on an async worker, so a slow
    // parse cannot stall other requests (health checks, event streams).
    let queued = if heavy {
        state.authed(bearer, parse_and_queue).await
    } else {
        state.authed_write(bearer, parse_and_queue).await
    };
    let mut agent = None;
    let result = match queued {
        Ok((answered, token)) => match answered.await {
            Ok(Ok(response)) => {
                agent = Some(token);
                Ok(response)
            }
            Ok(Err(e)) => Err(ApiError::from(e)),
            Err(_) => Err(ApiError::unavailable("the store stopped before answering")),
        },
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(e) => {
            state
                .metrics()
                .record_push(PushOutcome::Refused, started.elapsed());
            return Err(e);
        }
    };
    let outcome = PushOutcome::of(&response);
    state.metrics().record_push(outcome, started.elapsed());
    if outcome == PushOutcome::Applied {
        state.hub().notify(&ctx);
    }
    // The stale view: what this agent had not seen when it pushed. A bounded read on a
    // warm reader connection (tens of microseconds), done here like the inline parse of
    // a small body, rather than paying a hop to the blocking pool on every push.
    if let Some(token) = agent {
        response.stale = super::claims::observe(&**state.store(), &ctx, &token, response.revision);
    }
    let status = StatusCode::from_u16(response.status()).unwrap_or(StatusCode::OK);
    Ok(negotiate::reply(format, status, &response))
}
