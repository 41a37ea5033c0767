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

    /// The format the client wants answers in: `?format=` wins over `Accept`. `Accept`
    /// is read with its q-values (RFC 9110 §12.5.1): each format takes the q of the
    /// most specific range that matches it (`q=0` = not acceptable), the higher q wins,
    /// then the more specific match, then the range listed first, then JSON. No header
    /// means JSON; a header that accepts neither is a 406.
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
        let mut ranges = Vec::new();
        // A value that is not visible ASCII names no type we serve; it is skipped.
        for text in headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for part in text.split(',') {
                if let Some(range) = MediaRange::parse(part, ranges.len()) {
                    ranges.push(range);
                }
            }
        }
        if ranges.is_empty() {
            return Ok(Self::Json);
        }
        let json = best_match(&ranges, |r| r.matches_json());
        let yaml = best_match(&ranges, |r| r.matches_yaml());
        match (json, yaml) {
            (None, None) => Err(not_acceptable()),
            (Some(_), None) => Ok(Self::Json),
            (None, Some(_)) => Ok(Self::Yaml),
            (Some(j), Some(y)) => Ok(if y.better_than(&j) {
                Self::Yaml
            } else {
                Self::Json
            }),
        }
    }

    pub fn content_type(self) -> HeaderValue {
        match self {
            Self::Json => HeaderValue::from_static("application/json"),
            Self::Yaml => HeaderValue::from_static("application/yaml"),
        }
    }
}

fn not_acceptable() -> ApiError {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        "the Accept header accepts neither application/json nor application/yaml",
    )
}

/// One range of an `Accept` header, with its position in the header.
#[derive(Debug)]
struct MediaRange {
    kind: String,
    subtype: String,
    /// In thousandths, 0..=1000.
    q: u16,
    position: usize,
}

/// How well a format matched: its q, then how specific the range was, then where it
/// was listed.
#[derive(Debug, Clone, Copy)]
struct Match {
    q: u16,
    specificity: u8,
    position: usize,
}

impl Match {
    fn better_than(&self, other: &Match) -> bool {
        (self.q, self.specificity, std::cmp::Reverse(self.position))
            > (
                other.q,
                other.specificity,
                std::cmp::Reverse(other.position),
            )
    }
}

impl MediaRange {
    /// A range such as `application/yaml;q=0.5`, listed at `position`; `None` for an
    /// empty or malformed one (ignored, as if not listed).
    fn parse(text: &str, position: usize) -> Option<MediaRange> {
        let mut parts = text.split(';');
        let mime = parts.next()?.trim().to_ascii_lowercase();
        let (kind, subtype) = mime.split_once('/')?;
        if kind.is_empty() || subtype.is_empty() || (kind == "*" && subtype != "*") {
            return None;
        }
        let mut q = 1000;
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                q = parse_q(value.trim())?;
            }
        }
        Some(MediaRange {
            kind: kind.to_owned(),
            subtype: subtype.to_owned(),
            q,
            position,
        })
    }

    /// How specifically this range names `kind/subtype`: 2 exactly, 1 by `kind/*`, 0
    /// by `*/*`; `None` when it does not.
    fn specificity(&self, kind: &str, subtype: &str) -> Option<u8> {
        match (self.kind.as_str(), self.subtype.as_str()) {
            ("*", "*") => Some(0),
            (k, "*") if k == kind => Some(1),
            (k, s) if k == kind && s == subtype => Some(2),
            _ => None,
        }
    }

    fn matches_json(&self) -> Option<u8> {
        self.specificity("application", "json")
    }

    fn matches_yaml(&self) -> Option<u8> {
        YAML_TYPES
            .iter()
            .filter_map(|t| t.split_once('/'))
            .filter_map(|(k, s)| self.specificity(k, s))
            .max()
    }
}

/// A q-value: `0`, `1`, `0.` and up to three decimals, `1.000` (RFC 9110 §12.4.2).
fn parse_q(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The q of `format` under `ranges`: that of the most specific matching range (the
/// first listed among equals). `None` when no range matches or the best says `q=0`.
fn best_match(ranges: &[MediaRange], matches: impl Fn(&MediaRange) -> Option<u8>) -> Option<Match> {
    let mut best: Option<Match> = None;
    for range in ranges {
        let Some(specificity) = matches(range) else {
            continue;
        };
        if best.is_none_or(|b| specificity > b.specificity) {
            best = Some(Match {
                q: range.q,
                specificity,
                position: range.position,
            });
        }
    }
    best.filter(|m| m.q > 0)
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
        // Through a JSON value and our writer, so any YAML reader reads back the JSON
        // answer (see `crate::yaml`).
        Format::Yaml => serde_json::to_value(value)
            .map(|v| crate::yaml::to_string(&v).into_bytes())
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
        let timeout = state.config().body_read_timeout;
        let mut stream = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        // One deadline for the whole body: a client trickling bytes cannot hold the
        // connection (and a handler) longer than this.
        let read = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                })?;
                if buf.len() + chunk.len() > limit {
                    return Ok(Some((buf.len() + chunk.len()) as u64));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None)
        };
        // Ok(None): all read; Ok(Some(n)): over the limit after n bytes.
        let read: Result<Result<Option<u64>, ApiError>, _> =
            tokio::time::timeout(timeout, read).await;
        match read {
            Ok(Ok(None)) => Ok(Self {
                format,
                bytes: Bytes::from(buf),
            }),
            Ok(Ok(Some(seen))) => {
                drain_stream(stream, DRAIN_CAP).await;
                Err(too_large(seen))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s; nothing was applied",
                    timeout.as_secs_f64()
                ),
            )),
        }
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

    fn answer_for(accept: &str) -> Result<Format, u16> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        Format::of_answer(&h, None).map_err(|e| e.status.as_u16())
    }

    #[test]
    fn accept_q_values_decide() {
        use Format::{Json, Yaml};
        let cases: [(&str, Result<Format, u16>); 22] = [
            // q=0 refuses; with nothing else acceptable that is a 406.
            ("application/yaml;q=0", Err(406)),
            ("application/yaml; q=0.000", Err(406)),
            ("application/yaml;q=0, application/json", Ok(Json)),
            ("application/yaml;q=0, */*", Ok(Json)),
            ("application/json;q=0, */*", Ok(Yaml)),
            ("application/json;q=0, application/*", Ok(Yaml)),
            // The higher q wins, wherever it is listed.
            ("application/json;q=0.5, application/yaml;q=0.8", Ok(Yaml)),
            ("application/yaml;q=0.5, application/json", Ok(Json)),
            ("text/yaml;q=0.9, application/json;q=0.1", Ok(Yaml)),
            // Equal q: the named type beats a wildcard, then the first listed.
            ("*/*, application/yaml", Ok(Yaml)),
            ("application/yaml, application/json", Ok(Yaml)),
            ("application/x-yaml;q=0.7, application/json;q=0.7", Ok(Yaml)),
            // Wildcards alone mean the default.
            ("*/*", Ok(Json)),
            ("application/*", Ok(Json)),
            ("text/*", Ok(Yaml)),
            ("text/html, */*;q=0.8", Ok(Json)),
            // The most specific range sets a type's q, even if a wildcard says more.
            ("*/*;q=1, application/json;q=0", Ok(Yaml)),
            // Neither type acceptable.
            ("text/html", Err(406)),
            ("*/*;q=0", Err(406)),
            // Malformed ranges and q-values are ignored; nothing left means the default.
            ("application/yaml;q=2", Ok(Json)),
            ("garbage", Ok(Json)),
            ("", Ok(Json)),
        ];
        for (accept, want) in cases {
            assert_eq!(answer_for(accept), want, "Accept: {accept}");
        }
        // `?format=` is explicit and wins over any Accept.
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/yaml;q=0"),
        );
        assert_eq!(Format::of_answer(&h, Some("yaml")).ok(), Some(Format::Yaml));
    }

    #[test]
    fn q_value_grammar() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0."), Some(0));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        for bad in ["1.5", "2", "0.1234", "-1", "abc", "", ".5", "0.x"] {
            assert_eq!(parse_q(bad), None, "{bad:?}");
        }
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
