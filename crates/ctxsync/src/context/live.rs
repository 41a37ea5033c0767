//! The long-running and session-level commands: `session start|end` and `watch`.
//!
//! `watch --agent A` keeps one agent's working copy in step while the agent edits it:
//! saved edits are synced at the level the config gives their paths (blocked tasks are
//! critical, completed tasks a checkpoint, the rest periodic by default), and revisions
//! made by others are merged into the file as they arrive (the server's event stream in
//! remote mode, a poll of the store's head in embedded mode).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use ctxsync_client::{local_changes, pull_into, StreamEvent, SyncOptions, SyncReport, WorkingCopy};
use ctxsync_core::{Change, Level, Strategy};
use notify::Watcher as _;
use serde_json::json;

use super::commands::{open, Env};
use super::now_ms;
use super::output::{self, print_json};
use crate::config::WatchConfig;
use crate::{Common, InputError};

#[derive(Args, Debug)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub action: SessionAction,
}

#[derive(Subcommand, Debug)]
pub enum SessionAction {
    /// Full pull into the working copy, with a checksum check.
    Start {
        #[arg(long, env = "CTXSYNC_AGENT")]
        agent: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Flush everything pending (periodic included) and snapshot the context.
    End {
        #[arg(long, env = "CTXSYNC_AGENT")]
        agent: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The agent whose working copy to keep in sync.
    #[arg(long, env = "CTXSYNC_AGENT")]
    pub agent: Option<String>,
    /// Quiet time after a save before syncing (default: [watch] debounce_ms, 300).
    #[arg(long)]
    pub debounce_ms: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

fn sync_options(env: &Env, level: Level) -> SyncOptions {
    SyncOptions {
        context: env.context.clone(),
        level,
        // Keep conflicting edits as open conflicts rather than dropping them.
        strategy: Strategy::Defer,
        periodic: env.config.file.periodic,
        now_unix: now_ms() / 1000,
        // Derived from the edits and their base: a retried sync is a replay.
        request_id: String::new(),
        summary: String::new(),
    }
}

fn working_copy(env: &Env, agent: Option<&str>) -> Result<WorkingCopy> {
    let agent = env.config.agent(agent);
    Ok(WorkingCopy::new(&env.config.state_dir(), &agent)?)
}

pub fn session(args: &SessionArgs) -> Result<ExitCode> {
    match &args.action {
        SessionAction::Start { agent, common } => session_start(common, agent.as_deref()),
        SessionAction::End { agent, common } => session_end(common, agent.as_deref()),
    }
}

fn session_start(common: &Common, agent: Option<&str>) -> Result<ExitCode> {
    let env = open(common)?;
    let wc = working_copy(&env, agent)?;
    let mut flushed = None;
    let mut periodic = None;
    if wc.exists() {
        let (base, _, changes) = local_changes(&wc)?;
        periodic = base.last_periodic_flush;
        if !changes.is_empty() {
            // Edits left from an earlier session go first, so the fresh copy keeps them.
            flushed = Some(ctxsync_client::sync(
                &wc,
                &env.backend(),
                &sync_options(&env, Level::Session),
            )?);
        }
    }
    let base = pull_into(&wc, &env.backend(), &env.context, periodic)?;
    let computed = ctxsync_core::checksum(&base.document);
    if computed != base.checksum {
        anyhow::bail!(
            "checksum mismatch on a full pull of {} at revision {}: got {} but the source says {}; run `ctxsync verify`",
            env.context,
            base.revision,
            output::short(&computed),
            output::short(&base.checksum)
        );
    }
    if common.json {
        print_json(
            &json!({"agent": wc.agent, "revision": base.revision, "checksum": base.checksum,
            "verified": true, "file": wc.file(), "flushed": flushed}),
        );
    } else {
        if let Some(report) = &flushed {
            output::print_sync(report);
        }
        println!(
            "session started for {}: {} at revision {}, checksum {} verified",
            wc.agent,
            wc.file().display(),
            base.revision,
            output::short(&base.checksum)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn session_end(common: &Common, agent: Option<&str>) -> Result<ExitCode> {
    let env = open(common)?;
    let wc = working_copy(&env, agent)?;
    if !wc.exists() {
        return Err(InputError(format!(
            "agent {:?} has no working copy: nothing to end (start with `ctxsync session start --agent {}`)",
            wc.agent, wc.agent
        ))
        .into());
    }
    let report = ctxsync_client::sync(&wc, &env.backend(), &sync_options(&env, Level::Session))?;
    let head = env.store.snapshot(&env.context)?;
    let conflicted = report.pushed.as_ref().is_some_and(|p| p.is_partial());
    if common.json {
        print_json(&json!({"sync": report, "snapshot": head}));
    } else {
        output::print_sync(&report);
        println!(
            "session ended for {}: snapshot of revision {} (checksum {})",
            wc.agent,
            head.revision,
            output::short(&head.checksum)
        );
    }
    Ok(ExitCode::from(if conflicted { 1 } else { 0 }))
}

/// The level a set of local edits is synced at: the most urgent level any of them gets.
pub fn level_for(changes: &[Change], config: &WatchConfig) -> Level {
    changes
        .iter()
        .map(|change| {
            let path = change.path.to_string();
            config
                .levels
                .iter()
                .filter(|(prefix, _)| {
                    path == **prefix
                        || path
                            .strip_prefix(prefix.as_str())
                            .is_some_and(|rest| rest.starts_with(['.', '[']))
                })
                .max_by_key(|(prefix, _)| prefix.len())
                .map_or(config.default_level, |(_, level)| *level)
        })
        .min()
        .unwrap_or(config.default_level)
}

enum Wake {
    /// The working copy's folder changed.
    Local,
    /// A newer revision exists remotely.
    Remote,
    /// The event stream needs a full pull.
    Resync,
}

pub fn watch(args: &WatchArgs) -> Result<ExitCode> {
    let env = open(&args.common)?;
    let config = env.config.file.watch.clone();
    let debounce = Duration::from_millis(args.debounce_ms.unwrap_or(config.debounce_ms));
    let wc = working_copy(&env, args.agent.as_deref())?;
    if !wc.exists() {
        let base = pull_into(&wc, &env.backend(), &env.context, None)?;
        println!(
            "{}: wrote {} at revision {}",
            wc.agent,
            wc.file().display(),
            base.revision
        );
    }
    let (wake, woken) = mpsc::channel::<Wake>();
    let file = wc.file();
    let folder = file
        .parent()
        .map(PathBuf::from)
        .context("the working copy has no folder")?;
    let local = wake.clone();
    let target = file.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Writes land through a temp file and a rename, so look at every path.
        if let Ok(event) = event {
            if event.paths.iter().any(|p| p == &target) {
                let _ = local.send(Wake::Local);
            }
        }
    })
    .context("cannot watch the working copy")?;
    watcher
        .watch(&folder, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", folder.display()))?;

    if let Some(remote) = &env.remote {
        let client = remote.client.clone();
        let context = env.context.clone();
        let since = wc.load_base()?.revision;
        let remote_wake = wake.clone();
        std::thread::spawn(move || follow_events(&client, &context, since, &remote_wake));
    }
    let agent = wc.agent.clone();
    let json = args.common.json;
    eprintln!(
        "watching {} for {agent} (debounce {} ms; Ctrl-C to stop)",
        file.display(),
        debounce.as_millis()
    );
    let tick = Duration::from_millis(config.poll_ms.max(50));
    let mut last_tick = Instant::now();
    loop {
        let first = match woken.recv_timeout(tick) {
            Ok(w) => Some(w),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut local_edit = matches!(first, Some(Wake::Local));
        let mut remote_newer = matches!(first, Some(Wake::Remote));
        let mut resync = matches!(first, Some(Wake::Resync));
        if local_edit {
            // Let a burst of saves settle into one sync.
            while let Ok(w) = woken.recv_timeout(debounce) {
                match w {
                    Wake::Local => local_edit = true,
                    Wake::Remote => remote_newer = true,
                    Wake::Resync => resync = true,
                }
            }
        }
        // Time-based work: due periodic syncs and, embedded, revisions by others.
        let ticked = last_tick.elapsed() >= tick;
        if ticked {
            last_tick = Instant::now();
        }
        let mut step = || -> Result<Option<SyncReport>> {
            let (base, _, changes) = local_changes(&wc)?;
            if env.remote.is_none() && ticked {
                remote_newer |= env.store.head(&env.context)?.revision > base.revision;
            }
            let theirs_waiting = remote_newer || resync;
            if changes.is_empty() {
                if !theirs_waiting {
                    return Ok(None);
                }
                let options = sync_options(&env, Level::Checkpoint);
                return Ok(Some(ctxsync_client::sync(&wc, &env.backend(), &options)?));
            }
            let level = level_for(&changes, &config);
            if level == Level::Periodic && !local_edit {
                // Re-check the periodic thresholds quietly: only a due flush or others'
                // revisions are worth a round trip.
                let due = env
                    .config
                    .file
                    .periodic
                    .due(base.last_periodic_flush, now_ms() / 1000, &changes)
                    .is_some();
                if !due && !theirs_waiting {
                    return Ok(None);
                }
            }
            let options = sync_options(&env, level);
            if level == Level::Periodic && theirs_waiting {
                if let Some(report) =
                    ctxsync_client::merge_remote_keeping_edits(&wc, &env.backend(), &env.context)?
                {
                    return Ok(Some(report));
                }
                // Our held-back edits collide with theirs: push now so the conflict is
                // decided (and kept) by the store instead of silently in this file.
                let options = sync_options(&env, Level::Checkpoint);
                return Ok(Some(ctxsync_client::sync(&wc, &env.backend(), &options)?));
            }
            Ok(Some(ctxsync_client::sync(&wc, &env.backend(), &options)?))
        };
        match step() {
            Ok(Some(report)) => {
                if json {
                    print_json(&report);
                } else {
                    output::print_sync(&report);
                }
            }
            Ok(None) => {}
            // Keep watching through a broken edit or an unreachable server; say why.
            Err(e) => eprintln!("{agent}: sync failed: {e:#}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows the server's event stream, waking the watch loop for each new revision;
/// reconnects with backoff and resumes after the last revision seen.
fn follow_events(
    client: &ctxsync_client::RemoteClient,
    context: &str,
    mut since: u64,
    wake: &mpsc::Sender<Wake>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.events(context, Some(since), &[]) {
            Ok(stream) => {
                delay = Duration::from_millis(200);
                for event in stream {
                    let sent = match event {
                        Ok(StreamEvent::Revision(entry)) => {
                            since = since.max(entry.revision);
                            wake.send(Wake::Remote)
                        }
                        Ok(StreamEvent::Resync { revision, .. }) => {
                            since = revision;
                            wake.send(Wake::Resync)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "event stream broke; reconnecting");
                            break;
                        }
                    };
                    if sent.is_err() {
                        return; // the watch loop is gone
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to {context}; retrying"),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctxsync_core::Path;
    use serde_json::json;

    fn change(path: &str) -> Change {
        Change::set(Path::parse(path).expect("path"), json!(1))
    }

    #[test]
    fn the_most_urgent_matching_level_wins() {
        let config = WatchConfig::default();
        assert_eq!(level_for(&[change("notes")], &config), Level::Periodic);
        assert_eq!(
            level_for(&[change("project_state.completed_tasks[-]")], &config),
            Level::Checkpoint
        );
        assert_eq!(
            level_for(
                &[
                    change("notes"),
                    change("project_state.blocked_tasks[id=t1].reason")
                ],
                &config
            ),
            Level::Critical
        );
        // A prefix must end at a segment boundary.
        assert_eq!(
            level_for(&[change("project_state.blocked_tasks_old")], &config),
            Level::Periodic
        );
    }
}
