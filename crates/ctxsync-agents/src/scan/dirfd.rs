//! Folders as open handles: listing them, and stat-ing or reading their entries by
//! name, relative to the handle.
//!
//! A scan of a large library is tens of thousands of system calls, and resolving a full
//! path costs one dentry lookup per component: relative to an open folder it is one
//! lookup. On Linux a handle is one descriptor per folder, used both to list it
//! (`getdents64`) and as the base of every call on its entries; elsewhere it is the
//! folder's path and every call resolves it in full.

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

/// What a folder listing says an entry is (no `stat` needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, socket, FIFO).
    Other,
    /// The file system did not say: a `stat` will tell.
    Unknown,
}

/// One entry of a folder listing (`.` and `..` left out).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's name.
    pub name: std::ffi::OsString,
    /// What it is, as far as the listing knows.
    pub kind: Kind,
    /// Its inode number (0 where the platform has none).
    pub ino: u64,
}

/// An open folder.
#[derive(Debug)]
pub struct Dir {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::OwnedFd>,
    /// Listed once already: the descriptor's position is past the start.
    #[cfg(target_os = "linux")]
    listed: std::sync::atomic::AtomicBool,
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    use std::os::fd::{AsFd, OwnedFd};

    /// Readable (not `O_PATH`), so one descriptor serves both to list the folder and
    /// as the base of calls on its entries.
    fn flags() -> OFlags {
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
    }

    pub(super) fn list(fd: &OwnedFd, rewind: bool) -> io::Result<Vec<Entry>> {
        use std::os::unix::ffi::OsStrExt;
        if rewind {
            rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0))?;
        }
        // Room for hundreds of entries per call; one entry is at most ~280 bytes.
        let mut buf = Vec::with_capacity(32 * 1024);
        let mut raw = rustix::fs::RawDir::new(fd, buf.spare_capacity_mut());
        let mut out = Vec::new();
        while let Some(ent) = raw.next() {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match ent.file_type() {
                FileType::RegularFile => Kind::File,
                FileType::Directory => Kind::Dir,
                FileType::Symlink => Kind::Symlink,
                FileType::Unknown => Kind::Unknown,
                _ => Kind::Other,
            };
            out.push(Entry {
                name: std::ffi::OsStr::from_bytes(name).to_os_string(),
                kind,
                ino: ent.ino(),
            });
        }
        Ok(out)
    }

    pub(super) fn create_new(parent: &OwnedFd, name: &Path) -> io::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            parent.as_fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Opens a regular file `name` of the folder for reading: never through a symlink,
    /// and without blocking should it have been replaced by a FIFO since listed.
    pub(super) fn open_file(parent: &OwnedFd, name: &str) -> io::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            parent.as_fd(),
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
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
            #[cfg(target_os = "linux")]
            listed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A handle of the folder at `path` that is not open: calls on it resolve the path
    /// in full (see [`Dir::is_open`]). For folders that will most likely not be used.
    pub fn unopened(path: &Path) -> Dir {
        Dir {
            path: path.to_path_buf(),
            #[cfg(target_os = "linux")]
            fd: None,
            #[cfg(target_os = "linux")]
            listed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether calls go through an open descriptor (else through the full path).
    pub fn is_open(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.fd.is_some();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Opens sub-folder `name` (a single path component; a symlink is not followed).
    pub fn child(&self, name: &str) -> Dir {
        Dir {
            path: self.path.join(name),
            #[cfg(target_os = "linux")]
            fd: self.fd.as_ref().and_then(|fd| imp::open_child(fd, name)),
            #[cfg(target_os = "linux")]
            listed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The folder's entries, in the order the file system gives them.
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            let rewind = self.listed.swap(true, std::sync::atomic::Ordering::Relaxed);
            return imp::list(fd, rewind);
        }
        std::fs::read_dir(&self.path)?
            .map(|e| {
                let e = e?;
                let kind = match e.file_type() {
                    Ok(t) if t.is_symlink() => Kind::Symlink,
                    Ok(t) if t.is_dir() => Kind::Dir,
                    Ok(t) if t.is_file() => Kind::File,
                    Ok(_) => Kind::Other,
                    Err(_) => Kind::Unknown,
                };
                #[cfg(unix)]
                let ino = std::os::unix::fs::DirEntryExt::ino(&e);
                #[cfg(not(unix))]
                let ino = 0;
                Ok(Entry {
                    name: e.file_name(),
                    kind,
                    ino,
                })
            })
            .collect()
    }

    /// Creates file `name` (one path component) in this folder for writing; it must not
    /// exist. Permissions are a new file's usual ones (0666 less the umask).
    pub fn create_new(&self, name: &Path) -> io::Result<std::fs::File> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            return imp::create_new(fd, name);
        }
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o666);
        o.open(self.path.join(name))
    }

    /// Reads regular file `name` of this folder (not through a symlink): its metadata
    /// and, when it is a regular file of at most `max_bytes`, its bytes. Metadata and
    /// bytes come from the same open file, so they agree.
    pub fn read_file(&self, name: &str, max_bytes: u64) -> io::Result<(Meta, Option<Vec<u8>>)> {
        use std::io::Read;
        #[cfg(target_os = "linux")]
        let file = match &self.fd {
            Some(fd) => imp::open_file(fd, name)?,
            None => std::fs::File::open(self.path.join(name))?,
        };
        #[cfg(not(target_os = "linux"))]
        let file = std::fs::File::open(self.path.join(name))?;
        let meta = Meta::from_std(&file.metadata()?);
        if !meta.is_file || meta.size > max_bytes {
            return Ok((meta, None));
        }
        // One `read` into room for one byte more than `fstat` gave: a short read of a
        // regular file is its end, so the usual case costs one call where reading to
        // the end costs two. A file that grew meanwhile is read on to its end, at most
        // one byte past the limit (and then refused, not read whole).
        let mut bytes = vec![0; meta.size as usize + 1];
        let mut file = file;
        let n = loop {
            match file.read(&mut bytes) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        bytes.truncate(n);
        if n as u64 > meta.size {
            file.take(max_bytes.saturating_add(1).saturating_sub(n as u64))
                .read_to_end(&mut bytes)?;
        }
        if bytes.len() as u64 > max_bytes {
            return Ok((meta, None));
        }
        Ok((meta, Some(bytes)))
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

    #[test]
    fn lists_and_reads_relative_to_the_handle() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("f.md"), "hello").unwrap();
        std::fs::write(d.path().join("big.md"), "0123456789").unwrap();
        let dir = Dir::open(d.path());
        for _ in 0..2 {
            // A second listing of the same handle starts from the top again.
            let mut got: Vec<(String, Kind)> = dir
                .list()
                .unwrap()
                .into_iter()
                .map(|e| (e.name.to_string_lossy().into_owned(), e.kind))
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(
                got,
                vec![
                    ("big.md".to_string(), Kind::File),
                    ("f.md".to_string(), Kind::File),
                    ("sub".to_string(), Kind::Dir)
                ]
            );
        }
        let (meta, bytes) = dir.read_file("f.md", 100).unwrap();
        assert_eq!(bytes.as_deref(), Some(&b"hello"[..]));
        assert_eq!(meta, dir.stat("f.md").unwrap());
        let (meta, bytes) = dir.read_file("big.md", 9).unwrap();
        assert_eq!((meta.size, bytes), (10, None));
        assert!(dir.read_file("absent.md", 100).is_err());
    }

    /// A file longer than `fstat` said (here: a `/proc` file, whose size reads as 0) is
    /// read to its end, and refused past the limit.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_longer_than_its_stat_is_read_whole() {
        let dir = Dir::open(Path::new("/proc/self"));
        let want = std::fs::read("/proc/self/cmdline").unwrap();
        assert!(want.len() > 1);
        let (meta, bytes) = dir.read_file("cmdline", 1 << 20).unwrap();
        assert_eq!(meta.size, 0);
        assert_eq!(bytes.as_deref(), Some(&want[..]));
        let (_, bytes) = dir.read_file("cmdline", want.len() as u64 - 1).unwrap();
        assert_eq!(bytes, None);
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
        std::fs::write(d.path().join("real/f.md"), "x").unwrap();
        std::os::unix::fs::symlink(d.path().join("real/f.md"), d.path().join("f.md")).unwrap();
        if cfg!(target_os = "linux") {
            assert!(dir.read_file("f.md", 100).is_err());
        }
    }
}
