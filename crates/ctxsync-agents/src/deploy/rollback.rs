//! `agents rollback [--to GEN]`: puts every output back to its bytes at the end of
//! generation GEN (default: the one before the last), from the content-addressed
//! backups. The rollback is itself a new generation, so it can be rolled back too.
//!
//! After a run that died deploying, the outputs it had changed become the generation it
//! was writing before anything else (see [`crate::journal`]): rolling back then
//! restores exactly the generation before that run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::backup::{hash, BlobStore};
use crate::config::AgentsConfig;
use crate::deploy;
use crate::error::{Error, Result};
use crate::events::{self, Event, EventKind};
use crate::journal;
use crate::paths;
use crate::registry::{FileChange, GenRec, OutRec, Registry};
use crate::state::StateDir;

/// What a rollback did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RollbackReport {
    /// Generation before the rollback.
    pub from_generation: u64,
    /// Generation whose outputs were restored.
    pub to_generation: u64,
    /// The new generation recording the rollback (none when nothing changed).
    pub generation: Option<u64>,
    /// Files written back.
    pub restored: Vec<String>,
    /// Files removed (they did not exist at the target generation).
    pub removed: Vec<String>,
    /// Files edited by hand since, left alone (use --force).
    pub conflicts: Vec<String>,
    /// Notes (an interrupted run's changes recorded first, say).
    pub warnings: Vec<String>,
}

/// The source hash recorded for an agent whose outputs a rollback restored: matches no
/// file, so the agent is rendered again by the next run.
const ROLLED_BACK: &str = "rolled-back";

/// Restores the outputs of generation `to` (default: the previous one).
pub fn rollback(
    root: &Path,
    _cfg: &AgentsConfig,
    to: Option<u64>,
    force: bool,
) -> Result<RollbackReport> {
    let t0 = Instant::now();
    let state = StateDir::new(root);
    let _lock = state.lock()?;
    let mut reg = Registry::load(&state.registry())?;
    let mut warnings = Vec::new();
    let recovered = journal::recover(root, &state, &mut reg, true)?;
    if !recovered.changes.is_empty() {
        let gen = reg.generation + 1;
        warnings.push(format!(
            "an interrupted {} run had changed {} outputs: recorded as generation {gen}",
            recovered.kind,
            recovered.changes.len()
        ));
        reg.generation = gen;
        reg.generations.push(GenRec {
            generation: gen,
            at_ms: events::now_ms(),
            kind: recovered.kind,
            changes: recovered.changes,
        });
        reg.save(&state.registry())?;
        // The index saved with it would answer the next run "nothing to do" from stats
        // alone; the agents marked rolled back must be looked at, so it goes.
        crate::index::Index::remove(&crate::registry::index_path(&state.registry()))?;
        journal::clear(&state)?;
    }
    let cur = reg.generation;
    let target = match to {
        Some(g) => g,
        None if cur == 0 => {
            return Err(Error::Input(
                "nothing to roll back: no generation written yet".into(),
            ))
        }
        None => cur - 1,
    };
    if target >= cur {
        return Err(Error::Input(format!(
            "generation {target} is not before the current generation {cur}"
        )));
    }
    let oldest = reg.generations.first().map_or(cur + 1, |g| g.generation);
    if oldest > target + 1 {
        return Err(Error::Input(format!(
            "generation {target} is no longer kept (oldest restorable: {}; see retention_days)",
            oldest.saturating_sub(1)
        )));
    }
    // For each path touched after `target`: its bytes then (the `before` of the first later
    // change) and the bytes ctxsync last left there (the `after` of the last change).
    // path -> (hash wanted, hash ctxsync last wrote, owning agent)
    type Want = (Option<String>, Option<String>, Option<String>);
    let mut want: BTreeMap<String, Want> = BTreeMap::new();
    for g in reg.generations.iter().filter(|g| g.generation > target) {
        for c in &g.changes {
            let e = want
                .entry(c.path.clone())
                .or_insert_with(|| (c.before.clone(), None, c.agent.clone()));
            e.1 = c.after.clone();
        }
    }
    let blobs = BlobStore::new(state.backups());
    let mut report = RollbackReport {
        from_generation: cur,
        to_generation: target,
        warnings,
        ..Default::default()
    };
    let mut changes = Vec::new();
    let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
    let mut removes: Vec<String> = Vec::new();
    for (path, (desired, last, agent)) in &want {
        if !paths::is_safe_rel(path) {
            return Err(Error::Input(format!(
                "registry names an unsafe path {path:?}"
            )));
        }
        let a = paths::abs(root, path);
        let disk = match std::fs::read(&a) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(a, e)),
        };
        let disk_hash = disk.as_deref().map(hash);
        if disk_hash == *desired {
            continue;
        }
        if disk_hash != *last && !force {
            report.conflicts.push(path.clone());
            continue;
        }
        let before = match &disk {
            Some(b) => Some(blobs.put(b)?),
            None => None,
        };
        match desired {
            Some(h) => {
                let bytes = blobs.get(h)?.ok_or_else(|| {
                    Error::Input(format!(
                        "backup {h} of {path} is missing; cannot restore generation {target}"
                    ))
                })?;
                writes.push((path.clone(), bytes));
            }
            None => removes.push(path.clone()),
        }
        changes.push(FileChange {
            agent: agent.clone(),
            path: path.clone(),
            before,
            after: desired.clone(),
        });
    }
    let files: Vec<(std::path::PathBuf, &[u8])> = writes
        .iter()
        .map(|(p, b)| (paths::abs(root, p), b.as_slice()))
        .collect();
    let gen = cur + 1;
    if !changes.is_empty() {
        journal::write(&state, gen, "rollback", &[&changes])?;
    }
    deploy::write_many(&files)?;
    for p in &removes {
        let a = paths::abs(root, p);
        deploy::remove_file(&a)?;
        deploy::test_crash_point();
        if let Some(d) = a.parent() {
            deploy::sync_dir(d)?;
        }
    }
    if !changes.is_empty() {
        for c in &changes {
            let owner = c
                .agent
                .clone()
                .or_else(|| reg.owner_of(&c.path).map(str::to_string));
            let Some(owner) = owner else { continue };
            let rec = reg.touched_agent(owner, gen);
            // The restored outputs were rendered from older sources: what the registry
            // recorded for the entry no longer produced them, so the next sync (and
            // `agents status`) must look at this agent again, as `sync --check` does.
            let entry = rec.entry.clone();
            if let Some(h) = rec.sources.get_mut(&entry) {
                *h = Some(ROLLED_BACK.into());
            }
            match &c.after {
                Some(h) => {
                    let m = std::fs::metadata(paths::abs(root, &c.path))
                        .map_err(|e| Error::io(&c.path, e))?;
                    let mtime_ns = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos() as u64);
                    rec.outputs.insert(
                        c.path.clone(),
                        OutRec {
                            hash: h.clone(),
                            size: m.len(),
                            mtime_ns,
                        },
                    );
                }
                None => {
                    rec.outputs.remove(&c.path);
                }
            }
        }
        reg.agents
            .retain(|_, a| !(a.entry.is_empty() && a.outputs.is_empty()));
        reg.generation = gen;
        reg.generations.push(GenRec {
            generation: gen,
            at_ms: events::now_ms(),
            kind: "rollback".into(),
            changes: changes.clone(),
        });
        reg.save(&state.registry())?;
        journal::clear(&state)?;
        report.generation = Some(gen);
    }
    report.restored = writes.into_iter().map(|(p, _)| p).collect();
    report.removed = removes;
    events::append(
        &state.events(),
        &[Event {
            ts_ms: events::now_ms(),
            kind: EventKind::Rollback,
            agent: None,
            files: changes.iter().map(|c| c.path.clone()).collect(),
            generation: report.generation,
            duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
            result: if report.conflicts.is_empty() {
                "ok".into()
            } else {
                "conflict".into()
            },
            message: format!("restored generation {target} (was {cur})"),
        }],
    )?;
    Ok(report)
}
