//! The `/ui` dashboard end to end: a real `ctxsync serve` child process on an ephemeral
//! port, real headless Chromium driven by `playwright-core`
//! (crates/ctxsync-server/tests/ui/dashboard.test.mjs). Sign-in with a right and a
//! wrong token, a push by another process in the live feed, a conflict settled from the
//! page, trends drawn from real samples, the stream cut by a server restart and caught
//! up, the store down (its write-ahead log deleted under the server) shown and recovered
//! from, keyboard and narrow window, viewer and revoked tokens. A screenshot of each of
//! the six pages (`page-N-NAME.png`) and of the states shown (`state-NAME.png`) goes to
//! `target/ui-screenshots/` (the folder is printed), which CI keeps as artifacts.
//!
//! Needs `node`, the test folder's `node_modules` (`npm ci` in
//! crates/ctxsync-server/tests/ui) and Chromium (`/usr/bin/chromium`, or `CHROMIUM`);
//! without them the test prints SKIPPED and passes, so a machine without a browser
//! still runs the rest of the suite.
//!
//! The benchmark (page load to first live data, the feed under 1,000 revisions/s,
//! asset size) is `ctxsync-bench ui` (crates/ctxsync-bench/src/ui.rs, driving
//! crates/ctxsync-server/tests/ui/bench.mjs).

#[path = "agents_common.rs"]
mod agents_common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{Mode, Project};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ctxsync-server/tests/ui")
}

/// The browser and the driver, or why the test cannot run here.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium)",
            chromium.display()
        ));
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        return Err("no node on PATH".into());
    }
    let driver = ui_dir().join("node_modules/playwright-core");
    if !driver.exists() {
        return Err(format!(
            "no {} (run `npm ci` in crates/ctxsync-server/tests/ui)",
            driver.display()
        ));
    }
    Ok((chromium, ui_dir().join("dashboard.test.mjs")))
}

/// Where the screenshots go: the workspace's `target/ui-screenshots/`.
fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshots folder");
    dir.canonicalize().unwrap_or(dir)
}

/// Every `names` screenshot was written in this run (after `since`).
fn assert_screenshots(dir: &Path, names: &[&str], since: std::time::SystemTime) {
    for name in names {
        let path = dir.join(format!("{name}.png"));
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        assert!(fresh, "no screenshot {} from this run", path.display());
    }
    println!("screenshots of every page in {}", dir.display());
}

fn ctxsync(root: &Path, args: &[&str]) -> String {
    let out = Command::new(assert_cmd::cargo::cargo_bin("ctxsync"))
        .args(args)
        .arg("-C")
        .arg(root)
        .env_remove("CTXSYNC_SERVER")
        .env_remove("CTXSYNC_TOKEN")
        .env_remove("CTXSYNC_AGENT")
        .env_remove("CTXSYNC_CONTEXT")
        .output()
        .expect("run ctxsync");
    assert!(
        out.status.success(),
        "ctxsync {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs the node script against a fresh server; answers its `CTL` requests; returns
/// its output lines. Panics when it fails.
fn run_script() -> Option<Vec<String>> {
    let (chromium, script) = match tools() {
        Ok(found) => found,
        Err(why) => {
            println!("SKIPPED: the dashboard browser test needs {why}");
            return None;
        }
    };
    let mut project = Project::new(Mode::Remote);
    let server = project.server.as_mut().expect("remote mode has a server");
    let root = server.root.clone();
    ctxsync(&root, &["init"]);
    let admin = ctxsync(
        &root,
        &["token", "create", "--agent", "lead", "--role", "admin"],
    );
    let viewer = ctxsync(
        &root,
        &["token", "create", "--agent", "watcher", "--role", "viewer"],
    );
    let builder = server.token("builder");
    let reviewer = server.token("reviewer");
    let screenshots = screenshots_dir();
    let db = root.join(".ctxsync/ctxsync.db");
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(ui_dir())
        .env("CTXSYNC_URL", server.url())
        .env("CONTEXT", "default")
        .env("ADMIN_TOKEN", &admin)
        .env("VIEWER_TOKEN", &viewer)
        .env("BUILDER_TOKEN", &builder)
        .env("REVIEWER_TOKEN", &reviewer)
        .env("CHROMIUM", &chromium)
        .env("OUT_DIR", &screenshots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let mut to_script = child.stdin.take().expect("stdin");
    let from_script = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    for line in from_script.lines().map_while(Result::ok) {
        println!("{line}");
        match line.as_str() {
            "CTL stop" => {
                // Down: the stream breaks. Two revisions are made while it is down, by
                // another process on the same store, which the page must catch up on.
                server.kill();
                ctxsync(
                    &root,
                    &["set", "project_state.offline_a", "1", "--agent", "builder"],
                );
                ctxsync(
                    &root,
                    &["set", "project_state.offline_b", "2", "--agent", "builder"],
                );
                writeln!(to_script, "stopped").expect("answer the script");
            }
            "CTL start" => {
                server.restart();
                writeln!(to_script, "started").expect("answer the script");
            }
            "CTL break-store" => {
                // What an operator's slip does: the running store's write-ahead log is
                // deleted. The server notices (writes refused, /readyz 503) until the
                // store is reopened.
                let wal = db.with_file_name("ctxsync.db-wal");
                std::fs::remove_file(&wal)
                    .unwrap_or_else(|e| panic!("delete {}: {e}", wal.display()));
                writeln!(to_script, "broken").expect("answer the script");
            }
            "CTL restart" => {
                server.restart();
                writeln!(to_script, "restarted").expect("answer the script");
            }
            "CTL revoke-viewer" => {
                let listed = ctxsync(&root, &["token", "list"]);
                let id = listed
                    .lines()
                    .find(|l| l.contains("watcher"))
                    .and_then(|l| l.split_whitespace().next())
                    .expect("the viewer's token is listed")
                    .to_owned();
                ctxsync(&root, &["token", "revoke", &id]);
                writeln!(to_script, "revoked").expect("answer the script");
            }
            _ => {}
        }
        lines.push(line);
    }
    let status = child.wait().expect("node exits");
    assert!(
        status.success(),
        "the dashboard browser test failed (screenshots in {})",
        screenshots.display()
    );
    Some(lines)
}

#[test]
fn ui_dashboard_in_chromium() {
    let since = std::time::SystemTime::now();
    let Some(lines) = run_script() else {
        return;
    };
    // Every step reported itself; none was left out.
    let passed = lines.iter().filter(|l| l.starts_with("ok - ")).count();
    assert_eq!(passed, 11, "every browser check ran: {lines:#?}");
    assert_screenshots(
        &screenshots_dir(),
        &[
            "page-1-overview",
            "page-2-context",
            "page-3-agents",
            "page-4-conflicts",
            "page-5-trends",
            "state-store-down",
            "state-stream-lost",
        ],
        since,
    );
}

/// Kills the child however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The *Agent sync* page against `serve --watch-agents` over a copy of the
/// OpenAgentBuilder fixture: the initial generation and reference check, a module edit
/// shown as a new generation, a hand-edit conflict (agentsync.test.mjs).
#[test]
fn ui_agent_sync_in_chromium() {
    let (chromium, _) = match tools() {
        Ok(found) => found,
        Err(why) => {
            println!("SKIPPED: the agent sync browser test needs {why}");
            return;
        }
    };
    let Some(repo) = agents_common::fixture_copy() else {
        return;
    };
    let root = repo.path();
    ctxsync(root, &["init"]);
    let admin = ctxsync(
        root,
        &["token", "create", "--agent", "lead", "--role", "admin"],
    );
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("ctxsync"))
        .args(["serve", "--bind", "127.0.0.1:0", "--watch-agents", "-C"])
        .arg(root)
        .env_remove("CTXSYNC_SERVER")
        .env_remove("CTXSYNC_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ctxsync serve --watch-agents");
    let stderr = child.stderr.take().expect("stderr");
    let server = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
            // Keep draining, so the server never blocks on a full pipe.
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the server says where it listens");
    let screenshots = screenshots_dir();
    let since = std::time::SystemTime::now();
    let out = Command::new("node")
        .arg(ui_dir().join("agentsync.test.mjs"))
        .current_dir(ui_dir())
        .env("CTXSYNC_URL", format!("http://{addr}"))
        .env("TOKEN", &admin)
        .env("ROOT", root)
        .env("CHROMIUM", &chromium)
        .env("OUT_DIR", &screenshots)
        .stderr(Stdio::inherit())
        .output()
        .expect("run node");
    drop(server);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "the agent sync browser test failed (screenshots in {})",
        screenshots.display()
    );
    let passed = text.lines().filter(|l| l.starts_with("ok - ")).count();
    assert_eq!(passed, 3, "every agent sync check ran: {text}");
    assert_screenshots(
        &screenshots,
        &["page-6-agent-sync", "state-agent-sync-conflict"],
        since,
    );
}

/// The trends' sync series (`pushes`, latency, conflicts, failures) per bucket, summed.
fn trend_totals(url: &str, token: &str) -> (u64, u64, u64) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(20)))
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .uri(format!("{url}/v1/contexts/default/trends?window=1h"))
        .header("Authorization", format!("Bearer {token}"))
        .body(())
        .expect("a request");
    let mut response = agent.run(request).expect("GET trends");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.body_mut().read_to_string().expect("the body");
    let trends: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let buckets = trends["buckets"].as_array().expect("buckets");
    let sum = |f: &dyn Fn(&serde_json::Value) -> u64| buckets.iter().map(f).sum::<u64>();
    (
        sum(&|b| b["pushes"].as_u64().unwrap_or(0)),
        sum(&|b| b["pushes_by_level"]["session"].as_u64().unwrap_or(0)),
        sum(&|b| u64::from(b["p95_ms"].is_number())),
    )
}

/// Trends read the store's sync log: syncs that another process made on the same store
/// (the CLI, while the server runs) are counted, and a restarted server still shows
/// every one of them.
#[test]
fn trends_count_other_processes_syncs_and_survive_a_restart() {
    let mut project = Project::new(Mode::Remote);
    let server = project.server.as_mut().expect("remote mode has a server");
    let root = server.root.clone();
    ctxsync(&root, &["init"]);
    let admin = ctxsync(
        &root,
        &["token", "create", "--agent", "lead", "--role", "admin"],
    );
    let (before, _, _) = trend_totals(&server.url(), &admin);
    for i in 0..3 {
        let path = format!("project_state.cli_{i}");
        ctxsync(
            &root,
            &[
                "set", &path, "1", "--agent", "builder", "--level", "session",
            ],
        );
    }
    let (pushes, session, timed) = trend_totals(&server.url(), &admin);
    assert_eq!(pushes, before + 3, "the CLI's three syncs are counted");
    assert_eq!(session, 3, "by their level");
    assert!(timed >= 1, "their durations are plotted");
    server.restart();
    let after = trend_totals(&server.url(), &admin);
    assert_eq!(after, (pushes, session, timed), "a restart keeps them");
}
