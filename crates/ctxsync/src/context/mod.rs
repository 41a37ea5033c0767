//! The context commands (`init`, `get`, `set`, `push`, `pull`, `sync`, `status`, `session`,
//! `watch`, ...). Embedded mode opens the SQLite store under `.ctxsync/` directly; remote
//! mode (`CTXSYNC_SERVER` or `server` in ctxsync.toml) talks to a server through the same
//! `Store` trait, with a durable outbox for pushes that cannot reach it.

mod backend;
pub mod commands;
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
    /// The agent whose working copy to sync (default: CTXSYNC_AGENT or ctxsync.toml).
    #[arg(long, env = "CTXSYNC_AGENT")]
    pub agent: Option<String>,
    /// critical, checkpoint, periodic (batched until due) or session.
    #[arg(long, default_value = "checkpoint")]
    pub level: Level,
    /// Strategy for conflicting changes (default: defer, so they can be resolved later).
    #[arg(long)]
    pub strategy: Option<Strategy>,
    /// Flush everything (periodic included) and re-pull the whole context, checking
    /// its checksum.
    #[arg(long)]
    pub full: bool,
    /// Settle the open conflicts (of --agent, or all).
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
                ClientError::Backend(b) if b.kind == BackendErrorKind::Input => 2,
                _ => 3,
            };
        }
    }
    3
}
