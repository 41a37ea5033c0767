//! Shared helpers for the agent-sync integration tests (included with `#[path]`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/openagentbuilder"
);

/// A writable copy of the OpenAgentBuilder fixture, or `None` (with a message) when the
/// shared folder is not beside the repository.
pub fn fixture_copy() -> Option<tempfile::TempDir> {
    let src = Path::new(FIXTURE);
    if !src.is_dir() {
        eprintln!("SKIPPED: fixture not found at {FIXTURE} (clone shared/ beside the repository)");
        return None;
    }
    let d = tempfile::tempdir().expect("tempdir");
    copy_dir(src, d.path());
    Some(d)
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
            // The fixture is read-only; the copy must be editable.
            let mut p = std::fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            p.set_readonly(false);
            std::fs::set_permissions(&to, p).unwrap();
        }
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ctxsync"))
}

/// Runs `ctxsync agents --root <root> <args...>`.
pub fn agents(root: &Path, args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .arg("agents")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run ctxsync")
}

/// Runs with `--json` and parses stdout.
pub fn agents_json(root: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = agents(root, &a);
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout={} stderr={}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}

pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

pub fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

/// Every file below `dir` with its modification time.
pub fn mtimes(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(mtimes(&e.path()));
        } else {
            out.push((e.path(), e.metadata().unwrap().modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// Creates the project's context store (`ctxsync init`), so that agent-sync runs are
/// recorded in it.
pub fn init_context(root: &Path) {
    let init = std::process::Command::new(bin())
        .args(["init", "-C"])
        .arg(root)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
}

/// The run summaries in the shared context (`technical_context.code_changes`).
pub fn code_changes(root: &Path) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(bin())
        .args([
            "get",
            "technical_context.code_changes.significant_changes",
            "--json",
            "-C",
        ])
        .arg(root)
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The lines `from` (a child's stdout or stderr) prints, as they come.
pub fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A small modular library: two agents share module `shared.md` through a task; a third
/// does not reach it.
pub fn small_library(root: &Path) {
    write(root, "agents/team/alpha/alpha.md", "# Alpha Agent\n\n> **Priority**: Critical\n> **Agent Version**: 1.0\n\n## Purpose Statement\nAlpha plans.\n\n## Tasks\n- Plan: @tasks/plan.md\n- Metrics: @modules/metrics.md#speed\n");
    write(
        root,
        "agents/team/alpha/tasks/plan.md",
        "# Plan\n\nUse @modules/shared.md for context.\n",
    );
    write(
        root,
        "agents/team/alpha/modules/shared.md",
        "# Shared\n\nShared text v1.\n",
    );
    write(
        root,
        "agents/team/alpha/modules/metrics.md",
        "# Metrics\n\n## Speed\nFast.\n",
    );
    write(
        root,
        "agents/team/beta/beta.md",
        "# Beta Agent\n\n## Purpose Statement\nBeta builds.\n\n- Shared: @modules/shared.md\n",
    );
    write(
        root,
        "agents/team/beta/modules/shared.md",
        "# Beta Shared\n\nBeta shared v1.\n",
    );
    write(
        root,
        "agents/team/gamma.md",
        "# Gamma Agent\n\n## Purpose Statement\nGamma reviews alone.\n",
    );
}

/// Every agent host target, as the `targets` line of `[agents]`.
pub const ALL_TARGETS: &str =
    "targets = [\"vscode-agent\", \"vscode-prompt\", \"skills\", \"claude\", \"codex\", \"gemini\"]\n";

/// Writes a `ctxsync.toml` turning every target on, plus `extra` lines of `[agents]`.
pub fn all_targets(root: &std::path::Path, extra: &str) {
    write(
        root,
        "ctxsync.toml",
        &format!("[agents]\n{ALL_TARGETS}{extra}"),
    );
}

pub fn written(v: &serde_json::Value) -> Vec<String> {
    names(v, "written")
}
