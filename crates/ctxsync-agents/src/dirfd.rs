//! Stat-ing the entries of a folder by name, relative to an open handle of the folder.
//!
//! A scan of a large library is tens of thousands of `stat` calls, and resolving a full
//! path costs one dentry lookup per component: relative to an open folder it is one
//! lookup. On Linux a handle is an `O_PATH` descriptor (no read access needed, cheap
//! to open); elsewhere it is the folder's path and every call resolves it in full.

use std::io;
use std::path::{Path, PathBuf};

/// What a scan needs of an entry's metadata (symlinks not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch (0 before it).
    pub mtime_ns: u64,
    /// A folder.
    pub is_dir: bool,
    /// A regular file.
    pub is_file: bool,
    /// Device and inode (0 where the platform has none): a folder's identity.
    pub dev_ino: (u64, u64),
}

impl Meta {
    /// From std's metadata.
    pub fn from_std(m: &std::fs::Metadata) -> Meta {
        Meta {
            size: m.len(),
            mtime_ns: m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64),
            is_dir: m.is_dir(),
            is_file: m.is_file(),
            dev_ino: dev_ino(m),
        }
    }
}

#[cfg(unix)]
fn dev_ino(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn dev_ino(_m: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// An open folder.
#[derive(Debug)]
pub struct Dir {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    use std::os::fd::{AsFd, OwnedFd};

    fn flags() -> OFlags {
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
    }

    pub(super) fn open_path(path: &Path) -> Option<OwnedFd> {
        rustix::fs::openat(rustix::fs::CWD, path, flags(), Mode::empty()).ok()
    }

    pub(super) fn open_child(parent: &OwnedFd, name: &str) -> Option<OwnedFd> {
        rustix::fs::openat(parent.as_fd(), name, flags(), Mode::empty()).ok()
    }

    #[allow(clippy::unnecessary_cast)] // field types differ between architectures
    pub(super) fn stat_child(parent: &OwnedFd, name: &str) -> io::Result<Meta> {
        let st = rustix::fs::statat(parent.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(st.st_mode as _);
        let mtime_ns = if st.st_mtime < 0 {
            0
        } else {
            (st.st_mtime as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as u64)
        };
        Ok(Meta {
            size: st.st_size as u64,
            mtime_ns,
            is_dir: kind == FileType::Directory,
            is_file: kind == FileType::RegularFile,
            dev_ino: (st.st_dev as u64, st.st_ino as u64),
        })
    }
}

impl Dir {
    /// Opens the folder at `path`. Never fails: without a handle, calls fall back to
    /// full paths (and report their own errors).
    pub fn open(path: &Path) -> Dir {
        Dir {
            path: path.to_path_buf(),
            #[cfg(target_os = "linux")]
            fd: imp::open_path(path),
        }
    }

    /// Opens sub-folder `name` (a single path component; a symlink is not followed).
    pub fn child(&self, name: &str) -> Dir {
        Dir {
            path: self.path.join(name),
            #[cfg(target_os = "linux")]
            fd: self.fd.as_ref().and_then(|fd| imp::open_child(fd, name)),
        }
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Metadata of `name`, an entry of this folder or a relative path below it (the
    /// last component is not followed if it is a symlink). Each component costs one
    /// lookup, so a single name is cheapest.
    pub fn stat(&self, name: &str) -> io::Result<Meta> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            return imp::stat_child(fd, name);
        }
        std::fs::symlink_metadata(self.path.join(name)).map(|m| Meta::from_std(&m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_match_std() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f.md"), "hello").unwrap();
        let dir = Dir::open(d.path());
        let sub = dir.child("sub");
        assert_eq!(sub.path(), d.path().join("sub"));
        let got = sub.stat("f.md").unwrap();
        let want = Meta::from_std(&std::fs::symlink_metadata(d.path().join("sub/f.md")).unwrap());
        assert_eq!(got, want);
        assert!(got.is_file && !got.is_dir && got.size == 5);
        assert!(dir.stat("sub").unwrap().is_dir);
        assert_eq!(
            dir.stat("absent").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        let dir = Dir::open(d.path());
        let m = dir.stat("link").unwrap();
        assert!(!m.is_dir && !m.is_file);
    }
}
