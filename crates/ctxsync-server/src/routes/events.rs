//! `GET /v1/contexts/{ctx}/events`: Server-Sent Events, one `revision` event per
//! revision (`id:` = revision, `data:` = the op-log entry with its edits filtered to the
//! requested sections), resumable with `Last-Event-ID`. See [`crate::fanout`] for how
//! delivery stays ordered and gap-free.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ctxsync_core::Level;
use ctxsync_store::{LogEntry, StoreError};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};
use utoipa::IntoParams;

use super::{P, Q};
use crate::auth::Bearer;
use crate::errors::ApiError;
use crate::fanout::Published;
use crate::openapi::schemas;
use crate::view::Sections;
use crate::AppState;

/// Query of an event stream.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this revision (the `Last-Event-ID` header wins). Without either, the
    /// stream starts at the current revision (only new revisions are sent).
    pub since: Option<u64>,
    /// Comma-separated levels to send (default: all), e.g. `critical,checkpoint`.
    pub levels: Option<String>,
    /// Comma-separated sections; revisions touching none of them are skipped.
    pub sections: Option<String>,
}

/// What a subscriber wants.
#[derive(Debug, Clone)]
struct Filter {
    levels: Option<Vec<Level>>,
    sections: Sections,
}

impl Filter {
    /// The event for `entry`, or `None` when the filter skips it.
    fn event(&self, entry: &LogEntry, json: Option<&str>) -> Option<Event> {
        if let Some(levels) = &self.levels {
            if !levels.contains(&entry.level) {
                return None;
            }
        }
        let data = if self.sections.is_all() {
            match json {
                Some(json) => json.to_owned(),
                None => serde_json::to_string(entry).ok()?,
            }
        } else {
            let edits = self.sections.filter(&entry.edits);
            if edits.is_empty() {
                return None;
            }
            let filtered = LogEntry {
                edits,
                ..entry.clone()
            };
            serde_json::to_string(&filtered).ok()?
        };
        Some(
            Event::default()
                .event("revision")
                .id(entry.revision.to_string())
                .data(data),
        )
    }
}

fn parse_levels(spec: Option<&str>) -> Result<Option<Vec<Level>>, ApiError> {
    let Some(spec) = spec else { return Ok(None) };
    let mut levels = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        levels.push(part.parse::<Level>().map_err(ApiError::bad_request)?);
    }
    Ok(if levels.is_empty() {
        None
    } else {
        Some(levels)
    })
}

/// Streams new revisions as Server-Sent Events.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/events", tag = "events",
    params(("ctx" = String, Path, description = "Context name"), EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this revision")),
    responses(
        (status = 200, description = "text/event-stream: `event: revision` with `id: <revision>` and `data: <LogEntry>`; `event: resync` with `data: {\"horizon\":H,\"revision\":R}` when revisions below the horizon were needed (the stream goes on from R); keep-alive comments every 15 s", content_type = "text/event-stream", body = schemas::LogEntry),
        (status = 400, description = "Bad since, Last-Event-ID, levels or sections", body = schemas::ErrorBody),
        (status = 404, description = "No such context", body = schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a revision number"))?,
        ),
        None => q.since,
    };
    let filter = Filter {
        levels: parse_levels(q.levels.as_deref())?,
        sections: Sections::parse(q.sections.as_deref())?,
    };
    let context = ctx.clone();
    let head = state
        .authed(bearer, move |store, token| {
            let head = store.head(&context)?;
            // Presence: a subscriber has seen up to where its stream starts.
            if resume.is_none_or(|r| r <= head.revision) {
                super::claims::observe(store, &context, &token, resume.unwrap_or(head.revision));
            }
            Ok(head)
        })
        .await?;
    if let Some(since) = resume.filter(|r| *r > head.revision) {
        return Err(ApiError::bad_request(format!(
            "revision {since} does not exist yet (current is {})",
            head.revision
        )));
    }
    let channel = state.hub().channel(&ctx, head.revision);
    // Subscribe before the first read of the store, so nothing falls between the two.
    let rx = channel.tx.subscribe();
    let start = resume.unwrap_or(head.revision);
    let (tx, out) = mpsc::channel::<Event>(256);
    state
        .metrics()
        .sse_subscribers
        .fetch_add(1, Ordering::Relaxed);
    tokio::spawn(subscriber(
        state.clone(),
        ctx,
        rx,
        start,
        filter,
        tx,
        state.closing(),
    ));
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|e| (Ok::<_, Infallible>(e), out))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(state.config().keep_alive))
        .into_response();
    // Tell proxies not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Decrements the subscriber gauge when a subscriber ends, however it ends.
struct Gauge(AppState);

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0
            .metrics()
            .sse_subscribers
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Result of reading the store from a revision.
enum CatchUp {
    /// Everything after the revision (possibly nothing).
    Entries(Vec<LogEntry>),
    /// The store no longer has it: resync from `revision`.
    Resync { horizon: u64, revision: u64 },
}

async fn read_store(state: &AppState, ctx: &str, after: u64) -> Result<CatchUp, ApiError> {
    let ctx = ctx.to_owned();
    state
        .read(move |store| match store.log_since(&ctx, after) {
            Ok(entries) => Ok(CatchUp::Entries(entries)),
            Err(StoreError::Gone { horizon, .. }) => {
                let head = store.head(&ctx)?;
                Ok(CatchUp::Resync {
                    horizon: horizon.max(head.horizon),
                    revision: head.revision,
                })
            }
            Err(e) => Err(e.into()),
        })
        .await
}

/// Sends what the subscriber has not seen yet. Returns `false` when the client is gone.
async fn send(tx: &mpsc::Sender<Event>, event: Event) -> bool {
    tx.send(event).await.is_ok()
}

/// One subscriber: replays the store from `start`, then follows the broadcast, re-reading
/// the store on any gap, until the client goes away or the server shuts down.
async fn subscriber(
    state: AppState,
    ctx: String,
    mut rx: broadcast::Receiver<Arc<Published>>,
    start: u64,
    filter: Filter,
    tx: mpsc::Sender<Event>,
    mut closing: watch::Receiver<bool>,
) {
    let _gauge = Gauge(state.clone());
    // `last` is the newest revision handled (sent or filtered out).
    let mut last = start;
    let mut need_store = true;
    loop {
        if need_store {
            need_store = false;
            match read_store(&state, &ctx, last).await {
                Ok(CatchUp::Entries(entries)) => {
                    for entry in entries {
                        if entry.revision <= last {
                            continue;
                        }
                        last = entry.revision;
                        if let Some(event) = filter.event(&entry, None) {
                            if !send(&tx, event).await {
                                return;
                            }
                        }
                    }
                }
                Ok(CatchUp::Resync { horizon, revision }) => {
                    let data = serde_json::json!({"horizon": horizon, "revision": revision});
                    let event = Event::default().event("resync").data(data.to_string());
                    last = revision;
                    if !send(&tx, event).await {
                        return;
                    }
                }
                Err(e) if e.status.is_client_error() => {
                    // The context went away (or the client's resume point is in the
                    // future): say so and end the stream.
                    let event = Event::default().event("error").data(
                        serde_json::json!({"error": e.code, "message": e.message}).to_string(),
                    );
                    let _ = send(&tx, event).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "event stream: store read failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(state.config().poll_interval) => {}
                        _ = tx.closed() => return,
                    }
                    need_store = true;
                    continue;
                }
            }
        }
        let received = tokio::select! {
            r = rx.recv() => r,
            _ = tx.closed() => return,
            _ = closing.changed() => return,
        };
        match received {
            Ok(published) => {
                let revision = published.entry.revision;
                if revision <= last {
                    continue;
                }
                if revision != last + 1 {
                    // A gap: the store has what we missed.
                    need_store = true;
                    continue;
                }
                last = revision;
                if let Some(event) = filter.event(&published.entry, Some(&published.json)) {
                    if !send(&tx, event).await {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => need_store = true,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(parse_levels(None).unwrap(), None);
        assert_eq!(
            parse_levels(Some("critical, checkpoint")).unwrap(),
            Some(vec![Level::Critical, Level::Checkpoint])
        );
        assert!(parse_levels(Some("urgent")).is_err());
    }
}
