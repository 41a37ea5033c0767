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
    /// Embedded, on a PostgreSQL database of the test's own (`CTXSYNC_DB`).
    Postgres,
    /// Remote, through two servers sharing one PostgreSQL database, commands alternating
    /// between them.
    TwoServers,
}

impl Mode {
    pub fn is_remote(self) -> bool {
        matches!(self, Mode::Remote | Mode::TwoServers)
    }
}

/// A PostgreSQL database of the test's own, dropped at the end; `None` (said on stderr)
/// without `CTXSYNC_TEST_PG_URL`.
pub struct PgDb {
    admin: String,
    name: String,
    pub url: String,
}

fn psql(url: &str, statement: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", statement])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgDb {
    pub fn new() -> Option<Self> {
        let Ok(admin) = std::env::var("CTXSYNC_TEST_PG_URL") else {
            eprintln!("skipped: CTXSYNC_TEST_PG_URL unset (PostgreSQL tests did not run)");
            return None;
        };
        let name = format!("ctxsync_m_{}", ulid::Ulid::new().to_string().to_lowercase());
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }

    /// Whether PostgreSQL modes run (said once per skipped test).
    pub fn available() -> bool {
        let set = std::env::var("CTXSYNC_TEST_PG_URL").is_ok();
        if !set {
            eprintln!("skipped: CTXSYNC_TEST_PG_URL unset (PostgreSQL tests did not run)");
        }
        set
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A running `ctxsync serve`.
pub struct Server {
    child: Option<Child>,
    /// Where the server's own ctxsync.toml and store live.
    pub root: PathBuf,
    pub addr: String,
    tokens: Mutex<HashMap<String, String>>,
    /// `--db` of the server and of its `token create` (a PostgreSQL database).
    db: Option<String>,
}

/// Settings a developer's shell may carry that would change what a test runs against.
const INHERITED: [&str; 5] = [
    "CTXSYNC_AGENT",
    "CTXSYNC_CONTEXT",
    "CTXSYNC_SERVER",
    "CTXSYNC_TOKEN",
    "CTXSYNC_DB",
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
        Self::start_on(root, bind, None)
    }

    /// Like [`Server::start`], over the store `db` (`--db`).
    pub fn start_on(root: &Path, bind: &str, db: Option<&str>) -> Self {
        let mut server = Self {
            child: None,
            root: root.to_path_buf(),
            addr: String::new(),
            tokens: Mutex::new(HashMap::new()),
            db: db.map(str::to_owned),
        };
        server.spawn(bind);
        server
    }

    fn spawn(&mut self, bind: &str) {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ctxsync"));
        for var in INHERITED {
            cmd.env_remove(var);
        }
        cmd.args(["serve", "--bind", bind, "-C"]).arg(&self.root);
        if let Some(db) = &self.db {
            cmd.args(["--db", db]);
        }
        cmd.env("CTXSYNC_LOG", "info")
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
        let mut cmd = bin();
        cmd.args(["token", "create", "--agent", agent, "-C"])
            .arg(&self.root);
        if let Some(db) = &self.db {
            cmd.args(["--db", db]);
        }
        let out = cmd.output().expect("token create");
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
    /// The second server of [`Mode::TwoServers`].
    pub second: Option<Server>,
    /// Which server the next command goes to (two servers: alternately).
    turn: std::sync::atomic::AtomicUsize,
    /// Dropped after the servers (fields drop in order).
    pub pg: Option<PgDb>,
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
        let pg = match mode {
            Mode::Postgres | Mode::TwoServers => {
                Some(PgDb::new().expect("PostgreSQL modes need CTXSYNC_TEST_PG_URL"))
            }
            _ => None,
        };
        let db = pg.as_ref().map(|d| d.url.clone());
        let root = dir.path().join("server-side");
        let start = || {
            std::fs::create_dir_all(&root).expect("server dir");
            std::fs::write(root.join("ctxsync.toml"), config).expect("write server config");
            Server::start_on(&root, "127.0.0.1:0", db.as_deref())
        };
        let server = mode.is_remote().then(start);
        let second = (mode == Mode::TwoServers).then(start);
        Self {
            mode,
            dir,
            server,
            second,
            turn: std::sync::atomic::AtomicUsize::new(0),
            pg,
        }
    }

    /// The variables that point a command at the store or server of this mode.
    fn target(&self, args: &[&str]) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        if let (Some(pg), None) = (&self.pg, &self.server) {
            vars.push(("CTXSYNC_DB", pg.url.clone()));
        }
        if let Some(server) = &self.server {
            let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let to = match &self.second {
                Some(second) if turn % 2 == 1 => second,
                _ => server,
            };
            // Tokens live in the store both servers share.
            vars.push(("CTXSYNC_SERVER", to.url()));
            vars.push(("CTXSYNC_TOKEN", server.token(&Self::acting_agent(args))));
        }
        vars
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
        cmd.envs(self.target(args));
        cmd
    }

    /// A `ctxsync` command run in `dir` (a folder of this project).
    pub fn cmd_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.current_dir(dir).args(Self::named_writer(args));
        cmd.envs(self.target(args));
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
        cmd.envs(self.target(args));
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
        cmd.envs(self.target(args));
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

/// Like [`both_modes!`], and also on PostgreSQL: embedded (`CTXSYNC_DB`) and through two
/// servers sharing one database (skipped, saying so, without `CTXSYNC_TEST_PG_URL`).
#[macro_export]
macro_rules! all_modes {
    ($($name:ident),* $(,)?) => {
        $crate::both_modes!($($name),*);
        mod postgres {
            $(#[test] fn $name() {
                if $crate::support::PgDb::available() {
                    super::$name($crate::support::Mode::Postgres)
                }
            })*
        }
        mod two_servers {
            $(#[test] fn $name() {
                if $crate::support::PgDb::available() {
                    super::$name($crate::support::Mode::TwoServers)
                }
            })*
        }
    };
}
