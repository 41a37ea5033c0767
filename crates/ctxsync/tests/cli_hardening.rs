//! What a careless user or a hostile input does to the CLI (issue 10, items 9 and 10):
//! closed pipes, bytes that are not UTF-8, byte order marks, commands that have to guess
//! the agent, sections that do not exist, and how times, counts and refusals read. Real
//! processes, real files, and in remote mode a real server.

#[path = "agents_common.rs"]
mod agents_common;
mod support;

use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::{Mode, Project};

both_modes!(
    bytes_that_are_not_utf8_are_exit_2_and_change_nothing,
    a_byte_order_mark_is_ignored_everywhere,
    ctxsync_agent_does_not_turn_pull_into_a_working_copy_write,
    pull_of_a_section_that_does_not_exist_is_exit_1,
    history_prints_rfc3339_times,
    counts_are_pluralised,
    a_deleted_working_copy_file_is_named_and_pulled_again,
    a_sync_leaves_a_file_alone_when_the_merge_changes_nothing_in_it,
    numbers_json_cannot_hold_are_refused_not_stored_as_null,
);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `args` run as `agent` (in remote mode with that agent's token, which the harness
/// would otherwise pick from `--agent`).
fn run_as(p: &Project, agent: &str, args: &[&str]) -> Output {
    let mut cmd = p.cmd(args);
    if let Some(server) = &p.server {
        cmd.env("CTXSYNC_TOKEN", server.token(agent));
    }
    cmd.output().expect("run ctxsync")
}

/// `args` with `input` on standard input.
fn run_with_stdin(p: &Project, args: &[&str], input: &[u8]) -> Output {
    p.cmd(args)
        .write_stdin(input.to_vec())
        .output()
        .expect("run ctxsync")
}

fn bin() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ctxsync"));
    for var in [
        "CTXSYNC_AGENT",
        "CTXSYNC_CONTEXT",
        "CTXSYNC_SERVER",
        "CTXSYNC_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `args` in `dir` with standard output a pipe whose reading end is already
/// closed, so the first write fails with EPIPE whatever the size of the output.
fn run_into_closed_pipe(dir: &std::path::Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    bin()
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run ctxsync")
}

#[test]
fn a_reader_that_goes_away_ends_every_command_quietly() {
    let p = Project::new(Mode::Embedded);
    p.init();
    // Enough output that no pipe buffer could take it all.
    let notes: Vec<Value> = (0..2000)
        .map(|i| json!({"path": "communication.notes[-]", "to": format!("note {i} {}", "x".repeat(80))}))
        .collect();
    let file = p.write("notes.json", &serde_json::to_string(&notes).unwrap());
    p.ok(&["push", "--file", file.to_str().unwrap()]);
    p.ok(&["pull", "--agent", "builder"]);
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["pull"],
        &["pull", "--json"],
        &["pull", "--since", "0"],
        &["get", "communication.notes"],
        &["get", "communication.notes", "--json"],
        &["history"],
        &["history", "--json"],
        &["conflicts"],
        &["verify"],
        &["set", "x", "1", "--agent", "cli"],
        &["sync", "--agent", "builder"],
        &["agents", "log"],
        &["agents", "check"],
        &["--help"],
        &["pull", "--help"],
    ];
    for args in commands {
        let out = run_into_closed_pipe(p.path(), args);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} should end quietly: {err}");
    }
    // The write that met the closed pipe came after the work: `set` was committed.
    assert_eq!(p.ok(&["get", "x"]).trim(), "1");
    // A real `ctxsync status | head -1`, reading one line and closing.
    let mut child = bin()
        .current_dir(p.path())
        .args(["pull"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("# context default"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn an_output_that_cannot_be_written_is_exit_3_with_a_message() {
    let p = Project::new(Mode::Embedded);
    p.init();
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("SKIPPED: no /dev/full on this system");
        return;
    };
    let out = bin()
        .current_dir(p.path())
        .args(["pull"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write to standard output"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

fn bytes_that_are_not_utf8_are_exit_2_and_change_nothing(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    let before = p.revision();
    let bad: &[u8] = b"- {path: x, to: \"caf\xe9\"}\n";
    let out = run_with_stdin(&p, &["push", "--file", "-"], bad);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("standard input: not UTF-8 text (invalid byte at offset 20)"),
        "{}",
        stderr(&out)
    );
    let file = p.path().join("latin1.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = p.run(&["push", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not UTF-8 text"), "{}", stderr(&out));
    // A working copy saved in another encoding.
    let wc = p.path().join(".ctxsync/agents/builder/context.yaml");
    let mut text = std::fs::read(&wc).unwrap();
    text.extend_from_slice(b"extra: \"\xff\"\n");
    std::fs::write(&wc, &text).unwrap();
    let out = p.run(&["sync", "--agent", "builder"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not UTF-8 text"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&wc).unwrap(),
        text,
        "the working copy is untouched"
    );
    assert_eq!(p.revision(), before);
}

fn a_byte_order_mark_is_ignored_everywhere(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let yaml = p.write(
        "bom.yaml",
        "\u{feff}- {path: project_state.current_phase, to: build}\n",
    );
    p.ok(&["push", "--file", yaml.to_str().unwrap()]);
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "build"
    );
    let json_file = p.write(
        "bom.json",
        "\u{feff}{\"changes\": [{\"path\": \"counter\", \"to\": 1}]}",
    );
    p.ok(&["push", "--file", json_file.to_str().unwrap()]);
    assert_eq!(p.json(&["get", "counter"]), json!(1));
    let out = run_with_stdin(
        &p,
        &["push", "--file", "-"],
        "\u{feff}- {path: counter, to: 2}\n".as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(p.json(&["get", "counter"]), json!(2));
    // A value on the command line, pasted from such a file.
    p.ok(&["set", "counter", "\u{feff}3"]);
    assert_eq!(p.json(&["get", "counter"]), json!(3));
    // A working copy saved by an editor that writes one.
    p.ok(&["pull", "--agent", "builder"]);
    let wc = p.path().join(".ctxsync/agents/builder/context.yaml");
    let text = std::fs::read_to_string(&wc).unwrap();
    std::fs::write(
        &wc,
        format!(
            "\u{feff}{}",
            text.replace("current_phase: build", "current_phase: review")
        ),
    )
    .unwrap();
    let report = p.json(&["sync", "--agent", "builder"]);
    assert_eq!(report["syncs"][0]["local_changes"], 1, "{report}");
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "review"
    );
    // ctxsync.toml too.
    std::fs::write(
        p.path().join("ctxsync.toml"),
        "\u{feff}context = \"default\"\n",
    )
    .unwrap();
    assert_eq!(p.json(&["get", "counter"]), json!(3));
}

fn edit_phase(p: &Project, agent: &str, to: &str) {
    let wc = p
        .path()
        .join(format!(".ctxsync/agents/{agent}/context.yaml"));
    let text = std::fs::read_to_string(&wc).unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();
    let from = doc["project_state"]["current_phase"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(
        &wc,
        text.replace(
            &format!("current_phase: {from}"),
            &format!("current_phase: {to}"),
        ),
    )
    .unwrap();
}

/// Embedded mode: no token names the agent, so a working-copy command picks the only
/// working copy or lists them (remote mode: `the_token_names_the_agent_in_remote_mode`).
#[test]
fn sync_without_an_agent_uses_the_only_working_copy_or_says_how_to_choose() {
    let p = Project::new(Mode::Embedded);
    p.init();
    // No working copy at all: nothing to guess from.
    let out = p.run(&["sync"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("no working copy"), "{}", stderr(&out));
    let out = p.run(&["watch"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--agent"), "{}", stderr(&out));

    p.ok(&["pull", "--agent", "builder"]);
    edit_phase(&p, "builder", "build");
    let out = run_as(&p, "builder", &["sync", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["syncs"][0]["agent"], "builder", "{report}");
    assert_eq!(report["syncs"][0]["local_changes"], 1, "{report}");
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "build"
    );
    // `session end` finds it too.
    let out = run_as(&p, "builder", &["session", "end", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));

    p.ok(&["pull", "--agent", "planner"]);
    edit_phase(&p, "planner", "review");
    for args in [
        &["sync"][..],
        &["sync", "--full"],
        &["watch"],
        &["session", "start"],
    ] {
        let out = p.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for needed in [
            "2 working copies",
            "builder, planner",
            "--agent",
            "CTXSYNC_AGENT",
            "agent = ",
        ] {
            assert!(err.contains(needed), "{args:?}: {needed:?} not in {err}");
        }
    }
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "build",
        "nothing was pushed"
    );
    // Settling conflicts needs no working copy: all of them, none synced.
    assert_eq!(
        p.ok(&["sync", "--resolve-conflicts"]).trim(),
        "nothing to sync"
    );
    // Named by the environment or by ctxsync.toml: no guessing needed.
    let out = run_as(&p, "planner", &["sync"]);
    assert_eq!(out.status.code(), Some(2));
    let mut cmd = p.cmd(&["sync"]);
    cmd.env("CTXSYNC_AGENT", "planner");
    if let Some(server) = &p.server {
        cmd.env("CTXSYNC_TOKEN", server.token("planner"));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        p.ok(&["get", "project_state.current_phase"]).trim(),
        "review"
    );
}

fn ctxsync_agent_does_not_turn_pull_into_a_working_copy_write(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let out = p
        .cmd(&["pull", "--sections", "project_state", "--json"])
        .env("CTXSYNC_AGENT", "builder")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pulled: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&String> = pulled["document"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["project_state"], "{pulled}");
    assert!(!p.path().join(".ctxsync/agents/builder").exists());
    // The flag does write it, and refuses options a working copy cannot honour.
    let out = p.run(&["pull", "--agent", "builder", "--sections", "project_state"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
    assert!(!p.path().join(".ctxsync/agents/builder").exists());
    p.ok(&["pull", "--agent", "builder"]);
    assert!(p
        .path()
        .join(".ctxsync/agents/builder/context.yaml")
        .is_file());
}

fn pull_of_a_section_that_does_not_exist_is_exit_1(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["set", "project_state.current_phase", "build"]);
    for args in [
        &["pull", "--sections", "nosuch"][..],
        &["pull", "--sections", "project_state,nosuch", "--json"],
        &["pull", "--since", "0", "--sections", "nosuch"],
    ] {
        let out = p.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("no section nosuch"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // A section that exists, or existed at --since, is fine.
    p.ok(&["pull", "--sections", "project_state"]);
    p.ok(&["set", "gone", "1"]);
    let rev = p.revision().to_string();
    let file = p.write("rm.yaml", "- {path: gone, from: 1, remove: true}\n");
    p.ok(&["push", "--file", file.to_str().unwrap()]);
    let delta = p.json(&["pull", "--since", &rev, "--sections", "gone"]);
    assert_eq!(delta["changes"].as_array().unwrap().len(), 1, "{delta}");
}

/// `2024-03-01T00:00:00.123Z`.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit())
}

fn history_prints_rfc3339_times(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["set", "x", "1", "--agent", "planner"]);
    let out = p.ok(&["history"]);
    let line = out.lines().next().unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "r1", "{line}");
    assert!(is_rfc3339_utc(fields[1]), "{line}");
    assert_eq!(&fields[2..4], ["planner", "[checkpoint]"], "{line}");
    // The change, and the seed's `last_sync` the store stamps in the same revision.
    assert!(line.ends_with(" (2 edits)"), "{line}");
    let json = p.json(&["history"]);
    let entry = &json[0];
    assert!(entry["timestamp_ms"].is_u64(), "{entry}");
    assert!(is_rfc3339_utc(entry["time"].as_str().unwrap()), "{entry}");
    let via_sync = p.json(&["sync", "--history"]);
    assert_eq!(via_sync[0]["time"], entry["time"]);
}

fn counts_are_pluralised(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    let out = p.ok(&["set", "x", "1"]);
    assert!(
        out.contains(": 1 applied, 0 conflicts, 0 rejected"),
        "{out}"
    );
    let out = p.run(&["set", "x", "3", "--from", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(" 1 conflict, "), "{}", stdout(&out));
    let out = p.ok(&["verify"]);
    assert!(out.starts_with("ok: 1 revision replayed"), "{out}");
    p.ok(&["pull", "--agent", "builder"]);
    edit_phase(&p, "builder", "build");
    let out = p.ok(&["status"]);
    assert!(
        out.contains("agent builder: base revision 1, 1 unsynced change\n"),
        "{out}"
    );
    let out = run_as(&p, "builder", &["sync", "--agent", "builder"]);
    assert!(
        stdout(&out).contains("builder: pushed 1 change: "),
        "{}",
        stdout(&out)
    );
    let out = p.ok(&["status"]);
    assert!(!out.contains("(s)"), "{out}");
    // The summary the store gives a push without one is stored data: worded right too.
    let out = p.ok(&["history", "--last", "5"]);
    assert!(!out.contains("(s)"), "{out}");
}

#[test]
fn every_option_has_help_and_strategy_shows_its_default() {
    let p = Project::new(Mode::Embedded);
    let help = p.ok(&["push", "--help"]);
    for needed in [
        "YAML or JSON file of changes",
        "What the push is for",
        "[default: merge]",
        "[default: checkpoint]",
    ] {
        assert!(help.contains(needed), "{needed:?} not in {help}");
    }
    let help = p.ok(&["sync", "--help"]);
    assert!(help.contains("[default: defer]"), "{help}");
    let help = p.ok(&["set", "--help"]);
    assert!(help.contains("appends to a list"), "{help}");
    let help = p.ok(&["session", "start", "--help"]);
    assert!(help.contains("The agent whose session starts"), "{help}");
}

#[test]
fn remote_refusals_say_what_they_are() {
    let p = Project::new(Mode::Remote);
    p.init();
    let out = p
        .cmd(&["get", "project_state"])
        .env("CTXSYNC_TOKEN", "not-a-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unauthorized: "), "{}", stderr(&out));
    // The builder's token pushing as the planner.
    let out = run_as(&p, "builder", &["set", "x", "1", "--agent", "planner"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("forbidden: "), "{}", stderr(&out));
    // A 400 from the server is not "invalid request: invalid request: ...".
    let out = p.run(&["set", "", "5"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("invalid request: invalid request"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("invalid request: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.revision(), 0);
}

/// The file of a working copy deleted by hand (its base is still there): `sync` says what
/// happened and how to get it back (exit 2, not an I/O failure), and `pull --agent` and
/// `session start` write it again without asking for --force.
fn a_deleted_working_copy_file_is_named_and_pulled_again(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    let file = p.path().join(".ctxsync/agents/builder/context.yaml");
    std::fs::remove_file(&file).unwrap();
    let out = p.run(&["sync", "--agent", "builder"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is gone: `ctxsync pull --agent builder` writes it again"),
        "{}",
        stderr(&out)
    );
    p.ok(&["pull", "--agent", "builder"]);
    assert!(file.is_file());
    std::fs::remove_file(&file).unwrap();
    p.ok(&["session", "start", "--agent", "builder"]);
    assert!(file.is_file());
    assert_eq!(p.revision(), 0);
}

/// "wrote 1 file", not "wrote 1 files".
#[test]
fn agents_sync_counts_read_right() {
    let Some(lib) = agents_common::fixture_copy() else {
        return;
    };
    let root = lib.path();
    // One output per agent changes with its entry file: the VS Code agent (a skill would
    // be a second one).
    std::fs::write(
        root.join("ctxsync.toml"),
        "[agents]\ntargets = [\"vscode-agent\", \"vscode-prompt\"]\n",
    )
    .unwrap();
    let first = agents_common::agents(root, &["sync"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let entry = root.join("agents/development/backend-engineer.md");
    let text = std::fs::read_to_string(&entry).unwrap();
    std::fs::write(&entry, format!("{text}\none more line\n")).unwrap();
    let out = agents_common::agents(root, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout(&out);
    assert!(
        summary.contains("(1 rendered): 0 added, 1 updated, 0 removed; wrote 1 file, removed 0"),
        "{summary}"
    );
}

/// After a sync whose merge brings nothing new into the file, the file is not rewritten
/// (so an editor saving meanwhile cannot lose to it, and the agent's own layout and
/// comments stay); only the base moves. A revision by another agent is merged in.
fn a_sync_leaves_a_file_alone_when_the_merge_changes_nothing_in_it(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    let file = p.path().join(".ctxsync/agents/builder/context.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "current_phase: planning",
        "current_phase: build # the builder's note",
    );
    std::fs::write(&file, &text).unwrap();
    let report = p.json(&["sync", "--agent", "builder"]);
    assert_eq!(report["syncs"][0]["pushed"]["revision"], 1, "{report}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join(".ctxsync/agents/builder/base.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(base["revision"], 1);
    p.set_as("planner", "project_state.current_phase", "review");
    p.ok(&["sync", "--agent", "builder"]);
    let now = std::fs::read_to_string(&file).unwrap();
    assert!(now.contains("current_phase: review"), "{now}");
}

/// YAML's `.nan` and `.inf` have no JSON form: refused (exit 2, nothing changed) rather
/// than stored as the null the user never wrote. Quoted, they are strings.
fn numbers_json_cannot_hold_are_refused_not_stored_as_null(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["pull", "--agent", "builder"]);
    for value in [".nan", ".inf", "-.inf", "[1, .NaN]"] {
        let out = p.run(&["set", "x", "--", value]);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not a number JSON can hold"),
            "{value}: {}",
            stderr(&out)
        );
    }
    let file = p.write("inf.yaml", "- {path: x, to: .inf}\n");
    let out = p.run(&["push", "--file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let wc = p.path().join(".ctxsync/agents/builder/context.yaml");
    let text = std::fs::read_to_string(&wc).unwrap();
    std::fs::write(
        &wc,
        text.replace("current_phase: planning", "current_phase: .nan"),
    )
    .unwrap();
    let out = p.run(&["sync", "--agent", "builder"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(p.revision(), 0);
    p.ok(&["set", "x", "'.nan'"]);
    assert_eq!(p.json(&["get", "x"]), json!(".nan"));
    // A negative number is a value, not an unknown flag.
    p.ok(&["set", "y", "-1.5"]);
    assert_eq!(p.json(&["get", "y"]), json!(-1.5));
    assert!(p.ok(&["verify"]).starts_with("ok"));
}

/// Embedded mode has no default agent: a write that names nobody is refused, says how
/// to name one, and changes nothing.
#[test]
fn an_embedded_write_without_an_agent_is_refused() {
    let p = Project::new(Mode::Embedded);
    p.init();
    let head = p.ok(&["status", "--json"]);
    for args in [
        &["set", "project_state.current_phase", "build"][..],
        &["revert", "--to", "0"],
    ] {
        let out = p.raw(args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for needed in ["needs an agent", "--agent", "CTXSYNC_AGENT", "agent = "] {
            assert!(err.contains(needed), "{args:?}: {needed:?} not in {err}");
        }
    }
    let file = p.write("c.json", r#"[{"path": "x", "to": 1}]"#);
    let out = p
        .raw(&["push", "--file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(p.ok(&["status", "--json"]), head, "nothing was written");
    // Named by the environment, or by the file pushed, it is written as that agent.
    let out = p
        .raw(&["set", "x", "1"])
        .env("CTXSYNC_AGENT", "planner")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let file = p.write(
        "c.json",
        r#"{"agent": "builder", "changes": [{"path": "y", "to": 2}]}"#,
    );
    let out = p
        .raw(&["push", "--file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let history: Value = serde_json::from_str(&p.ok(&["history", "--json"])).unwrap();
    let agents: Vec<&str> = history["entries"]
        .as_array()
        .or(history.as_array())
        .unwrap()
        .iter()
        .filter_map(|e| e["agent"].as_str())
        .collect();
    assert_eq!(&agents[..2], &["builder", "planner"], "{history}");
}

/// Remote mode: the token names the agent, with no `--agent` and no guessing from
/// working copies; a named agent the token does not act as is refused by the server.
#[test]
fn the_token_names_the_agent_in_remote_mode() {
    let p = Project::new(Mode::Remote);
    p.init();
    let server = p.server.as_ref().unwrap();
    let as_builder = |args: &[&str]| {
        p.raw(args)
            .env("CTXSYNC_TOKEN", server.token("builder"))
            .output()
            .unwrap()
    };
    let out = as_builder(&["set", "project_state.current_phase", "build"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let history: Value = serde_json::from_str(&p.ok(&["history", "--json"])).unwrap();
    let newest = history["entries"]
        .as_array()
        .or(history.as_array())
        .unwrap()[0]
        .clone();
    assert_eq!(newest["agent"], "builder", "{history}");
    // Working-copy commands act for the token's agent too, whatever copies exist.
    p.ok(&["pull", "--agent", "planner"]);
    let out = as_builder(&["sync"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"builder\" has no working copy"), "{err}");
    let out = as_builder(&["pull", "--agent", "builder"]);
    assert!(out.status.success(), "{}", stderr(&out));
    edit_phase(&p, "builder", "review");
    let out = as_builder(&["sync", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["syncs"][0]["agent"], "builder", "{report}");
    // Naming another agent than the token's is refused, not rewritten.
    let out = as_builder(&["set", "x", "1", "--agent", "planner"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
