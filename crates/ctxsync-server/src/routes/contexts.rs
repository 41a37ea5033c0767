//! `GET /v1/contexts`, `PUT /v1/contexts/{ctx}` (create) and `GET /v1/contexts/{ctx}/head`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FormatQuery, P, Q};
use crate::auth::Bearer;
use crate::errors::ApiError;
use crate::negotiate::{self, Format, RawBody};
use crate::openapi::schemas;
use crate::AppState;

#[derive(Serialize)]
struct ContextList {
    contexts: Vec<ctxsync_store::Head>,
}

/// Every context's head.
#[utoipa::path(
    get, path = "/v1/contexts", tag = "contexts",
    params(("format" = Option<String>, Query, description = "json (default) or yaml")),
    responses(
        (status = 200, description = "The contexts", body = schemas::ContextList),
        (status = 401, description = "Missing, unknown or revoked token", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let contexts = state
        .authed(bearer, move |store, _token| Ok(store.list_contexts()?))
        .await?;
    Ok(negotiate::reply(
        format,
        StatusCode::OK,
        &ContextList { contexts },
    ))
}

/// Body of a create.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    template: Option<String>,
    document: Option<Value>,
}

/// Creates a context from a template or a document.
#[utoipa::path(
    put, path = "/v1/contexts/{ctx}", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name, [a-z0-9][a-z0-9._-]{0,63}")),
    request_body(content = Option<schemas::CreateContext>, description = "Optional; default template `seed`"),
    responses(
        (status = 201, description = "Created", body = schemas::Head),
        (status = 400, description = "Bad name, template or document", body = schemas::ErrorBody),
        (status = 403, description = "A viewer (read-only) token", body = schemas::ErrorBody),
        (status = 409, description = "The context exists", body = schemas::ErrorBody),
        (status = 413, description = "Body or document too large", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let head = state
        .authed(bearer, move |store, token| {
            crate::auth::may_write(&token)?;
            let body: CreateBody =
                negotiate::parse_optional(body.format, &body.bytes)?.unwrap_or_default();
            let document = match (body.document, body.template) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(
                        "give either `template` or `document`, not both",
                    ))
                }
                (Some(doc), None) => doc,
                (None, template) => {
                    let name = template.as_deref().unwrap_or("seed");
                    ctxsync_core::template::by_name(name).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "unknown template {name:?} (expected seed or empty)"
                        ))
                    })?
                }
            };
            Ok(store.create_context(&ctx, document)?)
        })
        .await?;
    Ok(negotiate::reply(format, StatusCode::CREATED, &head))
}

/// The newest revision, checksum, size and horizon.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/head", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name")),
    responses(
        (status = 200, description = "The head", body = schemas::Head),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn head(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let head = state
        .authed(bearer, move |store, _token| Ok(store.head(&ctx)?))
        .await?;
    Ok(negotiate::reply(format, StatusCode::OK, &head))
}
