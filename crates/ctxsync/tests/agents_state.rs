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

/// The small library in a new folder, synced once. The crash and index tests count
/// writes, so they pin the two VS Code targets (what deploy does is the same for all).
fn synced_small_library() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "ctxsync.toml",
        "[agents]\ntargets = [\"vscode-agent\", \"vscode-prompt\"]\n",
    );
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

/// Every output below `.github` with its bytes.
fn outputs(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    mtimes(&root.join(".github"))
        .into_iter()
        .map(|(p, _)| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// How many paths differ between two sets of outputs (present in one only, or changed).
fn differing(
    a: &std::collections::BTreeMap<String, Vec<u8>>,
    b: &std::collections::BTreeMap<String, Vec<u8>>,
) -> usize {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).count()
}

/// `ctxsync agents <args>` with the test hook that aborts the process (as a crash
/// would) right after the `n`-th output is put in place or removed; it must die so.
fn killed_after(root: &Path, n: usize, args: &[&str]) {
    let out = std::process::Command::new(bin())
        .args(["agents", "--json", "--root"])
        .arg(root)
        .args(args)
        .env("CTXSYNC_TEST_ABORT_AFTER_WRITES", n.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "not killed: {out:?}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(6), "SIGABRT: {out:?}");
    }
}

/// Edits that make the next sync change 8 outputs: beta's and gamma's rewritten,
/// delta's created, alpha's removed.
fn eight_changes(root: &Path) {
    edit_beta(root);
    write(
        root,
        "agents/team/gamma.md",
        "# Gamma Agent\n\n## Purpose Statement\nGamma reviews twice.\n",
    );
    add_delta(root);
    std::fs::remove_dir_all(root.join("agents/team/alpha")).unwrap();
    let (code, v) = agents_json(root, &["sync", "--dry-run"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        (
            v["written"].as_array().unwrap().len(),
            v["deleted"].as_array().unwrap().len()
        ),
        (6, 2),
        "{v}"
    );
}

/// Issue 10, 8b: a sync killed while deploying, then re-run, left `agents rollback`
/// restoring a mixed state: the outputs the dead run had changed were taken as already
/// right and never recorded. Killed part-way, or after its last write but before the
/// registry, then re-run or rolled back directly, rollback restores generation 1 byte
/// for byte; a rollback killed part-way is accounted for the same way.
#[test]
fn a_sync_killed_while_deploying_is_rolled_back_whole() {
    for (case, kill_after, rerun) in [
        ("killed part-way, re-run", 3, true),
        ("killed part-way, rolled back directly", 3, false),
        ("killed after its last write, re-run", 8, true),
    ] {
        let d = synced_small_library();
        let root = d.path();
        let gen1 = outputs(root);
        eight_changes(root);
        killed_after(root, kill_after, &["sync"]);
        // Temp files the dead run staged are left beside the outputs, until the next
        // run that writes removes them.
        let mut dead = outputs(root);
        dead.retain(|p, _| !p.contains("/.ctxsync-tmp"));
        assert_eq!(
            differing(&gen1, &dead),
            kill_after,
            "{case}: the dead run's changes"
        );
        if rerun {
            let v = sync_ok(root, &[]);
            assert_eq!(v["generation"], 2, "{case}: {v}");
            assert!(v["conflicts"].as_array().unwrap().is_empty(), "{case}: {v}");
            assert!(
                names(&v, "warnings").iter().any(|w| w.contains(&format!(
                    "an interrupted run had changed {kill_after} outputs"
                ))),
                "{case}: {v}"
            );
            let gen2 = outputs(root);
            assert_eq!(differing(&gen1, &gen2), 8, "{case}");
            // Nothing left to do, and the fast path is back.
            let v = sync_ok(root, &[]);
            assert!(v["written"].as_array().unwrap().is_empty(), "{case}: {v}");
            assert!(!root.join(STATE).join("pending.json").exists(), "{case}");
        }
        let (code, v) = agents_json(root, &["rollback"]);
        assert_eq!(code, 0, "{case}: {v}");
        assert_eq!(v["to_generation"], 1, "{case}: {v}");
        assert!(v["conflicts"].as_array().unwrap().is_empty(), "{case}: {v}");
        assert!(
            outputs(root) == gen1,
            "{case}: rollback restores generation 1 exactly ({} paths differ)",
            differing(&gen1, &outputs(root))
        );
    }

    // A rollback killed part-way: running it again undoes what the dead one did (the
    // previous generation is the one before it), and generation 1 is still reachable.
    let d = synced_small_library();
    let root = d.path();
    let gen1 = outputs(root);
    eight_changes(root);
    sync_ok(root, &[]);
    let gen2 = outputs(root);
    killed_after(root, 3, &["rollback"]);
    let mut dead = outputs(root);
    dead.retain(|p, _| !p.contains("/.ctxsync-tmp"));
    assert_eq!(differing(&gen2, &dead), 3);
    let (code, v) = agents_json(root, &["rollback"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        (v["from_generation"].as_u64(), v["to_generation"].as_u64()),
        (Some(3), Some(2)),
        "{v}"
    );
    assert_eq!(
        v["warnings"][0],
        "an interrupted rollback run had changed 3 outputs: recorded as generation 3"
    );
    assert!(outputs(root) == gen2, "{v}");
    let (code, v) = agents_json(root, &["rollback", "--to", "1"]);
    assert_eq!(code, 0, "{v}");
    assert!(outputs(root) == gen1, "{v}");
}
