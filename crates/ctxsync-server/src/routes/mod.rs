//! The HTTP routes, one module per group, and the extractor wrappers that turn axum's
//! rejections into our error shape.

pub mod admin;
pub mod agent_sync;
pub mod claims;
pub mod contexts;
pub mod dashboard;
pub mod events;
pub mod health;
pub mod identity;
pub mod lifecycle;
pub mod pull;
pub mod push;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::errors::ApiError;
use crate::AppState;

/// Path parameters; a bad one is a 400 in our shape.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| P(p.0))
            .map_err(ApiError::from)
    }
}

/// The query string; a bad one is a 400 in our shape.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(ApiError::from)
    }
}

/// Only `?format=` (for routes that take no other query parameter).
#[derive(Debug, Default, serde::Deserialize)]
pub struct FormatQuery {
    pub format: Option<String>,
}

/// Every route of the API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/whoami", get(identity::whoami))
        .route("/v1/overview", get(dashboard::overview))
        .route("/v1/agent-sync", get(agent_sync::agent_sync))
        .route("/v1/contexts", get(contexts::list))
        .route("/v1/contexts/{ctx}", get(pull::pull).put(contexts::create))
        .route("/v1/contexts/{ctx}/head", get(contexts::head))
        .route("/v1/contexts/{ctx}/push", post(push::push))
        .route("/v1/contexts/{ctx}/events", get(events::events))
        .route(
            "/v1/contexts/{ctx}/claims",
            post(claims::claim).delete(claims::release),
        )
        .route("/v1/contexts/{ctx}/agents", get(claims::agents))
        .route("/v1/contexts/{ctx}/seen", post(claims::seen))
        .route(
            "/v1/contexts/{ctx}/agents/{agent}/critical",
            get(claims::critical),
        )
        .route("/v1/contexts/{ctx}/history", get(admin::history))
        .route("/v1/contexts/{ctx}/log", get(admin::log))
        .route("/v1/contexts/{ctx}/conflicts", get(admin::conflicts))
        .route(
            "/v1/contexts/{ctx}/conflicts/{id}/resolve",
            post(admin::resolve),
        )
        .route("/v1/contexts/{ctx}/verify", post(admin::verify))
        .route("/v1/contexts/{ctx}/revert", post(admin::revert))
        .route("/v1/contexts/{ctx}/syncs", post(admin::syncs))
        .route("/v1/contexts/{ctx}/snapshot", post(admin::snapshot))
        .route("/v1/contexts/{ctx}/archive", get(lifecycle::archive))
        .route("/v1/contexts/{ctx}/archive/run", post(lifecycle::run))
        .route("/v1/contexts/{ctx}/compact", post(lifecycle::compact))
        .route("/v1/storage", get(lifecycle::storage))
        .route("/v1/contexts/{ctx}/metrics", get(admin::metrics))
        .route("/v1/contexts/{ctx}/trends", get(dashboard::trends))
        .route("/ui", get(crate::ui::page))
        .route("/ui/", get(crate::ui::page))
        .route("/ui/{asset}", get(crate::ui::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::prometheus))
        .route("/openapi.json", get(health::openapi))
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
}
