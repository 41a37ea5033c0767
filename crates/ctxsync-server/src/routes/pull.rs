//! `GET /v1/contexts/{ctx}`: a full pull (some sections, optionally at an older
//! revision, optionally trimmed to a token budget) or a delta since a revision, with
//! `ETag: "<revision>"` and `If-None-Match` → 304.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ctxsync_core::apply::Edit;
use ctxsync_store::{StaleView, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::IntoParams;

use super::{P, Q};
use crate::auth::Bearer;
use crate::errors::ApiError;
use crate::negotiate::{self, Format};
use crate::openapi::schemas;
use crate::view::{collapse_verified, would_collapse, Sections};
use crate::{budget, AppState};

/// Query of a pull.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PullQuery {
    /// Comma-separated dotted paths of object members, e.g.
    /// `project_state,decisions_log.recent` (default: the whole document).
    pub sections: Option<String>,
    /// Answer a delta: the edits after this revision (410 below the horizon).
    pub since: Option<u64>,
    /// Read the document at this older revision (full answers only).
    pub at: Option<u64>,
    /// Trim the document to this many tokens (o200k_base), most important first.
    pub budget_tokens: Option<usize>,
    /// json (default) or yaml.
    pub format: Option<String>,
}

#[derive(Debug, Serialize)]
struct FullAnswer {
    context: String,
    revision: u64,
    checksum: String,
    document: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    omitted: Option<Vec<String>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stale: Option<StaleView>,
}

#[derive(Debug, Serialize)]
struct DeltaAnswer {
    context: String,
    revision: u64,
    since: u64,
    checksum: String,
    delta: bool,
    edits: Vec<Edit>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stale: Option<StaleView>,
}

enum Pulled {
    NotModified(u64),
    /// A full answer already encoded as JSON (shared by every agent), and this agent's
    /// stale view to add to it.
    Encoded(u64, Bytes, Option<StaleView>),
    Full(FullAnswer),
    Delta(DeltaAnswer),
}

/// The revisions named by `If-None-Match` (`"5"`, `W/"5"`, lists, or `*`).
fn matches_etag(header_value: Option<&HeaderValue>, revision: u64) -> bool {
    let Some(text) = header_value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let wanted = revision.to_string();
    text.split(',').map(str::trim).any(|tag| {
        tag == "*" || {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.trim_matches('"') == wanted
        }
    })
}

/// Pulls the context: full, some sections, at a revision, trimmed, or a delta.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}", tag = "contexts",
    params(("ctx" = String, Path, description = "Context name"), PullQuery,
        ("If-None-Match" = Option<String>, Header, description = "A previous ETag; 304 when unchanged")),
    responses(
        (status = 200, description = "A full answer (PullFull) or, with `since`, a delta (PullDelta)", body = schemas::PullFull,
            headers(("ETag" = String, description = "\"<revision>\""))),
        (status = 304, description = "Unchanged since the ETag given in If-None-Match"),
        (status = 400, description = "Bad sections, `since`/`at` in the future, bad combination", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
        (status = 410, description = "`since` or `at` is below the horizon (full_required)", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn pull(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<PullQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let sections = Sections::parse(q.sections.as_deref())?;
    if q.since.is_some() && (q.at.is_some() || q.budget_tokens.is_some()) {
        return Err(ApiError::bad_request(
            "`since` (a delta) cannot be combined with `at` or `budget_tokens`",
        ));
    }
    let if_none_match = headers.get(header::IF_NONE_MATCH).cloned();
    // The plain full pull (the common one) is served from a per-context cache of its
    // encoded answer, keyed by revision.
    let plain = q.since.is_none()
        && q.at.is_none()
        && q.budget_tokens.is_none()
        && sections.is_all()
        && format == Format::Json;
    let cache = state.clone();
    let pulled = state
        .authed(bearer, move |store, token| {
            let seen = |revision| super::claims::observe(store, &ctx, &token, revision);
            let head = if if_none_match.is_some() || plain {
                Some(store.head(&ctx)?)
            } else {
                None
            };
            if if_none_match.is_some() {
                let revision = match (q.at, &head) {
                    (Some(at), _) => at,
                    (None, Some(head)) => head.revision,
                    (None, None) => store.head(&ctx)?.revision,
                };
                if matches_etag(if_none_match.as_ref(), revision) {
                    seen(revision);
                    return Ok(Pulled::NotModified(revision));
                }
            }
            if plain {
                let revision = head.map_or(0, |h| h.revision);
                if let Some(bytes) = cache.cached_pull(&ctx, revision) {
                    return Ok(Pulled::Encoded(revision, bytes, seen(revision)));
                }
                let answer = full(store, ctx.clone(), None, &Sections::default(), None)?;
                let bytes = Bytes::from(negotiate::encode(Format::Json, &answer)?);
                cache.cache_pull(&ctx, answer.revision, bytes.clone());
                return Ok(Pulled::Encoded(
                    answer.revision,
                    bytes,
                    seen(answer.revision),
                ));
            }
            match q.since {
                Some(since) => delta(store, ctx.clone(), since, &sections).map(|mut d| {
                    d.stale = seen(d.revision);
                    Pulled::Delta(d)
                }),
                None => full(store, ctx.clone(), q.at, &sections, q.budget_tokens).map(|mut f| {
                    f.stale = seen(f.revision);
                    Pulled::Full(f)
                }),
            }
        })
        .await?;
    let (revision, mut response) = match pulled {
        Pulled::NotModified(revision) => (revision, StatusCode::NOT_MODIFIED.into_response()),
        Pulled::Encoded(revision, bytes, stale) => (
            revision,
            (
                [(header::CONTENT_TYPE, Format::Json.content_type())],
                with_stale(bytes, stale.as_ref()),
            )
                .into_response(),
        ),
        Pulled::Full(answer) => (
            answer.revision,
            negotiate::reply(format, StatusCode::OK, &answer),
        ),
        Pulled::Delta(answer) => (
            answer.revision,
            negotiate::reply(format, StatusCode::OK, &answer),
        ),
    };
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{revision}\"")) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    Ok(response)
}

/// A cached JSON object answer with the agent's stale view added as its last members
/// (the cache stays shared: only these few bytes differ per agent).
fn with_stale(bytes: Bytes, stale: Option<&StaleView>) -> Bytes {
    let Some(stale) = stale else {
        return bytes;
    };
    let Ok(Value::Object(fields)) = serde_json::to_value(stale) else {
        return bytes;
    };
    let Some(body) = bytes.strip_suffix(b"}") else {
        return bytes;
    };
    let mut out = Vec::with_capacity(bytes.len() + 96);
    out.extend_from_slice(body);
    for (key, value) in &fields {
        out.push(b',');
        if serde_json::to_writer(&mut out, key).is_err() {
            return bytes;
        }
        out.push(b':');
        if serde_json::to_writer(&mut out, value).is_err() {
            return bytes;
        }
    }
    out.push(b'}');
    Bytes::from(out)
}

fn full(
    store: &dyn Store,
    context: String,
    at: Option<u64>,
    sections: &Sections,
    budget_tokens: Option<usize>,
) -> Result<FullAnswer, ApiError> {
    let snapshot = store.read(&context, at)?;
    let document = if sections.is_all() {
        snapshot.document
    } else {
        sections.project(&snapshot.document)
    };
    let (document, omitted) = match budget_tokens {
        Some(budget) => {
            let trimmed = budget::trim(&document, budget);
            (trimmed.document, Some(trimmed.omitted))
        }
        None => (document, None),
    };
    Ok(FullAnswer {
        context,
        revision: snapshot.revision,
        checksum: snapshot.checksum,
        document,
        omitted,
        stale: None,
    })
}

fn delta(
    store: &dyn Store,
    context: String,
    since: u64,
    sections: &Sections,
) -> Result<DeltaAnswer, ApiError> {
    let entries = store.log_since(&context, since)?;
    let (revision, checksum) = match entries.last() {
        Some(last) => (last.revision, last.checksum.clone()),
        None => {
            let head = store.head(&context)?;
            if head.revision == since {
                (since, head.checksum)
            } else {
                (since, store.read(&context, Some(since))?.checksum)
            }
        }
    };
    let edits: Vec<Edit> = entries.into_iter().flat_map(|e| e.edits).collect();
    let edits = if would_collapse(&edits) {
        let base = store.read(&context, Some(since)).ok().map(|s| s.document);
        collapse_verified(edits, base, &checksum)
    } else {
        edits
    };
    let edits = if sections.is_all() {
        edits
    } else {
        sections.filter(&edits)
    };
    Ok(DeltaAnswer {
        context,
        revision,
        since,
        checksum,
        delta: true,
        edits,
        stale: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_forms() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(matches_etag(Some(&v("\"5\"")), 5));
        assert!(matches_etag(Some(&v("W/\"5\"")), 5));
        assert!(matches_etag(Some(&v("\"4\", \"5\"")), 5));
        assert!(matches_etag(Some(&v("*")), 5));
        assert!(!matches_etag(Some(&v("\"4\"")), 5));
        assert!(!matches_etag(None, 5));
    }
}
