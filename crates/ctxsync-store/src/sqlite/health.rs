//! Whether the store can keep its promise that an acknowledged push is on disk: the
//! files it writes are still there, and there is room to write.
//!
//! SQLite keeps writing into a WAL file that someone deleted under it (the open handle
//! outlives the name), so every later commit would be lost at the next crash while it
//! looks fine. The writer checks the WAL before each commit; on finding it gone, it copies
//! what the WAL holds into the database (a checkpoint through the handle it still has),
//! then refuses writes until the store is reopened. Readiness reports the same, and a
//! file system close to full.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::StoreError;

/// Free bytes below which the store reports itself not ready for writes.
pub(crate) const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

/// The store file's companions and the reason writes stopped, if they did.
pub(crate) struct Health {
    wal: PathBuf,
    /// The WAL existed once the store was open; only then is its absence a loss.
    wal_expected: bool,
    /// The WAL's inode and size as this store last left it: SQLite only ever grows it
    /// (or resets it in place), so a smaller file or another inode is someone else's
    /// doing.
    wal_seen: Mutex<Option<(u64, u64)>>,
    stopped: Mutex<Option<String>>,
}

impl Health {
    pub(crate) fn new(db: &Path) -> Self {
        let wal = sidecar(db, "-wal");
        let seen = identity(&wal);
        Self {
            wal,
            wal_expected: seen.is_some(),
            wal_seen: Mutex::new(seen),
            stopped: Mutex::new(None),
        }
    }

    /// Why writes are refused, if they are.
    pub(crate) fn stopped(&self) -> Option<String> {
        self.stopped.lock().ok().and_then(|s| s.clone())
    }

    pub(crate) fn stop(&self, reason: String) {
        if let Ok(mut s) = self.stopped.lock() {
            s.get_or_insert(reason);
        }
    }

    /// What happened to the WAL this store writes through, if its file was deleted,
    /// replaced or cut short under it.
    pub(crate) fn wal_damage(&self) -> Option<&'static str> {
        if !self.wal_expected {
            return None;
        }
        let now = identity(&self.wal);
        let seen = self.wal_seen.lock().ok().and_then(|s| *s);
        match (now, seen) {
            (None, _) => Some("deleted"),
            (Some((ino, _)), Some((seen_ino, _))) if ino != seen_ino => Some("replaced"),
            (Some((_, size)), Some((_, seen_size))) if size < seen_size => Some("truncated"),
            _ => None,
        }
    }

    /// Records the WAL as a commit of this store left it.
    pub(crate) fn note_wal(&self) {
        if let (Some(now), Ok(mut seen)) = (identity(&self.wal), self.wal_seen.lock()) {
            *seen = Some(now);
        }
    }

    pub(crate) fn wal_path(&self) -> &Path {
        &self.wal
    }

    /// Everything that makes writes unsafe now: a stop, a missing WAL, a full disk.
    pub(crate) fn check(&self, db: &Path) -> Result<(), StoreError> {
        if let Some(reason) = self.stopped() {
            return Err(StoreError::ReadOnly(reason));
        }
        if let Some(damage) = self.wal_damage() {
            return Err(StoreError::ReadOnly(format!(
                "the write-ahead log {} was {damage} while the store was open; restart to recreate it",
                self.wal.display()
            )));
        }
        if std::fs::symlink_metadata(db).is_err() {
            return Err(StoreError::ReadOnly(format!(
                "the database file {} was deleted while the store was open",
                db.display()
            )));
        }
        if let Some(free) = free_bytes(db) {
            if free < MIN_FREE_BYTES {
                return Err(StoreError::ReadOnly(format!(
                    "the file system holding {} has only {free} bytes free (at least {MIN_FREE_BYTES} needed)",
                    db.display()
                )));
            }
        }
        Ok(())
    }
}

/// Inode and size of `path`, if it exists.
fn identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let ino = 0;
    Some((ino, meta.len()))
}

/// `<db>-wal`, `<db>-shm`.
pub(crate) fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Bytes available to unprivileged writers on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Creates the database file readable by its owner only (it holds token hashes and every
/// context), before SQLite opens it; SQLite gives its WAL and shared-memory files the
/// database's mode. An existing file is left as it is.
pub(crate) fn create_private(db: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => tighten(db),
        Err(e) => Err(e),
    }
}

/// Takes group and other permissions off a store created by an older ctxsync.
fn tighten(db: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in [db.to_path_buf(), sidecar(db, "-wal"), sidecar(db, "-shm")] {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                // Not ours to change (another user's file we may only read): leave it.
                let _ =
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700));
            }
        }
    }
    Ok(())
}
