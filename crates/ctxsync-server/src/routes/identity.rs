//! `GET /v1/whoami`: the agent and role a bearer token acts as, so a client in remote
//! mode takes its identity from the token instead of guessing one (DESIGN §13).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::{FormatQuery, Q};
use crate::auth::Bearer;
use crate::errors::ApiError;
use crate::negotiate::{self, Format};
use crate::openapi::schemas;
use crate::AppState;

#[derive(Serialize)]
struct Identity {
    agent: String,
    role: ctxsync_store::Role,
    token_id: String,
}

/// The agent and role of the token this request carries.
#[utoipa::path(
    get, path = "/v1/whoami", tag = "contexts",
    params(("format" = Option<String>, Query, description = "json (default) or yaml")),
    responses(
        (status = 200, description = "Who the token acts as", body = schemas::Identity),
        (status = 401, description = "Missing, unknown or revoked token", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn whoami(
    State(state): State<AppState>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let identity = state
        .authed(bearer, |_store, token| {
            Ok(Identity {
                agent: token.agent,
                role: token.role,
                token_id: token.id,
            })
        })
        .await?;
    Ok(negotiate::reply(format, StatusCode::OK, &identity))
}
