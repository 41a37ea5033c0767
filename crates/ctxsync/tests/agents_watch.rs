//! `agents watch` as a real process: a saved change reaches the outputs, a burst of 100
//! saves gives at most two runs, and the source folder can be deleted and recreated;
//! `serve --watch-agents` does the same beside the server and records its runs.
//! Bounded waits with polling; no timing assertions.

#[path = "agents_common.rs"]
mod common;

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
    let lines = lines_of(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
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

/// `ctxsync serve --watch-agents` for the project at `root`, on a free port; its stderr
/// is piped.
fn serve_watching_agents(root: &Path) -> Child {
    std::process::Command::new(bin())
        .args(["serve", "--bind", "127.0.0.1:0", "--watch-agents", "-C"])
        .arg(root)
        .env_remove("CTXSYNC_SERVER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `ctxsync serve --watch-agents`: the server keeps the outputs in sync as `agents watch`
/// does, and each run that writes is summarised in the shared context it serves.
#[test]
fn serve_with_watch_agents_keeps_outputs_in_sync_and_records_runs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    init_context(root);
    let mut child = serve_watching_agents(root);
    let rx = lines_of(child.stderr.take().unwrap());
    // Killed however the test ends.
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(child);
    let listening = rx
        .recv_timeout(LONG)
        .into_iter()
        .chain(rx.iter().take(3))
        .any(|l| l.starts_with("listening on "));
    assert!(listening, "the server printed its address");

    let output = root.join(".github/agents/alpha.agent.md");
    wait_until("the first run's outputs", || output.exists());
    let entry = root.join("agents/team/alpha/alpha.md");
    let text = std::fs::read_to_string(&entry).unwrap();
    std::fs::write(&entry, format!("{text}\nserve-marker\n")).unwrap();
    wait_until("the edit to reach the output", || {
        std::fs::read_to_string(&output).is_ok_and(|s| s.contains("serve-marker"))
    });
    wait_until("both runs summarised in the context", || {
        code_changes(root).len() == 2
    });
    let changes = code_changes(root);
    assert_eq!(
        changes[0]["added"],
        serde_json::json!(["alpha", "beta", "gamma"])
    );
    assert_eq!(changes[1]["updated"], serde_json::json!(["alpha"]));
}

#[test]
fn serve_refuses_bad_agents_settings_before_serving() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::write(
        root.join("ctxsync.toml"),
        "[agents]\nreferences = \"sideways\"\n",
    )
    .unwrap();
    let mut child = serve_watching_agents(root);
    // A server that started anyway would serve until killed: bounded wait.
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > LONG {
            let _ = child.kill();
            panic!("serve started despite bad [agents] settings");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("references"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
}

/// Issue 10, item 5: a frontmatter bomb saved while watching is reported as that
/// file's problem by the next run, and the watcher goes on with the next save.
#[test]
fn watch_reports_a_frontmatter_bomb_and_keeps_going() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    small_library(root);
    let w = start(root);
    assert_eq!(next_run(&w)["report"]["added"].as_array().unwrap().len(), 3);
    write(
        root,
        "agents/team/bomb.md",
        &format!(
            "---\nname: bomb\ndescription: {}\n---\n# Bomb\n",
            "[".repeat(16_000)
        ),
    );
    let failed = loop {
        let r = next_run(&w);
        if !r["report"]["validation_errors"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            break r;
        }
    };
    let errors = failed["report"]["validation_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{failed}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .starts_with("agents/team/bomb.md: frontmatter nests '[' or '{' more than 64 levels"),
        "{failed}"
    );
    std::fs::remove_file(root.join("agents/team/bomb.md")).unwrap();
    write(
        root,
        "agents/team/gamma.md",
        "# Gamma Agent\n\n## Purpose Statement\nGamma after the bomb.\n",
    );
    wait_until("the save after the bomb in the output", || {
        std::fs::read_to_string(root.join(".github/agents/gamma.agent.md"))
            .is_ok_and(|s| s.contains("Gamma after the bomb."))
    });
}
