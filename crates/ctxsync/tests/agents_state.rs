//! The agent-sync state folder across runs: the scan index that lets a no-op run skip
//! the registry, what happens when it is stale, damaged or missing, agents left out by
//! `--agent`, folders holding symlinks, and registries written by format 1.

#[path = "agents_common.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const STATE: &str = ".ctxsync/agents";

/// Lets the files written so far age past the "racy clean" window of the scan.
fn settle() {
    std::thread::sleep(Duration::from_millis(120));
}

/// A new single-file agent beside the small library's modular ones.
fn add_delta(root: &Path) {
    write(
        root,
        "agents/team/delta.md",
        "# Delta Agent\n\n## Purpose Statement\nDelta reviews.\n",
    );
}

/// An edit of a task alpha links to: same size, same folder mtime, new mtime.
fn edit_plan(root: &Path) {
    write(
        root,
        "agents/team/alpha/tasks/plan.md",
        "# Plan\n\nUse @modules/shared.md for CONTEXT.\n",
    );
}

/// An edit of beta's entry file.
fn edit_beta(root: &Path) {
    write(
        root,
        "agents/team/beta/beta.md",
        "# Beta Agent\n\n## Purpose Statement\nBeta builds more.\n",
    );
}

fn sync_ok(root: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["sync"];
    a.extend_from_slice(args);
    let (code, v) = agents_json(root, &a);
    assert_eq!(code, 0, "{v}");
    v
}

/// The small library in a new folder, synced once.
fn synced_small_library() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    small_library(d.path());
    sync_ok(d.path(), &[]);
    d
}

#[test]
fn a_no_op_is_answered_from_the_index_and_a_changed_file_is_still_seen() {
    let d = synced_small_library();
    let root = d.path();
    assert!(root.join(STATE).join("index").is_file());
    assert!(root.join(STATE).join("generations.jsonl").is_file());
    settle();
    let reg = std::fs::read(root.join(STATE).join("registry.json")).unwrap();
    let v = sync_ok(root, &[]);
    assert!(v["rendered"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(
        std::fs::read(root.join(STATE).join("registry.json")).unwrap(),
        reg
    );
    edit_plan(root);
    let v = sync_ok(root, &[]);
    assert_eq!(names(&v, "rendered"), ["alpha"], "{v}");
    // A new agent in a folder whose listing was cached.
    settle();
    add_delta(root);
    let v = sync_ok(root, &[]);
    assert_eq!(names(&v, "added"), ["delta"], "{v}");
    // An output deleted after a quiet period is written again.
    settle();
    sync_ok(root, &[]);
    settle();
    std::fs::remove_file(root.join(".github/prompts/alpha.prompt.md")).unwrap();
    let v = sync_ok(root, &[]);
    assert_eq!(
        names(&v, "written"),
        [".github/prompts/alpha.prompt.md"],
        "{v}"
    );
    // A library file replaced by a folder of the same name is seen too.
    settle();
    sync_ok(root, &[]);
    settle();
    std::fs::remove_file(root.join("agents/team/alpha/tasks/plan.md")).unwrap();
    std::fs::create_dir(root.join("agents/team/alpha/tasks/plan.md")).unwrap();
    let (_, v) = agents_json(root, &["sync"]);
    assert_eq!(names(&v, "rendered"), ["alpha"], "{v}");
    std::fs::remove_dir(root.join("agents/team/alpha/tasks/plan.md")).unwrap();
    edit_plan(root);
    // An output edited by hand after a quiet period is still a conflict.
    settle();
    sync_ok(root, &[]);
    let out = root.join(".github/agents/delta.agent.md");
    std::fs::write(&out, "edited\n").unwrap();
    let (code, v) = agents_json(root, &["sync"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["conflicts"][0]["path"], ".github/agents/delta.agent.md");
}

#[test]
fn a_damaged_stale_or_missing_index_is_rebuilt_and_changes_nothing() {
    let d = synced_small_library();
    let root = d.path();
    settle();
    let index = root.join(STATE).join("index");
    let outputs = mtimes(&root.join(".github"));
    let mut bytes = std::fs::read(&index).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&index, &bytes).unwrap();
    let v = sync_ok(root, &[]);
    assert!(v["written"].as_array().unwrap().is_empty(), "{v}");
    assert_ne!(std::fs::read(&index).unwrap(), bytes, "rebuilt");
    std::fs::remove_file(&index).unwrap();
    let v = sync_ok(root, &[]);
    assert!(v["written"].as_array().unwrap().is_empty(), "{v}");
    assert!(index.is_file());
    // An index left from an older registry (say, restored from a backup) is ignored.
    let old_index = std::fs::read(&index).unwrap();
    settle();
    edit_beta(root);
    sync_ok(root, &[]);
    std::fs::write(&index, &old_index).unwrap();
    let v = sync_ok(root, &[]);
    assert!(v["written"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(mtimes(&root.join(".github")).len(), outputs.len());
}

#[test]
fn an_agent_left_out_by_dash_dash_agent_is_written_by_the_next_plain_run() {
    let d = synced_small_library();
    let root = d.path();
    add_delta(root);
    let v = sync_ok(root, &["--agent", "alpha"]);
    assert!(v["added"].as_array().unwrap().is_empty(), "{v}");
    settle();
    let v = sync_ok(root, &[]);
    assert_eq!(names(&v, "added"), ["delta"], "{v}");
}

#[cfg(unix)]
#[test]
fn agents_beside_a_symlink_survive_repeated_runs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write(
        root,
        "agents/g/a/a.md",
        "# A Agent\n\n## Purpose Statement\nA works.\n",
    );
    write(
        root,
        "agents/h/b.md",
        "# B Agent\n\n## Purpose Statement\nB works.\n",
    );
    std::os::unix::fs::symlink("../h/b.md", root.join("agents/g/linked.md")).unwrap();
    let v = sync_ok(root, &[]);
    assert_eq!(names(&v, "added"), ["a", "b", "linked"], "{v}");
    for _ in 0..3 {
        settle();
        let v = sync_ok(root, &[]);
        assert!(v["removed"].as_array().unwrap().is_empty(), "{v}");
        assert_eq!(v["agents"], 3, "{v}");
    }
    write(
        root,
        "agents/g/c.md",
        "# C Agent\n\n## Purpose Statement\nC works.\n",
    );
    let v = sync_ok(root, &[]);
    assert_eq!(names(&v, "added"), ["c"], "{v}");
}

/// A registry written by format 1 (everything in `registry.json`) is read, its history
/// is kept for rollback, and the next save writes format 2.
#[test]
fn a_format_1_registry_is_migrated() {
    let d = synced_small_library();
    let root = d.path();
    settle();
    edit_beta(root);
    sync_ok(root, &[]);
    let state = root.join(STATE);
    // Fold the history into the registry as format 1 had it; drop the index.
    let mut reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("registry.json")).unwrap()).unwrap();
    let history: Vec<serde_json::Value> = std::fs::read_to_string(state.join("generations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(history.len(), 2);
    reg["format"] = 1.into();
    reg["generations"] = history.into();
    reg["files"] = serde_json::json!({});
    reg["scanned_at_ns"] = 0.into();
    reg.as_object_mut().unwrap().remove("oldest_generation_ms");
    std::fs::write(state.join("registry.json"), reg.to_string()).unwrap();
    std::fs::remove_file(state.join("generations.jsonl")).unwrap();
    std::fs::remove_file(state.join("index")).unwrap();

    let v = sync_ok(root, &[]);
    assert!(v["written"].as_array().unwrap().is_empty(), "{v}");
    let migrated: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("registry.json")).unwrap()).unwrap();
    assert_eq!(migrated["format"], 2);
    assert!(migrated.get("generations").is_none());
    let out = agents(root, &["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(read(root, ".github/agents/beta.agent.md").contains("Beta builds."));
    let lines = std::fs::read_to_string(state.join("generations.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
}
