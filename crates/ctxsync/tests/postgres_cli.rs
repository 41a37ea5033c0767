//! The CLI and real `ctxsync serve` processes on PostgreSQL (CTXSYNC_TEST_PG_URL), each
//! test on a database of its own, created and dropped by the test: `init`, `token`,
//! `serve`, `verify`, `history` with `--db postgres://…` (and `CTXSYNC_DB`), two servers
//! on one database taking pushes at once, a token revoked through the CLI refused by both
//! servers at their next request, a subscriber on one server getting every revision
//! pushed through the other in order and resuming on the first with `Last-Event-ID`,
//! kill -9 of one server during a burst (every acknowledged push kept, the other
//! serving throughout), and `migrate`.
//! Skipped, saying so, when the variable is unset.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("ctxsync")
}

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .env_remove("CTXSYNC_SERVER")
        .env_remove("CTXSYNC_AGENT")
        .env_remove("CTXSYNC_DB")
        .output()
        .expect("run ctxsync")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = cli(dir, args);
    assert!(
        out.status.success(),
        "ctxsync {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A database of its own for one test, dropped at the end.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

fn psql(url: &str, statement: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", statement])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestDb {
    fn new() -> Option<Self> {
        let Ok(admin) = std::env::var("CTXSYNC_TEST_PG_URL") else {
            eprintln!("skipped: CTXSYNC_TEST_PG_URL unset (PostgreSQL tests did not run)");
            return None;
        };
        let name = format!(
            "ctxsync_cli_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A running `ctxsync serve --db URL` on an ephemeral port.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(dir: &Path, db: &str) -> Self {
        let mut child = Command::new(bin())
            .current_dir(dir)
            .args(["serve", "--bind", "127.0.0.1:0", "--db", db])
            .env_remove("CTXSYNC_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctxsync serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let _ = tx.send(addr.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server did not say where it listens");
        Self { child, addr }
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

fn http(method: &str, url: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let builder = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    let mut response = match body {
        Some(b) => agent.run(builder.body(b.to_string()).unwrap()),
        None => agent.run(builder.body(()).unwrap()),
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn init_token_two_servers_push_and_verify_on_one_database() {
    let Some(db) = TestDb::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = db.url.as_str();
    let created = ok(dir.path(), &["init", "--db", url, "--context", "demo"]);
    assert!(created.contains("revision 0"), "{created}");
    assert!(
        !dir.path().join(".ctxsync").join("ctxsync.db").exists(),
        "no SQLite file when the store is PostgreSQL"
    );
    let secret = ok(
        dir.path(),
        &["token", "create", "--agent", "builder", "--db", url],
    )
    .trim()
    .to_owned();
    let a = Serve::start(dir.path(), url);
    let b = Serve::start(dir.path(), url);

    // Four clients push through both servers at once; every acknowledged push is its own
    // revision, with no gap and no duplicate.
    const EACH: u64 = 25;
    let urls = Arc::new([
        a.url("/v1/contexts/demo/push"),
        b.url("/v1/contexts/demo/push"),
    ]);
    let workers: Vec<_> = (0..4)
        .map(|k| {
            let (urls, secret) = (Arc::clone(&urls), secret.clone());
            std::thread::spawn(move || {
                let mut revisions = Vec::new();
                for i in 0..EACH {
                    let body = json!({"agent": "builder", "level": "checkpoint",
                        "changes": [{"path": format!("project_state.w{k}"), "to": i}]});
                    let (status, answer) =
                        http("POST", &urls[(k + i as usize) % 2], &secret, Some(&body));
                    assert_eq!(status, 200, "{answer}");
                    revisions.push(answer["revision"].as_u64().unwrap());
                }
                revisions
            })
        })
        .collect();
    let mut all: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=4 * EACH).collect::<Vec<_>>());

    // Each server reads what the other committed.
    let (status, doc) = http(
        "GET",
        &a.url("/v1/contexts/demo?format=json"),
        &secret,
        None,
    );
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["revision"], 4 * EACH);
    let (_, doc_b) = http(
        "GET",
        &b.url("/v1/contexts/demo?format=json"),
        &secret,
        None,
    );
    assert_eq!(doc_b["revision"], 4 * EACH);
    assert_eq!(doc_b["checksum"], doc["checksum"]);

    // The operator's CLI on the same database: verify, history, status.
    let verified = ok(dir.path(), &["verify", "--db", url, "--context", "demo"]);
    assert!(verified.starts_with("ok:"), "{verified}");
    let history: Value = serde_json::from_str(&ok(
        dir.path(),
        &[
            "history",
            "--db",
            url,
            "--context",
            "demo",
            "--json",
            "--last",
            "1000",
        ],
    ))
    .unwrap();
    let revisions: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, (1..=4 * EACH).rev().collect::<Vec<_>>());

    // CTXSYNC_DB names the store as --db does.
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["get", "project_state.w0", "--context", "demo"])
        .env("CTXSYNC_DB", url)
        .env_remove("CTXSYNC_SERVER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (EACH - 1).to_string()
    );

    // A token revoked through the CLI is refused by both servers at their next request.
    let listed: Value =
        serde_json::from_str(&ok(dir.path(), &["token", "list", "--db", url, "--json"])).unwrap();
    let id = listed["tokens"][0]["id"].as_str().unwrap().to_owned();
    ok(dir.path(), &["token", "revoke", &id, "--db", url]);
    for server in [&a, &b] {
        let (status, body) = http("GET", &server.url("/v1/contexts/demo"), &secret, None);
        assert_eq!(status, 401, "{body}");
    }
}

#[test]
fn a_store_url_in_the_config_is_used() {
    let Some(db) = TestDb::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ctxsync.toml"),
        format!("[store]\nurl = \"{}\"\n", db.url),
    )
    .unwrap();
    ok(dir.path(), &["init"]);
    ok(dir.path(), &["set", "x", "1", "--agent", "a"]);
    assert_eq!(ok(dir.path(), &["get", "x"]).trim(), "1");
    assert!(!dir.path().join(".ctxsync").join("ctxsync.db").exists());
    // The same database through --db sees it.
    assert_eq!(ok(dir.path(), &["get", "x", "--db", &db.url]).trim(), "1");
}

/// The `id:`s of `revision` events read from a Server-Sent Events stream (HTTP/1.1,
/// chunked), over a raw socket.
struct Sse {
    reader: BufReader<std::net::TcpStream>,
    pending: String,
}

impl Sse {
    fn connect(addr: &str, path: &str, token: &str, last_event_id: Option<u64>) -> Self {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        write!(
            socket,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Accept: text/event-stream\r\n{resume}\r\n"
        )
        .unwrap();
        // A stream that stops delivering fails the test rather than hanging it.
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                break;
            }
        }
        Self {
            reader,
            pending: String::new(),
        }
    }

    /// The revision of the next `revision` event.
    fn next_revision(&mut self) -> u64 {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut id = None;
                let mut revision_event = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    }
                    if line.strip_prefix("event:").map(str::trim) == Some("revision") {
                        revision_event = true;
                    }
                }
                match (revision_event, id) {
                    (true, Some(id)) => return id,
                    _ => continue,
                }
            }
            let mut size = String::new();
            self.reader
                .read_line(&mut size)
                .expect("the stream went quiet");
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0u8; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.pending
                .push_str(&String::from_utf8_lossy(&chunk[..size]));
        }
    }
}

#[test]
fn a_subscriber_on_one_server_gets_every_push_through_the_other_and_resumes_there() {
    let Some(db) = TestDb::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = db.url.as_str();
    ok(dir.path(), &["init", "--db", url, "--context", "demo"]);
    let secret = ok(
        dir.path(),
        &["token", "create", "--agent", "builder", "--db", url],
    )
    .trim()
    .to_owned();
    let a = Serve::start(dir.path(), url);
    let b = Serve::start(dir.path(), url);
    let mut on_b = Sse::connect(&b.addr, "/v1/contexts/demo/events?since=0", &secret, None);
    let push = |server: &Serve, i: u64| {
        let body = json!({"agent": "builder", "level": "checkpoint",
            "changes": [{"path": "project_state.n", "to": i}]});
        let (status, answer) = http(
            "POST",
            &server.url("/v1/contexts/demo/push"),
            &secret,
            Some(&body),
        );
        assert_eq!(status, 200, "{answer}");
        answer["revision"].as_u64().unwrap()
    };
    for i in 1..=30 {
        assert_eq!(push(&a, i), i);
    }
    let seen: Vec<u64> = (0..15).map(|_| on_b.next_revision()).collect();
    assert_eq!(seen, (1..=15).collect::<Vec<_>>());
    drop(on_b);
    // Resumed on the other server: nothing lost, nothing repeated.
    let mut on_a = Sse::connect(&a.addr, "/v1/contexts/demo/events", &secret, Some(15));
    let rest: Vec<u64> = (0..15).map(|_| on_a.next_revision()).collect();
    assert_eq!(rest, (16..=30).collect::<Vec<_>>());
    // And a push through B reaches the subscriber on A.
    assert_eq!(push(&b, 31), 31);
    assert_eq!(on_a.next_revision(), 31);
}

#[test]
fn migrate_copies_everything_verifies_and_refuses_a_non_empty_target() {
    let Some(db) = TestDb::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.db");
    // 3 contexts and 10,000 revisions, a deferred conflict, an idempotency key, a token.
    {
        let store = ctxsync_store::SqliteStore::open(
            &file,
            ctxsync_store::StoreOptions {
                synchronous: ctxsync_store::Synchronous::Normal,
                snapshot_every: 50,
                ..ctxsync_store::StoreOptions::default()
            },
        )
        .unwrap();
        use ctxsync_store::Store as _;
        let push =
            |context: &str, agent: &str, changes: Value, strategy: &str, id: Option<&str>| {
                let request: ctxsync_core::PushRequest = serde_json::from_value(json!({
                    "agent": agent, "level": "checkpoint", "strategy": strategy,
                    "request_id": id, "changes": changes,
                }))
                .unwrap();
                store.push(context, request).unwrap()
            };
        for context in ["alpha", "beta", "gamma"] {
            store
                .create_context(context, json!({"n": 0, "list": []}))
                .unwrap();
        }
        for i in 0..10_000u64 {
            let context = ["alpha", "beta", "gamma"][(i % 3) as usize];
            let changes = if i % 10 == 0 {
                json!([{"path": "list[-]", "to": {"id": format!("e{i}")}}])
            } else {
                json!([{"path": "n", "to": i}])
            };
            push(context, &format!("a{}", i % 4), changes, "merge", None);
        }
        push(
            "alpha",
            "b",
            json!([{"path": "n", "from": -1, "to": 1}]),
            "defer",
            None,
        );
        push(
            "beta",
            "b",
            json!([{"path": "k", "to": 1}]),
            "merge",
            Some("01JD0000000000000000000001"),
        );
        store
            .create_token(
                "builder",
                "ctxs_0123456789abcdef0123",
                "",
                ctxsync_store::Role::Agent,
            )
            .unwrap();
    }
    let from = file.to_str().unwrap();
    let out = ok(
        dir.path(),
        &["migrate", "--from", from, "--to", &db.url, "--json"],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["contexts"], 3);
    assert_eq!(report["revisions"], 10_001);
    assert_eq!(report["tokens"], 1);

    // Both sides answer the same: heads, checksums, whole histories, conflicts.
    for context in ["alpha", "beta", "gamma"] {
        let side = |db: &str, what: &[&str]| -> Value {
            let mut args = what.to_vec();
            args.extend_from_slice(&["--db", db, "--context", context, "--json"]);
            serde_json::from_str(&ok(dir.path(), &args)).unwrap()
        };
        let history = |db: &str| side(db, &["history", "--last", "100000"]);
        assert_eq!(history(from), history(&db.url), "{context}");
        assert_eq!(side(from, &["pull"]), side(&db.url, &["pull"]), "{context}");
        // `conflicts` exits 1 while some are open: the same on both sides.
        let conflicts = |db: &str| {
            let out = cli(
                dir.path(),
                &["conflicts", "--db", db, "--context", context, "--json"],
            );
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        assert_eq!(conflicts(from), conflicts(&db.url), "{context}");
        let verified = ok(
            dir.path(),
            &["verify", "--db", &db.url, "--context", context],
        );
        assert!(verified.starts_with("ok:"), "{verified}");
    }
    // The idempotency key came along: the same request replays on the target.
    {
        use ctxsync_store::Store as _;
        let target =
            ctxsync_store_postgres::PgStore::open(&db.url, ctxsync_store::StoreOptions::default())
                .unwrap();
        let request: ctxsync_core::PushRequest = serde_json::from_value(json!({
            "agent": "b", "level": "checkpoint", "strategy": "merge",
            "request_id": "01JD0000000000000000000001", "changes": [{"path": "k", "to": 1}],
        }))
        .unwrap();
        assert!(target.push("beta", request).unwrap().replayed);
    }
    let (tokens_a, tokens_b) = (
        ok(dir.path(), &["token", "list", "--db", from, "--json"]),
        ok(dir.path(), &["token", "list", "--db", &db.url, "--json"]),
    );
    assert_eq!(tokens_a, tokens_b);

    // A second copy into the now non-empty target is refused (exit 2), unless forced.
    let out = cli(dir.path(), &["migrate", "--from", from, "--to", &db.url]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{out:?}"
    );
    let forced = ok(
        dir.path(),
        &["migrate", "--from", from, "--to", &db.url, "--force"],
    );
    assert!(forced.contains("verified"), "{forced}");
}

/// Like `http`, but a connection failure is `None` (the server is gone).
fn try_http(method: &str, url: &str, token: &str, body: &Value) -> Option<(u16, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .unwrap();
    let mut response = agent.run(request).ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[test]
fn kill_9_of_one_server_during_a_burst_loses_no_acknowledged_push_and_the_other_serves() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let Some(db) = TestDb::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = db.url.as_str();
    ok(
        dir.path(),
        &[
            "init",
            "--db",
            url,
            "--context",
            "burst",
            "--template",
            "empty",
        ],
    );
    let secret = ok(
        dir.path(),
        &["token", "create", "--agent", "builder", "--db", url],
    )
    .trim()
    .to_owned();
    let mut a = Serve::start(dir.path(), url);
    let b = Serve::start(dir.path(), url);
    // (revision, worker, value) of every acknowledged push; workers 0-3 push through A,
    // worker 4 through B, which must answer every one of its pushes throughout.
    let acked: Arc<Mutex<Vec<(u64, usize, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..5)
        .map(|k| {
            let (acked, stop, secret) = (Arc::clone(&acked), Arc::clone(&stop), secret.clone());
            let url = if k < 4 {
                a.url("/v1/contexts/burst/push")
            } else {
                b.url("/v1/contexts/burst/push")
            };
            std::thread::spawn(move || {
                let mut value = 0u64;
                while !stop.load(Ordering::Relaxed) && value < 100_000 {
                    value += 1;
                    let body = json!({"agent": "builder", "changes": [
                        {"path": format!("t{k}"), "to": value}]});
                    match try_http("POST", &url, &secret, &body) {
                        Some((200, r)) => {
                            let revision = r["revision"].as_u64().unwrap();
                            acked.lock().unwrap().push((revision, k, value));
                        }
                        Some((status, r)) => panic!("unexpected answer {status}: {r}"),
                        None if k < 4 => break, // A is gone
                        None => panic!("server B stopped answering"),
                    }
                }
                value
            })
        })
        .collect();
    // Kill A once it has acknowledged a good number of pushes (whenever that is; the
    // deadline only turns a stuck server into a failure instead of a hang).
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        assert!(std::time::Instant::now() < deadline, "the burst stalled");
        let through_a = acked.lock().unwrap().iter().filter(|e| e.1 < 4).count();
        if through_a >= 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    // B goes on taking pushes after A died.
    let after_kill = acked.lock().unwrap().len();
    loop {
        assert!(std::time::Instant::now() < deadline, "server B stalled");
        let by_b_since = acked.lock().unwrap()[after_kill..]
            .iter()
            .filter(|e| e.1 == 4)
            .count();
        if by_b_since >= 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // Every acknowledged push is in the log, at its revision, with its value.
    let log = http(
        "GET",
        &b.url("/v1/contexts/burst/log?since=0"),
        &secret,
        None,
    )
    .1;
    let entries = log["entries"].as_array().unwrap();
    let mut revisions: Vec<u64> = acked.iter().map(|e| e.0).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        acked.len(),
        "no revision acknowledged twice"
    );
    for (revision, k, value) in &acked {
        let entry = &entries[(*revision - 1) as usize];
        assert_eq!(entry["revision"], *revision);
        assert_eq!(entry["edits"][0]["path"], format!("t{k}"));
        assert_eq!(entry["edits"][0]["new"], *value);
    }
    let verified = ok(dir.path(), &["verify", "--db", url, "--context", "burst"]);
    assert!(verified.starts_with("ok:"), "{verified}");
}
