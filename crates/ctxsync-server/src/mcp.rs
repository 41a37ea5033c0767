//! `/mcp`: the MCP server of `ctxsync-mcp` over Streamable HTTP, behind two checks of
//! ours.
//!
//! * `Origin` — a browser page of another site must not drive a local server (DNS
//!   rebinding): a request with an `Origin` that is not a loopback origin
//!   (`http(s)://localhost`, `127.0.0.1`, `[::1]`, any port) is refused with 403.
//!   Requests without `Origin` (every non-browser MCP client) pass.
//! * the bearer token, as for `/v1`: 401 without a valid one. The token's agent and role
//!   become the MCP [`Identity`]: tools act as that agent, viewers only read.
//!
//! Both protocol revisions clients speak are served: 2025-11-25 (an `initialize`
//! handshake, then a session) and 2026-07-28 (stateless, every request self-contained).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use ctxsync_mcp::{CtxsyncMcp, Identity, McpOptions};

use crate::auth::Bearer;
use crate::errors::ApiError;
use crate::AppState;

/// Where the MCP endpoint is mounted.
pub const PATH: &str = "/mcp";

/// The `/mcp` route with its checks.
pub fn router(state: &AppState) -> Router {
    let options = McpOptions {
        max_argument_bytes: state.config().max_body_bytes,
        // A server may have many waiting agents; the head read is cheap, but a little
        // slower polling costs nothing an agent would notice.
        poll_interval: std::time::Duration::from_millis(50),
        agent_hint:
            "the agent is the bearer token's; create one with `ctxsync token create --agent NAME`"
                .into(),
        ..McpOptions::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    // End the MCP sessions and their streams when the server shuts down, so a graceful
    // shutdown does not wait for them.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let mut closing = state.closing();
        let cancel = cancel.clone();
        runtime.spawn(async move {
            while !*closing.borrow() {
                if closing.changed().await.is_err() {
                    break;
                }
            }
            cancel.cancel();
        });
    }
    let service = ctxsync_mcp::http_service(
        CtxsyncMcp::new(std::sync::Arc::clone(state.store()), options),
        cancel,
    );
    Router::new()
        .route_service(PATH, service)
        .layer(from_fn_with_state(state.clone(), guard))
}

/// True for an `Origin` of this machine: http(s) on localhost, 127.0.0.1 or [::1].
pub fn loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((addr, "")) => addr == "::1",
            Some((addr, port)) => addr == "::1" && port.strip_prefix(':').is_some_and(is_port),
            None => false,
        };
    } else {
        match rest.split_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => rest,
        }
    };
    host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1"
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let Some(first) = origins.next() else {
        return Ok(());
    };
    let ok = origins.next().is_none() && first.to_str().is_ok_and(loopback_origin);
    if ok {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "requests to /mcp from a web page of another origin are refused (only loopback origins may call it)",
        ))
    }
}

/// The Origin check and the token check, then the MCP service with the [`Identity`].
async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Err(e) = check_origin(request.headers()) {
        return e.into_response();
    }
    let (mut parts, body) = request.into_parts();
    let bearer = Bearer::from_request_parts(&mut parts, &()).await;
    request = Request::from_parts(parts, body);
    let bearer = match bearer {
        Ok(b) => b,
        Err(e) => return with_challenge(e.into_response()),
    };
    // Cached while no token changed (as for pushes): a tool call costs no extra store read.
    let token = state.authed_write(bearer, |_store, token| Ok(token)).await;
    match token {
        Ok(token) => {
            request.extensions_mut().insert(Identity {
                agent: token.agent,
                role: token.role,
            });
            next.run(request).await
        }
        Err(e) => with_challenge(e.into_response()),
    }
}

/// A 401 names the scheme it wants (RFC 9110), which MCP clients look for.
fn with_challenge(mut response: Response) -> Response {
    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::loopback_origin;

    #[test]
    fn only_loopback_origins_pass() {
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://[::1]:7711",
            "http://LOCALHOST:1",
        ] {
            assert!(loopback_origin(ok), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example:80",
            "null",
            "http://[::2]:80",
            "file://",
            "http://localhost:80x",
            "http://localhost:",
        ] {
            assert!(!loopback_origin(bad), "{bad}");
        }
    }
}

/// MCP over Streamable HTTP (JSON-RPC 2.0 messages; see the MCP specification,
/// revisions 2025-11-25 and 2026-07-28). Tools: pull, get, set, push, conflicts, resolve,
/// history, claim, release, wait, handover, who.
#[utoipa::path(
    post, path = "/mcp", tag = "mcp",
    request_body(content = serde_json::Value, content_type = "application/json",
                 description = "A JSON-RPC request, notification or response"),
    params(
        ("Accept" = String, Header, description = "Must allow application/json and text/event-stream"),
        ("MCP-Protocol-Version" = Option<String>, Header, description = "2025-11-25 after initialize, or 2026-07-28"),
        ("Mcp-Session-Id" = Option<String>, Header, description = "The session (2025-11-25, after initialize)"),
    ),
    responses(
        (status = 200, description = "The JSON-RPC answer, as JSON or as an event stream", content_type = "text/event-stream", body = serde_json::Value),
        (status = 202, description = "A notification or response was accepted"),
        (status = 400, description = "Not a JSON-RPC message, or protocol headers that do not fit it", body = serde_json::Value),
        (status = 401, description = "Missing, malformed, unknown or revoked token", body = crate::openapi::schemas::ErrorBody),
        (status = 403, description = "An Origin other than a loopback one", body = crate::openapi::schemas::ErrorBody),
        (status = 404, description = "No such session (it ended; initialize again)", body = serde_json::Value),
        (status = 406, description = "Accept allows neither application/json nor text/event-stream", body = serde_json::Value),
        (status = 413, description = "The body is too large", body = serde_json::Value),
        (status = 415, description = "The body is not application/json", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
pub(crate) async fn post_doc() {}

/// The server-to-client event stream of a 2025-11-25 session.
#[utoipa::path(
    get, path = "/mcp", tag = "mcp",
    params(("Mcp-Session-Id" = String, Header, description = "The session")),
    responses(
        (status = 200, description = "Server-to-client messages", content_type = "text/event-stream", body = String),
        (status = 400, description = "No session named", body = serde_json::Value),
        (status = 401, description = "Missing, malformed, unknown or revoked token", body = crate::openapi::schemas::ErrorBody),
        (status = 403, description = "An Origin other than a loopback one", body = crate::openapi::schemas::ErrorBody),
        (status = 404, description = "No such session", body = serde_json::Value),
        (status = 405, description = "No stream without a session (2026-07-28 is stateless)", body = serde_json::Value),
        (status = 406, description = "Accept does not allow text/event-stream", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
pub(crate) async fn get_doc() {}

/// Ends a 2025-11-25 session.
#[utoipa::path(
    delete, path = "/mcp", tag = "mcp",
    params(("Mcp-Session-Id" = String, Header, description = "The session")),
    responses(
        (status = 202, description = "The session ended"),
        (status = 400, description = "No session named", body = serde_json::Value),
        (status = 401, description = "Missing, malformed, unknown or revoked token", body = crate::openapi::schemas::ErrorBody),
        (status = 403, description = "An Origin other than a loopback one", body = crate::openapi::schemas::ErrorBody),
        (status = 404, description = "No such session", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
pub(crate) async fn delete_doc() {}
