//! `ctxsync session start|end` and `ctxsync watch` as real processes, in embedded and in
//! remote mode.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{eventually, Mode, Project};

both_modes!(
    session_start_and_end,
    watch_pushes_edits_and_merges_others,
    watch_keeps_held_back_edits_while_merging_others,
    watch_writes_a_deleted_working_copy_again,
);

fn edit(file: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    // Write through a temp file and a rename, as editors do.
    let tmp = file.with_extension("yaml.tmp");
    std::fs::write(&tmp, text.replacen(from, to, 1)).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

fn session_start_and_end(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let started = p.json(&["session", "start", "--agent", "builder"]);
    assert_eq!(started["verified"], true, "{started}");
    assert_eq!(started["revision"], 0);
    let file = p.path().join(".ctxsync/agents/builder/context.yaml");
    edit(&file, "current_phase: planning", "current_phase: build");
    let ended = p.json(&["session", "end", "--agent", "builder"]);
    assert_eq!(ended["sync"]["pushed"]["revision"], 1, "{ended}");
    assert_eq!(ended["snapshot"]["revision"], 1);
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "build"
    );
    // A session level sync counts as such in the metrics.
    let status = p.json(&["status"]);
    assert_eq!(status["metrics"]["by_level"]["session"], 1, "{status}");
    // Starting again re-pulls and verifies.
    let again = p.json(&["session", "start", "--agent", "builder"]);
    assert_eq!(again["revision"], 1);
    // Ending a session that never started is an input error.
    assert_eq!(
        p.run(&["session", "end", "--agent", "nobody"])
            .status
            .code(),
        Some(2)
    );
}

fn watch_pushes_edits_and_merges_others(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let mut watch = p.spawn(&["watch", "--agent", "builder", "--debounce-ms", "100"]);
    let file = p.path().join(".ctxsync/agents/builder/context.yaml");
    assert!(
        eventually(Duration::from_secs(30), || file.is_file()),
        "watch did not write the working copy"
    );
    // A blocked task is critical: pushed at once.
    edit(
        &file,
        "blocked_tasks: []",
        "blocked_tasks:\n  - {id: t1, reason: waiting for the API key}",
    );
    let pushed = eventually(Duration::from_secs(30), || {
        p.try_json(&["get", "project_state.blocked_tasks[id=t1].reason"])
            == Some(json!("waiting for the API key"))
    });
    // Another agent's change reaches the working copy without any command.
    p.set_as("planner", "project_state.current_phase", "review");
    let merged = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&file)
            .map(|t| t.contains("current_phase: review"))
            .unwrap_or(false)
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(pushed, "the critical edit was not pushed");
    assert!(
        merged,
        "the remote revision was not merged into the working copy"
    );
    let history = p.json(&["history", "--agent", "builder"]);
    assert_eq!(history[0]["level"], "critical", "{history}");
}

/// A periodic edit that is not due stays in the working copy (and off the server) while
/// others' revisions are merged into the file around it.
fn watch_keeps_held_back_edits_while_merging_others(mode: Mode) {
    let p = Project::with_config(
        mode,
        "[periodic]\ninterval_secs = 3600\ntasks = 100\nsize_bytes = 1000000\n",
    );
    p.init();
    let (mut watch, log) = p.spawn_logged(&[
        "watch",
        "--agent",
        "builder",
        "--debounce-ms",
        "100",
        "--json",
    ]);
    let file = p.path().join(".ctxsync/agents/builder/context.yaml");
    assert!(eventually(Duration::from_secs(30), || file.is_file()));
    // The first periodic sync is due (nothing was ever flushed); it starts the clock.
    edit(&file, "notes: []", "notes:\n  - first");
    let flushed = eventually(Duration::from_secs(30), || {
        p.try_json(&["get", "communication.notes"]) == Some(json!(["first"]))
    });
    edit(&file, "  - first", "  - first\n  - second");
    std::thread::sleep(Duration::from_millis(600)); // let the watch see and hold it
    p.set_as("planner", "project_state.current_phase", "review");
    let merged = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&file)
            .map(|t| t.contains("current_phase: review") && t.contains("- second"))
            .unwrap_or(false)
    });
    watch.kill();
    let log = log.text();
    assert!(flushed, "the first periodic edit was not flushed: {log}");
    assert!(
        merged,
        "the remote change was not merged around the held-back edit: {log}\n{}",
        std::fs::read_to_string(&file).unwrap_or_default()
    );
    assert_eq!(p.json(&["get", "communication.notes"]), json!(["first"]));
}

/// The working copy deleted under a running watch, first the file, then its whole
/// folder: watch writes it again, says so, and keeps syncing edits made to the new one.
fn watch_writes_a_deleted_working_copy_again(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let (mut watch, log) = p.spawn_logged(&["watch", "--agent", "builder", "--debounce-ms", "100"]);
    let folder = p.path().join(".ctxsync/agents/builder");
    let file = folder.join("context.yaml");
    assert!(
        eventually(Duration::from_secs(30), || log.count("watching") == 1),
        "watch did not start: {}",
        log.text()
    );
    std::fs::remove_file(&file).unwrap();
    let rewritten = eventually(Duration::from_secs(30), || {
        file.is_file() && log.count("was deleted; wrote it again") == 1
    });
    // Others' revisions still reach it.
    p.set_as("planner", "project_state.current_phase", "review");
    let merged = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("current_phase: review"))
    });
    // Gone at once (a `rm -rf` racing with the watch may meet the files it writes).
    let gone = p.path().join(".ctxsync/gone");
    std::fs::rename(&folder, &gone).unwrap();
    std::fs::remove_dir_all(&gone).unwrap();
    let recreated = eventually(Duration::from_secs(30), || {
        folder.join("base.json").is_file() && log.count("was deleted; wrote it again") == 2
    });
    // The new folder is watched: an edit there is pushed.
    if recreated {
        edit(&file, "current_phase: review", "current_phase: ship");
    }
    let pushed = recreated
        && eventually(Duration::from_secs(30), || {
            p.try_json(&["get", "project_state.current_phase"]) == Some(json!("ship"))
        });
    watch.kill();
    let log = log.text();
    assert!(rewritten, "the deleted file was not written again: {log}");
    assert!(
        merged,
        "others' revision did not reach the rewritten file: {log}"
    );
    assert!(recreated, "the deleted folder was not written again: {log}");
    assert!(
        pushed,
        "an edit of the recreated file was not pushed: {log}"
    );
}
