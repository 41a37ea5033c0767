//! `GET /v1/agent-sync`: what the agents watcher of `serve --watch-agents` did — its
//! runs (generations and their changes, what each rendered, validation failures,
//! hand-edit conflicts) and the newest reference check — read from the
//! [`AgentSyncFeed`](crate::agent_sync::AgentSyncFeed) the binary pushes into.
//!
//! A long poll: with `?version=V&wait=S` the answer waits up to `S` seconds (at most
//! [`MAX_WAIT_S`]) until the feed has moved past version `V`, so the page updates as
//! soon as a run ends without polling the server hard.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::Q;
use crate::agent_sync::Snapshot;
use crate::auth::Bearer;
use crate::errors::ApiError;
use crate::negotiate::{self, Format};
use crate::openapi::dashboard as schemas;
use crate::AppState;

/// Longest wait of a long poll, well under the connection idle timeout.
pub const MAX_WAIT_S: u64 = 25;

/// Most runs one answer lists (the newest).
const MAX_LIST: usize = 500;

/// Query of `agent_sync`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentSyncQuery {
    /// List only the runs after this feed position (`seq`); 0 (default) for all kept.
    pub after: Option<u64>,
    /// The `version` the caller has; with `wait`, the answer waits for a newer one.
    pub version: Option<u64>,
    /// Seconds to wait for news (0 to 25; default 0, answer at once).
    pub wait: Option<u64>,
    /// Most runs to list, the newest (1 to 500; default 500).
    pub limit: Option<usize>,
    pub format: Option<String>,
}

#[derive(Debug, Serialize)]
struct Answer {
    /// Whether this server runs the agents watcher (`serve --watch-agents`).
    enabled: bool,
    #[serde(flatten)]
    snapshot: Option<Snapshot>,
}

/// The agents watcher's runs and newest reference check.
#[utoipa::path(
    get, path = "/v1/agent-sync", tag = "dashboard",
    params(AgentSyncQuery),
    responses(
        (status = 200, description = "The watcher's runs (oldest first) and newest check; `enabled: false` without --watch-agents", body = schemas::AgentSync),
        (status = 400, description = "A bad wait or limit", body = crate::openapi::schemas::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token", body = crate::openapi::schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn agent_sync(
    State(state): State<AppState>,
    bearer: Bearer,
    Q(q): Q<AgentSyncQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_S {
        return Err(ApiError::bad_request(format!(
            "wait={wait} is too long (0 to {MAX_WAIT_S} seconds)"
        )));
    }
    let limit = q.limit.unwrap_or(MAX_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit={limit} is out of range (1 to {MAX_LIST})"
        )));
    }
    state.authed(bearer, |_store, _token| Ok(())).await?;
    let Some(feed) = state.agent_sync().cloned() else {
        let answer = Answer {
            enabled: false,
            snapshot: None,
        };
        return Ok(negotiate::reply(format, StatusCode::OK, &answer));
    };
    if let (Some(seen), true) = (q.version, wait > 0) {
        let mut changed = feed.subscribe();
        let mut closing = state.closing();
        let waited = tokio::time::timeout(Duration::from_secs(wait), async {
            loop {
                if *changed.borrow_and_update() != seen {
                    return;
                }
                tokio::select! {
                    moved = changed.changed() => if moved.is_err() { return },
                    _ = closing.changed() => return,
                }
            }
        });
        // Timing out is an answer too: the same version, nothing new.
        let _ = waited.await;
    }
    let answer = Answer {
        enabled: true,
        snapshot: Some(feed.snapshot(q.after.unwrap_or(0), limit)),
    };
    Ok(negotiate::reply(format, StatusCode::OK, &answer))
}
