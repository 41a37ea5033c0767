//! The one error shape every refusal has: `{"error": "<code>", "message": "..."}` (plus
//! `"full_required": true` on 410), with the HTTP status that goes with the code.
//!
//! Store errors map by kind (the caller's mistakes to 4xx, ours to 503); axum's own
//! extractor rejections are turned into the same shape, so a client never has to parse
//! two kinds of error bodies. There is no 500: a failure of the server or the database is
//! `unavailable` (503), which a client may retry.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ctxsync_store::StoreError;
use serde::Serialize;

/// A refusal, ready to be sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Set on 410: the client must do a full pull.
    pub full_required: bool,
}

/// The wire form of an error.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    full_required: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            full_required: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self {
            full_required: true,
            ..Self::new(StatusCode::GONE, "gone", message)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let message = err.to_string();
        match err {
            StoreError::NotFound(_)
            | StoreError::NoSuchConflict(_)
            | StoreError::NoSuchToken(_) => Self::not_found(message),
            StoreError::Exists(_) => Self::new(StatusCode::CONFLICT, "exists", message),
            StoreError::Gone { .. } => Self::gone(message),
            StoreError::Future { .. } | StoreError::Invalid(_) => Self::bad_request(message),
            StoreError::TooLarge { .. }
            | StoreError::OverQuota { .. }
            | StoreError::OverLimit(_) => Self::payload_too_large(message),
            StoreError::SchemaViolation { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
            }
            StoreError::RequestIdReused(_) => {
                Self::new(StatusCode::CONFLICT, "request_id_reused", message)
            }
            StoreError::Forbidden(_) => Self::forbidden(message),
            StoreError::Unauthorized(_) => Self::unauthorized(message),
            StoreError::Refused(_) => Self::bad_request(message),
            StoreError::ReadOnly(_) => Self::unavailable(message),
            StoreError::Io(_)
            | StoreError::Unavailable(_)
            | StoreError::Sqlite(_)
            | StoreError::Database(_)
            | StoreError::Corrupt(_)
            | StoreError::CommitFailed(_)
            | StoreError::Closed => {
                tracing::warn!(error = %message, "store failure");
                Self::unavailable(message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
            full_required: self.full_required,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":"unavailable","message":"could not encode the error"}"#.to_vec()
        });
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ctxsync\""),
            );
        }
        response
    }
}

/// Any axum rejection (bad query string, bad path parameter, unreadable body) as a 4xx
/// in our shape. A body over the limit is 413, everything else the client sent is 400.
pub(crate) fn from_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(text)
    } else if status.is_client_error() {
        ApiError::bad_request(text)
    } else {
        ApiError::unavailable(text)
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_4xx_or_503_never_500() {
        let cases = [
            (StoreError::NotFound("x".into()), 404),
            (StoreError::Exists("x".into()), 409),
            (
                StoreError::Gone {
                    requested: 1,
                    horizon: 5,
                },
                410,
            ),
            (
                StoreError::Future {
                    requested: 9,
                    current: 5,
                },
                400,
            ),
            (StoreError::Invalid("bad".into()), 400),
            (StoreError::TooLarge { size: 9, limit: 1 }, 413),
            (StoreError::NoSuchConflict(3), 404),
            (StoreError::Closed, 503),
            (StoreError::Corrupt("x".into()), 503),
        ];
        for (err, status) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status.as_u16(), status, "{api}");
            assert_eq!(api.full_required, status == 410);
        }
    }
}
