//! What `serve --watch-agents` hands to the server about its watcher: each run's report
//! and, after each run that did something, a reference check of the library (as
//! `ctxsync agents check`), pushed as JSON into the server's
//! [`AgentSyncFeed`] for the dashboard's *Agent sync* page.

use std::path::Path;

use ctxsync_agents::watch::RunOutcome;
use ctxsync_server::agent_sync::AgentSyncFeed;

/// Milliseconds since the Unix epoch (0 on a clock before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether a run changed anything worth a new reference check: the initial run, and any
/// run that wrote, deleted, conflicted or failed validation (the library changed).
fn worth_a_check(outcome: &RunOutcome) -> bool {
    match &outcome.result {
        Ok(r) => {
            outcome.run == 1
                || r.generation.is_some()
                || !r.written.is_empty()
                || !r.deleted.is_empty()
                || !r.conflicts.is_empty()
                || !r.validation_errors.is_empty()
                || !r.new_broken_refs.is_empty()
        }
        Err(_) => false,
    }
}

/// Records `outcome` in `feed`, then the reference check it calls for, if any.
pub fn report_run(feed: &AgentSyncFeed, root: &Path, outcome: &RunOutcome) {
    let result = match &outcome.result {
        Ok(report) => serde_json::to_value(report).map_err(|e| format!("unreadable report: {e}")),
        Err(e) => Err(e.to_string()),
    };
    let seq = feed.record_run(outcome.run, now_ms(), outcome.trigger.clone(), result);
    if !worth_a_check(outcome) {
        return;
    }
    // The settings are read again: the run may have been triggered by their change.
    let checked = ctxsync_agents::AgentsConfig::load(root)
        .and_then(|cfg| ctxsync_agents::check::check(root, &cfg))
        .map_err(|e| e.to_string())
        .and_then(|r| serde_json::to_value(&r).map_err(|e| format!("unreadable check: {e}")));
    if let Err(e) = &checked {
        tracing::warn!(error = %e, "agents check after run {} failed", outcome.run);
    }
    feed.record_check(seq, now_ms(), checked);
}
