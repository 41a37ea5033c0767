//! The `ctxsync` binary in local (embedded) mode, run as real processes on real SQLite
//! files in temporary directories.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use serde_json::{json, Value};

fn ctxsync(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("ctxsync").expect("binary");
    cmd.current_dir(dir)
        .env_remove("CTXSYNC_AGENT")
        .env_remove("CTXSYNC_CONTEXT")
        .env_remove("CTXSYNC_SERVER");
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    ctxsync(dir).args(args).output().expect("run ctxsync")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "ctxsync {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_of(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run(dir, &all);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ctxsync {args:?}: not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn revision(dir: &Path) -> u64 {
    json_of(dir, &["status"])["head"]["revision"]
        .as_u64()
        .expect("revision")
}

fn init(dir: &Path) {
    ok(dir, &["init"]);
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

#[test]
fn init_set_get_pull_history_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    assert!(d.join("ctxsync.toml").is_file());
    assert_eq!(
        ok(d, &["get", "project_state.current_phase"]).trim(),
        "planning"
    );
    ok(
        d,
        &[
            "set",
            "project_state.current_phase",
            "implementation",
            "--agent",
            "planner",
        ],
    );
    ok(
        d,
        &[
            "set",
            "project_state.active_tasks[-]",
            "{id: task-123, status: in_progress, owner: builder}",
        ],
    );
    assert_eq!(
        ok(
            d,
            &["get", "project_state.active_tasks[id=task-123].status"]
        )
        .trim(),
        "in_progress"
    );
    assert_eq!(
        json_of(d, &["get", "/project_state/active_tasks/0/owner"]),
        json!("builder")
    );
    // Commands work from a subdirectory (ctxsync.toml is found by walking up).
    std::fs::create_dir(d.join("sub")).unwrap();
    assert_eq!(
        ok(&d.join("sub"), &["get", "project_state.current_phase"]).trim(),
        "implementation"
    );
    // get of a missing path exits 1.
    assert_eq!(run(d, &["get", "nope"]).status.code(), Some(1));
    let pulled = json_of(d, &["pull", "--sections", "project_state.active_tasks"]);
    assert_eq!(pulled["revision"], 2);
    assert_eq!(
        pulled["document"]["project_state"]["active_tasks"][0]["id"],
        "task-123"
    );
    assert!(pulled["document"].get("decisions_log").is_none());
    let delta = json_of(d, &["pull", "--since", "1"]);
    assert_eq!(delta["revision"], 2);
    assert_eq!(delta["changes"].as_array().unwrap().len(), 1);
    let history = json_of(d, &["history", "--last", "1"]);
    assert_eq!(history[0]["revision"], 2);
    let seed_history = json_of(d, &["sync", "--history", "--last", "10"]);
    assert_eq!(seed_history.as_array().unwrap().len(), 2);
    let by_planner = json_of(d, &["history", "--agent", "planner"]);
    assert_eq!(by_planner.as_array().unwrap().len(), 1);
    assert!(ok(d, &["verify"]).starts_with("ok"));
    let status = json_of(d, &["sync", "--status"]);
    assert_eq!(status["metrics"]["total_syncs_today"], 2);
    assert_eq!(status["metrics"]["by_level"]["checkpoint"], 2);
    // Revert to revision 0 gives back the initial document.
    ok(d, &["revert", "--to", "0"]);
    assert_eq!(
        ok(d, &["get", "project_state.current_phase"]).trim(),
        "planning"
    );
    assert_eq!(revision(d), 3);
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    ok(d, &["set", "x", "1"]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "push".into(),
                "--file".into(),
                write(d, "bad.yaml", "changes: [ {path: x, to: 2")
                    .display()
                    .to_string(),
            ],
            "malformed YAML",
        ),
        (
            vec![
                "push".into(),
                "--file".into(),
                write(d, "op.yaml", "- {op: frobnicate, path: /x}")
                    .display()
                    .to_string(),
            ],
            "unknown op",
        ),
        (vec!["set".into(), "a..b".into(), "1".into()], "bad path"),
        (
            vec![
                "set".into(),
                "missing.field".into(),
                "2".into(),
                "--from".into(),
                "1".into(),
            ],
            "does not exist",
        ),
        (vec!["set".into(), "".into(), "5".into()], "root"),
        (
            vec!["set".into(), "x".into(), "[unclosed".into()],
            "malformed YAML",
        ),
        (
            vec![
                "set".into(),
                "x".into(),
                "2".into(),
                "--level".into(),
                "urgent".into(),
            ],
            "unknown level",
        ),
        (
            vec![
                "get".into(),
                "x".into(),
                "--context".into(),
                "Bad Name".into(),
            ],
            "bad context name",
        ),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(d, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr}"
        );
        assert_eq!(revision(d), 1, "{args:?} changed the revision");
    }
    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path(), &["get", "x"]);
    assert_eq!(out.status.code(), Some(2), "no store yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ctxsync init"));
}

/// The seed's conflict example through working copies: from one base, the planner adds
/// two tasks and the builder completes an existing one; both apply, nothing is lost.
#[test]
fn seed_conflict_example_through_working_copies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    ok(
        d,
        &[
            "set",
            "project_state.active_tasks[-]",
            "{id: task-123, status: in_progress, owner: builder}",
        ],
    );
    ok(d, &["pull", "--agent", "planner"]);
    ok(d, &["pull", "--agent", "builder"]);
    let planner = d.join(".ctxsync/agents/planner/context.yaml");
    let builder = d.join(".ctxsync/agents/builder/context.yaml");

    let mut doc: Value =
        serde_norway::from_str(&std::fs::read_to_string(&planner).unwrap()).unwrap();
    let tasks = doc["project_state"]["active_tasks"].as_array_mut().unwrap();
    tasks.push(json!({"id": "task-125", "status": "todo", "owner": "planner"}));
    tasks.push(json!({"id": "task-126", "status": "todo", "owner": "planner"}));
    std::fs::write(&planner, serde_norway::to_string(&doc).unwrap()).unwrap();

    let mut doc: Value =
        serde_norway::from_str(&std::fs::read_to_string(&builder).unwrap()).unwrap();
    doc["project_state"]["active_tasks"][0]["status"] = json!("completed");
    std::fs::write(&builder, serde_norway::to_string(&doc).unwrap()).unwrap();

    ok(d, &["sync", "--agent", "planner", "--level", "checkpoint"]);
    let report = json_of(d, &["sync", "--level", "checkpoint", "--agent", "builder"]);
    assert_eq!(
        report["syncs"][0]["pushed"]["conflicts"],
        json!([]),
        "{report}"
    );
    let tasks = json_of(d, &["get", "project_state.active_tasks"]);
    let ids: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["task-123", "task-125", "task-126"]);
    assert_eq!(tasks[0]["status"], "completed");
    // The builder's working copy now has the planner's tasks too.
    let merged: Value =
        serde_norway::from_str(&std::fs::read_to_string(&builder).unwrap()).unwrap();
    assert_eq!(
        merged["project_state"]["active_tasks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(revision(d), 3);
}

/// Both agents change the same field from the same base.
#[test]
fn real_conflict_atomic_defer_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let base = revision(d);
    let planner = write(
        d,
        "planner.yaml",
        "- {path: project_state.current_phase, to: design}\n",
    );
    ok(
        d,
        &[
            "push",
            "--file",
            planner.to_str().unwrap(),
            "--agent",
            "planner",
            "--base",
            &base.to_string(),
        ],
    );
    let builder = write(
        d,
        "builder.yaml",
        "- {path: \"communication.notes[-]\", to: started}\n- {path: project_state.current_phase, to: testing}\n",
    );
    let builder = builder.to_str().unwrap();
    let before = revision(d);
    let out = run(
        d,
        &[
            "push",
            "--file",
            builder,
            "--agent",
            "builder",
            "--base",
            &base.to_string(),
            "--strategy",
            "atomic",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["applied"], json!([]));
    let conflict = &answer["conflicts"][0];
    assert_eq!(conflict["reason"], "concurrent_write");
    assert_eq!(conflict["yours"], "testing");
    assert_eq!(conflict["current"], "design");
    assert_eq!(conflict["modified_by"], "planner");
    assert_eq!(conflict["modified_at_revision"], 1);
    assert_eq!(revision(d), before, "atomic applied nothing");

    let out = run(
        d,
        &[
            "push",
            "--file",
            builder,
            "--agent",
            "builder",
            "--base",
            &base.to_string(),
            "--strategy",
            "defer",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["applied"].as_array().unwrap().len(),
        1,
        "the note still applies"
    );
    let open = json_of(d, &["conflicts"]);
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(run(d, &["conflicts"]).status.code(), Some(1));

    ok(d, &["sync", "--resolve-conflicts", "--prefer", "theirs"]);
    assert_eq!(json_of(d, &["conflicts"]), json!([]));
    assert_eq!(
        ok(d, &["get", "project_state.current_phase"]).trim(),
        "design"
    );
    assert_eq!(
        json_of(d, &["get", "communication.notes"]),
        json!(["started"])
    );
}

/// A conflict in a working-copy sync is stored (defer) and settled for "mine".
#[test]
fn working_copy_conflict_resolved_for_mine() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    ok(d, &["pull", "--agent", "builder"]);
    ok(
        d,
        &[
            "set",
            "project_state.current_phase",
            "design",
            "--agent",
            "planner",
        ],
    );
    let file = d.join(".ctxsync/agents/builder/context.yaml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("current_phase: planning", "current_phase: testing");
    std::fs::write(&file, text).unwrap();
    let out = run(d, &["sync", "--agent", "builder"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("yours:   \"testing\"") && stdout.contains("current: \"design\""),
        "{stdout}"
    );
    ok(
        d,
        &[
            "sync",
            "--full",
            "--resolve-conflicts",
            "--prefer",
            "mine",
            "--agent",
            "builder",
        ],
    );
    assert_eq!(
        ok(d, &["get", "project_state.current_phase"]).trim(),
        "testing"
    );
    let wc = std::fs::read_to_string(&file).unwrap();
    assert!(wc.contains("current_phase: testing"), "{wc}");
}

#[test]
fn idempotent_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let file = write(
        d,
        "c.yaml",
        "- {path: \"communication.notes[-]\", to: hello}\n",
    );
    let args = [
        "push",
        "--file",
        file.to_str().unwrap(),
        "--request-id",
        "01JDREQUEST0000000000000001",
    ];
    let first = json_of(d, &args);
    let second = json_of(d, &args);
    assert_eq!(first["replayed"], false);
    assert_eq!(second["replayed"], true);
    assert_eq!(first["revision"], second["revision"]);
    assert_eq!(revision(d), 1);
    assert_eq!(
        json_of(d, &["get", "communication.notes"]),
        json!(["hello"])
    );
}

#[test]
fn ownership_rejects_non_owner_and_applies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "ctxsync.toml",
        "[[ownership]]\npath = \"decisions_log.**\"\nowners = [\"planner\"]\n",
    );
    init(d);
    let file = write(
        d,
        "c.yaml",
        "- {path: \"decisions_log.recent[-]\", to: {id: dec-1, decision: use redis}}\n- {path: project_state.current_phase, to: implementation}\n",
    );
    let out = run(
        d,
        &[
            "push",
            "--file",
            file.to_str().unwrap(),
            "--agent",
            "builder",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["rejected"][0]["reason"], "not_owner");
    assert_eq!(answer["applied"].as_array().unwrap().len(), 1);
    assert_eq!(json_of(d, &["get", "decisions_log.recent"]), json!([]));
    ok(
        d,
        &[
            "push",
            "--file",
            file.to_str().unwrap(),
            "--agent",
            "planner",
        ],
    );
    assert_eq!(
        json_of(d, &["get", "decisions_log.recent[id=dec-1].decision"]),
        json!("use redis")
    );
}

#[test]
fn periodic_level_defers_until_due() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "ctxsync.toml",
        "[periodic]\ninterval_secs = 3600\ntasks = 2\nsize_bytes = 100000\n",
    );
    init(d);
    ok(d, &["pull", "--agent", "builder"]);
    let file = d.join(".ctxsync/agents/builder/context.yaml");
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replacen(from, to, 1);
        std::fs::write(&file, text).unwrap();
    };
    // The first periodic sync flushes (nothing was ever flushed), and starts the clock.
    edit("current_phase: planning", "current_phase: build");
    let first = json_of(d, &["sync", "--agent", "builder", "--level", "periodic"]);
    assert_eq!(first["syncs"][0]["deferred"], false);
    edit("current_phase: build", "current_phase: review");
    let second = json_of(d, &["sync", "--agent", "builder", "--level", "periodic"]);
    assert_eq!(second["syncs"][0]["deferred"], true, "{second}");
    assert_eq!(
        ok(d, &["get", "project_state.current_phase"]).trim(),
        "build"
    );
    let status = json_of(d, &["status"]);
    assert_eq!(status["metrics"]["deferred"], 1);
    assert_eq!(status["working_copies"][0]["pending_changes"], 1);
    // --full flushes regardless.
    ok(
        d,
        &[
            "sync", "--agent", "builder", "--level", "periodic", "--full",
        ],
    );
    assert_eq!(
        ok(d, &["get", "project_state.current_phase"]).trim(),
        "review"
    );
}

/// 4 real processes x 250 increments of one counter, each `set --from <read value>`
/// retried on conflict: no update is lost.
#[test]
fn lost_update_with_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    init(&d);
    ok(&d, &["set", "counter", "0"]);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut conflicts = 0;
                for _ in 0..250 {
                    loop {
                        let value = ok(&d, &["get", "counter"]);
                        let n: u64 = value.trim().parse().expect("counter is a number");
                        let out = run(
                            &d,
                            &[
                                "set",
                                "counter",
                                &(n + 1).to_string(),
                                "--from",
                                &n.to_string(),
                                "--agent",
                                &format!("w{w}"),
                            ],
                        );
                        match out.status.code() {
                            Some(0) => break,
                            Some(1) => conflicts += 1,
                            other => panic!(
                                "set failed with {other:?}: {}",
                                String::from_utf8_lossy(&out.stderr)
                            ),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(ok(&d, &["get", "counter"]).trim(), "1000");
    assert_eq!(
        revision(&d),
        1001,
        "one revision per increment (plus the initial set)"
    );
    assert!(ok(&d, &["verify"]).starts_with("ok"));
    let status = json_of(&d, &["status"]);
    assert_eq!(status["metrics"]["conflicts_last_hour"], conflicts);
}
