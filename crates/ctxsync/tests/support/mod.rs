//! Shared harness for the CLI tests: a project directory used either in embedded mode
//! (the CLI opens `.ctxsync/ctxsync.db`) or in remote mode (a real `ctxsync serve` child
//! process on an ephemeral loopback port, with a real bearer token per agent), so the same
//! test cases run against both and must give the same results.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Remote,
}

/// A running `ctxsync serve`.
pub struct Server {
    child: Option<Child>,
    /// Where the server's own ctxsync.toml and store live.
    pub root: PathBuf,
    pub addr: String,
    tokens: Mutex<HashMap<String, String>>,
}

/// Settings a developer's shell may carry that would change what a test runs against.
const INHERITED: [&str; 4] = [
    "CTXSYNC_AGENT",
    "CTXSYNC_CONTEXT",
    "CTXSYNC_SERVER",
    "CTXSYNC_TOKEN",
];

fn bin() -> Command {
    let mut cmd = Command::cargo_bin("ctxsync").expect("binary");
    for var in INHERITED {
        cmd.env_remove(var);
    }
    cmd
}

impl Server {
    /// Starts a server on `bind` (use `127.0.0.1:0` for a fresh port) over `root`'s store.
    pub fn start(root: &Path, bind: &str) -> Self {
        let mut server = Self {
            child: None,
            root: root.to_path_buf(),
            addr: String::new(),
            tokens: Mutex::new(HashMap::new()),
        };
        server.spawn(bind);
        server
    }

    fn spawn(&mut self, bind: &str) {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ctxsync"));
        for var in INHERITED {
            cmd.env_remove(var);
        }
        cmd.args(["serve", "--bind", bind, "-C"])
            .arg(&self.root)
            .env("CTXSYNC_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ctxsync serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server did not say where it listens");
        self.addr = addr;
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token of `agent`, created on first use with the real CLI.
    pub fn token(&self, agent: &str) -> String {
        let mut tokens = self.tokens.lock().expect("tokens");
        if let Some(t) = tokens.get(agent) {
            return t.clone();
        }
        let out = bin()
            .args(["token", "create", "--agent", agent, "-C"])
            .arg(&self.root)
            .output()
            .expect("token create");
        assert!(
            out.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let secret = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        tokens.insert(agent.to_owned(), secret.clone());
        secret
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same address (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        let addr = self.addr.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port may linger for a moment after the kill.
            if std::net::TcpListener::bind(&addr).is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn(&addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A project directory, embedded or remote.
pub struct Project {
    pub mode: Mode,
    dir: tempfile::TempDir,
    pub server: Option<Server>,
}

impl Project {
    pub fn new(mode: Mode) -> Self {
        Self::with_config(mode, "")
    }

    /// `config` is ctxsync.toml; in remote mode the server gets it too (ownership,
    /// quotas), since those rules are enforced where the store is.
    pub fn with_config(mode: Mode, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        if !config.is_empty() {
            std::fs::write(dir.path().join("ctxsync.toml"), config).expect("write config");
        }
        let server = (mode == Mode::Remote).then(|| {
            let root = dir.path().join("server-side");
            std::fs::create_dir_all(&root).expect("server dir");
            std::fs::write(root.join("ctxsync.toml"), config).expect("write server config");
            Server::start(&root, "127.0.0.1:0")
        });
        Self { mode, dir, server }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The agent a command acts as: its `--agent`, else `cli` (the token's agent in
    /// remote mode; named on embedded writes by [`Self::named_writer`]).
    fn acting_agent(args: &[&str]) -> String {
        args.iter()
            .position(|a| *a == "--agent")
            .and_then(|i| args.get(i + 1))
            .map_or("cli".to_owned(), |a| (*a).to_owned())
    }

    /// Writes must name their agent (there is no default one); most tests do not care
    /// who writes, so a write without `--agent` acts as `cli`. Tests of the rule itself
    /// use [`Self::raw`].
    fn named_writer(args: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let writes = matches!(args.first(), Some(&("set" | "push" | "revert")));
        if writes && !args.contains(&"--agent") && !args.contains(&"--") {
            out.push("--agent".into());
            out.push("cli".into());
        }
        out
    }

    /// A `ctxsync` command run exactly as given (no agent added).
    pub fn raw(&self, args: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.current_dir(self.path()).args(args);
        if let Some(server) = &self.server {
            cmd.env("CTXSYNC_SERVER", server.url())
                .env("CTXSYNC_TOKEN", server.token(&Self::acting_agent(args)));
        }
        cmd
    }

    /// A `ctxsync` command run in `dir` (a folder of this project).
    pub fn cmd_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.current_dir(dir).args(Self::named_writer(args));
        if let Some(server) = &self.server {
            cmd.env("CTXSYNC_SERVER", server.url())
                .env("CTXSYNC_TOKEN", server.token(&Self::acting_agent(args)));
        }
        cmd
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_in(self.path(), args)
    }

    /// Starts a long-running command (e.g. `watch`) as a child process.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ctxsync"));
        for var in INHERITED {
            cmd.env_remove(var);
        }
        cmd.current_dir(self.path())
            .args(Self::named_writer(args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(server) = &self.server {
            cmd.env("CTXSYNC_SERVER", server.url())
                .env("CTXSYNC_TOKEN", server.token(&Self::acting_agent(args)));
        }
        cmd.spawn().expect("spawn ctxsync")
    }

    /// Starts a long-running command with its stderr collected, line by line, into the
    /// returned log, and its stdout too (those lines prefixed `stdout: `). The child is
    /// killed when the guard drops, so a failed assertion does not leave it running.
    pub fn spawn_logged(&self, args: &[&str]) -> (Running, Log) {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ctxsync"));
        for var in INHERITED {
            cmd.env_remove(var);
        }
        cmd.current_dir(self.path())
            .args(Self::named_writer(args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(server) = &self.server {
            cmd.env("CTXSYNC_SERVER", server.url())
                .env("CTXSYNC_TOKEN", server.token(&Self::acting_agent(args)));
        }
        let mut child = cmd.spawn().expect("spawn ctxsync");
        let log = Log::default();
        let stderr = child.stderr.take().expect("stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.0.lock().expect("log").push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.0.lock().expect("log").push(format!("stdout: {line}"));
            }
        });
        (Running(child), log)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run ctxsync")
    }

    pub fn run_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.cmd_in(dir, args).output().expect("run ctxsync")
    }

    /// `ctxsync set PATH VALUE --agent AGENT`, which must succeed.
    pub fn set_as(&self, agent: &str, path: &str, value: &str) -> String {
        self.ok(&["set", path, value, "--agent", agent])
    }

    pub fn ok(&self, args: &[&str]) -> String {
        check(args, self.run(args))
    }

    pub fn ok_in(&self, dir: &Path, args: &[&str]) -> String {
        check(args, self.run_in(dir, args))
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ctxsync {args:?}: not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The JSON answer of a command that succeeded, or `None`.
    pub fn try_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn revision(&self) -> u64 {
        self.json(&["status"])["head"]["revision"]
            .as_u64()
            .expect("revision")
    }

    pub fn init(&self) {
        self.ok(&["init"]);
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

fn check(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "ctxsync {args:?} failed ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed (and reaped) on drop.
pub struct Running(pub Child);

impl Running {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The stderr lines of a child started with [`Project::spawn_logged`], as they come.
#[derive(Clone, Default)]
pub struct Log(std::sync::Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("log").clone()
    }

    /// The lines that contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }
}

/// Polls `probe` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Generates `#[test]` wrappers running each scenario in both modes.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test] fn $name() { super::$name($crate::support::Mode::Embedded) })*
        }
        mod remote {
            $(#[test] fn $name() { super::$name($crate::support::Mode::Remote) })*
        }
    };
}
