//! The hardening classes as a user meets them through the CLI, embedded and remote: the
//! right exit code and message, and nothing changed.

mod support;

use support::{Mode, Project};

const BOTH: [Mode; 2] = [Mode::Embedded, Mode::Remote];

#[test]
fn a_null_value_keeps_the_context_usable() {
    for mode in BOTH {
        let mut p = Project::new(mode);
        p.init();
        p.set_as("builder", "project_state.current_phase", "null");
        assert_eq!(
            p.ok(&["get", "project_state.current_phase", "--json"])
                .trim(),
            "null",
            "{mode:?}"
        );
        p.ok(&["verify"]);
        if let Some(server) = p.server.as_mut() {
            // After a restart the server reads the op log back from disk.
            server.restart();
        }
        p.ok(&["get", "project_state.current_phase"]);
        p.ok(&["verify"]);
        p.ok(&["revert", "--to", "0", "--agent", "builder"]);
        assert_eq!(
            p.ok(&["get", "project_state.current_phase", "--json"])
                .trim(),
            "\"planning\"",
            "{mode:?}"
        );
    }
}

#[test]
fn nan_and_deep_paths_are_input_errors() {
    for mode in BOTH {
        let p = Project::new(mode);
        p.init();
        let before = p.revision();
        for args in [
            vec!["set", "project_state.x", ".nan", "--agent", "builder"],
            vec!["set", "project_state.x", ".inf", "--agent", "builder"],
        ] {
            let out = p.run(&args);
            assert_eq!(out.status.code(), Some(2), "{mode:?} {args:?}: {out:?}");
        }
        let deep = vec!["a"; 5000].join(".");
        let out = p.run(&["set", &deep, "1", "--agent", "builder"]);
        assert_eq!(out.status.code(), Some(2), "{mode:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).len() < 2000,
            "the error does not echo the whole path"
        );
        assert_eq!(p.revision(), before, "{mode:?}");
    }
}

#[test]
fn a_bad_agent_name_is_refused_in_embedded_mode() {
    let p = Project::new(Mode::Embedded);
    p.init();
    let out = p.run(&[
        "set",
        "project_state.current_phase",
        "x",
        "--agent",
        "../../x",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(p.revision(), 0);
}

#[test]
fn a_revert_by_a_non_owner_changes_nothing() {
    let config = "[[ownership]]\npath = \"decisions_log.**\"\nowners = [\"planner\"]\n";
    for mode in BOTH {
        let p = Project::with_config(mode, config);
        p.init();
        p.set_as(
            "planner",
            "decisions_log.recent[-]",
            "{id: d1, decision: use sqlite}",
        );
        let out = p.run(&["revert", "--to", "0", "--agent", "builder"]);
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("refused"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(p.revision(), 1, "{mode:?}");
        p.ok(&["revert", "--to", "0", "--agent", "planner"]);
        assert_eq!(p.revision(), 2, "{mode:?}");
    }
}

#[test]
fn a_working_copy_sync_of_a_null_value_verifies() {
    for mode in BOTH {
        let p = Project::new(mode);
        p.init();
        p.ok(&["pull", "--agent", "builder"]);
        let wc = p.path().join(".ctxsync/agents/builder/context.yaml");
        let text = std::fs::read_to_string(&wc).unwrap();
        let edited = text.replacen("current_phase: planning", "current_phase: null", 1);
        assert_ne!(edited, text, "the seed template has a current_phase");
        std::fs::write(&wc, edited).unwrap();
        p.ok(&["sync", "--agent", "builder", "--level", "checkpoint"]);
        assert_eq!(p.revision(), 1, "{mode:?}");
        p.ok(&["verify"]);
        assert_eq!(
            p.ok(&["get", "project_state.current_phase", "--json"])
                .trim(),
            "null"
        );
    }
}

#[test]
fn an_admin_revert_brings_back_a_context_whose_newest_row_is_unreadable() {
    let p = Project::new(Mode::Embedded);
    p.init();
    p.set_as("builder", "project_state.current_phase", "one");
    p.set_as("builder", "project_state.current_phase", "two");
    let db = p.path().join(".ctxsync/ctxsync.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE oplog SET edits = '{garbage' WHERE revision = 2", [])
        .unwrap();
    let out = p.run(&["get", "project_state.current_phase"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revision 2"),
        "{out:?}"
    );
    let out = p.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    p.ok(&["revert", "--to", "1", "--admin", "--agent", "ops"]);
    assert_eq!(p.ok(&["get", "project_state.current_phase"]).trim(), "one");
    p.set_as("builder", "project_state.current_phase", "three");
}

#[test]
fn strings_full_of_brackets_written_over_several_pushes_still_sync() {
    for mode in BOTH {
        let p = Project::new(mode);
        p.init();
        let brackets = format!("'{}'", "[".repeat(300));
        p.set_as("builder", "communication.a", &brackets);
        p.set_as("builder", "communication.b", &brackets);
        p.ok(&["pull", "--agent", "builder"]);
        let wc = p.path().join(".ctxsync/agents/builder/context.yaml");
        let text = std::fs::read_to_string(&wc).unwrap();
        std::fs::write(
            &wc,
            text.replacen("current_phase: planning", "current_phase: review", 1),
        )
        .unwrap();
        p.ok(&["sync", "--agent", "builder", "--level", "checkpoint"]);
        assert_eq!(
            p.ok(&["get", "project_state.current_phase"]).trim(),
            "review",
            "{mode:?}"
        );
    }
}
