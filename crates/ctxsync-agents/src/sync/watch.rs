//! `agents watch`: file events → debounce → one sync run at a time.
//!
//! Events are debounced trailing-edge (a run starts once the library has been quiet for
//! `debounce_ms`, or at the latest after 20× that under a continuous stream). Runs are
//! synchronous on this thread, so while one is in flight new events queue up and become
//! exactly one follow-up run. Our own writes (outputs, temp files, `.ctxsync/`) and read
//! accesses are ignored. Source folders that disappear are watched for again through
//! their nearest existing ancestor, so deleting and recreating `agents/` is survived.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use crate::config::AgentsConfig;
use crate::deploy::TEMP_PREFIX;
use crate::error::{Error, Result};
use crate::paths;
use crate::registry::Registry;
use crate::state::StateDir;
use crate::sync::{self, SyncOptions, SyncReport};

/// The outcome of one run, handed to the caller (the CLI prints it).
pub struct RunOutcome {
    /// 1 for the initial run.
    pub run: u64,
    /// Files whose events triggered the run (empty for the initial run).
    pub trigger: Vec<String>,
    /// The report, or the error that stopped the run (the watcher goes on).
    pub result: Result<SyncReport>,
}

/// Watches the library under `root` until `stop` is set.
pub fn watch(
    root: &Path,
    opts: &SyncOptions,
    stop: &AtomicBool,
    on_run: &mut dyn FnMut(&RunOutcome),
) -> Result<()> {
    let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
    let mut cfg = AgentsConfig::load(&root)?;
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let _ = tx.send(ev);
    })
    .map_err(|e| Error::Watch(e.to_string()))?;
    let mut watched: HashSet<(PathBuf, bool)> = HashSet::new();
    refresh_watches(&root, &cfg, &mut watcher, &mut watched);

    let mut runs = 0u64;
    let mut ignore = owned_outputs(&root);
    let mut run = |trigger: Vec<String>, cfg: &AgentsConfig, runs: &mut u64| {
        *runs += 1;
        let result = sync::run(&root, cfg, opts, &|_, _| {});
        on_run(&RunOutcome {
            run: *runs,
            trigger,
            result,
        });
    };
    run(Vec::new(), &cfg, &mut runs);
    ignore.extend(owned_outputs(&root));
    let debounce = Duration::from_millis(cfg.debounce_ms.max(1));
    while !stop.load(Ordering::Relaxed) {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Watch("watcher stopped".into()))
            }
        };
        let mut trigger: Vec<String> = Vec::new();
        relevant(&root, &cfg, &ignore, first, &mut trigger);
        if trigger.is_empty() {
            continue;
        }
        // Trailing debounce, capped so a never-ending stream still gets runs.
        let started = Instant::now();
        let cap = debounce * 20;
        loop {
            let left = cap.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(debounce.min(left)) {
                Ok(ev) => relevant(&root, &cfg, &ignore, ev, &mut trigger),
                Err(_) => break,
            }
        }
        trigger.sort();
        trigger.dedup();
        if trigger.iter().any(|t| t == crate::config::CONFIG_FILE) {
            match AgentsConfig::load(&root) {
                Ok(c) => cfg = c,
                Err(e) => {
                    tracing::warn!("{e}; keeping the previous settings");
                }
            }
        }
        run(trigger, &cfg, &mut runs);
        ignore = owned_outputs(&root);
        if refresh_watches(&root, &cfg, &mut watcher, &mut watched) {
            // A source folder came back: files created in it before the new watch was in
            // place produced no events, so look once more.
            run(vec![String::from("<rewatch>")], &cfg, &mut runs);
            ignore = owned_outputs(&root);
        }
    }
    Ok(())
}

fn owned_outputs(root: &Path) -> HashSet<String> {
    let path = StateDir::new(root).registry();
    // The agents are all that is needed: no history, and the index when it is good.
    let index = crate::index::Index::load(&crate::registry::index_path(&path), &path);
    Registry::load_with_index(&path, index)
        .map(|r| {
            r.agents
                .values()
                .flat_map(|a| a.outputs.keys().cloned())
                .collect()
        })
        .unwrap_or_default()
}

fn refresh_watches(
    root: &Path,
    cfg: &AgentsConfig,
    w: &mut notify::RecommendedWatcher,
    watched: &mut HashSet<(PathBuf, bool)>,
) -> bool {
    let mut added_source = false;
    watched.retain(|(p, _)| p.exists());
    let mut want: Vec<(PathBuf, bool)> = vec![(root.to_path_buf(), false)];
    for s in &cfg.sources {
        let abs = paths::abs(root, s.trim_end_matches('/'));
        if abs.is_dir() {
            want.push((abs, true));
        } else {
            // Watch the nearest existing ancestor to see the source folder come back.
            let mut a = abs.clone();
            while a.pop() {
                if a.starts_with(root) && a.is_dir() {
                    want.push((a, false));
                    break;
                }
            }
        }
    }
    for (p, rec) in want {
        if watched.contains(&(p.clone(), rec)) {
            continue;
        }
        let mode = if rec {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        match w.watch(&p, mode) {
            Ok(()) => {
                added_source |= rec;
                watched.insert((p, rec));
            }
            Err(e) => tracing::warn!("cannot watch {}: {e}", p.display()),
        }
    }
    added_source
}

fn relevant(
    root: &Path,
    cfg: &AgentsConfig,
    ignore: &HashSet<String>,
    ev: notify::Result<notify::Event>,
    out: &mut Vec<String>,
) {
    let ev = match ev {
        Ok(ev) => ev,
        Err(e) => {
            // Overflow and friends: run anyway so nothing is missed.
            tracing::warn!("watch error: {e}");
            out.push(String::from("<rescan>"));
            return;
        }
    };
    if matches!(ev.kind, notify::EventKind::Access(_)) {
        return;
    }
    if ev.need_rescan() {
        out.push(String::from("<rescan>"));
    }
    for p in ev.paths {
        let Some(rel) = paths::to_rel(root, &p) else {
            continue;
        };
        if rel.starts_with(".ctxsync/") || rel == ".ctxsync" || ignore.contains(&rel) {
            continue;
        }
        // Our temp files, and files in our staging folders.
        if rel.split('/').any(|part| part.starts_with(TEMP_PREFIX)) {
            continue;
        }
        let in_source = cfg.sources.iter().any(|s| {
            let s = s.trim_end_matches('/');
            rel == s || rel.starts_with(&format!("{s}/")) || s.starts_with(&format!("{rel}/"))
        });
        if in_source || rel == crate::config::CONFIG_FILE {
            out.push(rel);
        }
    }
}
