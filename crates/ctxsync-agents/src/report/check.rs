//! `agents check`: reference integrity of the whole library — broken file references,
//! broken anchors (against GitHub heading slugs of the target), references that only
//! resolve through the rename map, unreferenced module files and reference cycles.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::config::AgentsConfig;
use crate::discover;
use crate::error::Result;
use crate::graph::{resolve, Graph, Texts};
use crate::paths;
use crate::refs;
use crate::registry::Registry;
use crate::state::StateDir;

/// One finding, with its place in the source.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// File holding the reference.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The reference as written.
    pub reference: String,
    /// Resolved target path, if it stays in the repository.
    pub target: Option<String>,
    /// Explanation.
    pub message: String,
}

/// The whole check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Files scanned.
    pub files_checked: usize,
    /// References found.
    pub references: usize,
    /// References to files that do not exist.
    pub broken_files: Vec<Finding>,
    /// References whose file exists but whose `#anchor` is not a heading there.
    pub broken_anchors: Vec<Finding>,
    /// References that work only through a recorded rename (`fix-refs` rewrites them).
    pub via_rename: Vec<Finding>,
    /// Module, task and checklist files nothing references.
    pub unreferenced: Vec<String>,
    /// Reference cycles (allowed; reported for information).
    pub cycles: Vec<Vec<String>>,
    /// Skipped files.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// True when a reference is broken.
    pub fn is_broken(&self) -> bool {
        !self.broken_files.is_empty() || !self.broken_anchors.is_empty()
    }
}

/// Runs the check.
pub fn check(root: &Path, cfg: &AgentsConfig) -> Result<CheckReport> {
    let reg = Registry::load(&StateDir::new(root).registry())?;
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
    let mut report = CheckReport {
        files_checked: lib.files.len(),
        warnings: lib.warnings.clone(),
        ..Default::default()
    };
    let mut slugs: HashMap<String, Option<Vec<String>>> = HashMap::new();
    for f in lib.files.keys() {
        let text = match texts.get(f) {
            Ok(t) => t,
            Err(e) => {
                report.warnings.push(e);
                continue;
            }
        };
        for r in refs::scan(&text) {
            report.references += 1;
            let res = resolve(root, &lib, &renames, f, &r);
            let finding = |message: String| Finding {
                file: f.clone(),
                line: r.line,
                reference: r.display(),
                target: res.path.clone(),
                message,
            };
            let Some(target) = &res.path else {
                report
                    .broken_files
                    .push(finding("leads outside the repository".into()));
                continue;
            };
            if !res.exists {
                report
                    .broken_files
                    .push(finding(format!("{target} does not exist")));
                continue;
            }
            if let Some(old) = &res.renamed_from {
                report
                    .via_rename
                    .push(finding(format!("{old} was renamed to {target}")));
            }
            if let Some(anchor) = &r.anchor {
                let s = slugs
                    .entry(target.clone())
                    .or_insert_with(|| heading_slugs(root, cfg, &texts, target));
                if let Some(s) = s {
                    if !s.iter().any(|x| x == anchor) {
                        report.broken_anchors.push(finding(format!(
                            "{target} has no heading with anchor #{anchor}"
                        )));
                    }
                }
            }
        }
    }
    let graph = Graph::build(&texts, &renames);
    let referenced = graph.referenced();
    for f in lib.files.keys() {
        if lib.is_support(f) && !referenced.contains(f.as_str()) {
            report.unreferenced.push(f.clone());
        }
    }
    report.cycles = graph.cycles();
    Ok(report)
}

fn heading_slugs(
    root: &Path,
    cfg: &AgentsConfig,
    texts: &Texts<'_>,
    target: &str,
) -> Option<Vec<String>> {
    if !target.ends_with(".md") {
        return None;
    }
    let text = match texts.get(target) {
        Ok(t) => t.to_string(),
        Err(_) => {
            // A Markdown file outside the sources: read it only if it stays in the repository.
            let a = paths::abs(root, target);
            let canon = a.canonicalize().ok()?;
            if !canon.starts_with(root.canonicalize().ok()?) {
                return None;
            }
            if std::fs::metadata(&canon).ok()?.len() > cfg.max_file_bytes {
                return None;
            }
            std::fs::read_to_string(&canon).ok()?
        }
    };
    Some(
        refs::headings(crate::parse::strip_bom(&text))
            .into_iter()
            .map(|h| h.slug)
            .collect(),
    )
}
