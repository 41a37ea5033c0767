//! Unauthenticated endpoints: liveness, readiness, Prometheus metrics, the OpenAPI
//! document; and the JSON answers for unknown routes and methods.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::errors::ApiError;
use crate::openapi::schemas;
use crate::AppState;

/// Alive.
#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = schemas::Status))
)]
pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready: the store answers, and a push acknowledged now would be durable (its files are
/// in place, its disk is not full).
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The store is reachable and writable", body = schemas::Status),
        (status = 503, description = "The store is not reachable, or cannot take durable writes (the reason says which)", body = schemas::ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state
        .blocking(|store| {
            store
                .list_contexts()
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            store
                .writable()
                .map_err(|e| ApiError::unavailable(e.to_string()))
        })
        .await?;
    let thresholds = state.config().storage_warnings;
    if thresholds == ctxsync_store::StorageThresholds::default() {
        return Ok(axum::Json(json!({"status": "ready"})).into_response());
    }
    // Storage over a threshold is a warning, not unreadiness: writes still work.
    let usage = state.blocking(|store| Ok(store.storage()?)).await?;
    let warnings = thresholds.warnings(&usage);
    let storage = json!({
        "status": if warnings.is_empty() { "ok" } else { "warning" },
        "database_bytes": usage.database_bytes,
        "warnings": warnings,
    });
    Ok(axum::Json(json!({"status": "ready", "storage": storage})).into_response())
}

/// Prometheus text exposition.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String))
)]
pub async fn prometheus(State(state): State<AppState>) -> Response {
    let contexts = state
        .blocking(|store| Ok(store.list_contexts()?))
        .await
        .unwrap_or_default();
    let text = state.metrics().render(&contexts);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        crate::openapi::json(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see /openapi.json)")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (see /openapi.json)",
    )
}
