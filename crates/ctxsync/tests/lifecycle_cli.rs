//! The context lifecycle (DESIGN §15) through the real CLI, embedded and against a real server: lists
//! kept to their newest entries by automatic and on-demand archival while several
//! processes push, with nothing lost, every archived entry readable, and the history
//! still verifying; and compaction, which a working copy based below the new horizon
//! survives by itself.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{Mode, Project};

both_modes!(
    four_processes_archive_nothing_lost,
    archive_reads_refuse_bad_input,
    a_working_copy_below_the_horizon_recovers,
    a_schema_violation_is_refused_with_the_path,
    status_reports_storage_and_warns,
);

const KEEP: usize = 20;

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// 500 decisions and 300 completed tasks pushed by 4 processes at once (25 pushes each,
/// 5 decisions and 3 tasks a push): the lists end at `keep`, the counters hold the rest,
/// every entry is either in the document or in the archive (exactly once), each archived
/// one can be fetched by id, and `verify` replays the whole history clean.
fn four_processes_archive_nothing_lost(mode: Mode) {
    let p = Project::with_config(mode, &format!("[archive]\nkeep = {KEEP}\n"));
    p.init();
    let p = &p;
    std::thread::scope(|scope| {
        for w in 0..4 {
            scope.spawn(move || {
                for push in 0..25 {
                    let mut changes = String::new();
                    for d in 0..5 {
                        changes.push_str(&format!(
                            "- path: decisions_log.recent[-]\n  to: {{id: d-{w}-{push}-{d}, decision: \"use plan {w}.{push}.{d}\", decided_by: w{w}}}\n"
                        ));
                    }
                    for t in 0..3 {
                        changes.push_str(&format!(
                            "- path: project_state.completed_tasks[-]\n  to: {{id: t-{w}-{push}-{t}, title: \"task {w}.{push}.{t}\"}}\n"
                        ));
                    }
                    let file = p.write(&format!("push-{w}-{push}.yaml"), &changes);
                    let agent = format!("w{w}");
                    p.ok(&["push", "-f", file.to_str().expect("utf-8 path"), "--agent", &agent]);
                }
            });
        }
    });
    // Automatic archival kept the lists near `keep` all along (at most its slack above).
    let doc = p.json(&["pull"])["document"].clone();
    let slack = KEEP / 10;
    assert!(
        ids(&doc["decisions_log"]["recent"]).len() <= KEEP + slack.max(1),
        "{doc}"
    );
    let run = p.json(&["archive", "run"]);
    let doc = p.json(&["pull"])["document"].clone();
    let recent = ids(&doc["decisions_log"]["recent"]);
    let done = ids(&doc["project_state"]["completed_tasks"]);
    assert_eq!(recent.len(), KEEP, "{run}");
    assert_eq!(done.len(), KEEP);
    assert_eq!(doc["decisions_log"]["archived_count"], 500 - KEEP as u64);
    assert_eq!(
        doc["project_state"]["archived_tasks_count"],
        300 - KEEP as u64
    );

    let archive = p.json(&["archive", "list"]);
    let entries = archive["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 800 - 2 * KEEP);
    let mut seen = BTreeSet::new();
    for e in entries {
        let id = e["id"].as_str().expect("archived with its id").to_owned();
        assert!(seen.insert(id.clone()), "{id} archived twice");
    }
    for id in recent.iter().chain(&done) {
        assert!(
            seen.insert(id.clone()),
            "{id} both archived and in the document"
        );
    }
    let expected: BTreeSet<String> = (0..4)
        .flat_map(|w| {
            (0..25).flat_map(move |push| {
                (0..5)
                    .map(move |d| format!("d-{w}-{push}-{d}"))
                    .chain((0..3).map(move |t| format!("t-{w}-{push}-{t}")))
            })
        })
        .collect();
    assert_eq!(
        seen, expected,
        "every pushed entry is kept, and nothing else"
    );

    // Oldest first: the first archived decision is older than the ones still listed.
    let first = &entries[0];
    let got = p.json(&["archive", "get", first["id"].as_str().expect("id")]);
    assert_eq!(got["entry"], first["entry"]);
    let found = p.json(&[
        "archive",
        "search",
        "use plan 3.24",
        "--list",
        "decisions_log.recent",
    ]);
    let found: Vec<String> = found["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        found.iter().all(|id| id.starts_with("d-3-24-")),
        "{found:?}"
    );

    // The rare full read puts every entry back, in order, archive first.
    let full = p.json(&["pull", "--include-archive"]);
    assert_eq!(full["archived_entries_included"], 800 - 2 * KEEP as u64);
    let all = ids(&full["document"]["decisions_log"]["recent"]);
    assert_eq!(all.len(), 500);
    assert_eq!(&all[500 - KEEP..], &recent[..]);

    let verify = p.json(&["verify"]);
    assert_eq!(verify["ok"], true, "{verify}");
    // A second run has nothing to do.
    assert!(p.json(&["archive", "run"])["push"].is_null());
}

/// Bad input to the archive commands is exit 2 with a message; nothing changes.
fn archive_reads_refuse_bad_input(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let before = p.revision();
    for args in [
        vec![
            "archive",
            "list",
            "--list",
            "decisions_log.recent[",
            "--json",
        ],
        vec!["archive", "list", "--limit", "0"],
    ] {
        let out = p.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
    let missing = p.run(&["archive", "get", "no-such-id"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-id"));
    assert_eq!(p.revision(), before);
}

/// A working copy whose base revision was compacted away recovers on its next sync by
/// itself: its edits land (pushed with their field tests) and it is re-based on a fresh
/// pull, and the user is told.
fn a_working_copy_below_the_horizon_recovers(mode: Mode) {
    let p = Project::with_config(mode, "[store]\nretain_revisions = 5\nsnapshot_every = 5\n");
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    for i in 0..80 {
        p.set_as("planner", "project_state.counter", &i.to_string());
    }
    let status = p.json(&["status"]);
    let horizon = status["head"]["horizon"].as_u64().expect("horizon");
    assert!(horizon > 0, "compaction ran: {status}");
    let below = p.run(&["pull", "--since", "0"]);
    assert_eq!(below.status.code(), Some(2), "{below:?}");
    assert!(String::from_utf8_lossy(&below.stderr).contains("horizon"));

    let file = p.path().join(".ctxsync/agents/builder/context.yaml");
    let text = std::fs::read_to_string(&file).expect("working copy");
    std::fs::write(
        &file,
        text.replace("current_phase: planning", "current_phase: build"),
    )
    .expect("edit");
    let out = p.run(&["sync", "--agent", "builder"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("compacted away"), "{said}");
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "build"
    );
    let synced = std::fs::read_to_string(&file).expect("working copy");
    assert!(synced.contains("counter: 79"), "{synced}");
    let again = p.json(&["sync", "--agent", "builder"]);
    assert!(again["syncs"][0].get("rebased_from").is_none(), "{again}");
}

/// With `schema = …` in ctxsync.toml every new revision is validated: a violation is exit
/// 2 naming the instance path and the rule, and nothing is applied.
fn a_schema_violation_is_refused_with_the_path(mode: Mode) {
    let schema = r#"{
        "type": "object",
        "properties": {
            "project_state": {
                "type": "object",
                "properties": {"current_phase": {"enum": ["planning", "build", "review"]}}
            }
        }
    }"#;
    // An absolute path, written before the server (in remote mode) reads its config.
    let schema_dir = tempfile::tempdir().expect("tempdir");
    let schema_file = schema_dir.path().join("context.schema.json");
    std::fs::write(&schema_file, schema).expect("schema");
    let p = Project::with_config(
        mode,
        &format!("schema = {:?}\n", schema_file.display().to_string()),
    );
    p.init();
    p.ok(&["set", "project_state.current_phase", "build"]);
    let before = p.revision();
    let out = p.run(&["set", "project_state.current_phase", "shipping"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("/project_state/current_phase"), "{said}");
    assert!(said.contains("schema"), "{said}");
    assert_eq!(p.revision(), before, "nothing applied");
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "build"
    );
}

/// `status` says what the store takes on disk and warns past `[store] warn_*`.
fn status_reports_storage_and_warns(mode: Mode) {
    let p = Project::with_config(
        mode,
        "[store]\nwarn_context_bytes = 100\n[archive]\nkeep = 1\n",
    );
    p.init();
    for i in 0..4 {
        p.set_as(
            "planner",
            "decisions_log.recent[-]",
            &format!("{{id: d{i}}}"),
        );
    }
    let status = p.json(&["status"]);
    let storage = &status["storage"];
    assert!(
        storage["database_bytes"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert!(
        storage["context"]["archive_entries"].as_u64().unwrap_or(0) >= 2,
        "{status}"
    );
    assert!(
        storage["context"]["log_revisions"].as_u64().unwrap_or(0) >= 4,
        "{status}"
    );
    let text = p.ok(&["status"]);
    assert!(
        text.contains("storage:") && text.contains("warn_context_bytes"),
        "{text}"
    );
}
