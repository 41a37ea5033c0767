//! Human-readable output of the context commands (`--json` prints the structs instead).

use ctxsync_client::SyncReport;
use ctxsync_core::{Conflict, PushResponse};
use ctxsync_store::{Head, LogEntry, Metrics};
use serde::Serialize;
use serde_json::Value;

pub use crate::out::count;

pub fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(e) => errln!("error: cannot encode output: {e}"),
    }
}

/// Scalars print bare (so `$(ctxsync get x)` is the value); the rest as YAML.
pub fn print_value(value: &Value) {
    match value {
        Value::String(s) => outln!("{s}"),
        Value::Number(_) | Value::Bool(_) | Value::Null => outln!("{value}"),
        _ => out!("{}", ctxsync_client::to_yaml(value)),
    }
}

pub fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => v.to_string(),
    }
}

pub fn print_conflict(c: &Conflict) {
    let by = match (&c.modified_by, c.modified_at_revision) {
        (Some(agent), Some(rev)) => format!(" (changed by {agent} at revision {rev})"),
        _ => String::new(),
    };
    outln!("  conflict at {} [{}]{by}", c.path, c.reason.as_str());
    outln!("    yours:   {}", show(&c.yours));
    outln!("    current: {}", show(&c.current));
    if let Some(id) = c.id {
        outln!("    stored as #{id}: settle with `ctxsync sync --resolve-conflicts --prefer mine|theirs`");
    }
}

pub fn print_push(r: &PushResponse) {
    let replay = if r.replayed {
        " (replayed: already applied)"
    } else {
        ""
    };
    outln!(
        "revision {} checksum {}: {} applied, {}, {} rejected{replay}",
        r.revision,
        short(&r.checksum),
        r.applied.len(),
        count(r.conflicts.len(), "conflict", "conflicts"),
        r.rejected.len()
    );
    for c in &r.conflicts {
        print_conflict(c);
    }
    for x in &r.rejected {
        if x.reason == "claimed" {
            outln!(
                "  rejected {} [claimed]: {} holds a claim on {} (--strategy force overrides)",
                x.path,
                x.owners.join(", "),
                x.rule
            );
            continue;
        }
        outln!(
            "  rejected {} [{}]: rule {:?} allows only {}",
            x.path,
            x.reason,
            x.rule,
            x.owners.join(", ")
        );
    }
}

pub fn print_sync(r: &SyncReport) {
    if r.deferred {
        outln!(
            "{}: deferred {} at level periodic (not due yet); base stays at revision {}",
            r.agent,
            count(r.local_changes, "change", "changes"),
            r.revision
        );
        return;
    }
    if let Some(old) = r.rebased_from {
        outln!(
            "{}: the working copy's base (revision {old}) was compacted away; pushed its edits \
             with their field tests and re-based on a fresh pull",
            r.agent
        );
    }
    match &r.pushed {
        None => outln!("{}: no local changes", r.agent),
        Some(p) => {
            out!(
                "{}: pushed {}: ",
                r.agent,
                count(r.local_changes, "change", "changes")
            );
            print_push(p);
        }
    }
    outln!(
        "{}: working copy now at revision {} checksum {}",
        r.agent,
        r.revision,
        short(&r.checksum)
    );
    if r.pushed.is_none() {
        for m in &r.merge_conflicts {
            outln!("  kept the remote value at {} over your edit", m.path);
        }
    }
}

pub fn print_status(head: &Head, m: &Metrics, agents: &[Value]) {
    outln!("context:    {}", head.context);
    outln!("revision:   {} (horizon {})", head.revision, head.horizon);
    outln!("checksum:   {}", head.checksum);
    outln!("size:       {} bytes", head.size);
    outln!(
        "syncs today: {} (critical {}, checkpoint {}, periodic {}, session {}), failures {}, deferred {}",
        m.total_syncs_today,
        m.by_level.get("critical").unwrap_or(&0),
        m.by_level.get("checkpoint").unwrap_or(&0),
        m.by_level.get("periodic").unwrap_or(&0),
        m.by_level.get("session").unwrap_or(&0),
        m.sync_failures,
        m.deferred
    );
    outln!(
        "sync time:  avg {:.2} ms, p95 {:.2} ms, fastest {:.2} ms, slowest {:.2} ms",
        m.performance.average_sync_ms,
        m.performance.p95_sync_ms,
        m.performance.fastest_sync_ms,
        m.performance.slowest_sync_ms
    );
    outln!(
        "conflicts:  {} open, {} in the last hour",
        m.open_conflicts,
        m.conflicts_last_hour
    );
    for (path, n) in &m.hottest_conflict_paths {
        outln!("  hot: {path} ({n})");
    }
    for a in agents {
        match a.get("error") {
            Some(e) => outln!("agent {}: {}", a["agent"], e),
            None => outln!(
                "agent {}: base revision {}, {}",
                a["agent"].as_str().unwrap_or("?"),
                a["base_revision"],
                count(
                    a["pending_changes"].as_u64().unwrap_or(0) as usize,
                    "unsynced change",
                    "unsynced changes"
                )
            ),
        }
    }
}

pub fn print_history(entries: &[LogEntry]) {
    for e in entries {
        let summary = if e.summary.is_empty() {
            String::new()
        } else {
            format!(" {}", e.summary)
        };
        outln!(
            "r{} {} {} [{}]{summary} ({})",
            e.revision,
            crate::agents_cli::format_ts(e.timestamp_ms),
            e.agent,
            e.level,
            count(e.edits.len(), "edit", "edits")
        );
    }
}

/// History entries as JSON, each with its time as RFC 3339 UTC (`time`) next to the
/// epoch milliseconds.
pub fn history_json(entries: &[LogEntry]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert(
                    "time".into(),
                    Value::String(crate::agents_cli::format_ts(e.timestamp_ms)),
                );
            }
            v
        })
        .collect()
}

pub fn print_outbox(outbox: &ctxsync_client::OutboxStatus) {
    if outbox.pending == 0 && outbox.failed == 0 {
        outln!("outbox:     empty");
        return;
    }
    let age = outbox
        .oldest_queued_ms
        .map(|t| {
            format!(
                ", oldest queued {} s ago",
                super::now_ms().saturating_sub(t) / 1000
            )
        })
        .unwrap_or_default();
    outln!(
        "outbox:     {} queued{age}, {} refused (see .ctxsync/outbox/failed)",
        outbox.pending,
        outbox.failed
    );
    if let Some(e) = &outbox.last_error {
        outln!("            last error: {e}");
    }
}

/// The storage lines of `status`: the store's files, this context's log and archive, and
/// any threshold passed.
pub fn print_storage(storage: &Value) {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let c = &storage["context"];
    outln!(
        "storage: {} bytes on disk; log {} revisions, {} bytes; snapshots {} bytes; archive {} entries, {} bytes",
        n(&storage["database_bytes"]),
        n(&c["log_revisions"]),
        n(&c["log_bytes"]),
        n(&c["snapshot_bytes"]),
        n(&c["archive_entries"]),
        n(&c["archive_bytes"])
    );
    for warning in storage["warnings"].as_array().into_iter().flatten() {
        outln!("warning: {}", warning.as_str().unwrap_or_default());
    }
}
