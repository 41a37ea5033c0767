//! The long-running and session-level commands: `session start|end` and `watch`.
//!
//! `watch --agent A` keeps one agent's working copy in step while the agent edits it:
//! saved edits are synced at the level the config gives their paths (blocked tasks are
//! critical, completed tasks a checkpoint, the rest periodic by default), and revisions
//! made by others are merged into the file as they arrive (the server's event stream in
//! remote mode, a poll of the store's head in embedded mode).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use ctxsync_client::{local_changes, pull_into, StreamEvent, SyncOptions, SyncReport, WorkingCopy};
use ctxsync_core::{Change, Level, Strategy};
use notify::Watcher as _;
use serde_json::json;

use super::env::{open, require_agent, Env};
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
        /// The agent whose session starts (default: CTXSYNC_AGENT, `agent` in
        /// ctxsync.toml, else the only working copy there is).
        #[arg(long, env = "CTXSYNC_AGENT")]
        agent: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Flush everything pending (periodic included) and snapshot the context.
    End {
        /// The agent whose session ends (default: CTXSYNC_AGENT, `agent` in
        /// ctxsync.toml, else the only working copy there is).
        #[arg(long, env = "CTXSYNC_AGENT")]
        agent: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The agent whose working copy to keep in sync (default: CTXSYNC_AGENT, `agent` in
    /// ctxsync.toml, else the only working copy there is).
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
    let agent = require_agent(env, agent)?;
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
        periodic = wc.load_base().ok().and_then(|b| b.last_periodic_flush);
    }
    // A deleted file has no edits left to flush: the pull below writes it again.
    if wc.exists() && wc.file().exists() {
        let (_, _, changes) = local_changes(&wc)?;
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
        outln!(
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
        outln!(
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

/// What woke the watch loop and is not dealt with yet (kept while the server is away).
#[derive(Default)]
struct Pending {
    local_edit: bool,
    remote_newer: bool,
    resync: bool,
}

impl Pending {
    fn add(&mut self, wake: &Wake) {
        match wake {
            Wake::Local => self.local_edit = true,
            Wake::Remote => self.remote_newer = true,
            Wake::Resync => self.resync = true,
        }
    }
}

/// The longest wait between two attempts to reach the server.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// The first wait after the server stopped answering.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Whether the server answers, shared by the watch loop and the event stream: one line on
/// stderr when that changes ("server unreachable, retrying in N s", "reconnected"), not one
/// per attempt.
#[derive(Clone)]
struct Link {
    agent: String,
    down: Arc<AtomicBool>,
}

impl Link {
    fn new(agent: &str) -> Self {
        Self {
            agent: agent.to_owned(),
            down: Arc::new(AtomicBool::new(false)),
        }
    }

    fn went_down(&self, error: &str, retry_in: Duration) {
        tracing::debug!(
            error,
            retry_in_ms = retry_in.as_millis() as u64,
            "server unreachable"
        );
        if !self.down.swap(true, Ordering::SeqCst) {
            errln!(
                "{}: server unreachable, retrying in {} s ({error})",
                self.agent,
                retry_in.as_secs_f64().ceil() as u64
            );
        }
    }

    fn came_back(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            errln!("{}: reconnected", self.agent);
        }
    }
}

/// Exponential backoff with jitter, from [`FIRST_RETRY`] up to [`MAX_RETRY`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(FIRST_RETRY)
    }

    /// The next wait; each one about twice the last.
    fn next_wait(&mut self) -> Duration {
        let wait = ctxsync_client::outbox::jitter(self.0).min(MAX_RETRY);
        self.0 = (self.0 * 2).min(MAX_RETRY);
        wait
    }
}

/// True when `err` means the server could not be reached (worth retrying later), not
/// that something given to it was wrong.
fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ctxsync_store::StoreError>(),
            Some(ctxsync_store::StoreError::Unavailable(_))
        ) || cause
            .downcast_ref::<ctxsync_client::BackendError>()
            .is_some_and(|b| b.kind == ctxsync_client::BackendErrorKind::Unavailable)
            || matches!(
                cause.downcast_ref::<ctxsync_client::ClientError>(),
                Some(ctxsync_client::ClientError::Backend(b))
                    if b.kind == ctxsync_client::BackendErrorKind::Unavailable
            )
    })
}

/// Watches the working copy's folder (not the file: editors and ctxsync itself replace
/// it through a rename), waking the loop for anything that touches the file.
fn watch_folder(
    folder: &std::path::Path,
    file: PathBuf,
    wake: mpsc::Sender<Wake>,
) -> Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.paths.iter().any(|p| p == &file) {
                let _ = wake.send(Wake::Local);
            }
        }
    })
    .context("cannot watch the working copy")?;
    watcher
        .watch(folder, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", folder.display()))?;
    Ok(watcher)
}

pub fn watch(args: &WatchArgs) -> Result<ExitCode> {
    let env = open(&args.common)?;
    let config = env.config.file.watch.clone();
    let debounce = Duration::from_millis(args.debounce_ms.unwrap_or(config.debounce_ms));
    let wc = working_copy(&env, args.agent.as_deref())?;
    if !wc.exists() {
        let base = pull_into(&wc, &env.backend(), &env.context, None)?;
        outln!(
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
    // Kept alive for as long as the loop runs; replaced when the folder is recreated.
    let mut _watcher = watch_folder(&folder, file.clone(), wake.clone())?;
    let agent = wc.agent.clone();
    let link = Link::new(&agent);
    if let Some(remote) = &env.remote {
        let client = remote.client.clone();
        let context = env.context.clone();
        let since = wc.load_base()?.revision;
        let remote_wake = wake.clone();
        let link = link.clone();
        std::thread::spawn(move || follow_events(&client, &context, since, &remote_wake, &link));
    }
    let json = args.common.json;
    errln!(
        "watching {} for {agent} (debounce {} ms; Ctrl-C to stop)",
        file.display(),
        debounce.as_millis()
    );
    let tick = Duration::from_millis(config.poll_ms.max(50));
    let mut last_tick = Instant::now();
    let mut pending = Pending::default();
    let mut backoff = Backoff::new();
    let mut retry_at: Option<Instant> = None;
    let mut last_error: Option<String> = None;
    loop {
        let first = match woken.recv_timeout(tick) {
            Ok(w) => Some(w),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(w) = &first {
            pending.add(w);
        }
        if matches!(first, Some(Wake::Remote | Wake::Resync)) {
            // News from the server: it is back, no need to wait out the backoff.
            retry_at = None;
        }
        if matches!(first, Some(Wake::Local)) {
            // Let a burst of saves settle into one sync.
            while let Ok(w) = woken.recv_timeout(debounce) {
                pending.add(&w);
            }
        }
        // Time-based work: due periodic syncs and, embedded, revisions by others.
        let ticked = last_tick.elapsed() >= tick;
        if ticked {
            last_tick = Instant::now();
        }
        if retry_at.is_some_and(|at| Instant::now() < at) {
            continue; // the server is away: what woke us waits in `pending`
        }
        let mut step = || -> Result<Option<SyncReport>> {
            if !file.exists() {
                // Deleted (alone or with its folder): write it again, from its base if
                // that is still there (an editor may be about to save a file derived
                // from it), and let the sync below bring it up to date.
                if let Some(base) =
                    ctxsync_client::recreate_working_copy(&wc, &env.backend(), &env.context)?
                {
                    errln!(
                        "{agent}: {} was deleted; wrote it again at revision {}",
                        file.display(),
                        base.revision
                    );
                    _watcher = watch_folder(&folder, file.clone(), wake.clone())?;
                    pending.remote_newer = true;
                }
            }
            let (base, _, changes) = local_changes(&wc)?;
            if env.remote.is_none() && ticked {
                pending.remote_newer |= env.store.head(&env.context)?.revision > base.revision;
            }
            let theirs_waiting = pending.remote_newer || pending.resync;
            if changes.is_empty() {
                if !theirs_waiting {
                    return Ok(None);
                }
                let options = sync_options(&env, Level::Checkpoint);
                return Ok(Some(ctxsync_client::sync(&wc, &env.backend(), &options)?));
            }
            let level = level_for(&changes, &config);
            if level == Level::Periodic && !pending.local_edit {
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
        let result = step();
        match result {
            Ok(report) => {
                if env.remote.is_some() && report.is_some() {
                    link.came_back();
                }
                if let Some(report) = report {
                    if json {
                        print_json(&report);
                    } else {
                        output::print_sync(&report);
                    }
                }
                pending = Pending::default();
                backoff = Backoff::new();
                retry_at = None;
                last_error = None;
            }
            // The server is away: keep what is pending and try again later.
            Err(e) if env.remote.is_some() && is_unreachable(&e) => {
                let wait = backoff.next_wait();
                link.went_down(&format!("{e:#}"), wait);
                retry_at = Some(Instant::now() + wait);
            }
            // A broken edit: say so once (not on every tick) and keep watching.
            Err(e) => {
                let message = format!("{e:#}");
                if last_error.as_ref() != Some(&message) {
                    errln!("{agent}: sync failed: {message}");
                    last_error = Some(message);
                }
                // Others' revisions still wait (a fixed edit will bring them in).
                pending.local_edit = false;
            }
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
    link: &Link,
) {
    let mut backoff = Backoff::new();
    loop {
        match client.events(context, Some(since), &[]) {
            Ok(stream) => {
                link.came_back();
                backoff = Backoff::new();
                // Revisions made while the stream was down are sent first (it resumes
                // after `since`); wake the loop anyway so edits held meanwhile go out.
                if wake.send(Wake::Remote).is_err() {
                    return;
                }
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
                            tracing::debug!(error = %e, "event stream broke; reconnecting");
                            break;
                        }
                    };
                    if sent.is_err() {
                        return; // the watch loop is gone
                    }
                }
                // The stream ended (the server stopped?): a short pause before trying
                // again, so a server that closes streams at once is not hammered.
                std::thread::sleep(backoff.next_wait());
            }
            Err(e) => {
                let wait = backoff.next_wait();
                link.went_down(&e.to_string(), wait);
                std::thread::sleep(wait);
            }
        }
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
