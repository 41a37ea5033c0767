//! Human-readable output of the context commands (`--json` prints the structs instead).

use ctxsync_client::SyncReport;
use ctxsync_core::{Conflict, PushResponse};
use ctxsync_store::{Head, LogEntry, Metrics};
use serde::Serialize;
use serde_json::Value;

pub fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode output: {e}"),
    }
}

/// Scalars print bare (so `$(ctxsync get x)` is the value); the rest as YAML.
pub fn print_value(value: &Value) {
    match value {
        Value::String(s) => println!("{s}"),
        Value::Number(_) | Value::Bool(_) | Value::Null => println!("{value}"),
        _ => print!("{}", ctxsync_client::to_yaml(value)),
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
    println!("  conflict at {} [{}]{by}", c.path, c.reason.as_str());
    println!("    yours:   {}", show(&c.yours));
    println!("    current: {}", show(&c.current));
    if let Some(id) = c.id {
        println!("    stored as #{id}: settle with `ctxsync sync --resolve-conflicts --prefer mine|theirs`");
    }
}

pub fn print_push(r: &PushResponse) {
    let replay = if r.replayed {
        " (replayed: already applied)"
    } else {
        ""
    };
    println!(
        "revision {} checksum {}: {} applied, {} conflict(s), {} rejected{replay}",
        r.revision,
        short(&r.checksum),
        r.applied.len(),
        r.conflicts.len(),
        r.rejected.len()
    );
    for c in &r.conflicts {
        print_conflict(c);
    }
    for x in &r.rejected {
        println!(
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
        println!(
            "{}: deferred {} change(s) at level periodic (not due yet); base stays at revision {}",
            r.agent, r.local_changes, r.revision
        );
        return;
    }
    match &r.pushed {
        None => println!("{}: no local changes", r.agent),
        Some(p) => {
            print!("{}: pushed {} change(s): ", r.agent, r.local_changes);
            print_push(p);
        }
    }
    println!(
        "{}: working copy now at revision {} checksum {}",
        r.agent,
        r.revision,
        short(&r.checksum)
    );
    if r.pushed.is_none() {
        for m in &r.merge_conflicts {
            println!("  kept the remote value at {} over your edit", m.path);
        }
    }
}

pub fn print_status(head: &Head, m: &Metrics, agents: &[Value]) {
    println!("context:    {}", head.context);
    println!("revision:   {} (horizon {})", head.revision, head.horizon);
    println!("checksum:   {}", head.checksum);
    println!("size:       {} bytes", head.size);
    println!(
        "syncs today: {} (critical {}, checkpoint {}, periodic {}, session {}), failures {}, deferred {}",
        m.total_syncs_today,
        m.by_level.get("critical").unwrap_or(&0),
        m.by_level.get("checkpoint").unwrap_or(&0),
        m.by_level.get("periodic").unwrap_or(&0),
        m.by_level.get("session").unwrap_or(&0),
        m.sync_failures,
        m.deferred
    );
    println!(
        "sync time:  avg {:.2} ms, p95 {:.2} ms, fastest {:.2} ms, slowest {:.2} ms",
        m.performance.average_sync_ms,
        m.performance.p95_sync_ms,
        m.performance.fastest_sync_ms,
        m.performance.slowest_sync_ms
    );
    println!(
        "conflicts:  {} open, {} in the last hour",
        m.open_conflicts, m.conflicts_last_hour
    );
    for (path, n) in &m.hottest_conflict_paths {
        println!("  hot: {path} ({n})");
    }
    for a in agents {
        match a.get("error") {
            Some(e) => println!("agent {}: {}", a["agent"], e),
            None => println!(
                "agent {}: base revision {}, {} unsynced change(s)",
                a["agent"].as_str().unwrap_or("?"),
                a["base_revision"],
                a["pending_changes"]
            ),
        }
    }
}

pub fn print_history(entries: &[LogEntry]) {
    for e in entries {
        println!(
            "r{} {} {} [{}] {} ({} edit(s))",
            e.revision,
            e.timestamp_ms,
            e.agent,
            e.level,
            e.summary,
            e.edits.len()
        );
    }
}

pub fn print_outbox(outbox: &ctxsync_client::OutboxStatus) {
    if outbox.pending == 0 && outbox.failed == 0 {
        println!("outbox:     empty");
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
    println!(
        "outbox:     {} queued{age}, {} refused (see .ctxsync/outbox/failed)",
        outbox.pending, outbox.failed
    );
    if let Some(e) = &outbox.last_error {
        println!("            last error: {e}");
    }
}
