//! The `wait` tool: returns as soon as a revision after `since` matches the levels and
//! sections asked for, or after the timeout (at most 30 s) with `changed: false`.
//!
//! It looks at the store's head every poll interval (20 ms by default): reading the head
//! is one indexed row on SQLite, so this costs little, sees commits by any process on
//! the same store, and needs no notification channel from the store. Only when the head
//! moved is the op log read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxsync_core::{Level, Path};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::tools::{args, edits_of, entry_summary, ToolError, ToolResult};
use crate::CtxsyncMcp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    since: Option<u64>,
    #[serde(default)]
    levels: Vec<Level>,
    #[serde(default)]
    sections: Vec<String>,
    timeout_seconds: Option<f64>,
}

pub async fn wait(
    server: CtxsyncMcp,
    context: String,
    arguments: &Map<String, Value>,
) -> ToolResult {
    let a: WaitArgs = args(arguments)?;
    let sections: Vec<Path> = a
        .sections
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            Path::parse(s.trim()).map_err(|e| ToolError::Input(format!("bad section {s:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let max = server.options().max_wait;
    let timeout = match a.timeout_seconds {
        None => max,
        Some(t) if t.is_finite() && t >= 0.0 && t <= max.as_secs_f64() => {
            Duration::from_secs_f64(t)
        }
        Some(t) => {
            return Err(ToolError::Input(format!(
                "timeout_seconds must be between 0 and {}, not {t}",
                max.as_secs()
            )))
        }
    };
    let deadline = Instant::now() + timeout;
    let store = Arc::clone(server.store());
    let poll = server.options().poll_interval;
    let head_of = |store: Arc<dyn ctxsync_store::Store>, ctx: String| async move {
        tokio::task::spawn_blocking(move || store.head(&ctx))
            .await
            .map_err(|e| ToolError::Input(format!("the wait failed: {e}")))?
            .map_err(ToolError::from)
    };
    let start = head_of(Arc::clone(&store), context.clone()).await?;
    let since = a.since.unwrap_or(start.revision);
    if since > start.revision {
        return Err(ToolError::Input(format!(
            "since {since} is after the current revision {}",
            start.revision
        )));
    }
    // Revisions up to `scanned` were read and did not match.
    let mut scanned = since;
    let mut revision = start.revision;
    loop {
        if revision > scanned {
            let store2 = Arc::clone(&store);
            let ctx = context.clone();
            let from = scanned;
            let entries = tokio::task::spawn_blocking(move || store2.log_since(&ctx, from))
                .await
                .map_err(|e| ToolError::Input(format!("the wait failed: {e}")))??;
            let matching: Vec<Value> = entries
                .iter()
                .filter(|e| a.levels.is_empty() || a.levels.contains(&e.level))
                .filter(|e| sections.is_empty() || !edits_of(e, &sections).is_empty())
                .map(|e| {
                    let mut v = entry_summary(e);
                    v["edits"] = json!(edits_of(e, &sections));
                    v
                })
                .collect();
            scanned = entries.last().map_or(revision, |e| e.revision);
            if !matching.is_empty() {
                return Ok(json!({
                    "revision": scanned, "since": since, "changed": true, "entries": matching,
                }));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(json!({
                "revision": revision, "since": since, "changed": false, "entries": [],
            }));
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
        revision = head_of(Arc::clone(&store), context.clone()).await?.revision;
    }
}
