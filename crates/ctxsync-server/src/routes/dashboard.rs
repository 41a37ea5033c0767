//! The two answers the dashboard (`/ui`) needs beyond the rest of the API:
//! `GET /v1/overview` (every context at a glance, with the server's health) and
//! `GET /v1/contexts/{ctx}/trends` (time-bucketed revisions from the op log; syncs,
//! latencies, conflicts and failures from the store's sync log, which every process
//! writes and which outlives a restart; over 1 h, 24 h or 7 d).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ctxsync_core::Level;
use ctxsync_store::{BucketSpan, HistoryFilter, LogEntry, Store, SyncBucket, SyncOutcome};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::{FormatQuery, P, Q};
use crate::auth::Bearer;
use crate::errors::ApiError;
use crate::negotiate::{self, Format};
use crate::openapi::dashboard as schemas;
use crate::AppState;

/// Most op-log entries a trends or overview answer reads (newest first).
const MAX_ENTRIES: usize = 200_000;

/// Points per plot, whatever the window.
const BUCKETS: u64 = 60;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn zero_by_level() -> BTreeMap<String, u64> {
    Level::ALL
        .iter()
        .map(|l| (l.as_str().to_owned(), 0))
        .collect()
}

#[derive(Debug, Serialize)]
struct LastChange {
    revision: u64,
    agent: String,
    level: Level,
    timestamp_ms: u64,
    summary: String,
}

#[derive(Debug, Serialize)]
struct Integrity {
    ok: bool,
    revision: u64,
    checked: u64,
    checked_ms: u64,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ContextSummary {
    context: String,
    revision: u64,
    size: u64,
    horizon: u64,
    checksum: String,
    last_change: Option<LastChange>,
    syncs_last_minute: BTreeMap<String, u64>,
    syncs_today: u64,
    sync_failures: u64,
    conflicts_last_hour: u64,
    open_conflicts: u64,
    p95_sync_ms: f64,
    integrity: Option<Integrity>,
}

#[derive(Debug, Serialize)]
struct StoreHealth {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Debug, Serialize)]
struct ServerHealth {
    version: &'static str,
    started_ms: u64,
    uptime_s: u64,
    event_subscribers: i64,
    storage_bytes: u64,
    store: StoreHealth,
}

#[derive(Debug, Serialize)]
struct Overview {
    now_ms: u64,
    server: ServerHealth,
    contexts: Vec<ContextSummary>,
}

/// The entries of `context` newer than `from_ms`, newest first. Reads the newest few
/// first and more only when they are all that recent, so a quiet context costs little.
fn recent(store: &dyn Store, context: &str, from_ms: u64) -> Result<Vec<LogEntry>, ApiError> {
    let mut wanted = 256;
    loop {
        let mut entries = store.history(
            context,
            &HistoryFilter {
                last: Some(wanted),
                agent: None,
                level: None,
            },
        )?;
        let complete = entries.len() < wanted
            || wanted >= MAX_ENTRIES
            || entries.last().is_some_and(|e| e.timestamp_ms < from_ms);
        if complete {
            // Newest first: cut at the first one that is too old.
            let keep = entries.partition_point(|e| e.timestamp_ms >= from_ms);
            entries.truncate(keep);
            return Ok(entries);
        }
        wanted = (wanted * 4).min(MAX_ENTRIES);
    }
}

fn summarize(
    store: &dyn Store,
    head: ctxsync_store::Head,
    now: u64,
) -> Result<ContextSummary, ApiError> {
    let last = store.history(
        &head.context,
        &HistoryFilter {
            last: Some(1),
            agent: None,
            level: None,
        },
    )?;
    let last_change = last.into_iter().next().map(|e| LastChange {
        revision: e.revision,
        agent: e.agent,
        level: e.level,
        timestamp_ms: e.timestamp_ms,
        summary: e.summary,
    });
    let mut syncs_last_minute = zero_by_level();
    for entry in recent(store, &head.context, now.saturating_sub(60_000))? {
        *syncs_last_minute
            .entry(entry.level.as_str().to_owned())
            .or_default() += 1;
    }
    let metrics = store.metrics(&head.context, now)?;
    Ok(ContextSummary {
        context: head.context,
        revision: head.revision,
        size: head.size,
        horizon: head.horizon,
        checksum: head.checksum,
        last_change,
        syncs_last_minute,
        syncs_today: metrics.total_syncs_today,
        sync_failures: metrics.sync_failures,
        conflicts_last_hour: metrics.conflicts_last_hour,
        open_conflicts: metrics.open_conflicts,
        p95_sync_ms: metrics.performance.p95_sync_ms,
        integrity: None,
    })
}

/// Every context at a glance, and the server's health.
#[utoipa::path(
    get, path = "/v1/overview", tag = "dashboard",
    params(("format" = Option<String>, Query, description = "json (default) or yaml")),
    responses(
        (status = 200, description = "Contexts and server health", body = schemas::Overview),
        (status = 401, description = "Missing, unknown or revoked token", body = crate::openapi::schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn overview(
    State(state): State<AppState>,
    bearer: Bearer,
    Q(q): Q<FormatQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let now = now_ms();
    let (mut contexts, store) = state
        .authed(bearer, move |store, _token| {
            let heads = store.list_contexts()?;
            let mut contexts = Vec::with_capacity(heads.len());
            for head in heads {
                contexts.push(summarize(store, head, now)?);
            }
            let ready = store.writable().map_err(|e| e.to_string());
            Ok((contexts, ready))
        })
        .await?;
    for summary in &mut contexts {
        summary.integrity = state
            .board()
            .integrity(&summary.context)
            .map(|c| Integrity {
                ok: c.report.ok,
                revision: c.report.revision,
                checked: c.report.checked,
                checked_ms: c.checked_ms,
                problems: c.report.problems,
            });
    }
    let started_ms = state.board().started_ms();
    let overview = Overview {
        now_ms: now,
        server: ServerHealth {
            version: env!("CARGO_PKG_VERSION"),
            started_ms,
            uptime_s: now.saturating_sub(started_ms) / 1000,
            event_subscribers: state
                .metrics()
                .sse_subscribers
                .load(std::sync::atomic::Ordering::Relaxed),
            storage_bytes: contexts.iter().map(|c| c.size).sum(),
            store: StoreHealth {
                ready: store.is_ok(),
                message: store.err(),
            },
        },
        contexts,
    };
    Ok(negotiate::reply(format, StatusCode::OK, &overview))
}

/// Query of `trends`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendsQuery {
    /// `1h` (default), `24h` or `7d`.
    #[param(value_type = Option<schemas::TrendWindow>)]
    pub window: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Bucket {
    start_ms: u64,
    revisions: u64,
    by_level: BTreeMap<String, u64>,
    by_agent: BTreeMap<String, u64>,
    pushes: u64,
    pushes_by_level: BTreeMap<String, u64>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    conflicts: u64,
    failures: u64,
    failures_by_level: BTreeMap<String, u64>,
    /// Conflicts and failures by agent (only agents that had any).
    trouble_by_agent: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct Trends {
    context: String,
    window: &'static str,
    from_ms: u64,
    to_ms: u64,
    bucket_ms: u64,
    buckets: Vec<Bucket>,
}

fn window_ms(window: Option<&str>) -> Result<(&'static str, u64), ApiError> {
    match window.unwrap_or("1h") {
        "1h" => Ok(("1h", 3600 * 1000)),
        "24h" => Ok(("24h", 24 * 3600 * 1000)),
        "7d" => Ok(("7d", 7 * 24 * 3600 * 1000)),
        other => Err(ApiError::bad_request(format!(
            "unknown window {other:?} (expected 1h, 24h or 7d)"
        ))),
    }
}

/// Revisions from the op log, syncs from the store's sync log (every process's).
fn bucketize(
    entries: &[LogEntry],
    synced: &[SyncBucket],
    from: u64,
    bucket_ms: u64,
) -> Vec<Bucket> {
    let mut buckets: Vec<Bucket> = (0..BUCKETS)
        .map(|i| Bucket {
            start_ms: from + i * bucket_ms,
            by_level: zero_by_level(),
            pushes_by_level: zero_by_level(),
            failures_by_level: zero_by_level(),
            ..Bucket::default()
        })
        .collect();
    let last = buckets.len() - 1;
    let index = |ts: u64| ((ts.saturating_sub(from) / bucket_ms) as usize).min(last);
    for entry in entries {
        let bucket = &mut buckets[index(entry.timestamp_ms)];
        bucket.revisions += 1;
        *bucket
            .by_level
            .entry(entry.level.as_str().to_owned())
            .or_default() += 1;
        *bucket.by_agent.entry(entry.agent.clone()).or_default() += 1;
    }
    for synced in synced {
        let Some(bucket) = buckets.get_mut(synced.index as usize) else {
            continue;
        };
        let ms = |us: u64| us as f64 / 1000.0;
        bucket.p50_ms = synced.p50_us.map(ms);
        bucket.p95_ms = synced.p95_us.map(ms);
        for count in &synced.counts {
            let level = count.level.as_str();
            bucket.pushes += count.count;
            *bucket.pushes_by_level.entry(level.to_owned()).or_default() += count.count;
            let failed = matches!(count.outcome, SyncOutcome::Rejected | SyncOutcome::Failed);
            if failed {
                bucket.failures += count.count;
                *bucket
                    .failures_by_level
                    .entry(level.to_owned())
                    .or_default() += count.count;
            } else if count.outcome == SyncOutcome::Conflict {
                bucket.conflicts += count.count;
            } else {
                continue;
            }
            *bucket
                .trouble_by_agent
                .entry(count.agent.clone())
                .or_default() += count.count;
        }
    }
    buckets
}

/// Revisions (op log) and syncs (the store's sync log), in 60 buckets over the window.
#[utoipa::path(
    get, path = "/v1/contexts/{ctx}/trends", tag = "dashboard",
    params(("ctx" = String, Path, description = "Context name"), TrendsQuery),
    responses(
        (status = 200, description = "60 buckets, oldest first", body = schemas::Trends),
        (status = 400, description = "Unknown window", body = crate::openapi::schemas::ErrorBody),
        (status = 404, description = "No such context", body = crate::openapi::schemas::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn trends(
    State(state): State<AppState>,
    P(ctx): P<String>,
    bearer: Bearer,
    Q(q): Q<TrendsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::of_answer(&headers, q.format.as_deref())?;
    let (window, span) = window_ms(q.window.as_deref())?;
    let bucket_ms = span / BUCKETS;
    // Whole buckets, the last one holding now.
    let to = (now_ms() / bucket_ms + 1) * bucket_ms;
    let from = to - span;
    let context = ctx.clone();
    let (entries, synced) = state
        .authed(bearer, move |store, _token| {
            let span = BucketSpan {
                from_ms: from,
                bucket_ms,
                buckets: BUCKETS as u32,
            };
            Ok((
                recent(store, &context, from)?,
                store.sync_buckets(&context, &span)?,
            ))
        })
        .await?;
    let trends = Trends {
        buckets: bucketize(&entries, &synced, from, bucket_ms),
        context: ctx,
        window,
        from_ms: from,
        to_ms: to,
        bucket_ms,
    };
    Ok(negotiate::reply(format, StatusCode::OK, &trends))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(window_ms(None).ok(), Some(("1h", 3_600_000)));
        assert_eq!(window_ms(Some("7d")).ok(), Some(("7d", 604_800_000)));
        assert!(window_ms(Some("2h")).is_err());
    }
}
