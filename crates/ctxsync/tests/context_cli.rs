//! The `ctxsync` context commands run as real processes on real SQLite files in
//! temporary directories, each case twice: in embedded mode, and in remote mode against
//! a real `ctxsync serve` child on an ephemeral port (same answers, same exit codes), and,
//! with `CTXSYNC_TEST_PG_URL`, twice more on PostgreSQL: embedded, and through two servers
//! sharing one database.

mod support;

use serde_json::{json, Value};
use support::{Mode, Project};

all_modes!(
    init_set_get_pull_history_verify,
    bad_input_exits_2_and_changes_nothing,
    seed_conflict_example_through_working_copies,
    real_conflict_atomic_defer_and_resolve,
    working_copy_conflict_resolved_for_mine,
    idempotent_request_id,
    ownership_rejects_non_owner_and_applies_the_rest,
    periodic_level_defers_until_due,
    lost_update_with_real_processes,
    a_retried_sync_is_a_replay,
);

/// A sync whose answer was lost (the working copy and its base never moved) is retried:
/// the same edits from the same base are the same request, answered `replayed`, with no
/// conflict against itself and no second revision.
fn a_retried_sync_is_a_replay(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    let dir = p.path().join(".ctxsync/agents/builder");
    let file = dir.join("context.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("current_phase: planning", "current_phase: build"),
    )
    .unwrap();
    let before = (
        std::fs::read(&file).unwrap(),
        std::fs::read(dir.join("base.json")).unwrap(),
    );
    let first = p.json(&["sync", "--agent", "builder"]);
    assert_eq!(first["syncs"][0]["pushed"]["revision"], 1, "{first}");
    std::fs::write(&file, &before.0).unwrap();
    std::fs::write(dir.join("base.json"), &before.1).unwrap();
    let again = p.json(&["sync", "--agent", "builder"]);
    let pushed = &again["syncs"][0]["pushed"];
    assert_eq!(pushed["replayed"], true, "{again}");
    assert_eq!(pushed["conflicts"], json!([]));
    assert_eq!(p.revision(), 1);
    assert!(p.json(&["conflicts"]).as_array().unwrap().is_empty());
}

fn init_set_get_pull_history_verify(mode: Mode) {
    let p = Project::new(mode);
    let d = p.path();
    p.init();
    assert!(d.join("ctxsync.toml").is_file());
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "planning"
    );
    p.set_as("planner", "project_state.current_phase", "implementation");
    p.ok(&[
        "set",
        "project_state.active_tasks[-]",
        "{id: task-123, status: in_progress, owner: builder}",
    ]);
    assert_eq!(
        p.ok(&["get", "project_state.active_tasks[id=task-123].status"])
            .trim(),
        "in_progress"
    );
    assert_eq!(
        p.json(&["get", "/project_state/active_tasks/0/owner"]),
        json!("builder")
    );
    // Commands work from a subdirectory (ctxsync.toml is found by walking up).
    std::fs::create_dir(d.join("sub")).unwrap();
    assert_eq!(
        p.ok_in(&d.join("sub"), &["get", "project_state.current_phase"])
            .trim(),
        "implementation"
    );
    // get of a missing path exits 1.
    assert_eq!(p.run(&["get", "nope"]).status.code(), Some(1));
    let pulled = p.json(&["pull", "--sections", "project_state.active_tasks"]);
    assert_eq!(pulled["revision"], 2);
    assert_eq!(
        pulled["document"]["project_state"]["active_tasks"][0]["id"],
        "task-123"
    );
    assert!(pulled["document"].get("decisions_log").is_none());
    let delta = p.json(&["pull", "--since", "1"]);
    assert_eq!(delta["revision"], 2);
    // The task, and the seed's `last_sync` the store stamped with it.
    let paths: Vec<&str> = delta["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{delta}");
    assert!(paths.contains(&"last_sync"), "{delta}");
    // The same delta asked by time: everything after the newest revision made by then.
    let history = p.json(&["history", "--last", "2"]);
    let first_ms = history[1]["timestamp_ms"].as_u64().unwrap();
    let at_first = ctxsync_core::timefmt::rfc3339_millis(first_ms);
    let by_time = p.json(&["pull", "--since", &at_first]);
    assert_eq!(by_time["since"], 1, "{by_time}");
    assert_eq!(by_time["changes"], delta["changes"]);
    let bad = p.run(&["pull", "--since", "yesterday-ish"]);
    assert_eq!(bad.status.code(), Some(2));
    let history = p.json(&["history", "--last", "1"]);
    assert_eq!(history[0]["revision"], 2);
    let seed_history = p.json(&["sync", "--history", "--last", "10"]);
    assert_eq!(seed_history.as_array().unwrap().len(), 2);
    let by_planner = p.json(&["history", "--agent", "planner"]);
    assert_eq!(by_planner.as_array().unwrap().len(), 1);
    assert!(p.ok(&["verify"]).starts_with("ok"));
    let status = p.json(&["sync", "--status"]);
    assert_eq!(status["metrics"]["total_syncs_today"], 2);
    assert_eq!(status["metrics"]["by_level"]["checkpoint"], 2);
    // Revert to revision 0 gives back the initial document.
    p.ok(&["revert", "--to", "0"]);
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "planning"
    );
    assert_eq!(p.revision(), 3);
}

fn bad_input_exits_2_and_changes_nothing(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["set", "x", "1"]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "push".into(),
                "--file".into(),
                p.write("bad.yaml", "changes: [ {path: x, to: 2")
                    .display()
                    .to_string(),
            ],
            "malformed YAML",
        ),
        (
            vec![
                "push".into(),
                "--file".into(),
                p.write("op.yaml", "- {op: frobnicate, path: /x}")
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
        let out = p.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr}"
        );
        assert_eq!(p.revision(), 1, "{args:?} changed the revision");
    }
    // A context that does not exist: no store yet (embedded), unknown on the server
    // (remote); both say how to create it.
    let out = if mode == Mode::Embedded {
        let empty = tempfile::tempdir().unwrap();
        p.run_in(empty.path(), &["get", "x"])
    } else {
        p.run(&["get", "x", "--context", "nope"])
    };
    assert_eq!(out.status.code(), Some(2), "no such context");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ctxsync init"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The seed's conflict example through working copies: from one base, the planner adds
/// two tasks and the builder completes an existing one; both apply, nothing is lost.
fn seed_conflict_example_through_working_copies(mode: Mode) {
    let p = Project::new(mode);
    let d = p.path();
    p.init();
    p.ok(&[
        "set",
        "project_state.active_tasks[-]",
        "{id: task-123, status: in_progress, owner: builder}",
    ]);
    p.ok(&["pull", "--agent", "planner"]);
    p.ok(&["pull", "--agent", "builder"]);
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

    p.ok(&["sync", "--agent", "planner", "--level", "checkpoint"]);
    let report = p.json(&["sync", "--level", "checkpoint", "--agent", "builder"]);
    assert_eq!(
        report["syncs"][0]["pushed"]["conflicts"],
        json!([]),
        "{report}"
    );
    let tasks = p.json(&["get", "project_state.active_tasks"]);
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
    assert_eq!(p.revision(), 3);
}

/// Both agents change the same field from the same base.
fn real_conflict_atomic_defer_and_resolve(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let base = p.revision();
    let planner = p.write(
        "planner.yaml",
        "- {path: project_state.current_phase, to: design}\n",
    );
    p.ok(&[
        "push",
        "--file",
        planner.to_str().unwrap(),
        "--agent",
        "planner",
        "--base",
        &base.to_string(),
    ]);
    let builder = p.write("builder.yaml",
        "- {path: \"communication.notes[-]\", to: started}\n- {path: project_state.current_phase, to: testing}\n",
    );
    let builder = builder.to_str().unwrap();
    let before = p.revision();
    let base = base.to_string();
    let push = |strategy: &str| {
        p.run(&[
            "push",
            "--file",
            builder,
            "--agent",
            "builder",
            "--base",
            &base,
            "--strategy",
            strategy,
            "--json",
        ])
    };
    let out = push("atomic");
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["applied"], json!([]));
    let conflict = &answer["conflicts"][0];
    assert_eq!(conflict["reason"], "concurrent_write");
    assert_eq!(conflict["yours"], "testing");
    assert_eq!(conflict["current"], "design");
    assert_eq!(conflict["modified_by"], "planner");
    assert_eq!(conflict["modified_at_revision"], 1);
    assert_eq!(p.revision(), before, "atomic applied nothing");

    let out = push("defer");
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["applied"].as_array().unwrap().len(),
        1,
        "the note still applies"
    );
    let open = p.json(&["conflicts"]);
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(p.run(&["conflicts"]).status.code(), Some(1));

    // Only the agent whose push conflicted (or an admin) may settle it.
    p.ok(&[
        "sync",
        "--resolve-conflicts",
        "--prefer",
        "theirs",
        "--agent",
        "builder",
    ]);
    assert_eq!(p.json(&["conflicts"]), json!([]));
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "design"
    );
    assert_eq!(p.json(&["get", "communication.notes"]), json!(["started"]));
}

/// A conflict in a working-copy sync is stored (defer) and settled for "mine".
fn working_copy_conflict_resolved_for_mine(mode: Mode) {
    let p = Project::new(mode);
    let d = p.path();
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    p.set_as("planner", "project_state.current_phase", "design");
    let file = d.join(".ctxsync/agents/builder/context.yaml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("current_phase: planning", "current_phase: testing");
    std::fs::write(&file, text).unwrap();
    let out = p.run(&["sync", "--agent", "builder"]);
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
    p.ok(&[
        "sync",
        "--full",
        "--resolve-conflicts",
        "--prefer",
        "mine",
        "--agent",
        "builder",
    ]);
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "testing"
    );
    let wc = std::fs::read_to_string(&file).unwrap();
    assert!(wc.contains("current_phase: testing"), "{wc}");
}

fn idempotent_request_id(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let file = p.write(
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
    let first = p.json(&args);
    let second = p.json(&args);
    assert_eq!(first["replayed"], false);
    assert_eq!(second["replayed"], true);
    assert_eq!(first["revision"], second["revision"]);
    assert_eq!(p.revision(), 1);
    assert_eq!(p.json(&["get", "communication.notes"]), json!(["hello"]));
}

fn ownership_rejects_non_owner_and_applies_the_rest(mode: Mode) {
    let p = Project::with_config(
        mode,
        "[[ownership]]\npath = \"decisions_log.**\"\nowners = [\"planner\"]\n",
    );
    p.init();
    let file = p.write("c.yaml",
        "- {path: \"decisions_log.recent[-]\", to: {id: dec-1, decision: use redis}}\n- {path: project_state.current_phase, to: implementation}\n",
    );
    let out = p.run(&[
        "push",
        "--file",
        file.to_str().unwrap(),
        "--agent",
        "builder",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["rejected"][0]["reason"], "not_owner");
    assert_eq!(answer["applied"].as_array().unwrap().len(), 1);
    assert_eq!(p.json(&["get", "decisions_log.recent"]), json!([]));
    p.ok(&[
        "push",
        "--file",
        file.to_str().unwrap(),
        "--agent",
        "planner",
    ]);
    assert_eq!(
        p.json(&["get", "decisions_log.recent[id=dec-1].decision"]),
        json!("use redis")
    );
}

fn periodic_level_defers_until_due(mode: Mode) {
    let p = Project::with_config(
        mode,
        "[periodic]\ninterval_secs = 3600\ntasks = 2\nsize_bytes = 100000\n",
    );
    let d = p.path();
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    let file = d.join(".ctxsync/agents/builder/context.yaml");
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replacen(from, to, 1);
        std::fs::write(&file, text).unwrap();
    };
    // The first periodic sync flushes (nothing was ever flushed), and starts the clock.
    edit("current_phase: planning", "current_phase: build");
    let first = p.json(&["sync", "--agent", "builder", "--level", "periodic"]);
    assert_eq!(first["syncs"][0]["deferred"], false);
    edit("current_phase: build", "current_phase: review");
    let second = p.json(&["sync", "--agent", "builder", "--level", "periodic"]);
    assert_eq!(second["syncs"][0]["deferred"], true, "{second}");
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "build"
    );
    let status = p.json(&["status"]);
    assert_eq!(status["metrics"]["deferred"], 1);
    assert_eq!(status["working_copies"][0]["pending_changes"], 1);
    // --full flushes regardless.
    p.ok(&[
        "sync", "--agent", "builder", "--level", "periodic", "--full",
    ]);
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "review"
    );
}

/// 4 real processes x 250 increments of one counter, each `set --from <read value>`
/// retried on conflict: no update is lost.
fn lost_update_with_real_processes(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["set", "counter", "0"]);
    let p = &p;
    let conflicts: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                scope.spawn(move || {
                    let mut conflicts = 0;
                    for _ in 0..250 {
                        loop {
                            let value = p.ok(&["get", "counter"]);
                            let n: u64 = value.trim().parse().expect("counter is a number");
                            let out = p.run(&[
                                "set",
                                "counter",
                                &(n + 1).to_string(),
                                "--from",
                                &n.to_string(),
                                "--agent",
                                &format!("w{w}"),
                            ]);
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
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(p.ok(&["get", "counter"]).trim(), "1000");
    assert_eq!(
        p.revision(),
        1001,
        "one revision per increment (plus the initial set)"
    );
    assert!(p.ok(&["verify"]).starts_with("ok"));
    let status = p.json(&["status"]);
    assert_eq!(status["metrics"]["conflicts_last_hour"], conflicts);
}
