//! Issue 16, items 8 and 9: sync's summary of the broken references it introduced,
//! `-C DIR`, status after a rollback, `rollback --to 0 --yes`, an empty folder, and
//! `agents log --json` as one document.

#[path = "agents_common.rs"]
mod common;

use common::*;

fn run_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn dash_c_names_the_repository_like_the_context_commands() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run_in(
        elsewhere.path(),
        &["agents", "-C", root.to_str().unwrap(), "sync"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(root.join(".github/agents/alpha.agent.md").is_file());
    assert!(!elsewhere.path().join(".github").exists());
}

#[test]
fn status_agrees_with_sync_check_after_a_rollback() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    write(
        root,
        "agents/team/gamma.md",
        "# Gamma Agent\n\n## Purpose Statement\nGamma reviews twice.\n",
    );
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    assert_eq!(agents(root, &["rollback"]).status.code(), Some(0));
    let (check_code, check) = agents_json(root, &["sync", "--check"]);
    assert_eq!(
        check_code, 1,
        "the library says gamma reviews twice: {check}"
    );
    let (_, status) = agents_json(root, &["status"]);
    assert_eq!(
        names(&status["pending"], "written"),
        names(&check, "written"),
        "{status}"
    );
    // The next sync applies the library again; then both agree nothing is pending.
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    let (check_code, _) = agents_json(root, &["sync", "--check"]);
    assert_eq!(check_code, 0);
    let (_, status) = agents_json(root, &["status"]);
    assert!(names(&status["pending"], "written").is_empty(), "{status}");
}

#[test]
fn rollback_to_zero_asks_for_yes() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    let out = agents(root, &["rollback", "--to", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(
        root.join(".github/agents/alpha.agent.md").is_file(),
        "nothing changed"
    );
    let out = agents(root, &["rollback", "--to", "0", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!root.join(".github/agents/alpha.agent.md").exists());
}

#[test]
fn an_empty_folder_says_where_it_looked() {
    let d = tempfile::tempdir().unwrap();
    let out = agents(d.path(), &["sync"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no agents found")
            && err.contains("agents/")
            && err.contains(".claude/agents/"),
        "{err}"
    );
}

#[test]
fn log_json_is_one_document() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    assert_eq!(agents(root, &["sync"]).status.code(), Some(0));
    let (code, v) = agents_json(root, &["log"]);
    assert_eq!(code, 0);
    let events = v.as_array().expect("one JSON array");
    assert_eq!(events.len(), 3, "{v}");
    assert_eq!(events[0]["kind"].as_str(), Some("agent_added"));
}

#[test]
fn sync_summarises_the_broken_references_it_introduced() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // Pinned to the targets it was written against (skills copy referenced files).
    std::fs::write(
        root.join("ctxsync.toml"),
        "[agents]\ntargets = [\"vscode-agent\", \"skills\", \"vscode-prompt\"]\n",
    )
    .unwrap();
    small_library(root);
    // Beta links to gamma's file; alpha's task is already broken-free.
    write(
        root,
        "agents/team/beta/beta.md",
        "# Beta Agent\n\n## Purpose Statement\nBeta builds.\n\n- Shared: @modules/shared.md\n- Review: [gamma](../gamma.md)\n",
    );
    let out = agents(root, &["sync"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("broken"));
    // Removing gamma leaves beta's link dangling; deleting a module breaks alpha's.
    std::fs::remove_file(root.join("agents/team/gamma.md")).unwrap();
    std::fs::remove_file(root.join("agents/team/alpha/modules/metrics.md")).unwrap();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(names(&v, "removed"), ["gamma"]);
    assert_eq!(
        names(&v, "new_broken_refs"),
        [
            "alpha: agents/team/alpha/modules/metrics.md",
            "beta: agents/team/gamma.md"
        ]
    );
    // Printed as one line; a run that breaks nothing new says nothing.
    write(
        root,
        "agents/team/alpha/tasks/plan.md",
        "# Plan\n\nUse @modules/shared.md for context, twice.\n",
    );
    let out = agents(root, &["sync"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("broken"), "{text}");
    std::fs::remove_file(root.join("agents/team/alpha/modules/shared.md")).unwrap();
    let out = agents(root, &["sync"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "1 broken reference new in this run, in 1 agent (details: ctxsync agents check)"
        ),
        "{text}"
    );
}
