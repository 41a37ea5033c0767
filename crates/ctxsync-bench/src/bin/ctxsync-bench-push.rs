//! `ctxsync-bench-push`: durable pushes/s and latency by context size, measured as a new
//! user would: a real `ctxsync serve` child process, `wrk` as the outside HTTP client
//! (2 threads, 64 keep-alive connections, single-change pushes spread over 1,000 keys),
//! and etcd 3.4's v3 JSON gateway side by side in the same run, with the same client and
//! the same keys (skipped, and said so, when `etcd` is not installed).
//!
//! For each context size (default 0.7 KB, 100 KB, 1 MB and 8 MB of seed-shaped JSON, plus
//! the 1,000 keys the pushes write) it makes a repository in a temp dir, writes the context
//! into its store, starts `ctxsync serve` on an ephemeral loopback port (synchronous=FULL:
//! every acknowledged push is fsynced), runs wrk, then checks that the head moved by exactly
//! the number of pushes wrk saw acknowledged.
//!
//! Usage: `ctxsync-bench-push [--bin PATH] [--sizes-kb 0.7,100,1024,8000] [--seconds S]
//! [--connections N] [--threads N] [--keys N] [--no-etcd] [--verify]`
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use ctxsync_store::{Role, SqliteStore, Store, StoreOptions};
use serde_json::{json, Value};

struct Options {
    bin: PathBuf,
    sizes_kb: Vec<f64>,
    seconds: u64,
    connections: usize,
    threads: usize,
    keys: usize,
    etcd: bool,
    verify: bool,
}

const USAGE: &str = "usage: ctxsync-bench-push [--bin PATH] [--sizes-kb 0.7,100,1024,8000] [--seconds S] [--connections N] [--threads N] [--keys N] [--no-etcd] [--verify]";

fn parse_args() -> Result<Options> {
    let beside = std::env::current_exe()?
        .parent()
        .map(|d| d.join("ctxsync"))
        .unwrap_or_else(|| PathBuf::from("ctxsync"));
    let mut o = Options {
        bin: beside,
        sizes_kb: vec![0.7, 100.0, 1024.0, 8000.0],
        seconds: 10,
        connections: 64,
        threads: 2,
        keys: 1000,
        etcd: true,
        verify: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--no-etcd" => o.etcd = false,
            "--verify" => o.verify = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => {
                let value = args
                    .next()
                    .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
                match flag.as_str() {
                    "--bin" => o.bin = PathBuf::from(value),
                    "--sizes-kb" => {
                        o.sizes_kb = value
                            .split(',')
                            .map(|s| s.trim().parse::<f64>())
                            .collect::<Result<_, _>>()
                            .with_context(|| format!("--sizes-kb {value}"))?
                    }
                    "--seconds" => o.seconds = value.parse()?,
                    "--connections" => o.connections = value.parse()?,
                    "--threads" => o.threads = value.parse()?,
                    "--keys" => o.keys = value.parse()?,
                    other => bail!("unknown flag {other}\n{USAGE}"),
                }
            }
        }
    }
    if o.keys == 0 || o.connections == 0 || o.threads == 0 || o.seconds == 0 {
        bail!("--keys, --connections, --threads and --seconds must be at least 1");
    }
    Ok(o)
}

const OWNERS: [&str; 3] = ["planner", "builder", "reviewer"];

/// A seed-shaped context of about `target` bytes of canonical JSON, plus `keys` counters
/// under `bench` for the pushes to write.
fn context_of_size(target: usize, keys: usize) -> Value {
    let mut doc = ctxsync_core::template::seed();
    let counters: serde_json::Map<String, Value> =
        (0..keys).map(|k| (format!("k{k}"), json!(0))).collect();
    doc["bench"] = Value::Object(counters);
    let mut i = 0usize;
    // Measuring the whole document is O(size); do it every few hundred entries.
    while ctxsync_core::checksum_and_size(&doc).1 < target as u64 {
        for _ in 0..200 {
            let task = json!({"id": format!("task-{i}"), "status": if i.is_multiple_of(3) { "in_progress" } else { "todo" },
                "owner": OWNERS[i % 3], "title": format!("Implement component {i} of the sync pipeline"),
                "notes": "Keep the op log canonical; ids over positions."});
            let decision = json!({"id": format!("dec-{i}"), "decision": format!("Use a cache in front of service {i}"),
                "rationale": "Better performance than hitting the database on every request", "decided_by": "planner"});
            if let Some(a) = doc["project_state"]["active_tasks"].as_array_mut() {
                a.push(task);
            }
            if let Some(a) = doc["decisions_log"]["recent"].as_array_mut() {
                a.push(decision);
            }
            i += 1;
            if target < 4096 {
                break;
            }
        }
        if target < 4096 {
            break;
        }
    }
    doc
}

/// A free loopback port (bound, read, released).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ctxsync(bin: &Path, repo: &Path) -> Result<Server> {
    let mut child = Command::new(bin)
        .args(["serve", "--bind", "127.0.0.1:0", "-C"])
        .arg(repo)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow!("ctxsync serve exited before listening"))??;
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        if Instant::now() > deadline {
            bail!("ctxsync serve did not start");
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Server { child, addr })
}

struct Etcd {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd() -> Result<Option<Etcd>> {
    let Ok(found) = Command::new("etcd").arg("--version").output() else {
        return Ok(None);
    };
    if !found.status.success() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let (client, peer) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.path().join("etcd"))
        .args(["--name", "bench", "--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start etcd")?;
    let etcd = Etcd {
        child,
        addr: format!("127.0.0.1:{client}"),
        _dir: dir,
    };
    let agent = ureq::Agent::new_with_defaults();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let healthy = agent
            .get(&format!("http://{}/health", etcd.addr))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|body| body.contains("true"));
        if healthy {
            return Ok(Some(etcd));
        }
        if Instant::now() > deadline {
            bail!("etcd did not become healthy");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What wrk measured.
struct Load {
    per_sec: f64,
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

const REPORT: &str = r#"
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"#;

fn ctxsync_script(token: &str, keys: usize) -> String {
    format!(
        r#"
local n = 0
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format('{{"agent":"bench","changes":[{{"path":"bench.k%d","to":%d}}]}}', n % {keys}, n)
  return wrk.format(nil, "/v1/contexts/bench/push", nil, body)
end
{REPORT}"#
    )
}

fn etcd_script(keys: usize) -> String {
    format!(
        r#"
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  return ((s:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({{ '', '==', '=' }})[#s % 3 + 1])
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = string.format('{{"key":"%s","value":"%s"}}', b64("bench.k" .. (n % {keys})), b64(tostring(n)))
  return wrk.format(nil, "/v3/kv/put", nil, body)
end
{REPORT}"#
    )
}

fn run_wrk(o: &Options, url: &str, script: &str) -> Result<Load> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("load.lua");
    std::fs::write(&path, script)?;
    let out = Command::new("wrk")
        .arg(format!("-t{}", o.threads))
        .arg(format!("-c{}", o.connections))
        .arg(format!("-d{}s", o.seconds))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&path)
        .arg(url)
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .ok_or_else(|| {
            anyhow!(
                "wrk printed no result: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let field = |name: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .ok_or_else(|| anyhow!("wrk result has no {name}: {line}"))?
            .parse()
            .with_context(|| format!("wrk {name}"))
    };
    let requests = field("requests")?;
    let failed = field("non2xx")? + field("errors")?;
    let duration_s = field("duration_us")? as f64 / 1e6;
    Ok(Load {
        per_sec: (requests - failed.min(requests)) as f64 / duration_s.max(1e-9),
        requests,
        p50_ms: field("p50_us")? as f64 / 1000.0,
        p99_ms: field("p99_us")? as f64 / 1000.0,
        failed,
    })
}

/// A repository holding a context `bench` of about `kb` KB, and a token for agent `bench`.
fn prepare_repo(o: &Options, kb: f64) -> Result<(tempfile::TempDir, String, u64)> {
    let dir = tempfile::tempdir()?;
    let status = Command::new(&o.bin)
        .args(["init", "-C"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", o.bin.display()))?;
    if !status.success() {
        bail!("ctxsync init failed");
    }
    let doc = context_of_size((kb * 1024.0) as usize, o.keys);
    let store = SqliteStore::open(
        dir.path().join(".ctxsync").join("ctxsync.db"),
        StoreOptions::default(),
    )?;
    let head = store.create_context("bench", doc)?;
    let secret = "bench-token-0123456789abcdef0123456789".to_owned();
    store.create_token("bench", &secret, "bench", Role::Agent)?;
    Ok((dir, secret, head.size))
}

fn head_revision(addr: &str, token: &str) -> Result<u64> {
    let agent = ureq::Agent::new_with_defaults();
    let mut response = agent
        .get(&format!("http://{addr}/v1/contexts/bench/head"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Accept", "application/json")
        .call()?;
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
    body["revision"]
        .as_u64()
        .ok_or_else(|| anyhow!("no revision in the head of context bench: {body}"))
}

fn main() -> Result<()> {
    let o = parse_args()?;
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is not installed (apt-get install wrk)");
    }
    println!(
        "ctxsync-bench-push: wrk -t{} -c{} -d{}s, single-change pushes over {} keys, durable (fsync per commit)",
        o.threads, o.connections, o.seconds, o.keys
    );
    let mut etcd_rate = None;
    if o.etcd {
        match start_etcd()? {
            Some(etcd) => {
                let load = run_wrk(&o, &format!("http://{}", etcd.addr), &etcd_script(o.keys))?;
                println!(
                    "etcd 3.4 (v3 JSON gateway, same client and keys): {:>8.0} puts/s  p50 {:.2} ms  p99 {:.2} ms  ({} requests, {} failed)",
                    load.per_sec, load.p50_ms, load.p99_ms, load.requests, load.failed
                );
                etcd_rate = Some(load.per_sec);
            }
            None => println!("etcd: skipped (no `etcd` binary; apt-get install etcd-server)"),
        }
    } else {
        println!("etcd: skipped (--no-etcd)");
    }
    println!(
        "{:>10}  {:>10}  {:>9}  {:>9}  {:>8}  {:>9}  check",
        "context", "pushes/s", "p50", "p99", "failed", "vs etcd"
    );
    for &kb in &o.sizes_kb {
        let (dir, token, size) = prepare_repo(&o, kb)?;
        let server = start_ctxsync(&o.bin, dir.path())?;
        let before = head_revision(&server.addr, &token)?;
        let load = run_wrk(
            &o,
            &format!("http://{}/v1/contexts/bench/push", server.addr),
            &ctxsync_script(&token, o.keys),
        )?;
        let after = head_revision(&server.addr, &token)?;
        let acknowledged = load.requests - load.failed.min(load.requests);
        // wrk stops counting at the deadline; pushes still in flight then may land too.
        let moved = after - before;
        let check = if moved >= acknowledged && moved <= acknowledged + o.connections as u64 {
            format!("head +{moved} for {acknowledged} acknowledged")
        } else {
            format!("MISMATCH: head +{moved} for {acknowledged} acknowledged")
        };
        let ratio = etcd_rate.map_or("-".to_owned(), |e| format!("{:.2}x", load.per_sec / e));
        println!(
            "{:>10}  {:>10.0}  {:>6.2} ms  {:>6.2} ms  {:>8}  {:>9}  {check}",
            human(size),
            load.per_sec,
            load.p50_ms,
            load.p99_ms,
            load.failed,
            ratio
        );
        drop(server);
        if o.verify {
            let t = Instant::now();
            let out = Command::new(&o.bin)
                .args(["verify", "--context", "bench", "-C"])
                .arg(dir.path())
                .output()?;
            println!(
                "{:>10}  verify: {} ({:.1} s)",
                "",
                String::from_utf8_lossy(&out.stdout).trim(),
                t.elapsed().as_secs_f64()
            );
            if !out.status.success() {
                bail!("verify failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    }
}
