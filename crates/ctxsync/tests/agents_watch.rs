//! `agents watch` as a real process: a saved change reaches the outputs, a burst of 100
//! saves gives at most two runs, and the source folder can be deleted and recreated.
//! Bounded waits with polling; no timing assertions.

#[path = "agents_common.rs"]
mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

struct Watcher {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(root: &Path) -> Watcher {
    let mut child = std::process::Command::new(bin())
        .args(["agents", "--json", "--root"])
        .arg(root)
        .arg("watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    Watcher { child, lines: rx }
}

const LONG: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn next_run(w: &Watcher) -> serde_json::Value {
    w.lines.recv_timeout(LONG).expect("a run report")
}

#[test]
fn watch_applies_saves_coalesces_bursts_and_survives_source_recreation() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // A roomy debounce keeps the burst test meaningful on a loaded machine.
    write(root, "ctxsync.toml", "[agents]\ndebounce_ms = 400\n");
    small_library(root);
    let w = start(root);
    let first = next_run(&w);
    assert_eq!(first["run"], 1);
    assert_eq!(first["report"]["added"].as_array().unwrap().len(), 3);

    // A saved change appears in the outputs.
    write(
        root,
        "agents/team/gamma.md",
        "# Gamma Agent\n\n## Purpose Statement\nGamma watches v2.\n",
    );
    wait_until("the saved change in the output", || {
        std::fs::read_to_string(root.join(".github/agents/gamma.agent.md"))
            .is_ok_and(|s| s.contains("Gamma watches v2."))
    });
    let r = next_run(&w);
    assert_eq!(r["report"]["updated"][0], "gamma");
    // Our own output writes did not trigger another run.
    assert!(
        w.lines.recv_timeout(Duration::from_millis(2000)).is_err(),
        "no run for our own writes"
    );

    // A burst of 100 saves: at most two runs.
    for i in 0..100 {
        write(
            root,
            "agents/team/gamma.md",
            &format!("# Gamma Agent\n\n## Purpose Statement\nGamma burst {i}.\n"),
        );
    }
    wait_until("the last save of the burst", || {
        std::fs::read_to_string(root.join(".github/agents/gamma.agent.md"))
            .is_ok_and(|s| s.contains("Gamma burst 99."))
    });
    let mut runs = vec![next_run(&w)];
    while let Ok(v) = w.lines.recv_timeout(Duration::from_millis(3000)) {
        runs.push(v);
    }
    assert!(
        runs.len() <= 2,
        "{} runs for one burst: {runs:?}",
        runs.len()
    );

    // The source folder deleted and recreated: outputs go, then come back.
    std::fs::remove_dir_all(root.join("agents")).unwrap();
    wait_until("outputs removed", || {
        !root.join(".github/agents/alpha.agent.md").exists()
    });
    small_library(root);
    wait_until("outputs back", || {
        ["alpha", "beta", "gamma"]
            .iter()
            .all(|n| root.join(format!(".github/agents/{n}.agent.md")).exists())
    });
    assert!(w.child.id() > 0);
}
