//! `ctxsync-bench-mcp`: MCP tool-call latency over stdio, measured from outside the
//! server process, as an MCP client sees it.
//!
//! It makes a project with a realistic ~100 KB context (the seed template filled with
//! tasks, decisions and questions) in a temp dir, starts `ctxsync mcp --agent bench`
//! with pipes, speaks MCP 2025-11-25 to it as newline-delimited JSON-RPC (initialize,
//! then `tools/call`), and times each call from writing the request to reading its whole
//! answer: `pull` of the whole context, `set` of one field, and `push` of two changes
//! with a base revision. Prints p50/p99/mean per tool.
//!
//! Usage: `ctxsync-bench-mcp [--bin PATH] [--calls N] [--synchronous full|normal]`
//! (default: the `ctxsync` beside this binary, 2,000 calls per tool, fsync per commit).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

struct Options {
    bin: PathBuf,
    calls: usize,
    /// The store's `synchronous` (full: fsync per commit, the default; normal: the
    /// same work without the fsync, to see what the disk costs).
    synchronous: String,
}

fn parse_args() -> Result<Options> {
    let beside = std::env::current_exe()?
        .parent()
        .map(|d| d.join("ctxsync"))
        .unwrap_or_else(|| PathBuf::from("ctxsync"));
    let mut o = Options {
        bin: beside,
        calls: 2000,
        synchronous: "full".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bin" => o.bin = PathBuf::from(value),
            "--calls" => o.calls = value.parse()?,
            "--synchronous" => o.synchronous = value,
            other => {
                bail!("unknown flag {other} (usage: ctxsync-bench-mcp [--bin PATH] [--calls N] [--synchronous full|normal])")
            }
        }
    }
    Ok(o)
}

const PRIORITIES: [&str; 3] = ["low", "medium", "high"];

/// A seed-shaped context of about `target` bytes of JSON.
fn big_context(target: usize) -> Vec<Value> {
    let mut changes = Vec::new();
    let mut size = 0;
    let mut i = 0;
    while size < target {
        let task = json!({"id": format!("task-{i}"), "title": format!("Implement part {i} of the sync engine"),
                          "status": if i % 3 == 0 { "in_progress" } else { "todo" }, "owner": format!("agent-{}", i % 5),
                          "priority": PRIORITIES[i % 3], "notes": "Keep the op log canonical; ids over positions.",
                          "depends_on": [format!("task-{}", i.max(1) - 1)]});
        let decision = json!({"id": format!("dec-{i}"), "summary": format!("Decision {i}: use id selectors for lists"),
                              "by": "planner", "rationale": "Concurrent inserts must not shift targets; positions are fragile."});
        let question = json!({"id": format!("q-{i}"), "from": "builder", "to": "reviewer",
                              "question": format!("Is edge case {i} covered by the property tests?"), "priority": "medium"});
        size += task.to_string().len() + decision.to_string().len() + question.to_string().len();
        changes.push(json!({"path": "project_state.active_tasks[-]", "to": task}));
        changes.push(json!({"path": "decisions_log.recent[-]", "to": decision}));
        changes.push(json!({"path": "communication.pending_questions[-]", "to": question}));
        i += 1;
    }
    changes
}

struct Mcp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    line: String,
}

impl Mcp {
    fn start(bin: &PathBuf, dir: &std::path::Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(["mcp", "--agent", "bench"])
            .current_dir(dir)
            .env_remove("CTXSYNC_SERVER")
            .env_remove("CTXSYNC_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut mcp = Self {
            child,
            stdin,
            stdout,
            next_id: 1,
            line: String::new(),
        };
        mcp.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "ctxsync-bench-mcp", "version": "1"}}),
        )?;
        mcp.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(mcp)
    }

    fn send(&mut self, message: &Value) -> Result<()> {
        let mut text = message.to_string();
        text.push('\n');
        self.stdin.write_all(text.as_bytes())?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Sends a request and reads until its answer; returns the result.
    fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            self.line.clear();
            if self.stdout.read_line(&mut self.line)? == 0 {
                bail!("the server closed its output");
            }
            let mut message: Value = serde_json::from_str(&self.line)
                .with_context(|| format!("not JSON on stdout: {:.200}", self.line))?;
            if message.get("id") == Some(&json!(id)) {
                if let Some(error) = message.get("error") {
                    bail!("{method}: {error}");
                }
                return Ok(message["result"].take());
            }
        }
    }

    fn tool(&mut self, name: &str, arguments: Value) -> Result<(Value, usize)> {
        let mut result =
            self.request("tools/call", json!({"name": name, "arguments": arguments}))?;
        if result["isError"] == json!(true) {
            bail!("{name} failed: {}", result["content"][0]["text"]);
        }
        Ok((result["structuredContent"].take(), self.line.len()))
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut times: Vec<Duration>, bytes: usize) {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<28} calls {:>5}  p50 {:>6.3} ms  p99 {:>6.3} ms  mean {:>6.3} ms  max {:>7.3} ms  answer {:>7} bytes",
        times.len(),
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
        ms(mean),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
        bytes
    );
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let dir = tempfile::tempdir()?;
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new(&o.bin)
            .args(args)
            .current_dir(dir.path())
            .env_remove("CTXSYNC_SERVER")
            .output()?;
        if !out.status.success() {
            bail!("ctxsync {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    std::fs::write(
        dir.path().join("ctxsync.toml"),
        format!("[store]\nsynchronous = {:?}\n", o.synchronous),
    )?;
    run(&["init"])?;
    let changes = big_context(100 * 1024);
    let file = dir.path().join("fill.json");
    std::fs::write(&file, serde_json::to_vec(&json!({"changes": changes}))?)?;
    let file_arg = file.display().to_string();
    run(&["push", "-f", &file_arg, "--agent", "setup"])?;

    let mut mcp = Mcp::start(&o.bin, dir.path())?;
    let (pulled, _) = mcp.tool("pull", json!({}))?;
    let doc_bytes = pulled["document"].to_string().len();
    println!(
        "context: {doc_bytes} bytes of JSON at revision {}; {} calls per tool; synchronous={}; server {}",
        pulled["revision"],
        o.calls,
        o.synchronous,
        o.bin.display()
    );
    // Warm up (the first calls open reader connections and fill caches).
    for _ in 0..50 {
        mcp.tool("pull", json!({}))?;
        mcp.tool("get", json!({"path": "project_state.current_phase"}))?;
    }

    let mut times = Vec::with_capacity(o.calls);
    let mut bytes = 0;
    for _ in 0..o.calls {
        let t = Instant::now();
        let (_, n) = mcp.tool("pull", json!({}))?;
        times.push(t.elapsed());
        bytes = n;
    }
    report("pull (whole ~100 KB)", times, bytes);

    let mut times = Vec::with_capacity(o.calls);
    for _ in 0..o.calls {
        let t = Instant::now();
        let (_, n) = mcp.tool("pull", json!({"sections": ["project_state.current_phase"]}))?;
        times.push(t.elapsed());
        bytes = n;
    }
    report("pull (one section)", times, bytes);

    let mut times = Vec::with_capacity(o.calls);
    for i in 0..o.calls {
        let t = Instant::now();
        let (_, n) = mcp.tool(
            "set",
            json!({"path": "project_state.current_phase", "value": format!("phase {i}")}),
        )?;
        times.push(t.elapsed());
        bytes = n;
    }
    report("set (one field, durable)", times, bytes);

    let mut times = Vec::with_capacity(o.calls);
    let mut base = mcp.tool("get", json!({"path": "project_state"}))?.0["revision"]
        .as_u64()
        .unwrap_or(0);
    for i in 0..o.calls {
        let t = Instant::now();
        let (answer, n) = mcp.tool(
            "push",
            json!({"base_revision": base, "changes": [
                {"path": "project_state.active_tasks[id=task-1].status", "to": format!("s{i}")},
                {"op": "replace", "path": "/project_state/current_phase", "value": format!("p{i}")},
            ]}),
        )?;
        times.push(t.elapsed());
        base = answer["revision"].as_u64().unwrap_or(base);
        bytes = n;
    }
    report("push (2 changes, base rev)", times, bytes);
    Ok(())
}
