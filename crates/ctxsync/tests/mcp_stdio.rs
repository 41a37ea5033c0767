//! `ctxsync mcp` spoken to as raw newline-delimited JSON-RPC (no SDK, so these run
//! everywhere): standard output carries nothing but MCP messages while the logs are
//! verbose, standard error has no colour codes, and in remote mode a push the server
//! cannot take is queued in the outbox and delivered by a later push.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use serde_json::{json, Value};
use support::{Mode, Project};

struct Mcp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Every line seen on stdout.
    lines: Vec<String>,
    next: u64,
}

impl Mcp {
    fn start(project: &Project, agent: &str, log: &str) -> Self {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ctxsync"));
        for var in [
            "CTXSYNC_AGENT",
            "CTXSYNC_CONTEXT",
            "CTXSYNC_SERVER",
            "CTXSYNC_TOKEN",
        ] {
            cmd.env_remove(var);
        }
        if let Some(server) = &project.server {
            cmd.env("CTXSYNC_SERVER", server.url())
                .env("CTXSYNC_TOKEN", server.token(agent));
        }
        cmd.current_dir(project.path())
            .args(["mcp", "--agent", agent])
            .env("CTXSYNC_LOG", log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ctxsync mcp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut mcp = Self {
            child,
            stdin,
            stdout,
            lines: Vec::new(),
            next: 1,
        };
        let init = mcp.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}),
        );
        assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
        mcp.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        mcp
    }

    fn send(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").expect("write to the server");
        self.stdin.flush().expect("flush");
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read");
            assert!(n > 0, "the server closed stdout");
            self.lines.push(line.clone());
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON-RPC on stdout ({e}): {line:?}"));
            assert_eq!(message["jsonrpc"], "2.0", "{line}");
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    fn tool(&mut self, name: &str, arguments: Value) -> Value {
        let answer = self.request("tools/call", json!({"name": name, "arguments": arguments}));
        assert!(answer.get("error").is_none(), "a JSON-RPC error: {answer}");
        answer["result"].clone()
    }

    /// Closes stdin, waits for the exit and returns stderr.
    fn finish(mut self) -> String {
        drop(self.stdin);
        let mut rest = String::new();
        while self.stdout.read_line(&mut rest).unwrap_or(0) > 0 {}
        assert!(
            rest.trim().is_empty()
                || rest
                    .lines()
                    .all(|l| serde_json::from_str::<Value>(l).is_ok()),
            "non-MCP output on stdout: {rest:?}"
        );
        let out = self.child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "ctxsync mcp exited with {:?}",
            out.status
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn stdout_is_mcp_only_and_stderr_has_no_colours() {
    let project = Project::new(Mode::Embedded);
    project.init();
    let mut mcp = Mcp::start(&project, "builder", "debug");
    let listed = mcp.request("tools/list", json!({}));
    assert_eq!(
        listed["result"]["tools"].as_array().map(Vec::len),
        Some(12),
        "{listed}"
    );
    let set = mcp.tool(
        "set",
        json!({"path": "project_state.current_phase", "value": "build"}),
    );
    assert_eq!(set["isError"], false, "{set}");
    assert_eq!(set["structuredContent"]["revision"], 1, "{set}");
    let text: Value = serde_json::from_str(set["content"][0]["text"].as_str().expect("text"))
        .expect("the text copy is JSON");
    assert_eq!(text, set["structuredContent"]);
    let bad = mcp.tool("push", json!({"changes": [{"op": "nope", "path": "/x"}]}));
    assert_eq!(bad["isError"], true, "{bad}");
    let stderr = mcp.finish();
    assert!(
        stderr.contains("tool call"),
        "the debug log is on stderr: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes on stderr: {stderr:?}"
    );
    assert_eq!(
        project.ok(&["get", "project_state.current_phase"]).trim(),
        "build"
    );
}

#[test]
fn remote_mode_queues_a_push_the_server_cannot_take() {
    let mut project = Project::new(Mode::Remote);
    project.init();
    let mut mcp = Mcp::start(&project, "builder", "warn");
    let first = mcp.tool("set", json!({"path": "project_state.one", "value": 1}));
    assert_eq!(first["isError"], false, "{first}");
    project.server.as_mut().expect("server").kill();
    let queued = mcp.tool("set", json!({"path": "project_state.two", "value": 2}));
    assert_eq!(queued["isError"], true, "{queued}");
    let message = queued["structuredContent"]["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("queued"), "{queued}");
    project.server.as_mut().expect("server").restart();
    // The next push delivers the queued one first, in order.
    let third = mcp.tool("set", json!({"path": "project_state.three", "value": 3}));
    assert_eq!(third["isError"], false, "{third}");
    let state = project.json(&["get", "project_state"]);
    assert_eq!(
        (
            state["one"].clone(),
            state["two"].clone(),
            state["three"].clone()
        ),
        (json!(1), json!(2), json!(3)),
        "{state}"
    );
    mcp.finish();
}
