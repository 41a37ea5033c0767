//! Writing a client's configuration file: atomically (temp file in the same folder,
//! fsync, rename, fsync of the folder), with the old file's permissions (these files are
//! committed and read by other tools; a private temp file's 0600 must not leak into
//! them), and only if nobody changed the file since setup read it. Also the unified diff
//! `--dry-run` prints.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Replaces `path` (holding `old`, or absent when `old` is `None`) with `new`.
pub fn replace(path: &Path, old: Option<&str>, new: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ctxsync-{}.tmp", ulid::Ulid::new()));
    let result = write_then_move(path, &tmp, old, new);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_then_move(path: &Path, tmp: &Path, old: Option<&str>, new: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(new.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp, meta.permissions())
            .with_context(|| format!("cannot set the permissions of {}", tmp.display()))?;
    }
    drop(file);
    let changed = || {
        anyhow::Error::new(crate::InputError(format!(
            "{} changed while setup ran; nothing written, run setup again",
            path.display()
        )))
    };
    match old {
        None => {
            // A hard link fails if the name exists: a file created meanwhile is kept.
            match std::fs::hard_link(tmp, path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(tmp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(changed()),
                // Some file systems have no hard links; the check is then not atomic.
                Err(_) if !path.exists() => std::fs::rename(tmp, path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                Err(_) => return Err(changed()),
            }
        }
        Some(old) => {
            match std::fs::read(path) {
                Ok(now) if now == old.as_bytes() => {}
                _ => return Err(changed()),
            }
            std::fs::rename(tmp, path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `old` -> `new` as a unified diff with `a/` and `b/` headers (`/dev/null` for a new file).
pub fn unified_diff(rel: &str, old: Option<&str>, new: &str) -> String {
    let from = old.map_or("/dev/null".to_owned(), |_| format!("a/{rel}"));
    let to = format!("b/{rel}");
    similar::TextDiff::from_lines(old.unwrap_or(""), new)
        .unified_diff()
        .context_radius(3)
        .header(&from, &to)
        .missing_newline_hint(true)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_since_it_was_read_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mcp.json");
        replace(&path, None, "{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
        assert!(replace(&path, None, "{\"a\": 1}\n").is_err());
        assert!(replace(&path, Some("{\"other\": 1}\n"), "x").is_err());
        replace(&path, Some("{}\n"), "{\"a\": 1}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\": 1}\n");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "temp files left: {left:?}");
    }

    #[cfg(unix)]
    #[test]
    fn the_old_permissions_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace(&path, Some("a = 1\n"), "a = 2\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn the_diff_names_the_file() {
        let d = unified_diff(".mcp.json", Some("{}\n"), "{\n  \"a\": 1\n}\n");
        assert!(d.starts_with("--- a/.mcp.json\n+++ b/.mcp.json\n"), "{d}");
        assert!(d.contains("+  \"a\": 1"), "{d}");
        let d = unified_diff(".mcp.json", None, "{}\n");
        assert!(d.starts_with("--- /dev/null\n"), "{d}");
    }
}
