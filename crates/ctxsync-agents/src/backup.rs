//! Content-addressed backups: every replaced, removed or written output is stored once
//! under `backups/<first two hex>/<blake3 hex>`, which is what rollback and three-way
//! merges read from.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::deploy::write_atomic;
use crate::error::{Error, Result};

/// The BLAKE3 hex digest used everywhere as a content id.
pub fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A content-addressed blob store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BlobStore { dir: dir.into() }
    }

    fn path(&self, h: &str) -> Option<PathBuf> {
        // Ids come from the registry file; refuse anything that is not a hex digest.
        (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(&h[..2]).join(h))
    }

    /// Stores `bytes` (no-op when already present) and returns its id.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let h = hash(bytes);
        if let Some(p) = self.path(&h) {
            if !p.exists() {
                write_atomic(&p, bytes, true)?;
            }
        }
        Ok(h)
    }

    /// Stores `bytes` without fsync: for merge bases, where a blob lost in a crash only
    /// means a later `--merge` reports a conflict instead. A torn write fails the hash
    /// check on read and counts as absent.
    pub fn put_fast(&self, bytes: &[u8]) {
        let h = hash(bytes);
        if let Some(p) = self.path(&h) {
            if !p.exists() {
                if let Some(d) = p.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                if let Err(e) = std::fs::write(&p, bytes) {
                    tracing::debug!("merge base {h} not kept: {e}");
                }
            }
        }
    }

    /// Reads a blob; `None` when it is not kept (pruned or never stored).
    pub fn get(&self, h: &str) -> Result<Option<Vec<u8>>> {
        let Some(p) = self.path(h) else {
            return Ok(None);
        };
        match std::fs::read(&p) {
            Ok(b) if hash(&b) == h => Ok(Some(b)),
            Ok(_) => Err(Error::Input(format!(
                "{}: backup is corrupt (hash mismatch)",
                p.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// True when the blob is present.
    pub fn has(&self, h: &str) -> bool {
        self.path(h).is_some_and(|p| p.exists())
    }

    /// Deletes every blob not in `keep`; returns how many were deleted.
    pub fn gc(&self, keep: &HashSet<String>) -> Result<usize> {
        let mut n = 0;
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(0);
        };
        for sub in rd.flatten() {
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                if !keep.contains(&name) && !name.starts_with('.') {
                    remove(&f.path())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_gc() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::new(d.path().join("b"));
        let h = s.put(b"hello").unwrap();
        assert_eq!(s.get(&h).unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(s.get("../../etc").unwrap(), None);
        assert_eq!(s.gc(&HashSet::new()).unwrap(), 1);
        assert_eq!(s.get(&h).unwrap(), None);
    }
}
