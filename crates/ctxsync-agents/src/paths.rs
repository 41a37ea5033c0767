//! Repository-relative paths: always `/`-separated strings, normalised, and never allowed
//! to climb above the repository root. Everything the tool reads or writes goes through
//! these helpers, which is what keeps a hostile name or reference inside the repository.

use std::path::{Component, Path, PathBuf};

/// Joins `rel` onto the directory `base` (both repository-relative) and normalises `.`
/// and `..`. Returns `None` when the result would leave the repository root.
pub fn join(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = if rel.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|s| !s.is_empty()).collect()
    };
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// The parent folder of a repository-relative path (`""` for the root).
pub fn parent(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

/// The last segment of a repository-relative path.
pub fn file_name(rel: &str) -> &str {
    rel.rfind('/').map_or(rel, |i| &rel[i + 1..])
}

/// The relative path that leads from folder `from_dir` to `to` (both repository-relative).
pub fn relative(from_dir: &str, to: &str) -> String {
    let a: Vec<&str> = from_dir.split('/').filter(|s| !s.is_empty()).collect();
    let b: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: Vec<&str> = vec![".."; a.len() - common];
    out.extend_from_slice(&b[common..]);
    if out.is_empty() {
        ".".to_string()
    } else {
        out.join("/")
    }
}

/// Converts a path below `root` into a repository-relative string.
pub fn to_rel(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// The absolute path of a repository-relative path.
pub fn abs(root: &Path, rel: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        p.push(seg);
    }
    p
}

/// True when `rel` is a plain relative path without `..`, absolute parts or backslashes.
pub fn is_safe_rel(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.contains('\\')
        && rel
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// True when `name` may be used as an output file stem: `[a-z0-9][a-z0-9._-]{0,63}`,
/// without `..`. Anything else could escape the target folder or collide on disk.
pub fn is_safe_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_' || c == b'.'
        })
        && !name.contains("..")
}

/// Derives a safe name from a file stem (lower-case, other characters become `-`).
pub fn name_from_stem(stem: &str) -> String {
    let mut s: String = stem
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    s.trim_matches(|c| c == '-' || c == '.')
        .chars()
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_normalises_and_refuses_escape() {
        assert_eq!(join("a/b", "c/d.md").as_deref(), Some("a/b/c/d.md"));
        assert_eq!(join("a/b", "../c.md").as_deref(), Some("a/c.md"));
        assert_eq!(join("a", "../../x"), None);
        assert_eq!(join("a/b", "./c").as_deref(), Some("a/b/c"));
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(".github/agents", "agents/x/m.md"),
            "../../agents/x/m.md"
        );
        assert_eq!(relative("a/b", "a/b/c.md"), "c.md");
        assert_eq!(relative("a/b", "a"), "..");
    }

    #[test]
    fn names() {
        assert!(is_safe_name("orchestrator"));
        assert!(is_safe_name("prompt-engineer-v2"));
        assert!(!is_safe_name("../../x"));
        assert!(!is_safe_name("a/b"));
        assert!(!is_safe_name("Upper"));
        assert!(!is_safe_name(""));
        assert_eq!(name_from_stem("My Agent"), "my-agent");
        assert!(is_safe_name(&name_from_stem("..a..b")));
    }
}
