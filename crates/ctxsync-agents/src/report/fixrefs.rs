//! `agents fix-refs [--apply]`: proposes rewrites for references that are broken or work
//! only through the rename map — the renamed path, or the one file of that name inside
//! the agent's root — and with `--apply` rewrites the sources atomically.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::backup::BlobStore;
use crate::config::AgentsConfig;
use crate::deploy::write_atomic;
use crate::discover;
use crate::error::Result;
use crate::events::{self, Event, EventKind};
use crate::graph::{resolve, Texts};
use crate::paths;
use crate::refs::{self, RefKind};
use crate::registry::Registry;
use crate::state::StateDir;

/// One proposed rewrite.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Proposal {
    /// Source file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Text now.
    pub old: String,
    /// Text proposed.
    pub new: String,
    /// `renamed` or `unique_name`.
    pub reason: String,
    #[serde(skip)]
    start: usize,
    #[serde(skip)]
    end: usize,
}

/// Proposals, and broken references nothing could be found for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FixReport {
    /// Rewrites.
    pub proposals: Vec<Proposal>,
    /// Broken references left as they are.
    pub unresolved: usize,
    /// Files rewritten (with `--apply`).
    pub applied_files: Vec<String>,
}

/// Computes proposals and, with `apply`, rewrites the files.
pub fn fix_refs(root: &Path, cfg: &AgentsConfig, apply: bool) -> Result<FixReport> {
    let state = StateDir::new(root);
    let _lock = if apply { Some(state.lock()?) } else { None };
    let reg = Registry::load(&state.registry())?;
    let owned = reg
        .agents
        .values()
        .flat_map(|a| a.outputs.keys().cloned())
        .collect();
    // Every file is read: read each as it is listed.
    let mut lib = discover::discover_cached(root, cfg, &owned, None, true)?;
    let read = lib.take_texts();
    let texts = Texts::preloaded(root, &lib, read);
    let renames = reg.rename_map();
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in lib.files.keys() {
        by_name.entry(paths::file_name(f)).or_default().push(f);
    }
    let mut report = FixReport::default();
    for f in lib.files.keys() {
        let Ok(text) = texts.get(f) else { continue };
        for r in refs::scan(&text) {
            let res = resolve(root, &lib, &renames, f, &r);
            let (new_target, reason) = match (&res.path, res.exists, &res.renamed_from) {
                (Some(p), true, Some(_)) => (p.clone(), "renamed"),
                (Some(p), false, _) => {
                    let root_dir = lib.root_of(f);
                    let prefix = if root_dir.is_empty() {
                        String::new()
                    } else {
                        format!("{root_dir}/")
                    };
                    let cands: Vec<&&str> = by_name
                        .get(paths::file_name(p))
                        .map(|v| v.iter().filter(|c| c.starts_with(&prefix)).collect())
                        .unwrap_or_default();
                    if cands.len() == 1 {
                        (cands[0].to_string(), "unique_name")
                    } else {
                        report.unresolved += 1;
                        continue;
                    }
                }
                _ => continue,
            };
            let anchor = r
                .anchor
                .as_ref()
                .map(|a| format!("#{a}"))
                .unwrap_or_default();
            let new = match r.kind {
                RefKind::At => {
                    let root_dir = lib.root_of(f);
                    match new_target
                        .strip_prefix(root_dir)
                        .and_then(|x| x.strip_prefix('/'))
                    {
                        Some(rel) if refs::AT_PREFIXES.iter().any(|p| rel.starts_with(p)) => {
                            format!("@{rel}{anchor}")
                        }
                        // An @ reference can only name modules/, tasks/ or checklists/.
                        _ => {
                            report.unresolved += 1;
                            continue;
                        }
                    }
                }
                RefKind::Link => {
                    format!("{}{anchor}", paths::relative(paths::parent(f), &new_target))
                }
            };
            report.proposals.push(Proposal {
                file: f.clone(),
                line: r.line,
                old: text[r.start..r.end].to_string(),
                new,
                reason: reason.into(),
                start: r.start,
                end: r.end,
            });
        }
    }
    if apply && !report.proposals.is_empty() {
        let blobs = BlobStore::new(state.backups());
        let mut by_file: BTreeMap<&str, Vec<&Proposal>> = BTreeMap::new();
        for p in &report.proposals {
            by_file.entry(p.file.as_str()).or_default().push(p);
        }
        for (f, ps) in by_file {
            let Ok(text) = texts.get(f) else { continue };
            let mut s = text.to_string();
            let mut ps = ps;
            ps.sort_by_key(|p| std::cmp::Reverse(p.start));
            for p in ps {
                s.replace_range(p.start..p.end, &p.new);
            }
            // The old text is kept so a bad rewrite can be recovered by hand.
            blobs.put(text.as_bytes())?;
            write_atomic(&paths::abs(root, f), s.as_bytes(), true)?;
            report.applied_files.push(f.to_string());
        }
        events::append(
            &state.events(),
            &[Event {
                ts_ms: events::now_ms(),
                kind: EventKind::RefsFixed,
                agent: None,
                files: report.applied_files.clone(),
                generation: None,
                duration_ms: 0.0,
                result: "ok".into(),
                message: format!("{} references rewritten", report.proposals.len()),
            }],
        )?;
    }
    Ok(report)
}
