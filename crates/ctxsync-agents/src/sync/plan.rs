//! The plan phase: compare rendered outputs with the disk and the registry, decide
//! what to write, remove or leave alone (conflicts), and prune old generations.

use super::*;

pub(super) enum Action {
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

pub(super) struct Planned {
    pub(super) agent: String,
    pub(super) path: String,
    pub(super) action: Action,
}

/// What a run will change on disk, and what it leaves alone.
pub(super) struct Plan {
    /// Writes and removals, in order.
    pub(super) actions: Vec<Planned>,
    /// Per agent, outputs left alone (conflicts) whose registry record stays as it was.
    pub(super) keep_old_rec: HashMap<String, HashSet<String>>,
    /// Per agent, outputs already right on disk, with their hashes.
    pub(super) recorded_now: HashMap<String, BTreeMap<String, String>>,
    /// Agents the registry knows that the library no longer has.
    pub(super) gone_agents: Vec<String>,
}

/// Compares each rendered output with the disk and the registry: new and changed
/// outputs are written, hand-edited ones are conflicts (forced or merged on request),
/// outputs no agent wants any more are removed. Conflicts, and the files to write and
/// delete, go into `report`.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_changes(
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
        // Each hash goes into the plan (or the record) as it is: moved, not copied.
        let hashes = std::mem::take(&mut r.hashes);
        for (o, oh) in r.outputs.iter_mut().zip(hashes) {
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
                    oh,
                    None,
                )),
                Some(d) if d == o.bytes => {
                    recorded_now
                        .entry(r.name.clone())
                        .or_default()
                        .insert(o.path.clone(), oh);
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
                        replacement = Some((oh, std::mem::take(&mut o.bytes)));
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
pub(super) fn write_action(
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

/// Frees large structures on another thread: tens of thousands of small allocations
/// take tens of milliseconds to free, and a one-shot command need not wait for it.
pub(super) fn drop_in_background<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("ctxsync-free".into())
        .spawn(move || drop(value));
    // Without a thread, the value was dropped with the error; that is fine too.
    drop(spawned);
}

#[allow(clippy::too_many_arguments)]
pub(super) fn plan_removal(
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
pub(super) fn prune(
    reg: &mut Registry,
    reg_path: &Path,
    cfg: &AgentsConfig,
    blobs: &BlobStore,
) -> Result<()> {
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

/// Removes the folders below the skills folder that this run's removals left empty (a
/// skill is a folder: an empty one would still look like a skill to a host). Only empty
/// folders go (`remove_dir` refuses others), so nothing hand-written is touched.
pub(super) fn prune_emptied_skill_folders(root: &Path, cfg: &AgentsConfig, plan: &[Planned]) {
    if !cfg.targets.contains(&crate::config::Target::Skills) {
        return;
    }
    let skills = cfg.target_dir(crate::config::Target::Skills);
    let mut dirs: BTreeSet<&str> = BTreeSet::new();
    for p in plan {
        if let Action::Remove { .. } = p.action {
            let mut d = paths::parent(&p.path);
            while d.len() > skills.len() && d.starts_with(skills) {
                dirs.insert(d);
                d = paths::parent(d);
            }
        }
    }
    // Deepest first, so a folder emptied by removing its empty children goes too.
    let mut dirs: Vec<&str> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dirs {
        let _ = std::fs::remove_dir(paths::abs(root, d));
    }
}

/// Handoffs to agents the library does not have: from each rendered agent, and from
/// the registry's record of each agent that was not rendered (checked against the
/// agents of this run, so a handoff to an agent removed by it is found too).
pub(super) fn dangling_handoffs(
    reg: &Registry,
    rendered: &[Rendered],
    clean: &BTreeMap<String, &AgentEntry>,
    names: &HashSet<String>,
) -> Vec<String> {
    let mut errs = Vec::new();
    for r in rendered {
        for h in r.handoffs.iter().filter(|h| !names.contains(h.as_str())) {
            errs.push(format!(
                "{}: handoff to agent {h:?}, which the library does not have",
                r.entry.entry
            ));
        }
    }
    for (name, entry) in clean {
        let Some(rec) = reg.agents.get(name) else {
            continue;
        };
        for h in rec.handoffs.iter().filter(|h| !names.contains(h.as_str())) {
            let why = if reg.agents.contains_key(h) {
                " (removed by this run)"
            } else {
                ""
            };
            errs.push(format!(
                "{}: handoff to agent {h:?}, which the library does not have{why}",
                entry.entry
            ));
        }
    }
    errs
}
