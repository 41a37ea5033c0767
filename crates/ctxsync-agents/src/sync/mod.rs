//! One sync run: detect → look up the registry and rename history → render → validate
//! → deploy atomically → update the registry → record events.
//!
//! Only agents whose recorded dependencies or outputs changed are rendered (unless
//! `full`); everything rendered is validated before the first byte is written; unchanged
//! bytes are never rewritten; hand-edited outputs are conflicts unless `force`/`merge`.

mod detect;
mod phases;
mod plan;
mod render_phase;
mod report;
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

pub(crate) use detect::check_target_dir;
use detect::*;
pub use phases::Progress;
pub(crate) use phases::RACY_MARGIN_NS;
use phases::*;
use plan::*;
use render_phase::*;
pub use report::{ConflictInfo, SyncOptions, SyncReport};

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
    // Every agent of the library by name (before `--agent` narrows the rendered ones),
    // for the handoff check.
    let library_names: HashSet<String> = clean_names
        .keys()
        .cloned()
        .chain(rendered.iter().map(|r| r.name.clone()))
        .collect();
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
    // Handoffs must name agents of the library: those of the agents rendered, and the
    // recorded ones of the agents that were not (an agent removed by this run may be
    // the target of one that did not change).
    report.validation_errors.extend(dangling_handoffs(
        &reg,
        &rendered,
        &clean_names,
        &library_names,
    ));
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
    report.new_broken_refs = new_broken_refs(root, &reg, &rendered);
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
    // One change per planned action, in the plan's order (the hash after a write is
    // moved out of the plan: it is kept here, not twice).
    let mut changes = Vec::with_capacity(plan.len());
    for p in plan.iter_mut() {
        let (before, after) = match &mut p.action {
            Action::Write { before, hash, .. } => (before.as_deref(), Some(std::mem::take(hash))),
            Action::Remove { before } => (Some(before.as_slice()), None),
        };
        let before_hash = match before {
            Some(b) => Some(blobs.put(b)?),
            None => None,
        };
        changes.push(FileChange {
            agent: Some(p.agent.clone()),
            path: p.path.clone(),
            before: before_hash,
            after,
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
    let batch = deploy::stage_owned(writes)?;
    phases.mark("stage");
    // The disk flush only waits on the device: the records, the merge-base pack and
    // the registry's new contents are prepared meanwhile. Nothing is renamed into place
    // (and so nothing is recorded on disk) before it is done.
    let flushing = std::thread::spawn(batch.flusher());
    // Bytes we wrote are the base of a later three-way merge, packed on another thread
    // while the records are built (and freed there); a lost one only disables merge.
    let pack: Vec<(String, Vec<u8>)> = plan
        .iter_mut()
        .zip(&changes)
        .filter_map(|(p, c)| match (&mut p.action, &c.after) {
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
    let written: HashMap<&str, (&str, Meta)> = changes
        .iter()
        .filter_map(|c| Some((c.path.as_str(), c.after.as_deref()?)))
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
        for o in &mut r.outputs {
            if keep.is_some_and(|k| k.contains(&o.path)) {
                if let Some(x) = old.as_ref().and_then(|a| a.outputs.get(&o.path)) {
                    outputs.insert(o.path.clone(), x.clone());
                }
                continue;
            }
            if let Some((h, m)) = written.get(o.path.as_str()) {
                // The rendered output's path is not needed past its record: moved.
                outputs.insert(
                    std::mem::take(&mut o.path),
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
                handoffs: r.handoffs.clone(),
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
    prune_emptied_skill_folders(root, cfg, &plan);

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
