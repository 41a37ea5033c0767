//! One sync run: detect → look up the registry and rename history → render → validate
//! → deploy atomically → update the registry → record events.
//!
//! Only agents whose recorded dependencies or outputs changed are rendered (unless
//! `full`); everything rendered is validated before the first byte is written; unchanged
//! bytes are never rewritten; hand-edited outputs are conflicts unless `force`/`merge`.

pub mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backup::{hash, BlobStore};
use crate::config::AgentsConfig;
use crate::deploy;
use crate::dirfd::Meta;
use crate::discover::{self, AgentEntry, Library};
use crate::error::{Error, Result};
use crate::events::{self, Event, EventKind};
use crate::graph::{RenameMap, Texts};
use crate::index::Index;
use crate::journal;
use crate::merge3;
use crate::noop::{self, output_unchanged, outputs_as_expected};
use crate::parse::{self, Priority};
use crate::paths;
use crate::registry::{
    index_path, AgentRec, FileChange, FileRec, GenRec, OutRec, Registry, Rename,
};
use crate::render::{self, AgentModel, Output};
use crate::state::StateDir;
use crate::validate;

/// What a run should do.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only this agent.
    pub agent: Option<String>,
    /// Re-render every agent, ignoring the registry's hashes.
    pub full: bool,
    /// Render everything, write nothing, report what is out of date.
    pub check: bool,
    /// Plan, write nothing.
    pub dry_run: bool,
    /// Render and validate, write nothing.
    pub validate_only: bool,
    /// Overwrite hand-edited outputs (a backup is kept).
    pub force: bool,
    /// Three-way merge hand-edited outputs.
    pub merge: bool,
}

impl SyncOptions {
    fn read_only(&self) -> bool {
        self.check || self.dry_run || self.validate_only
    }
}

/// A hand-edited or foreign output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConflictInfo {
    /// Output path.
    pub path: String,
    /// Agent that wants to write it.
    pub agent: String,
    /// Why.
    pub reason: String,
    /// `left_alone`, `forced`, `merged`.
    pub resolution: String,
}

/// What a run did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// The generation written, if anything was.
    pub generation: Option<u64>,
    /// Agents in the library.
    pub agents: usize,
    /// Agents rendered this run, in render order.
    pub rendered: Vec<String>,
    /// Agents that got outputs for the first time.
    pub added: Vec<String>,
    /// Agents whose outputs changed.
    pub updated: Vec<String>,
    /// Agents whose outputs were removed.
    pub removed: Vec<String>,
    /// Files written (or that would be).
    pub written: Vec<String>,
    /// Files deleted (or that would be).
    pub deleted: Vec<String>,
    /// Conflicts.
    pub conflicts: Vec<ConflictInfo>,
    /// Rendering and validation problems (nothing was written when non-empty).
    pub validation_errors: Vec<String>,
    /// Renames detected in this batch.
    pub renames: Vec<(String, String)>,
    /// Skipped files and other notes.
    pub warnings: Vec<String>,
    /// What targets dropped or mapped (unknown tools, models, keys; names changed for a
    /// host; files linked instead of inlined), per output of the agents rendered.
    pub notes: Vec<String>,
    /// Wall time.
    pub duration_ms: f64,
}

impl SyncReport {
    /// 0 ok, 1 conflicts or (with `check`) out of date, 2 invalid input.
    pub fn exit_code(&self, opts: &SyncOptions) -> u8 {
        if !self.validation_errors.is_empty() {
            2
        } else if self.conflicts.iter().any(|c| c.resolution == "left_alone")
            || (opts.check && (!self.written.is_empty() || !self.deleted.is_empty()))
        {
            1
        } else {
            0
        }
    }
}

/// Wall time of each phase of a run, logged at debug level (`CTXSYNC_LOG=ctxsync_agents=debug`)
/// so a slow run can be explained without a profiler.
/// With it, the resident memory at the end of each phase (where the peak comes from).
struct Phases {
    last: Instant,
    /// Phase, milliseconds, resident MB at its end (Linux).
    done: Vec<(&'static str, f64, Option<f64>)>,
    enabled: bool,
}

impl Phases {
    fn new() -> Self {
        Phases {
            last: Instant::now(),
            done: Vec::new(),
            enabled: tracing::enabled!(tracing::Level::DEBUG),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        self.done.push((
            phase,
            (now - self.last).as_secs_f64() * 1000.0,
            resident_mb(),
        ));
        self.last = now;
    }
}

/// The process's resident memory in MB, from `/proc/self/statm` (4 KiB pages).
fn resident_mb() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / 1e6)
}

impl Drop for Phases {
    fn drop(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let summary: Vec<String> = self
            .done
            .iter()
            .map(|(p, ms, rss)| match rss {
                Some(mb) => format!("{p} {ms:.1}ms ({mb:.0}MB)"),
                None => format!("{p} {ms:.1}ms"),
            })
            .collect();
        tracing::debug!("agents sync phases: {}", summary.join(", "));
    }
}

/// Progress callback: `(done, total)`.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A file modified this close to the previous scan may have changed within the same
/// timestamp tick, so it is hashed again even when size and mtime match.
pub(crate) const RACY_MARGIN_NS: u64 = 50_000_000;

struct Rendered {
    entry: AgentEntry,
    name: String,
    priority: Priority,
    version: Option<String>,
    outputs: Vec<Output>,
    /// What validation found wrong with the outputs (checked on the render thread).
    problems: Vec<String>,
    /// What the targets dropped or mapped.
    notes: Vec<String>,
    /// BLAKE3 of each output's bytes, in the order of `outputs` (hashed on the render
    /// thread too).
    hashes: Vec<String>,
    /// Each dependency and its hash now (`None`: missing), for the registry.
    sources: BTreeMap<String, Option<String>>,
}

enum Action {
    Write {
        bytes: Vec<u8>,
        /// BLAKE3 of `bytes`.
        hash: String,
        before: Option<Vec<u8>>,
    },
    Remove {
        before: Vec<u8>,
    },
}

struct Planned {
    agent: String,
    path: String,
    action: Action,
}

/// Runs one sync of the repository at `root`.
pub fn run(
    root: &Path,
    cfg: &AgentsConfig,
    opts: &SyncOptions,
    progress: Progress<'_>,
) -> Result<SyncReport> {
    let t0 = Instant::now();
    let mut phases = Phases::new();
    let state = StateDir::new(root);
    let _lock = if opts.read_only() {
        None
    } else {
        Some(state.lock()?)
    };
    let reg_path = state.registry();
    let index = Index::load(&index_path(&reg_path), &reg_path);
    phases.mark("index");
    let scan_start = now_ns();
    let fingerprint = cfg.render_fingerprint();
    let dirs_key = format!("{:?}|{:?}", cfg.sources, cfg.excludes);
    // The fast path: from the index alone, stat the library and the outputs; when
    // nothing moved, the run is over without reading the registry. Not after a run
    // that died deploying: what it changed must be recorded first.
    let mut walked = None;
    let from_index = if journal::exists(&state) {
        FromIndex::Unused
    } else {
        answer_from_index(
            root,
            cfg,
            opts,
            index.as_ref(),
            &fingerprint,
            &dirs_key,
            &mut phases,
        )?
    };
    match from_index {
        FromIndex::NoOp(agents, warnings) => {
            phases.mark("no-op check");
            drop_in_background(index);
            return Ok(SyncReport {
                agents,
                warnings,
                duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
                ..Default::default()
            });
        }
        FromIndex::Walked(lib) => walked = Some(lib),
        FromIndex::Unused => {}
    }
    let had_index = index.is_some();
    let mut reg = Registry::load_with_index(&reg_path, index)?;
    // Outputs a run that died deploying had changed are ctxsync's, and go into this
    // run's generation (see `journal`).
    let carried = journal::recover(root, &state, &mut reg, !opts.read_only())?.changes;
    phases.mark("load");
    let mut lib = match walked {
        // Walked with the same cache and owned outputs the registry would give.
        Some(lib) => lib,
        None => {
            let owned: HashSet<String> = reg
                .agents
                .values()
                .flat_map(|a| a.outputs.keys().cloned())
                .collect();
            let cache = (reg.dirs_key == dirs_key).then(|| {
                discover::DirCache::new(&reg.dirs, recorded_stats(&reg.files), reg.scanned_at_ns)
            });
            // With nothing recorded, every file will be hashed: read each as it is
            // listed, relative to its open folder.
            let read_contents = reg.files.is_empty();
            let lib = discover::discover_cached(root, cfg, &owned, cache.as_ref(), read_contents)?;
            drop(cache);
            phases.mark("walk");
            lib
        }
    };
    let mut report = SyncReport {
        agents: lib.agents.len(),
        warnings: lib.warnings.clone(),
        ..Default::default()
    };
    if !carried.is_empty() {
        report.warnings.push(format!(
            "an interrupted run had changed {} outputs: taken as ctxsync's, and recorded \
             with the next generation written",
            carried.len()
        ));
    }
    let read_in_walk = std::mem::take(&mut lib.read);
    let (file_hashes, had_racy, read) = hash_files(root, &lib, &reg, read_in_walk);
    let texts = Texts::preloaded(root, &lib, read);
    phases.mark("hash");

    let new_renames = detect_renames(&reg.files, &lib.files, &file_hashes);
    let mut renames: RenameMap = reg.rename_map();
    for (a, b) in &new_renames {
        renames.insert(a.clone(), b.clone());
    }
    report.renames = new_renames.clone();

    // Which agents need rendering.
    let everything = opts.full || opts.check || reg.config_fingerprint != fingerprint;
    let by_entry: HashMap<&str, &str> = reg
        .agents
        .iter()
        .map(|(n, a)| (a.entry.as_str(), n.as_str()))
        .collect();
    let mut work: Vec<(Priority, &AgentEntry)> = Vec::new();
    let mut clean_names: BTreeMap<String, &AgentEntry> = BTreeMap::new();
    let recs: Vec<_> = lib
        .agents
        .iter()
        .map(|a| {
            by_entry
                .get(a.entry.as_str())
                .and_then(|n| reg.agents.get_key_value(*n))
        })
        .collect();
    // Checking an agent means a `stat` of each of its outputs (hand edits): spread over
    // the cores, it is most of what a no-op run does after the walk.
    let dirty: Vec<bool> = if everything || opts.agent.is_some() {
        vec![true; recs.len()]
    } else {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(8);
        let chunk = recs.len().div_ceil(threads).max(1);
        let (lib, file_hashes) = (&lib, &file_hashes);
        std::thread::scope(|s| {
            let parts: Vec<_> = recs
                .chunks(chunk)
                .map(|part| {
                    let handle = s.spawn(move || {
                        part.iter()
                            .map(|rec| match rec {
                                None => true,
                                Some((name, rec)) => {
                                    is_dirty(root, cfg, lib, file_hashes, name, rec)
                                }
                            })
                            .collect::<Vec<bool>>()
                    });
                    (part.len(), handle)
                })
                .collect();
            parts
                .into_iter()
                // A panicked checker counts its agents as dirty: re-rendering is safe.
                .flat_map(|(len, h)| h.join().unwrap_or_else(|_| vec![true; len]))
                .collect()
        })
    };
    phases.mark("dirty");
    for ((a, rec), dirty) in lib.agents.iter().zip(&recs).zip(dirty) {
        let rec = *rec;
        if dirty {
            work.push((rec.map(|(_, r)| r.priority).unwrap_or_default(), a));
        } else if let Some((name, _)) = rec {
            clean_names.insert(name.clone(), a);
        }
    }
    // Critical agents first: under a burst of changes they are deployed first.
    work.sort_by(|x, y| x.0.cmp(&y.0).then_with(|| x.1.entry.cmp(&y.1.entry)));

    let (mut rendered, errors) =
        render_all(&file_hashes, cfg, &lib, &texts, &renames, &work, progress);
    // The library's text is not needed past rendering; freed before the write peak.
    drop_in_background(texts.into_cache());
    phases.mark("render");
    report.validation_errors = errors;
    if let Some(only) = &opts.agent {
        rendered.retain(|r| &r.name == only);
        let known = rendered.iter().any(|r| &r.name == only) || reg.agents.contains_key(only);
        if !known && report.validation_errors.is_empty() {
            return Err(Error::Input(format!(
                "no agent named {only:?} in the library"
            )));
        }
    }
    rendered.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| a.name.cmp(&b.name))
    });

    // Names must be unique across the library, rendered or not.
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for (n, e) in &clean_names {
        names.insert(n, &e.entry);
    }
    for r in &rendered {
        if let Some(other) = names.insert(&r.name, &r.entry.entry) {
            if other != r.entry.entry {
                report.validation_errors.push(format!(
                    "agent name {:?} is used by both {other} and {}",
                    r.name, r.entry.entry
                ));
            }
        }
    }
    // Host name rules (skills, Claude Code) can map two agent names onto one file.
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for r in &rendered {
        for o in &r.outputs {
            if let Some(other) = owners.insert(&o.path, &r.name) {
                if other != r.name {
                    report.validation_errors.push(format!(
                        "{}: agents {other:?} and {:?} would both write this file",
                        o.path, r.name
                    ));
                }
            }
        }
    }
    for r in &mut rendered {
        report.validation_errors.append(&mut r.problems);
        report.notes.append(&mut r.notes);
    }
    for t in &cfg.targets {
        if let Err(e) = check_target_dir(root, cfg.target_dir(*t)) {
            report.validation_errors.push(e);
        }
    }
    report.rendered = rendered.iter().map(|r| r.name.clone()).collect();
    phases.mark("validate");

    if !report.validation_errors.is_empty() {
        report.duration_ms = t0.elapsed().as_secs_f64() * 1000.0;
        if !opts.read_only() {
            events::append(
                &state.events(),
                &[Event {
                    ts_ms: events::now_ms(),
                    kind: EventKind::ValidationFailed,
                    agent: None,
                    files: Vec::new(),
                    generation: None,
                    duration_ms: report.duration_ms,
                    result: "failed".into(),
                    message: report.validation_errors.join("\n"),
                }],
            )?;
        }
        return Ok(report);
    }
    if opts.validate_only {
        report.duration_ms = t0.elapsed().as_secs_f64() * 1000.0;
        return Ok(report);
    }

    // Plan.
    let blobs = BlobStore::new(state.backups());
    let Plan {
        actions: mut plan,
        keep_old_rec,
        recorded_now,
        gone_agents,
    } = plan_changes(
        root,
        opts,
        &reg,
        &mut rendered,
        &clean_names,
        &blobs,
        &mut report,
    )?;

    phases.mark("plan");
    if opts.read_only() {
        report.duration_ms = t0.elapsed().as_secs_f64() * 1000.0;
        return Ok(report);
    }

    // Deploy: backups of replaced bytes first (durable), then the outputs.
    let after_hashes: Vec<Option<String>> = plan
        .iter()
        .map(|p| match &p.action {
            Action::Write { hash, .. } => Some(hash.clone()),
            Action::Remove { .. } => None,
        })
        .collect();
    let mut changes = Vec::new();
    for (p, after_hash) in plan.iter().zip(&after_hashes) {
        let before = match &p.action {
            Action::Write { before, .. } => before.as_deref(),
            Action::Remove { before } => Some(before.as_slice()),
        };
        let before_hash = match before {
            Some(b) => Some(blobs.put(b)?),
            None => None,
        };
        changes.push(FileChange {
            agent: Some(p.agent.clone()),
            path: p.path.clone(),
            before: before_hash,
            after: after_hash.clone(),
        });
    }
    // (plan entry, hash) of each write, and what to write where.
    let writes: Vec<(std::path::PathBuf, &[u8])> = plan
        .iter()
        .filter_map(|p| match &p.action {
            Action::Write { bytes, .. } => Some((paths::abs(root, &p.path), bytes.as_slice())),
            Action::Remove { .. } => None,
        })
        .collect();
    phases.mark("hashes");
    let batch = deploy::stage_many(&writes)?;
    drop(writes);
    phases.mark("stage");
    // The disk flush only waits on the device: the records, the merge-base pack and
    // the registry's new contents are prepared meanwhile. Nothing is renamed into place
    // (and so nothing is recorded on disk) before it is done.
    let flushing = std::thread::spawn(batch.flusher());
    // Bytes we wrote are the base of a later three-way merge, packed on another thread
    // while the records are built (and freed there); a lost one only disables merge.
    let pack: Vec<(String, Vec<u8>)> = plan
        .iter_mut()
        .zip(&after_hashes)
        .filter_map(|(p, h)| match (&mut p.action, h) {
            (Action::Write { bytes, .. }, Some(h)) => Some((h.clone(), std::mem::take(bytes))),
            _ => None,
        })
        .collect();
    let pack_store = BlobStore::new(state.backups());
    let packing = std::thread::Builder::new()
        .name("ctxsync-pack".into())
        .spawn(move || {
            let refs: Vec<(&str, &[u8])> = pack
                .iter()
                .map(|(h, b)| (h.as_str(), b.as_slice()))
                .collect();
            pack_store.put_many_fast(&refs);
        });
    if let Err(e) = &packing {
        tracing::warn!("merge bases not kept this run (no thread: {e})");
    }
    phases.mark("backup");
    // Path -> (hash, size, mtime) of every output just written, from the written file
    // (the batch's metadata is in the order of the writes).
    let written: HashMap<&str, (&str, Meta)> = plan
        .iter()
        .zip(&after_hashes)
        .filter_map(|(p, h)| match (&p.action, h) {
            (Action::Write { .. }, Some(h)) => Some((p.path.as_str(), h.as_str())),
            _ => None,
        })
        .zip(batch.metas())
        .map(|((p, h), m)| (p, (h, *m)))
        .collect();
    // Registry. A generation is recorded for what this run changes and what a dead
    // run it follows had changed.
    let records = !plan.is_empty() || !carried.is_empty();
    let generation = if records {
        reg.generation + 1
    } else {
        reg.generation
    };
    let touched: HashMap<&str, Vec<&str>> = plan.iter().fold(HashMap::new(), |mut m, p| {
        m.entry(p.agent.as_str()).or_default().push(p.path.as_str());
        m
    });
    let mut evs = Vec::new();
    let elapsed = t0.elapsed().as_secs_f64() * 1000.0;
    let ev = |kind, agent: &str, files: Vec<String>, result: &str, message: String| Event {
        ts_ms: events::now_ms(),
        kind,
        agent: Some(agent.to_string()),
        files,
        generation: records.then_some(generation),
        duration_ms: elapsed,
        result: result.to_string(),
        message,
    };
    for (a, b) in &new_renames {
        evs.push(Event {
            ts_ms: events::now_ms(),
            kind: EventKind::Renamed,
            agent: None,
            files: vec![a.clone(), b.clone()],
            generation: None,
            duration_ms: elapsed,
            result: "ok".into(),
            message: format!("{a} -> {b}"),
        });
        reg.renames.push(Rename {
            from: a.clone(),
            to: b.clone(),
            generation,
            at_ms: events::now_ms(),
        });
    }
    for r in &mut rendered {
        let old = reg.agents.get(&r.name).cloned();
        let mut outputs = BTreeMap::new();
        let keep = keep_old_rec.get(&r.name);
        for o in &r.outputs {
            if keep.is_some_and(|k| k.contains(&o.path)) {
                if let Some(x) = old.as_ref().and_then(|a| a.outputs.get(&o.path)) {
                    outputs.insert(o.path.clone(), x.clone());
                }
                continue;
            }
            if let Some((h, m)) = written.get(o.path.as_str()) {
                outputs.insert(
                    o.path.clone(),
                    OutRec {
                        hash: h.to_string(),
                        size: m.size,
                        mtime_ns: m.mtime_ns,
                    },
                );
                continue;
            }
            // Already right on disk: record it as it is.
            let a = paths::abs(root, &o.path);
            if let (Ok(m), Some(h)) = (
                std::fs::metadata(&a),
                recorded_now.get(&r.name).and_then(|m| m.get(&o.path)),
            ) {
                outputs.insert(
                    o.path.clone(),
                    OutRec {
                        hash: h.clone(),
                        size: m.len(),
                        mtime_ns: mtime_ns(&m),
                    },
                );
            }
        }
        if let Some(old) = &old {
            for (p, x) in &old.outputs {
                if keep.is_some_and(|k| k.contains(p)) {
                    outputs.entry(p.clone()).or_insert_with(|| x.clone());
                }
            }
        }
        let files: Vec<String> = touched
            .get(r.name.as_str())
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        if !files.is_empty() {
            if old.is_none() {
                report.added.push(r.name.clone());
                evs.push(ev(
                    EventKind::AgentAdded,
                    &r.name,
                    files,
                    "ok",
                    String::new(),
                ));
            } else {
                report.updated.push(r.name.clone());
                evs.push(ev(
                    EventKind::AgentUpdated,
                    &r.name,
                    files,
                    "ok",
                    String::new(),
                ));
            }
        }
        let sources = std::mem::take(&mut r.sources);
        let gen = if touched.contains_key(r.name.as_str()) {
            generation
        } else {
            old.as_ref().map_or(0, |o| o.generation)
        };
        reg.agents.insert(
            r.name.clone(),
            AgentRec {
                entry: r.entry.entry.clone(),
                version: r.version.clone(),
                priority: r.priority,
                sources,
                outputs,
                generation: gen,
            },
        );
    }
    phases.mark("records");
    for name in &gone_agents {
        let keep = keep_old_rec.get(name);
        let files: Vec<String> = touched
            .get(name.as_str())
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        match keep {
            Some(k) if !k.is_empty() => {
                // Outputs edited by hand stay owned, so a later --force can still remove them.
                if let Some(a) = reg.agents.get_mut(name) {
                    a.outputs.retain(|p, _| k.contains(p));
                    a.sources.clear();
                }
            }
            _ => {
                reg.agents.remove(name);
            }
        }
        report.removed.push(name.clone());
        evs.push(ev(
            EventKind::AgentRemoved,
            name,
            files,
            "ok",
            String::new(),
        ));
    }
    for c in &report.conflicts {
        evs.push(ev(
            EventKind::Conflict,
            &c.agent,
            vec![c.path.clone()],
            &c.resolution,
            c.reason.clone(),
        ));
    }
    // Moved, not copied: 30,000 paths and hashes for a large library.
    let mut file_hashes = file_hashes;
    let files_now: BTreeMap<String, FileRec> = std::mem::take(&mut lib.files)
        .into_iter()
        .filter_map(|(p, st)| {
            let hash = file_hashes.remove(&p)?;
            Some((
                p,
                FileRec {
                    hash,
                    size: st.size,
                    mtime_ns: st.mtime_ns,
                },
            ))
        })
        .collect();
    phases.mark("files");
    // What is about to change is journaled (durably, while the batch is flushed)
    // before the first output is put in place: a run that dies from here on is
    // accounted for by the next.
    if !plan.is_empty() {
        journal::write(&state, generation, "sync", &[&carried, &changes])?;
        phases.mark("journal");
    }
    match flushing.join() {
        Ok(flushed) => flushed?,
        Err(_) => return Err(Error::Input("flush thread panicked".into())),
    }
    phases.mark("flush");
    batch.commit()?;
    let mut dirs = BTreeSet::new();
    for p in &plan {
        if let Action::Remove { .. } = p.action {
            let a = paths::abs(root, &p.path);
            deploy::remove_file(&a)?;
            deploy::test_crash_point();
            if let Some(d) = a.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
    }
    for d in dirs {
        deploy::sync_dir(&d)?;
    }

    phases.mark("write");
    // What `registry.json` holds changed, or only the scan cache in the index.
    let registry_changed = records
        || !rendered.is_empty()
        || !gone_agents.is_empty()
        || !new_renames.is_empty()
        || reg.config_fingerprint != fingerprint
        || reg.migrate;
    // The index can vouch for a no-op without a walk only if every agent of the library
    // is registered as what it was found to be.
    let registered: HashSet<&str> = reg.agents.values().map(|a| a.entry.as_str()).collect();
    let complete = registered.len() == reg.agents.len()
        && registered.len() == lib.agents.len()
        && lib
            .agents
            .iter()
            .all(|a| registered.contains(a.entry.as_str()));
    let index_changed = registry_changed
        || files_now != reg.files
        || lib.dirs != reg.dirs
        || reg.dirs_key != dirs_key
        // A file re-hashed only because it was modified close to the last scan: record
        // the new scan time so it is not re-hashed on every run.
        || had_racy
        || !had_index
        || complete != reg.scan_complete;
    if records {
        reg.generation = generation;
        reg.generations.push(GenRec {
            generation,
            at_ms: events::now_ms(),
            kind: "sync".into(),
            changes: journal::merge(carried, changes),
        });
        report.generation = Some(generation);
    }
    if index_changed {
        reg.files = files_now;
        reg.dirs = std::mem::take(&mut lib.dirs);
        reg.dirs_key = dirs_key;
        reg.scanned_at_ns = scan_start;
        reg.scan_complete = complete;
    }
    if registry_changed {
        reg.config_fingerprint = fingerprint;
        prune(&mut reg, &reg_path, cfg, &blobs)?;
        phases.mark("registry");
        reg.save(&reg_path)?;
        if records {
            journal::clear(&state)?;
        }
        phases.mark("save");
    } else if index_changed {
        reg.save_index(&reg_path);
    }
    report.duration_ms = t0.elapsed().as_secs_f64() * 1000.0;
    for e in &mut evs {
        e.duration_ms = report.duration_ms;
    }
    events::append(&state.events(), &evs)?;
    if let Ok(packing) = packing {
        // Waited for so that the process does not end in the middle of the pack.
        let _ = packing.join();
    }
    phases.mark("events");
    drop(evs);
    drop_in_background((lib, reg, rendered, plan, file_hashes));
    Ok(report)
}

/// The recorded size and mtime of each library file, for a [`discover::DirCache`].
fn recorded_stats(
    files: &BTreeMap<String, FileRec>,
) -> impl Iterator<Item = (&str, discover::FileStat)> {
    files.iter().map(|(p, r)| {
        (
            p.as_str(),
            discover::FileStat {
                size: r.size,
                mtime_ns: r.mtime_ns,
            },
        )
    })
}

/// What the scan index alone says of a run.
enum FromIndex {
    /// Nothing to do: the library's agent count and the walk's warnings.
    NoOp(usize, Vec<String>),
    /// Something moved; the library as walked on the way (under the owned outputs and
    /// the folder cache the registry would give), for the run to go on with.
    Walked(Library),
    /// Not asked (a full, check or one-agent run), or no index for these settings.
    Unused,
}

/// Stats every folder, file and output the index lists. When nothing moved, the run
/// needs neither a walk nor the registry; otherwise the walk trusts what did not move.
fn answer_from_index(
    root: &Path,
    cfg: &AgentsConfig,
    opts: &SyncOptions,
    index: Option<&Index>,
    fingerprint: &str,
    dirs_key: &str,
    phases: &mut Phases,
) -> Result<FromIndex> {
    let Some(ix) = index.filter(|ix| {
        !opts.full
            && !opts.check
            && opts.agent.is_none()
            && ix.config_fingerprint == fingerprint
            && ix.dirs_key == dirs_key
    }) else {
        return Ok(FromIndex::Unused);
    };
    let moved = noop::stat_index(root, cfg, ix);
    if moved.as_ref().is_some_and(|m| m.is_empty())
        && noop::agents_unchanged(root, cfg, ix, |p| ix.files.contains_key(p))
    {
        return Ok(FromIndex::NoOp(ix.agents.len(), Vec::new()));
    }
    phases.mark("verify");
    // Something moved, or the index could not answer alone (folders listed on every
    // scan, agents not all registered): walk, reusing unchanged listings and, when the
    // index was stat-ed whole, trusting what did not move.
    let owned: HashSet<String> = ix
        .agents
        .iter()
        .flat_map(|a| a.outputs.iter().map(|o| o.path.clone()))
        .collect();
    let cache = discover::DirCache::new(&ix.dirs, recorded_stats(&ix.files), ix.scanned_at_ns);
    let cache = match &moved {
        Some(m) => cache.trusting(m),
        None => cache,
    };
    let lib = discover::discover_cached(root, cfg, &owned, Some(&cache), false)?;
    drop(cache);
    phases.mark("walk");
    if noop::nothing_to_do(root, cfg, &lib, ix) {
        let answer = FromIndex::NoOp(lib.agents.len(), lib.warnings.clone());
        drop_in_background(lib);
        Ok(answer)
    } else {
        Ok(FromIndex::Walked(lib))
    }
}

/// What a run will change on disk, and what it leaves alone.
struct Plan {
    /// Writes and removals, in order.
    actions: Vec<Planned>,
    /// Per agent, outputs left alone (conflicts) whose registry record stays as it was.
    keep_old_rec: HashMap<String, HashSet<String>>,
    /// Per agent, outputs already right on disk, with their hashes.
    recorded_now: HashMap<String, BTreeMap<String, String>>,
    /// Agents the registry knows that the library no longer has.
    gone_agents: Vec<String>,
}

/// Compares each rendered output with the disk and the registry: new and changed
/// outputs are written, hand-edited ones are conflicts (forced or merged on request),
/// outputs no agent wants any more are removed. Conflicts, and the files to write and
/// delete, go into `report`.
#[allow(clippy::too_many_arguments)]
fn plan_changes(
    root: &Path,
    opts: &SyncOptions,
    reg: &Registry,
    rendered: &mut [Rendered],
    clean_names: &BTreeMap<String, &AgentEntry>,
    blobs: &BlobStore,
    report: &mut SyncReport,
) -> Result<Plan> {
    let mut plan: Vec<Planned> = Vec::new();
    let mut keep_old_rec: HashMap<String, HashSet<String>> = HashMap::new();
    let mut recorded_now: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    // Output folders that do not exist hold no outputs: one `stat` per folder, not one
    // per output (a first sync plans thousands of outputs into new folders).
    let mut folder_exists: HashMap<String, bool> = HashMap::new();
    for r in rendered.iter_mut() {
        let rec = reg.agents.get(&r.name);
        let mut wanted = BTreeSet::new();
        for (o, oh) in r.outputs.iter_mut().zip(&r.hashes) {
            wanted.insert(o.path.clone());
            let folder = paths::parent(&o.path);
            let exists = match folder_exists.get(folder) {
                Some(e) => *e,
                None => {
                    let e = std::fs::symlink_metadata(paths::abs(root, folder)).is_ok();
                    folder_exists.insert(folder.to_string(), e);
                    e
                }
            };
            let disk = if exists {
                read_opt(root, &o.path)?
            } else {
                None
            };
            let recorded = rec.and_then(|a| a.outputs.get(&o.path));
            match disk {
                None => plan.push(write_action(
                    &r.name,
                    &o.path,
                    std::mem::take(&mut o.bytes),
                    oh.clone(),
                    None,
                )),
                Some(d) if d == o.bytes => {
                    recorded_now
                        .entry(r.name.clone())
                        .or_default()
                        .insert(o.path.clone(), oh.clone());
                }
                Some(d) => {
                    let dh = hash(&d);
                    // Bytes ctxsync wrote and nobody touched since are simply replaced;
                    // anything else is a conflict, resolved as asked.
                    let untouched = recorded.is_some_and(|x| x.hash == dh);
                    let merged = if !untouched && opts.merge {
                        recorded
                            .and_then(|x| blobs.get(&x.hash).ok().flatten())
                            .and_then(|base| {
                                let (b, ours, theirs) = (
                                    String::from_utf8_lossy(&base).into_owned(),
                                    String::from_utf8_lossy(&o.bytes).into_owned(),
                                    String::from_utf8_lossy(&d).into_owned(),
                                );
                                merge3::merge(&b, &ours, &theirs).ok()
                            })
                    } else {
                        None
                    };
                    // What replaces the file on disk, if anything: ours, or the merge.
                    let mut replacement = None;
                    let resolution = if untouched {
                        None
                    } else if let Some(m) = merged {
                        let m = m.into_bytes();
                        if m == d {
                            recorded_now
                                .entry(r.name.clone())
                                .or_default()
                                .insert(o.path.clone(), dh);
                        } else {
                            replacement = Some((hash(&m), m));
                        }
                        Some("merged")
                    } else if opts.force {
                        Some("forced")
                    } else {
                        keep_old_rec
                            .entry(r.name.clone())
                            .or_default()
                            .insert(o.path.clone());
                        Some("left_alone")
                    };
                    if untouched || resolution == Some("forced") {
                        replacement = Some((oh.clone(), std::mem::take(&mut o.bytes)));
                    }
                    if let Some((h, bytes)) = replacement {
                        plan.push(write_action(&r.name, &o.path, bytes, h, Some(d)));
                    }
                    if let Some(resolution) = resolution {
                        report.conflicts.push(ConflictInfo {
                            path: o.path.clone(),
                            agent: r.name.clone(),
                            reason: if recorded.is_some() {
                                "edited by hand since ctxsync wrote it"
                            } else {
                                "exists and is not owned by ctxsync"
                            }
                            .into(),
                            resolution: resolution.into(),
                        });
                    }
                }
            }
        }
        if let Some(rec) = rec {
            for p in rec.outputs.keys().filter(|p| !wanted.contains(*p)) {
                plan_removal(
                    root,
                    &r.name,
                    p,
                    rec,
                    opts,
                    &mut plan,
                    report,
                    &mut keep_old_rec,
                )?;
            }
        }
    }
    let present: HashSet<&str> = clean_names
        .keys()
        .map(String::as_str)
        .chain(rendered.iter().map(|r| r.name.as_str()))
        .collect();
    let mut gone_agents = Vec::new();
    for (name, rec) in &reg.agents {
        if present.contains(name.as_str()) || opts.agent.as_ref().is_some_and(|a| a != name) {
            continue;
        }
        gone_agents.push(name.clone());
        for p in rec.outputs.keys() {
            plan_removal(
                root,
                name,
                p,
                rec,
                opts,
                &mut plan,
                report,
                &mut keep_old_rec,
            )?;
        }
    }
    for p in &plan {
        match p.action {
            Action::Write { .. } => report.written.push(p.path.clone()),
            Action::Remove { .. } => report.deleted.push(p.path.clone()),
        }
    }
    Ok(Plan {
        actions: plan,
        keep_old_rec,
        recorded_now,
        gone_agents,
    })
}

/// A write of `bytes` (hashing to `hash`) to output `path` of `agent`, replacing
/// `before` (what is on disk now, if anything).
fn write_action(
    agent: &str,
    path: &str,
    bytes: Vec<u8>,
    hash: String,
    before: Option<Vec<u8>>,
) -> Planned {
    Planned {
        agent: agent.to_string(),
        path: path.to_string(),
        action: Action::Write {
            bytes,
            hash,
            before,
        },
    }
}

/// Renames in this batch: a file that went and another that came with the same bytes,
/// each the only one of its hash to go or come.
fn detect_renames(
    recorded: &BTreeMap<String, FileRec>,
    now: &BTreeMap<String, discover::FileStat>,
    file_hashes: &HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut new_renames = Vec::new();
    if recorded.is_empty() {
        return new_renames;
    }
    // Both maps are sorted by path: one pass side by side finds what went and what
    // came (lookups would compare long common path prefixes over and over).
    let mut gone: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut fresh: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut before = recorded.iter().peekable();
    let mut after = now.keys().peekable();
    loop {
        let order = match (before.peek(), after.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((b, _)), Some(n)) => b.as_str().cmp(n.as_str()),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((p, r)) = before.next() {
                    gone.entry(r.hash.as_str()).or_default().push(p);
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some(p) = after.next() {
                    if let Some(h) = file_hashes.get(p) {
                        fresh.entry(h.as_str()).or_default().push(p);
                    }
                }
            }
            std::cmp::Ordering::Equal => {
                before.next();
                after.next();
            }
        }
    }
    for (h, olds) in &gone {
        if let (1, Some(news)) = (olds.len(), fresh.get(h)) {
            if news.len() == 1 {
                new_renames.push((olds[0].to_string(), news[0].to_string()));
            }
        }
    }
    new_renames.sort();
    new_renames
}

/// Frees large structures on another thread: tens of thousands of small allocations
/// take tens of milliseconds to free, and a one-shot command need not wait for it.
fn drop_in_background<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("ctxsync-free".into())
        .spawn(move || drop(value));
    // Without a thread, the value was dropped with the error; that is fine too.
    drop(spawned);
}

#[allow(clippy::too_many_arguments)]
fn plan_removal(
    root: &Path,
    agent: &str,
    path: &str,
    rec: &AgentRec,
    opts: &SyncOptions,
    plan: &mut Vec<Planned>,
    report: &mut SyncReport,
    keep: &mut HashMap<String, HashSet<String>>,
) -> Result<()> {
    let Some(disk) = read_opt(root, path)? else {
        return Ok(());
    };
    let same = rec.outputs.get(path).is_some_and(|x| x.hash == hash(&disk));
    if same || opts.force {
        if !same {
            report.conflicts.push(ConflictInfo {
                path: path.to_string(),
                agent: agent.to_string(),
                reason: "edited by hand; its agent is gone".into(),
                resolution: "forced".into(),
            });
        }
        plan.push(Planned {
            agent: agent.to_string(),
            path: path.to_string(),
            action: Action::Remove { before: disk },
        });
    } else {
        report.conflicts.push(ConflictInfo {
            path: path.to_string(),
            agent: agent.to_string(),
            reason: "edited by hand; its agent is gone".into(),
            resolution: "left_alone".into(),
        });
        keep.entry(agent.to_string())
            .or_default()
            .insert(path.to_string());
    }
    Ok(())
}

/// Drops generations older than the retention and the backups only they referenced.
fn prune(reg: &mut Registry, reg_path: &Path, cfg: &AgentsConfig, blobs: &BlobStore) -> Result<()> {
    let horizon = events::now_ms().saturating_sub(cfg.retention_days.saturating_mul(86_400_000));
    if reg.oldest_generation_ms.is_none_or(|t| t >= horizon) {
        return Ok(());
    }
    if !reg.retain_generations(reg_path, |g| g.at_ms >= horizon)? {
        return Ok(());
    }
    let mut keep: HashSet<String> = HashSet::new();
    for g in &reg.generations {
        for c in &g.changes {
            keep.extend(c.before.iter().cloned());
            keep.extend(c.after.iter().cloned());
        }
    }
    for a in reg.agents.values() {
        keep.extend(a.outputs.values().map(|o| o.hash.clone()));
    }
    blobs.gc(&keep)?;
    Ok(())
}

fn read_opt(root: &Path, rel: &str) -> Result<Option<Vec<u8>>> {
    let a = paths::abs(root, rel);
    match std::fs::symlink_metadata(&a) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::Input(format!(
                "{rel}: output path is a symlink; refusing to write through it"
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(a, e)),
    }
    match std::fs::read(&a) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(a, e)),
    }
}

/// A target folder (or its nearest existing ancestor) must resolve inside the repository,
/// so a symlinked `.github` cannot send writes elsewhere.
pub(crate) fn check_target_dir(root: &Path, dir: &str) -> std::result::Result<(), String> {
    let Ok(canon_root) = root.canonicalize() else {
        return Ok(());
    };
    let mut cur = paths::abs(root, dir);
    loop {
        if cur.exists() {
            return match cur.canonicalize() {
                Ok(c) if c.starts_with(&canon_root) => Ok(()),
                _ => Err(format!(
                    "{dir}: target folder resolves outside the repository"
                )),
            };
        }
        if !cur.pop() {
            return Ok(());
        }
    }
}

fn is_dirty(
    root: &Path,
    cfg: &AgentsConfig,
    lib: &Library,
    hashes: &HashMap<String, String>,
    name: &str,
    rec: &AgentRec,
) -> bool {
    for (p, h) in &rec.sources {
        let now = if lib.files.contains_key(p) {
            hashes.get(p)
        } else {
            None
        };
        if now != h.as_ref() {
            return true;
        }
        // A missing non-library target (a folder, say) may have appeared.
        if h.is_none() && !lib.files.contains_key(p) && paths::abs(root, p).exists() {
            return true;
        }
    }
    if !outputs_as_expected(cfg, name, &rec.entry, rec.outputs.keys()) {
        return true;
    }
    rec.outputs
        .iter()
        .any(|(p, o)| !output_unchanged(root, p, o.size, o.mtime_ns))
}

/// Hashes of every library file: recorded ones where size and mtime match, read and
/// hashed otherwise. Also says whether a file was re-read only for being racy.
fn hash_files(
    root: &Path,
    lib: &Library,
    reg: &Registry,
    read_in_walk: Vec<(String, discover::ReadFile)>,
) -> (HashMap<String, String>, bool, HashMap<String, Arc<str>>) {
    let mut out = HashMap::with_capacity(lib.files.len());
    let mut texts = HashMap::with_capacity(read_in_walk.len());
    for (p, read) in read_in_walk {
        if let Some(t) = read.text {
            texts.insert(p.clone(), t);
        }
        out.insert(p, read.hash);
    }
    let mut todo = Vec::new();
    let mut racy = false;
    for (p, st) in &lib.files {
        if out.contains_key(p) {
            continue;
        }
        match reg.files.get(p) {
            Some(r) if r.size == st.size && r.mtime_ns == st.mtime_ns => {
                if st.mtime_ns.saturating_add(RACY_MARGIN_NS) < reg.scanned_at_ns {
                    out.insert(p.clone(), r.hash.clone());
                } else {
                    racy = true;
                    todo.push(p.as_str());
                }
            }
            _ => todo.push(p.as_str()),
        }
    }
    if todo.is_empty() {
        return (out, racy, texts);
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = todo.len().div_ceil(threads).max(1);
    // (path, hash, text when it is UTF-8)
    type Hashed = (String, String, Option<Arc<str>>);
    let results: Vec<Vec<Hashed>> = std::thread::scope(|s| {
        let hs: Vec<_> = todo
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter_map(|p| {
                            let b = std::fs::read(paths::abs(root, p)).ok()?;
                            let h = hash(&b);
                            let t = String::from_utf8(b).ok().map(Arc::<str>::from);
                            Some((p.to_string(), h, t))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for part in results {
        for (p, h, t) in part {
            if let Some(t) = t {
                texts.insert(p.clone(), t);
            }
            out.insert(p, h);
        }
    }
    (out, racy, texts)
}

fn render_all(
    file_hashes: &HashMap<String, String>,
    cfg: &AgentsConfig,
    lib: &Library,
    texts: &Texts<'_>,
    renames: &RenameMap,
    work: &[(Priority, &AgentEntry)],
    progress: Progress<'_>,
) -> (Vec<Rendered>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let out: Mutex<(Vec<Rendered>, Vec<String>)> = Mutex::new((Vec::new(), Vec::new()));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8)
        .min(work.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = (Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, a)) = work.get(i) else { break };
                    match render_one(cfg, lib, texts, file_hashes, renames, a) {
                        Ok(r) => local.0.push(r),
                        Err(e) => local.1.push(e),
                    }
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(d, work.len());
                }
                if let Ok(mut o) = out.lock() {
                    o.0.extend(local.0);
                    o.1.extend(local.1);
                }
            });
        }
    });
    let (r, mut e) = out.into_inner().unwrap_or_default();
    e.sort();
    (r, e)
}

fn render_one(
    cfg: &AgentsConfig,
    lib: &Library,
    texts: &Texts<'_>,
    file_hashes: &HashMap<String, String>,
    renames: &RenameMap,
    a: &AgentEntry,
) -> std::result::Result<Rendered, String> {
    let text = texts.get(&a.entry)?;
    let parsed = parse::parse_agent(&a.entry, &text)?;
    let model = AgentModel {
        meta: parsed.meta,
        entry: a.entry.clone(),
        body: parsed.body,
        claude_source: crate::targets::is_claude_source(cfg, &a.entry),
    };
    let r = render::render(cfg, texts, renames, &model)?;
    let mut problems = Vec::new();
    for o in &r.outputs {
        if lib.files.contains_key(&o.path) {
            problems.push(format!(
                "{}: output of agent {:?} would overwrite a library file",
                o.path, model.meta.name
            ));
        }
        problems.extend(validate::validate(cfg, o));
    }
    let hashes = r.outputs.iter().map(|o| hash(&o.bytes)).collect();
    let sources = r
        .deps
        .iter()
        .map(|d| (d.clone(), file_hashes.get(d).cloned()))
        .collect();
    Ok(Rendered {
        hashes,
        sources,
        problems,
        notes: r.notes,
        entry: a.clone(),
        name: model.meta.name,
        priority: model.meta.priority,
        version: model.meta.version,
        outputs: r.outputs,
    })
}
