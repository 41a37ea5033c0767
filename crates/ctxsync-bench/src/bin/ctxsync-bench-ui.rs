//! `ctxsync-bench-ui`: the dashboard's figures, in real headless Chromium against a real
//! `ctxsync serve` child process on loopback (a durable store in a temp dir):
//!
//! * page load to first live data (the context page, until its event stream is live
//!   with the newest revisions shown);
//! * the feed under a push load of `--rate` revisions/s (default 1,000) for `--seconds`:
//!   frames the page rendered per second, every revision event received, no gap, and how
//!   long after the load the feed showed the head;
//! * the embedded assets' total size, and the bytes the page loads.
//!
//! The page side is `crates/ctxsync-server/tests/ui/bench.mjs` (playwright-core; run
//! `npm ci` in that folder first). The push load comes from this process, not from the
//! browser's driver: `--pushers` threads (default 64), each with its own keep-alive
//! connection, paced open-loop to the asked rate. The first version pushed from the
//! Node.js script that drives the page and reached 551 rev/s: the pusher was the limit,
//! not the server. Node's `fetch` costs about 1.5 ms of CPU per push (measured with
//! `process.cpuUsage()`: 32 in flight, unpaced, 349 pushes/s against a debug server),
//! and that process shares the 2 cores with Chromium and the server; here 8 threads
//! already offer 1,000 rev/s at a p50 push latency of ~4 ms. The bench prints the push
//! latency under the load and pushers / p50, the most the pushers could offer.
//!
//! Usage: `ctxsync-bench-ui [--bin PATH] [--rate N] [--seconds S] [--pushers N]
//! [--loads N] [--chromium PATH] [--out DIR]`
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::json;

const USAGE: &str = "usage: ctxsync-bench-ui [--bin PATH] [--rate N] [--seconds S] [--pushers N] [--loads N] [--chromium PATH] [--out DIR]";

struct Options {
    bin: PathBuf,
    rate: u64,
    seconds: u64,
    pushers: u64,
    loads: u64,
    chromium: PathBuf,
    out: PathBuf,
}

fn parse_args() -> Result<Options> {
    let beside = std::env::current_exe()?
        .parent()
        .map(|d| d.join("ctxsync"))
        .unwrap_or_else(|| PathBuf::from("ctxsync"));
    let mut o = Options {
        bin: beside,
        rate: 1000,
        seconds: 5,
        pushers: 64,
        loads: 10,
        chromium: PathBuf::from("/usr/bin/chromium"),
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-bench"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--bin" => o.bin = value.into(),
            "--rate" => o.rate = value.parse()?,
            "--seconds" => o.seconds = value.parse()?,
            "--pushers" => o.pushers = value.parse()?,
            "--loads" => o.loads = value.parse()?,
            "--chromium" => o.chromium = value.into(),
            "--out" => o.out = value.into(),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if o.rate == 0 || o.seconds == 0 || o.pushers == 0 || o.loads == 0 {
        bail!("--rate, --seconds, --pushers and --loads must be at least 1");
    }
    Ok(o)
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ctxsync-server/tests/ui")
}

/// `ctxsync ARGS -C root`, its trimmed stdout.
fn ctxsync(bin: &Path, root: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .arg("-C")
        .arg(root)
        .env_remove("CTXSYNC_SERVER")
        .env_remove("CTXSYNC_TOKEN")
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "ctxsync {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Kills the child however the bench ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One push; its HTTP status.
fn push(agent: &ureq::Agent, url: &str, token: &str, i: u64) -> Result<u16> {
    let body = json!({
        "agent": "builder",
        "level": "periodic",
        "summary": format!("bench {i}"),
        "changes": [{"path": format!("project_state.bench.k{}", i % 1000), "to": i}],
    });
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.to_string())?;
    let mut response = agent.run(request)?;
    let _ = response.body_mut().read_to_string();
    Ok(response.status().as_u16())
}

/// What the push load did.
struct Loaded {
    acked: u64,
    failed: u64,
    /// From the first due time to the last answer.
    seconds: f64,
    /// Push latencies, sorted, in ms.
    latencies_ms: Vec<f64>,
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `rate × seconds` pushes, push `i` due at `i / rate` s, spread over `pushers` threads.
fn load(url: &str, token: &str, o: &Options) -> Loaded {
    let total = o.rate * o.seconds;
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now() + Duration::from_millis(100);
    let threads: Vec<_> = (0..o.pushers)
        .map(|w| {
            let (url, token) = (url.to_owned(), token.to_owned());
            let (acked, failed) = (Arc::clone(&acked), Arc::clone(&failed));
            let (rate, pushers) = (o.rate, o.pushers);
            std::thread::spawn(move || {
                let agent = agent();
                let mut latencies = Vec::new();
                let mut i = w;
                while i < total {
                    let due = t0 + Duration::from_micros(i * 1_000_000 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let sent = Instant::now();
                    match push(&agent, &url, &token, i) {
                        Ok(200) => acked.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    i += pushers;
                }
                latencies
            })
        })
        .collect();
    let mut latencies_ms = Vec::new();
    for thread in threads {
        latencies_ms.extend(thread.join().unwrap_or_default());
    }
    latencies_ms.sort_by(f64::total_cmp);
    Loaded {
        acked: acked.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds: t0.elapsed().as_secs_f64(),
        latencies_ms,
    }
}

fn main() -> Result<()> {
    let o = parse_args()?;
    if !o.chromium.exists() {
        bail!("no Chromium at {} (--chromium PATH)", o.chromium.display());
    }
    if !ui_dir().join("node_modules/playwright-core").exists() {
        bail!("run `npm ci` in {} first", ui_dir().display());
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    ctxsync(&o.bin, root, &["init"])?;
    let admin = ctxsync(
        &o.bin,
        root,
        &["token", "create", "--agent", "lead", "--role", "admin"],
    )?;
    let builder = ctxsync(&o.bin, root, &["token", "create", "--agent", "builder"])?;
    let mut child = Command::new(&o.bin)
        .args(["serve", "--bind", "127.0.0.1:0", "-C"])
        .arg(root)
        .env_remove("CTXSYNC_SERVER")
        .env_remove("CTXSYNC_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {} serve", o.bin.display()))?;
    let stderr = child.stderr.take().context("the server's stderr")?;
    let _server = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the server did not say where it listens")?;
    let base = format!("http://{addr}");
    let push_url = format!("{base}/v1/contexts/default/push");
    let seeding = agent();
    for i in 0..5 {
        push(&seeding, &push_url, &builder, i)?;
    }
    println!(
        "FIGURE embedded assets total (bytes, uncompressed): {}",
        ctxsync_server::ui::total_size()
    );
    std::fs::create_dir_all(&o.out)?;
    let mut node = Command::new("node")
        .arg(ui_dir().join("bench.mjs"))
        .current_dir(ui_dir())
        .env("CTXSYNC_URL", &base)
        .env("CONTEXT", "default")
        .env("ADMIN_TOKEN", &admin)
        .env("CHROMIUM", &o.chromium)
        .env("OUT_DIR", &o.out)
        .env("LOADS", o.loads.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start node (is it installed?)")?;
    let mut to_node = node.stdin.take().context("node's stdin")?;
    let from_node = BufReader::new(node.stdout.take().context("node's stdout")?);
    for line in from_node.lines().map_while(Result::ok) {
        if line == "CTL load" {
            eprintln!(
                "pushing {} rev/s for {} s from {} threads",
                o.rate, o.seconds, o.pushers
            );
            let l = load(&push_url, &builder, &o);
            println!(
                "FIGURE push load offered (rev/s): {} ({} pushers)",
                o.rate, o.pushers
            );
            let (p50, p99) = (
                quantile(&l.latencies_ms, 0.5),
                quantile(&l.latencies_ms, 0.99),
            );
            println!("FIGURE push latency under the load, p50 / p99 (ms): {p50:.1} / {p99:.1}");
            println!(
                "FIGURE most rev/s this many pushers can offer at that p50 (pushers / p50): {:.0}",
                o.pushers as f64 * 1000.0 / p50
            );
            writeln!(to_node, "pushed {} {:.3} {}", l.acked, l.seconds, l.failed)?;
        } else {
            println!("{line}");
        }
    }
    let status = node.wait()?;
    if !status.success() {
        bail!(
            "the browser side failed (screenshots in {})",
            o.out.display()
        );
    }
    Ok(())
}
