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
