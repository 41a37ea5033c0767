//! `ctxsync serve` and `ctxsync token` as real processes: tokens made by the CLI work
//! over HTTP at once (and stop working when revoked), SIGTERM shuts down gracefully even
//! with an event stream open, and a `kill -9` during a burst of pushes loses no push that
//! was acknowledged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("ctxsync")
}

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .env_remove("CTXSYNC_SERVER")
        .env_remove("CTXSYNC_AGENT")
        .output()
        .expect("run ctxsync")
}

fn token(dir: &Path, db: &str, agent: &str) -> String {
    let out = cli(dir, &["token", "create", "--agent", agent, "--db", db]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(secret.len(), 64, "{secret}");
    secret
}

/// A running `ctxsync serve`.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(dir: &Path, db: &str) -> Serve {
        let mut child = Command::new(bin())
            .current_dir(dir)
            .args(["serve", "--bind", "127.0.0.1:0", "--db", db])
            .env_remove("CTXSYNC_SERVER")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctxsync serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server printed its address");
        Serve { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Resp {
    status: u16,
    body: Value,
}

fn http(method: &str, url: &str, token: &str, body: Option<&Value>) -> Result<Resp, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let builder = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    let mut response = match body {
        Some(b) => agent.run(builder.body(b.to_string()).unwrap())?,
        None => agent.run(builder.body(()).unwrap())?,
    };
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Ok(Resp {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    })
}

fn must(method: &str, url: &str, token: &str, body: Option<&Value>) -> Resp {
    http(method, url, token, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

#[test]
fn serve_with_cli_tokens_revocation_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("store").join("ctxsync.db");
    std::fs::create_dir_all(db_path.parent().unwrap()).unwrap();
    let db = db_path.to_str().unwrap().to_owned();
    let builder = token(dir.path(), &db, "builder");
    let out = cli(
        dir.path(),
        &[
            "token", "create", "--agent", "planner", "--label", "ci", "--json", "--db", &db,
        ],
    );
    assert!(out.status.success());
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let planner = created["secret"].as_str().unwrap().to_owned();
    let planner_id = created["token"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["token"]["agent"], "planner");

    let server = Serve::start(dir.path(), &format!("sqlite://{db}"));
    assert!(server.addr.starts_with("127.0.0.1:"));
    let r = must("PUT", &server.url("/v1/contexts/demo"), &builder, None);
    assert_eq!(r.status, 201);
    let r = must(
        "POST",
        &server.url("/v1/contexts/demo/push"),
        &builder,
        Some(
            &json!({"agent": "builder", "level": "critical", "changes": [
            {"path": "project_state.current_phase", "to": "implementation"}]}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = must("GET", &server.url("/v1/contexts/demo"), &planner, None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["document"]["project_state"]["current_phase"],
        "implementation"
    );
    // Pushing as someone else.
    let r = must(
        "POST",
        &server.url("/v1/contexts/demo/push"),
        &planner,
        Some(&json!({"agent": "builder", "changes": [{"path": "x", "to": 1}]})),
    );
    assert_eq!(r.status, 403);

    // Revoked by another process: refused at the next request.
    let out = cli(dir.path(), &["token", "revoke", &planner_id, "--db", &db]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = must("GET", &server.url("/v1/contexts/demo"), &planner, None);
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "unauthorized");
    let out = cli(dir.path(), &["token", "list", "--json", "--db", &db]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let revoked = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == planner_id.as_str())
        .unwrap();
    assert!(revoked["revoked_ms"].is_u64());

    // An open event stream does not keep SIGTERM from stopping the server.
    let mut sse = TcpStream::connect(&server.addr).unwrap();
    write!(
        sse,
        "GET /v1/contexts/demo/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {builder}\r\n\r\n"
    )
    .unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    sse.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut server = server;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");

    // A PostgreSQL database that cannot be reached: a clear error naming it, exit 3.
    let out = cli(dir.path(), &["serve", "--db", "postgres://127.0.0.1:1/ctx"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot open the store at postgres://127.0.0.1:1/ctx"),
        "{out:?}"
    );
}

#[test]
fn kill_9_during_a_push_burst_loses_no_acknowledged_push() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ctxsync.db").to_str().unwrap().to_owned();
    let secret = token(dir.path(), &db, "builder");
    let mut server = Serve::start(dir.path(), &db);
    let r = must(
        "PUT",
        &server.url("/v1/contexts/burst"),
        &secret,
        Some(&json!({"document": {"burst": {"t0": 0, "t1": 0, "t2": 0, "t3": 0}}})),
    );
    assert_eq!(r.status, 201);

    let acked: Arc<Mutex<Vec<(u64, usize, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let url = server.url("/v1/contexts/burst/push");
    let workers: Vec<_> = (0..4)
        .map(|k| {
            let (acked, stop, url, secret) = (
                Arc::clone(&acked),
                Arc::clone(&stop),
                url.clone(),
                secret.clone(),
            );
            std::thread::spawn(move || {
                let mut value = 0u64;
                while !stop.load(Ordering::Relaxed) && value < 100_000 {
                    value += 1;
                    let body = json!({"agent": "builder", "changes": [
                        {"path": format!("burst.t{k}"), "to": value}]});
                    match http("POST", &url, &secret, Some(&body)) {
                        Ok(r) if r.status == 200 => {
                            let revision = r.body["revision"].as_u64().unwrap();
                            acked.lock().unwrap().push((revision, k, value));
                        }
                        Ok(r) => panic!("unexpected answer {}: {}", r.status, r.body),
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "only {} pushes acknowledged",
        acked.len()
    );
    eprintln!("{} pushes acknowledged before kill -9", acked.len());

    let server = Serve::start(dir.path(), &db);
    let head = must("GET", &server.url("/v1/contexts/burst/head"), &secret, None).body;
    let newest = acked.iter().map(|a| a.0).max().unwrap();
    assert!(head["revision"].as_u64().unwrap() >= newest, "{head}");
    let log = must(
        "GET",
        &server.url("/v1/contexts/burst/log?since=0"),
        &secret,
        None,
    )
    .body;
    let entries = log["entries"].as_array().unwrap();
    for (revision, k, value) in &acked {
        let entry = &entries[(*revision - 1) as usize];
        assert_eq!(entry["revision"], *revision);
        assert_eq!(entry["edits"][0]["path"], format!("burst.t{k}"));
        assert_eq!(entry["edits"][0]["new"], *value);
    }
    // Spot-check documents at acknowledged revisions.
    for (revision, k, value) in acked.iter().step_by((acked.len() / 15).max(1)) {
        let doc = must(
            "GET",
            &server.url(&format!("/v1/contexts/burst?at={revision}")),
            &secret,
            None,
        )
        .body;
        assert_eq!(doc["document"]["burst"][format!("t{k}")], *value);
    }
    let report = must(
        "POST",
        &server.url("/v1/contexts/burst/verify"),
        &secret,
        None,
    )
    .body;
    assert_eq!(report["ok"], true, "{report}");
}

#[test]
fn a_non_loopback_bind_needs_allow_remote_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ctxsync.db");
    for bind in ["0.0.0.0:0", "[::]:0"] {
        let out = cli(
            dir.path(),
            &["serve", "--bind", bind, "--db", db.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bind}: {stderr}");
        assert!(stderr.contains("--allow-remote"), "{stderr}");
        assert!(stderr.contains("TLS"), "{stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
    assert!(!db.exists(), "a refused serve opened the store");
    // A bad connection cap is refused the same way.
    let out = cli(dir.path(), &["serve", "--max-connections", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-connections"));
}

/// Starts `ctxsync serve` under `sh` after `limits` (e.g. `ulimit -Sn 256`); the child
/// and every stderr line up to "listening on".
#[cfg(target_os = "linux")]
fn serve_under(dir: &Path, limits: &str, args: &[&str]) -> (Child, Vec<String>) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{limits} && exec \"$0\" \"$@\""))
        .arg(bin())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir)
        .env_remove("CTXSYNC_SERVER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctxsync serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let done = line.starts_with("listening on ");
            lines.push(line);
            if done {
                let _ = tx.send(std::mem::take(&mut lines));
            }
        }
    });
    let lines = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server printed its address");
    (child, lines)
}

/// The soft and hard "Max open files" of a running process.
#[cfg(target_os = "linux")]
fn open_file_limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

#[cfg(target_os = "linux")]
#[test]
fn serve_raises_its_open_file_limit_and_fits_the_cap_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ctxsync.db");
    let db = db.to_str().unwrap();
    // A low soft limit under a higher hard one is raised to the hard one.
    let (_, own_hard) = open_file_limits(std::process::id());
    assert!(
        own_hard == "unlimited" || own_hard.parse::<u64>().unwrap() > 256,
        "the hard limit of this test ({own_hard}) leaves nothing to raise"
    );
    let (mut child, lines) = serve_under(dir.path(), "ulimit -Sn 256", &["--db", db]);
    let (soft, hard) = open_file_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(soft, hard, "{lines:?}");
    assert_ne!(soft, "256", "{lines:?}");
    // A low hard limit cannot be raised: the cap is lowered to fit it, and serve says so.
    let (mut child, lines) = serve_under(
        dir.path(),
        "ulimit -n 256",
        &["--db", db, "--max-connections", "1000"],
    );
    let (soft, _) = open_file_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(soft, "256");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("allows 224 connections, not 1000")),
        "{lines:?}"
    );
}
