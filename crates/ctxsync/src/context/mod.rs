//! The context commands (`init`, `get`, `set`, `push`, `pull`, `sync`, `status`, `session`,
//! `watch`, ...). Embedded mode opens the SQLite store under `.ctxsync/` directly; remote
//! mode (`CTXSYNC_SERVER` or `server` in ctxsync.toml) talks to a server through the same
//! `Store` trait, with a durable outbox for pushes that cannot reach it.

pub mod archive;
mod backend;
pub mod claims;
pub mod commands;
pub(crate) mod env;
pub mod live;
mod output;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use ctxsync_client::{BackendErrorKind, ClientError};
use ctxsync_core::{Level, Prefer, Strategy};
use ctxsync_store::StoreError;

use crate::{Common, InputError};

/// `ctxsync sync`: the seed's `claude-sync` flags.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The agent whose working copy to sync (default: CTXSYNC_AGENT, `agent` in
    /// ctxsync.toml, else the only working copy there is).
    #[arg(long, env = "CTXSYNC_AGENT")]
    pub agent: Option<String>,
    /// critical, checkpoint, periodic (batched until due) or session.
    #[arg(long, default_value = "checkpoint")]
    pub level: Level,
    /// Strategy for conflicting changes: merge, atomic, force or defer (kept as open
    /// conflicts, to be settled with --resolve-conflicts).
    #[arg(long, default_value = "defer")]
    pub strategy: Strategy,
    /// Flush everything (periodic included) and re-pull the whole context, checking
    /// its checksum.
    #[arg(long)]
    pub full: bool,
    /// Settle the open conflicts (of the agent named by --agent, CTXSYNC_AGENT or
    /// ctxsync.toml, or all).
    #[arg(long)]
    pub resolve_conflicts: bool,
    /// Which side wins when settling conflicts.
    #[arg(long, default_value = "theirs")]
    pub prefer: Prefer,
    /// Show sync status instead of syncing.
    #[arg(long)]
    pub status: bool,
    /// Show sync history instead of syncing.
    #[arg(long)]
    pub history: bool,
    /// With --history: how many entries.
    #[arg(long, default_value_t = 10)]
    pub last: usize,
    #[command(flatten)]
    pub common: Common,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The exit code an error deserves: 2 for what the user got wrong, 3 for what failed.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<InputError>() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return if e.is_client_error() { 2 } else { 3 };
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::Input(_) => 2,
                ClientError::Backend(b)
                    if matches!(b.kind, BackendErrorKind::Input | BackendErrorKind::Gone) =>
                {
                    2
                }
                _ => 3,
            };
        }
    }
    3
}

/// Records an agent-sync run that wrote a generation in the shared context
/// (`technical_context.code_changes.significant_changes`), when a context store is
/// configured: a server, or an embedded store already initialised under `root`. Agents
/// syncing never fails because of this; a problem is reported on stderr.
pub fn record_agent_run(root: &std::path::Path, report: &ctxsync_agents::sync::SyncReport) {
    let Some(generation) = report.generation else {
        return;
    };
    let common = crate::Common {
        context: None,
        root: Some(root.to_path_buf()),
        json: false,
        db: None,
    };
    let Ok(config) = crate::config::Config::load(Some(root)) else {
        return;
    };
    let remote = std::env::var("CTXSYNC_SERVER").is_ok_and(|s| !s.is_empty())
        || config.file.server.is_some();
    let exists = crate::location::Location::resolve(None, &config).is_ok_and(|l| l.exists());
    if !remote && !exists {
        return;
    }
    let entry = serde_json::json!({
        "id": format!("agents-generation-{generation}-{}", now_ms()),
        "kind": "agent_sync",
        "generation": generation,
        "added": report.added,
        "updated": report.updated,
        "removed": report.removed,
        "files_written": report.written.len(),
        "files_deleted": report.deleted.len(),
        "at_ms": now_ms(),
    });
    let Ok(path) =
        ctxsync_core::Path::parse("technical_context.code_changes.significant_changes[-]")
    else {
        return;
    };
    let change = ctxsync_core::Change::set(path, entry);
    let result = commands::open(&common).and_then(|env| {
        let request = ctxsync_core::PushRequest {
            agent: "agent-sync".into(),
            level: Level::Checkpoint,
            base_revision: None,
            request_id: Some(ulid::Ulid::new().to_string()),
            strategy: Strategy::Merge,
            summary: format!("agent sync generation {generation}"),
            changes: vec![change],
        };
        Ok(env.store.push(&env.context, request)?)
    });
    match result {
        Ok(answer) if answer.applied.is_empty() => errln!(
            "note: agent sync summary not recorded in the shared context ({} rejected, {} conflicting; \
             check the ownership rules for agent `agent-sync`)",
            answer.rejected.len(),
            answer.conflicts.len()
        ),
        Ok(_) => {}
        Err(e) => errln!("note: agent sync summary not recorded in the shared context: {e:#}"),
    }
}
