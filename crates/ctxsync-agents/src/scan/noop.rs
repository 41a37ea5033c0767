//! The fast no-op test of a sync run: decide from the scan index alone that a full run
//! would render, write and record nothing, without reading the registry.
//!
//! Two ways, the cheaper first:
//! * [`stat_index`] and [`agents_unchanged`]: every folder, file and output the index
//!   recorded is stat-ed where it is, in parallel, with no listing and no map built.
//!   It needs an index whose agents match the scan it was taken with and folders that
//!   may all be trusted by mtime. What moved tells the walk that follows what it need
//!   not look at again ([`crate::discover::DirCache::trusting`]).
//! * [`nothing_to_do`]: given a fresh walk of the library (reusing unchanged folder
//!   listings), compare it with the index.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{AgentsConfig, SkillsMode, Target};
use crate::dirfd::Dir;
use crate::discover::{Library, Moved, ALWAYS_LIST};
use crate::index::{Index, IndexOutput};
use crate::paths;
use crate::sync::{check_target_dir, RACY_MARGIN_NS};

/// The main outputs agent `name` (entry file `entry`) should have, sorted: one per
/// target that takes it (a Claude Code subagent is not written back over
/// `.claude/agents`, nor copied to VS Code unless asked).
pub(crate) fn expected_outputs(cfg: &AgentsConfig, name: &str, entry: &str) -> BTreeSet<String> {
    cfg.targets
        .iter()
        // Task skills follow the references (the task files), not the name.
        .filter(|t| !(**t == Target::Skills && cfg.skills == SkillsMode::PerTask))
        .filter_map(|t| cfg.output_path(*t, name, entry))
        .collect()
}

/// True when `rel` is a companion file of a skill (copied beside its `SKILL.md`), not a
/// main output: which ones exist depends on the references, not on the name. With
/// task skills, so does every skill file.
pub(crate) fn is_companion(cfg: &AgentsConfig, rel: &str) -> bool {
    cfg.targets.contains(&Target::Skills)
        && rel
            .strip_prefix(cfg.target_dir(Target::Skills))
            .is_some_and(|r| {
                r.starts_with('/')
                    && (cfg.skills == SkillsMode::PerTask || !r.ends_with("/SKILL.md"))
            })
}

/// The recorded outputs equal the expected main outputs (companions aside).
pub(crate) fn outputs_as_expected<'a>(
    cfg: &AgentsConfig,
    name: &str,
    entry: &str,
    recorded: impl Iterator<Item = &'a String>,
) -> bool {
    expected_outputs(cfg, name, entry)
        .iter()
        .eq(recorded.filter(|p| !is_companion(cfg, p)))
}

/// True when output `rel` still has the size and mtime recorded when it was written.
pub(crate) fn output_unchanged(root: &Path, rel: &str, size: u64, mtime: u64) -> bool {
    match std::fs::symlink_metadata(paths::abs(root, rel)) {
        Ok(m) => m.len() == size && crate::dirfd::Meta::from_std(&m).mtime_ns == mtime,
        Err(_) => false,
    }
}

/// True on `threads` threads when `check` holds for every item (stops early on a miss).
pub(crate) fn all_parallel<T: Sync>(items: &[T], check: impl Fn(&T) -> bool + Sync) -> bool {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = items.len().div_ceil(threads).max(1);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for part in items.chunks(chunk) {
            let (failed, check) = (&failed, &check);
            s.spawn(move || {
                for item in part {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    if !check(item) {
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    // A panicked checker leaves `failed` unset but the scope re-raises its panic; the
    // checks here only stat files.
    !failed.load(Ordering::Relaxed)
}

/// The fast no-op test: true only when a full run would render, write and record
/// nothing. Every file and folder of the library is as the index recorded it (and not
/// modified close to the last scan), the agents are the same, every output still has
/// the size and mtime recorded when it was written, dependencies that were missing are
/// still missing, and the target folders are still safe.
pub(crate) fn nothing_to_do(root: &Path, cfg: &AgentsConfig, lib: &Library, ix: &Index) -> bool {
    if lib.files.len() != ix.files.len() || lib.dirs != ix.dirs {
        return false;
    }
    let files_same = lib.files.iter().zip(&ix.files).all(|((p, st), (q, rec))| {
        p == q
            && st.size == rec.size
            && st.mtime_ns == rec.mtime_ns
            && st.mtime_ns.saturating_add(RACY_MARGIN_NS) < ix.scanned_at_ns
    });
    if !files_same || lib.agents.len() != ix.agents.len() {
        return false;
    }
    let entries: HashSet<&str> = ix.agents.iter().map(|a| a.entry.as_str()).collect();
    if entries.len() != ix.agents.len()
        || !lib
            .agents
            .iter()
            .all(|a| entries.contains(a.entry.as_str()))
    {
        return false;
    }
    targets_safe(root, cfg) && agents_unchanged(root, cfg, ix, |p| lib.files.contains_key(p))
}

/// Every folder and file the index recorded, stat-ed where it is (in parallel, with no
/// listing and no map built): what moved since, or is too close to the last scan to
/// trust. `None` when the index cannot answer alone: its agents are not all those the
/// scan found, a folder is listed on every scan (it holds a symlink), a source that was
/// absent appeared, or a target folder is no longer safe.
pub(crate) fn stat_index(root: &Path, cfg: &AgentsConfig, ix: &Index) -> Option<Moved> {
    if !ix.complete || ix.dirs.values().any(|m| *m == ALWAYS_LIST) {
        return None;
    }
    // A source that was absent (or skipped) must still be absent.
    let sources_same = cfg.sources.iter().all(|src| {
        let src = src.trim_end_matches('/');
        ix.dirs.contains_key(src) || std::fs::symlink_metadata(paths::abs(root, src)).is_err()
    });
    if !sources_same || !targets_safe(root, cfg) {
        return None;
    }
    let top = Dir::open(root);
    let dirs: Vec<(&String, &u64)> = ix.dirs.iter().collect();
    let files: Vec<_> = ix.files.iter().collect();
    let fresh = |mtime: u64| mtime.saturating_add(RACY_MARGIN_NS) < ix.scanned_at_ns;
    // A folder's mtime moves when an entry is added, removed or renamed in it; a file's
    // own size and mtime when it is written.
    let moved_dirs = failing_parallel(&dirs, |(rel, mtime)| {
        top.stat(rel)
            .is_ok_and(|m| m.is_dir && m.mtime_ns == **mtime && fresh(m.mtime_ns))
    });
    let moved_files = failing_parallel(&files, |(rel, rec)| {
        top.stat(rel).is_ok_and(|m| {
            m.is_file && m.size == rec.size && m.mtime_ns == rec.mtime_ns && fresh(m.mtime_ns)
        })
    });
    Some(Moved {
        dirs: moved_dirs.into_iter().map(|(d, _)| d.to_string()).collect(),
        files: moved_files
            .into_iter()
            .map(|(f, _)| f.to_string())
            .collect(),
    })
}

/// The items for which `check` fails, checked on a few threads.
fn failing_parallel<T: Sync + Copy + Send>(
    items: &[T],
    check: impl Fn(&T) -> bool + Sync,
) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let check = &check;
                s.spawn(move || {
                    part.iter()
                        .filter(|i| !check(i))
                        .copied()
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        // A panicked checker counts its whole part as moved: looking again is safe.
        handles
            .into_iter()
            .zip(items.chunks(chunk))
            .flat_map(|(h, part)| h.join().unwrap_or_else(|_| part.to_vec()))
            .collect()
    })
}

fn targets_safe(root: &Path, cfg: &AgentsConfig) -> bool {
    cfg.targets
        .iter()
        .all(|t| check_target_dir(root, cfg.target_dir(*t)).is_ok())
}

/// Every agent of the index still has the outputs it should have, with the sizes and
/// mtimes recorded when they were written, and its missing dependencies are still
/// missing (`in_library` says which paths are library files now).
pub(crate) fn agents_unchanged(
    root: &Path,
    cfg: &AgentsConfig,
    ix: &Index,
    in_library: impl Fn(&str) -> bool + Sync,
) -> bool {
    // Outputs live in a few target folders: stat them by name in an open folder.
    let target_dirs: HashMap<&str, Dir> = cfg
        .targets
        .iter()
        .map(|t| cfg.target_dir(*t))
        .map(|d| (d, Dir::open(&paths::abs(root, d))))
        .collect();
    let unchanged = |o: &IndexOutput| {
        let (parent, name) = (paths::parent(&o.path), paths::file_name(&o.path));
        match target_dirs.get(parent) {
            Some(dir) => dir
                .stat(name)
                .is_ok_and(|m| m.size == o.size && m.mtime_ns == o.mtime_ns),
            None => output_unchanged(root, &o.path, o.size, o.mtime_ns),
        }
    };
    all_parallel(&ix.agents, |a| {
        outputs_as_expected(cfg, &a.name, &a.entry, a.outputs.iter().map(|o| &o.path))
            && a.outputs.iter().all(unchanged)
            && a.missing
                .iter()
                .all(|m| !in_library(m) && !paths::abs(root, m).exists())
    })
}
