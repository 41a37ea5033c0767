//! Claude Code's hooks as Claude Code runs them: `ctxsync setup claude` writes
//! `.claude/settings.json`, and the commands found there are run through a shell with
//! the hook input JSON on stdin, in embedded and in remote mode. The notice hook prints
//! the critical revisions by other agents not yet shown (and then not again), nothing at
//! all when there are none, and never fails the agent's step.

mod support;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::{Mode, Project};

both_modes!(
    the_notice_hook_prints_unseen_critical_revisions_once,
    the_session_start_hook_pulls_the_working_copy,
);

/// The command of `event`'s ctxsync hook in the project's settings.
fn hook_command(p: &Project, event: &str) -> String {
    let text = std::fs::read_to_string(p.path().join(".claude/settings.json")).unwrap();
    let settings: Value = serde_json::from_str(&text).unwrap();
    settings["hooks"][event][0]["hooks"][0]["command"]
        .as_str()
        .unwrap_or_else(|| panic!("no {event} hook in {text}"))
        .to_owned()
}

/// Runs `command` as Claude Code does: through a shell, in the project, hook input on
/// stdin; as agent `builder` (its token in remote mode).
fn run_hook(p: &Project, command: &str, input: &Value) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(p.path());
    for var in [
        "CTXSYNC_AGENT",
        "CTXSYNC_CONTEXT",
        "CTXSYNC_SERVER",
        "CTXSYNC_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    if let Some(server) = &p.server {
        cmd.env("CTXSYNC_SERVER", server.url())
            .env("CTXSYNC_TOKEN", server.token("builder"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the hook");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().expect("hook output")
}

fn input(p: &Project, event: &str) -> Value {
    let mut input = json!({
        "session_id": "3f1c2a",
        "transcript_path": p.path().join("transcript.jsonl"),
        "cwd": p.path(),
        "hook_event_name": event,
    });
    match event {
        "UserPromptSubmit" => input["prompt"] = json!("carry on with task-7"),
        "PostToolUse" => {
            input["tool_name"] = json!("Bash");
            input["tool_input"] = json!({"command": "cargo test"});
            input["tool_response"] = json!({"stdout": "ok", "stderr": "", "interrupted": false});
        }
        "SessionStart" => input["source"] = json!("startup"),
        _ => {}
    }
    input
}

fn quiet(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "printed with nothing to report: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn the_notice_hook_prints_unseen_critical_revisions_once(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["setup", "claude", "--agent", "builder"]);
    let prompt = hook_command(&p, "UserPromptSubmit");
    let tool = hook_command(&p, "PostToolUse");
    // Nothing yet: nothing at all on stdout, and no complaint either.
    let out = run_hook(&p, &prompt, &input(&p, "UserPromptSubmit"));
    quiet(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not critical, or the agent's own: still nothing.
    p.set_as("planner", "project_state.current_phase", "testing");
    p.ok(&[
        "set",
        "project_state.notes",
        "mine",
        "--agent",
        "builder",
        "--level",
        "critical",
    ]);
    quiet(&run_hook(&p, &prompt, &input(&p, "UserPromptSubmit")));
    // A critical revision by another agent reaches the next prompt.
    p.write(
        "blocked.yaml",
        "- path: project_state.blocked_tasks[-]\n  to: {id: task-7, reason: the API key expired}\n",
    );
    p.ok(&[
        "push",
        "-f",
        "blocked.yaml",
        "--agent",
        "planner",
        "--level",
        "critical",
        "--summary",
        "task-7 blocked: API key",
    ]);
    let revision = p.revision();
    let out = run_hook(&p, &prompt, &input(&p, "UserPromptSubmit"));
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("1 critical update"), "{text}");
    assert!(
        text.contains(&format!("revision {revision} by planner")),
        "{text}"
    );
    assert!(text.contains("task-7 blocked: API key"), "{text}");
    assert!(text.contains("project_state.blocked_tasks"), "{text}");
    // Shown once: the next prompt and the next tool call are quiet again.
    quiet(&run_hook(&p, &prompt, &input(&p, "UserPromptSubmit")));
    quiet(&run_hook(&p, &tool, &input(&p, "PostToolUse")));
    // After a tool call, the notice comes as the JSON Claude Code adds to the context.
    p.ok(&[
        "set",
        "technical_context.api.version",
        "v2",
        "--agent",
        "reviewer",
        "--level",
        "critical",
    ]);
    let out = run_hook(&p, &tool, &input(&p, "PostToolUse"));
    assert_eq!(out.status.code(), Some(0));
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(answer["hookSpecificOutput"]["hookEventName"], "PostToolUse");
    let context = answer["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        context.contains(&format!("revision {} by reviewer", revision + 1)),
        "{context}"
    );
    // The path written: the new `api` object holding `version`.
    assert!(context.contains("[technical_context.api]"), "{context}");
    quiet(&run_hook(&p, &tool, &input(&p, "PostToolUse")));
}

fn the_session_start_hook_pulls_the_working_copy(mode: Mode) {
    let p = Project::new(mode);
    p.init();
    p.ok(&["setup", "claude", "--agent", "builder"]);
    let out = run_hook(
        &p,
        &hook_command(&p, "SessionStart"),
        &input(&p, "SessionStart"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("session started for builder"), "{text}");
    assert!(p
        .path()
        .join(".ctxsync/agents/builder/context.yaml")
        .is_file());
}

#[test]
fn the_hook_never_fails_the_agent() {
    let p = Project::new(Mode::Embedded);
    p.ok(&["setup", "claude", "--agent", "builder"]);
    let prompt = hook_command(&p, "UserPromptSubmit");
    // No store yet.
    let out = run_hook(&p, &prompt, &input(&p, "UserPromptSubmit"));
    quiet(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ctxsync init"));
    p.init();
    // Input that is not JSON, or none: still a quiet success.
    let out = p
        .cmd(&["hook", "--agent", "builder"])
        .write_stdin("not json at all")
        .output()
        .unwrap();
    quiet(&out);
    // No agent named anywhere.
    let out = p.cmd(&["hook"]).write_stdin("{}").output().unwrap();
    quiet(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agent"));
    // A server that is not there.
    let out = p
        .cmd(&["hook", "--agent", "builder"])
        .env("CTXSYNC_SERVER", "http://127.0.0.1:9")
        .write_stdin("{}")
        .output()
        .unwrap();
    quiet(&out);
    assert!(!out.stderr.is_empty());
    // A command line this version does not know (exit 2 would block the prompt).
    let out = p
        .cmd(&["hook", "--agent", "builder", "--no-such-flag"])
        .write_stdin("{}")
        .output()
        .unwrap();
    quiet(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    // Standard input that is never closed: given up at the deadline, still exit 0.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ctxsync"))
        .args(["hook", "--agent", "builder", "--timeout-ms", "300"])
        .current_dir(p.path())
        .env_remove("CTXSYNC_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    quiet(&out);
    // A bad context name.
    let out = p
        .cmd(&["hook", "--agent", "builder", "--context", "Not Valid"])
        .write_stdin("{}")
        .output()
        .unwrap();
    quiet(&out);
}

#[test]
fn the_hook_finds_the_project_from_the_input_cwd() {
    let p = Project::new(Mode::Embedded);
    p.write("ctxsync.toml", "");
    p.init();
    p.ok(&[
        "set",
        "project_state.blocked_tasks[-]",
        "{id: t1}",
        "--agent",
        "planner",
        "--level",
        "critical",
    ]);
    let elsewhere = tempfile::tempdir().unwrap();
    let sub = p.path().join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    let out = p
        .cmd_in(elsewhere.path(), &["hook", "--agent", "builder"])
        .write_stdin(json!({"hook_event_name": "UserPromptSubmit", "cwd": sub}).to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("by planner"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Remote mode needs no agent name in the hooks: the token's agent is asked for.
#[test]
fn in_remote_mode_the_hook_acts_as_the_tokens_agent() {
    let p = Project::new(Mode::Remote);
    p.init();
    p.ok(&["setup", "claude"]);
    let prompt = hook_command(&p, "UserPromptSubmit");
    assert!(!prompt.contains("--agent"), "{prompt}");
    quiet(&run_hook(&p, &prompt, &input(&p, "UserPromptSubmit")));
    p.ok(&[
        "set",
        "project_state.current_phase",
        "frozen",
        "--agent",
        "planner",
        "--level",
        "critical",
    ]);
    let out = run_hook(&p, &prompt, &input(&p, "UserPromptSubmit"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("by planner"), "{text}");
    // Shown to builder (the token's agent), so the next prompt is quiet.
    quiet(&run_hook(&p, &prompt, &input(&p, "UserPromptSubmit")));
}
