//! Content negotiation: request bodies in JSON (default) or YAML by `Content-Type`,
//! answers in JSON unless the client asks for YAML (`Accept: application/yaml` or
//! `?format=yaml`), and the size-limited body reader that turns an oversized body into a
//! 413 in the usual error shape.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ctxsync_core::limits::{self, StrictValue};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::errors::ApiError;
use crate::AppState;

/// How a body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

const YAML_TYPES: [&str; 3] = ["application/yaml", "application/x-yaml", "text/yaml"];

fn is_yaml_type(value: &str) -> bool {
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    YAML_TYPES.contains(&mime.as_str())
}

impl Format {
    /// The format of a request body, from its `Content-Type` (JSON when absent).
    pub fn of_body(headers: &HeaderMap) -> Self {
        match headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            Some(ct) if is_yaml_type(ct) => Self::Yaml,
            _ => Self::Json,
        }
    }

    /// The format the client wants answers in: `?format=` wins over `Accept`.
    pub fn of_answer(headers: &HeaderMap, format: Option<&str>) -> Result<Self, ApiError> {
        match format {
            Some("yaml") => return Ok(Self::Yaml),
            Some("json") => return Ok(Self::Json),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unknown format {other:?} (expected json or yaml)"
                )))
            }
            None => {}
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // The first YAML or JSON type listed decides; anything else means JSON.
        for part in accept.split(',') {
            if is_yaml_type(part) {
                return Ok(Self::Yaml);
            }
            let mime = part.split(';').next().unwrap_or("").trim();
            if mime == "application/json" {
                return Ok(Self::Json);
            }
        }
        Ok(Self::Json)
    }

    pub fn content_type(self) -> HeaderValue {
        match self {
            Self::Json => HeaderValue::from_static("application/json"),
            Self::Yaml => HeaderValue::from_static("application/yaml"),
        }
    }
}

/// The answer format of a request (`?format=` or `Accept`), read without copying the
/// headers or parsing the rest of the query.
pub struct Answer(pub Format);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Answer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let format = parts
            .uri
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("format=")));
        Format::of_answer(&parts.headers, format).map(Answer)
    }
}

/// Parses a request body in `format` into `T`. Any failure (malformed text, wrong
/// shape, unknown field, bad path, unknown op) is a 400 that says why.
///
/// Before any parser runs, a leading byte-order mark is dropped and bracket nesting is
/// bounded ([`ctxsync_core::limits::check_text_nesting`]: YAML's scanner is quadratic in
/// it). YAML goes through a [`StrictValue`], so `.nan`/`.inf` are refused rather than
/// read as `null`, and nesting past the document limit is refused while reading.
pub fn parse<T: DeserializeOwned>(format: Format, bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = limits::strip_bom_bytes(bytes);
    limits::check_text_nesting(bytes)
        .map_err(|e| ApiError::bad_request(format!("body refused before parsing: {e}")))?;
    match format {
        Format::Json => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}"))),
        Format::Yaml => {
            // Through a JSON value, so YAML and JSON bodies are read by the same rules.
            let StrictValue(value) = serde_norway::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("malformed YAML body: {e}")))?;
            serde_json::from_value(value)
                .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
        }
    }
}

/// Like [`parse`], but an empty body is `None`.
pub fn parse_optional<T: DeserializeOwned>(
    format: Format,
    bytes: &[u8],
) -> Result<Option<T>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(None)
    } else {
        parse(format, bytes).map(Some)
    }
}

/// Serializes an answer.
pub fn encode<T: Serialize + ?Sized>(format: Format, value: &T) -> Result<Vec<u8>, ApiError> {
    match format {
        Format::Json => serde_json::to_vec(value)
            .map_err(|e| ApiError::unavailable(format!("could not encode the answer: {e}"))),
        Format::Yaml => serde_norway::to_string(value)
            .map(String::into_bytes)
            .map_err(|e| ApiError::unavailable(format!("could not encode the answer: {e}"))),
    }
}

/// An answer with a status, in the negotiated format.
pub fn reply<T: Serialize + ?Sized>(format: Format, status: StatusCode, value: &T) -> Response {
    match encode(format, value) {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, format.content_type())],
            bytes,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A request body read up to the server's `max_body_bytes`, with its format. Over the
/// limit is a 413; the rest of an oversized body is drained (up to a cap) so the client
/// can finish sending and read the answer instead of seeing a reset connection.
pub struct RawBody {
    pub format: Format,
    pub bytes: Bytes,
}

/// How much of an oversized body is read and dropped before answering 413.
const DRAIN_CAP: u64 = 64 * 1024 * 1024;

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config().max_body_bytes;
        let format = Format::of_body(req.headers());
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = |n: u64| {
            ApiError::payload_too_large(format!(
                "request body is {n} bytes or more, over the limit of {limit} bytes"
            ))
        };
        let body = req.into_body();
        if let Some(n) = declared.filter(|n| *n as usize > limit) {
            drain(body, DRAIN_CAP).await;
            return Err(too_large(n));
        }
        let mut stream = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            })?;
            if buf.len() + chunk.len() > limit {
                let seen = (buf.len() + chunk.len()) as u64;
                drain_stream(stream, DRAIN_CAP).await;
                return Err(too_large(seen));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Self {
            format,
            bytes: Bytes::from(buf),
        })
    }
}

async fn drain(body: Body, cap: u64) {
    drain_stream(body.into_data_stream(), cap).await;
}

async fn drain_stream(mut stream: axum::body::BodyDataStream, cap: u64) {
    let mut read = 0u64;
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(Ok(c)) => {
                    read += c.len() as u64;
                    if read > cap {
                        break;
                    }
                }
                _ => break,
            },
            _ = &mut deadline => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn answer_format_from_accept_and_query() {
        let mut h = HeaderMap::new();
        assert_eq!(Format::of_answer(&h, None).ok(), Some(Format::Json));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/yaml"));
        assert_eq!(Format::of_answer(&h, None).ok(), Some(Format::Yaml));
        assert_eq!(Format::of_answer(&h, Some("json")).ok(), Some(Format::Json));
        assert!(Format::of_answer(&h, Some("xml")).is_err());
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, application/yaml"),
        );
        assert_eq!(Format::of_answer(&h, None).ok(), Some(Format::Json));
    }

    #[test]
    fn bodies_parse_in_both_formats_and_fail_with_400() {
        let v: Value = parse(Format::Yaml, b"a: 1\nb: [x, y]\n").unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "b": ["x", "y"]}));
        let e = parse::<Value>(Format::Yaml, b"a: [1, 2\n").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse::<Value>(Format::Json, b"{\"a\": ").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_optional::<Value>(Format::Json, b"  \n")
            .unwrap()
            .is_none());
    }
}
