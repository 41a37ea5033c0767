//! A generator of synthetic agent libraries for benchmarks: `n` agents in groups of 100,
//! most modular (a module, a task, a checklist, each referenced with an anchor) and some
//! single-file, a few of them Critical.

use std::path::Path;

use crate::error::{Error, Result};

/// Writes a library of `n` agents under `<root>/agents`.
pub fn generate(root: &Path, n: usize) -> Result<()> {
    for i in 0..n {
        let group = format!("group-{:03}", i / 100);
        let name = format!("agent-{i:05}");
        let priority = if i % 50 == 0 { "Critical" } else { "High" };
        let body = |refs: &str| {
            format!(
                "# Agent {i}\n\n> **Status**: Active\n> **Priority**: {priority}\n> **Agent Version**: 1.{i}\n\n## Agent Identity\n**Role:** Synthetic agent {i}\n**Version:** 1.{i}\n\n## Purpose Statement\nI am synthetic agent number {i}; I exist to measure ctxsync.\n\n## Capabilities\n{refs}\n## Workflow\n1. Observe the request.\n2. Plan the change.\n3. Execute with tests.\n4. Review the result.\n"
            )
        };
        if i % 10 < 7 {
            let dir = root.join("agents").join(&group).join(&name);
            let refs = "- Core: @modules/core/core-capabilities.md#core-capabilities\n- Task: @tasks/do-work.md\n- Checklist: @checklists/quality.md#quality-checklist\n";
            write(&dir.join(format!("{name}.md")), &body(refs))?;
            write(
                &dir.join("modules/core/core-capabilities.md"),
                &format!("# Core Capabilities\n\nAgent {i} can analyse, plan and build.\n\n## Details\nSee @tasks/do-work.md.\n"),
            )?;
            write(
                &dir.join("tasks/do-work.md"),
                &format!("# Do Work\n\n1. Work for agent {i}.\n"),
            )?;
            write(
                &dir.join("checklists/quality.md"),
                "# Quality Checklist\n\n- [ ] Tests pass\n",
            )?;
        } else {
            write(
                &root.join("agents").join(&group).join(format!("{name}.md")),
                &body("- Works alone.\n"),
            )?;
        }
    }
    Ok(())
}

fn write(p: &Path, s: &str) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    std::fs::write(p, s).map_err(|e| Error::io(p, e))
}
