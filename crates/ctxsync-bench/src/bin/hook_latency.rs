//! `hook_latency`: the whole-process latency of `ctxsync hook` (Claude Code's per-prompt
//! and per-tool-call hook) with nothing to report, p50/p99 over N runs, against a fresh
//! embedded store holding a ~100 KB context (DESIGN §13: the hook must cost an agent at
//! most 50 ms).
//!
//! Each run is what Claude Code does: spawn the configured command, write the hook input
//! JSON on its stdin, close it, wait for the exit. The figure includes process start,
//! config load, opening SQLite and the query.
//!
//! ```text
//! cargo build --release -p ctxsync -p ctxsync-bench
//! target/release/hook_latency --bin target/release/ctxsync --runs 200 [--remote]
//! ```
#![forbid(unsafe_code)]
// A benchmark's report is its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

struct Options {
    bin: PathBuf,
    runs: usize,
    context_kb: usize,
    /// Against a `ctxsync serve` child on loopback instead of the embedded store.
    remote: bool,
}

/// Remote mode's server and the hook's credentials.
struct Remote {
    child: std::process::Child,
    url: String,
    token: String,
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        bin: PathBuf::from("target/release/ctxsync"),
        runs: 200,
        context_kb: 100,
        remote: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--remote" {
            o.remote = true;
            continue;
        }
        let value = args.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bin" => o.bin = value.into(),
            "--runs" => o.runs = value.parse()?,
            "--context-kb" => o.context_kb = value.parse()?,
            _ => bail!("usage: hook_latency [--bin PATH] [--runs N] [--context-kb KB] [--remote]"),
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // The runs happen in a temp dir: a relative path would not be found from there.
    o.bin = std::fs::canonicalize(&o.bin)
        .with_context(|| format!("no ctxsync binary at {}", o.bin.display()))?;
    Ok(o)
}

fn ctxsync(o: &Options, dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(&o.bin)
        .current_dir(dir)
        .args(args)
        .env_remove("CTXSYNC_SERVER")
        .env_remove("CTXSYNC_TOKEN")
        .output()
        .with_context(|| format!("cannot run {}", o.bin.display()))?;
    if !out.status.success() {
        bail!(
            "ctxsync {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `ctxsync serve` over `dir`'s store on a free loopback port, with a token for
/// `builder`.
fn serve(o: &Options, dir: &Path) -> Result<Remote> {
    let token = ctxsync(o, dir, &["token", "create", "--agent", "builder"])?
        .trim()
        .to_owned();
    let mut child = Command::new(&o.bin)
        .current_dir(dir)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("CTXSYNC_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let mut remote = Remote {
        child,
        url: String::new(),
        token,
    };
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            remote.url = format!("http://{addr}");
            break;
        }
    }
    // Keep reading its log: a closed or full pipe would stop the server.
    std::thread::spawn(move || lines.for_each(drop));
    if remote.url.is_empty() {
        bail!("the server did not start");
    }
    Ok(remote)
}

/// One hook run as Claude Code makes it; its stdout.
fn hook(
    o: &Options,
    dir: &Path,
    remote: Option<&Remote>,
    input: &[u8],
) -> Result<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut cmd = Command::new(&o.bin);
    cmd.current_dir(dir)
        .args(["hook", "--agent", "builder"])
        .env_remove("CTXSYNC_SERVER")
        .env_remove("CTXSYNC_TOKEN");
    if let Some(r) = remote {
        cmd.env("CTXSYNC_SERVER", &r.url)
            .env("CTXSYNC_TOKEN", &r.token);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if !out.status.success() || !out.stderr.is_empty() {
        bail!(
            "the hook failed or complained: {:?} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((took, out.stdout))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let dir = tempfile::tempdir()?;
    ctxsync(&o, dir.path(), &["init"])?;
    // A context of about `context_kb` KB: one bulk section of 1 KB entries.
    let entry = "x".repeat(1000);
    let bulk: serde_json::Map<String, serde_json::Value> = (0..o.context_kb)
        .map(|i| (format!("k{i:04}"), serde_json::Value::String(entry.clone())))
        .collect();
    let value = serde_json::Value::Object(bulk).to_string();
    ctxsync(
        &o,
        dir.path(),
        &[
            "set",
            "technical_context.bulk",
            &value,
            "--agent",
            "planner",
        ],
    )?;
    // A critical revision by another agent, shown once, so the runs measured below have
    // nothing left to report (and a presence row exists, as in a live session).
    ctxsync(
        &o,
        dir.path(),
        &[
            "set",
            "project_state.blocked_tasks[-]",
            "{id: t1, reason: bench}",
            "--agent",
            "planner",
            "--level",
            "critical",
        ],
    )?;
    let status = ctxsync(&o, dir.path(), &["status", "--json"])?;
    let input = serde_json::json!({
        "session_id": "bench",
        "transcript_path": "/dev/null",
        "cwd": dir.path(),
        "hook_event_name": "UserPromptSubmit",
        "prompt": "go on"
    })
    .to_string();
    let remote = if o.remote {
        Some(serve(&o, dir.path())?)
    } else {
        None
    };
    let (_, first) = hook(&o, dir.path(), remote.as_ref(), input.as_bytes())?;
    if first.is_empty() {
        bail!("the first run should have reported the critical revision");
    }
    let mut times = Vec::with_capacity(o.runs);
    for _ in 0..o.runs {
        let (took, stdout) = hook(&o, dir.path(), remote.as_ref(), input.as_bytes())?;
        if !stdout.is_empty() {
            bail!(
                "a run with nothing to report printed: {}",
                String::from_utf8_lossy(&stdout)
            );
        }
        times.push(took);
    }
    times.sort();
    let size = serde_json::from_str::<serde_json::Value>(&status)
        .ok()
        .and_then(|s| s["head"]["size"].as_u64());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = percentile(&times, 99.0);
    println!(
        "ctxsync hook, nothing to report, whole process, {} ({} runs, context {}, {} cores)",
        if o.remote {
            "remote (loopback server)"
        } else {
            "embedded"
        },
        o.runs,
        size.map_or(format!("~{} KB", o.context_kb), |b| format!("{} bytes", b)),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "p50 {:.1} ms   p99 {:.1} ms   min {:.1} ms   max {:.1} ms   target p99 <= 50 ms: {}",
        ms(percentile(&times, 50.0)),
        ms(p99),
        ms(times[0]),
        ms(times[times.len() - 1]),
        if p99 <= Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}
