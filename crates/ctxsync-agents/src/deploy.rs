//! Atomic file operations: write to a temp file in the destination folder, fsync, rename
//! over the destination, fsync the folder. A reader sees the old bytes or the new bytes,
//! never a half file, and a crash leaves at most a stray temp file behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::dirfd::Meta;

use crate::error::{Error, Result};

/// Prefix of temp files, so the watcher can ignore them.
pub const TEMP_PREFIX: &str = ".ctxsync-tmp";

/// Atomically replaces `path` with `bytes`, creating parent folders.
/// With `durable`, the file and its folder are fsynced before returning.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    if durable {
        return write_atomic_streamed(path, |out| out.write_all(bytes));
    }
    let dir = path
        .parent()
        .ok_or_else(|| Error::Input(format!("{}: no parent folder", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = temp_builder()
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Like [`write_atomic`] (durable), with the bytes streamed by `fill` instead of held in
/// memory first (the registry of a large library is tens of megabytes).
pub fn write_atomic_streamed(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Input(format!("{}: no parent folder", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = temp_builder()
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp);
    fill(&mut out).map_err(|e| Error::io(path, e))?;
    let tmp = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(dir)
}

/// Temp files get a new file's usual permissions (0666 less the umask), not 0600.
fn temp_builder() -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(TEMP_PREFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b
}

/// Fsyncs a folder so a rename or removal in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    match std::fs::File::open(dir) {
        Ok(f) => f.sync_all().map_err(|e| Error::io(dir, e)),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Removes a file; absent is fine.
pub fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes many files: [`stage_many`], [`Batch::flush`], [`Batch::commit`]. Returns the
/// size and mtime of each file as written, in the order given.
pub fn write_many(files: &[(PathBuf, &[u8])]) -> Result<Vec<Meta>> {
    let batch = stage_many(files)?;
    batch.flush()?;
    let metas = batch.metas().to_vec();
    batch.commit()?;
    Ok(metas)
}

/// Files written to temp files beside their destinations, not yet in place. Dropped
/// before [`Batch::commit`], it removes its temp files: nothing was changed.
pub struct Batch<'a> {
    files: &'a [(PathBuf, &'a [u8])],
    dirs: Vec<PathBuf>,
    batch_sync: bool,
    staged: Staged,
    metas: Vec<Meta>,
}

/// Writes each of `files` to a temp file in its destination folder (one thread per
/// folder; creating files in one folder from several threads contends on the folder's
/// lock, measured 3x slower here). Small batches fsync each file; large ones leave
/// that to [`Batch::flush`]. On an error, the temp files made so far are removed.
pub fn stage_many<'a>(files: &'a [(PathBuf, &'a [u8])]) -> Result<Batch<'a>> {
    let batch_sync = use_syncfs(files.len());
    // Folders first, once each, so the writers below do not race to create them.
    let dirs: BTreeSet<&Path> = files.iter().filter_map(|(p, _)| p.parent()).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let mut by_dir: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        if let Some(d) = f.0.parent() {
            by_dir.entry(d).or_default().push(i);
        }
    }
    let mut staged = Staged::default();
    let results: Vec<Result<Vec<(usize, PathBuf, Meta)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = by_dir
            .into_iter()
            .enumerate()
            .map(|(writer, (dir, part))| {
                s.spawn(move || -> Result<Vec<(usize, PathBuf, Meta)>> {
                    let mut out = Vec::with_capacity(part.len());
                    let mut stage = |i: usize| -> Result<()> {
                        let (_, bytes) = &files[i];
                        let (tmp, mut f) = create_temp(dir, writer, i)?;
                        // Recorded before anything can fail, so a failure cleans it up.
                        out.push((i, tmp, Meta::default()));
                        let tmp = &out[out.len() - 1].1;
                        f.write_all(bytes).map_err(|e| Error::io(tmp, e))?;
                        if !batch_sync {
                            f.sync_all().map_err(|e| Error::io(tmp, e))?;
                        }
                        let m = f.metadata().map_err(|e| Error::io(tmp, e))?;
                        if let Some(last) = out.last_mut() {
                            last.2 = Meta::from_std(&m);
                        }
                        Ok(())
                    };
                    for i in part {
                        if let Err(e) = stage(i) {
                            remove_temps(out.iter().map(|(_, p, _)| p));
                            return Err(e);
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Input("writer thread panicked".into())))
            })
            .collect()
    });
    let mut first_error = None;
    for r in results {
        match r {
            Ok(v) => staged.0.extend(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e); // `staged` removes its temp files as it drops
    }
    let mut metas = vec![Meta::default(); files.len()];
    for (i, _, m) in &staged.0 {
        metas[*i] = *m;
    }
    Ok(Batch {
        files,
        dirs: dirs.into_iter().map(Path::to_path_buf).collect(),
        batch_sync,
        staged,
        metas,
    })
}

impl Batch<'_> {
    /// Size and mtime of each file as written (renaming keeps both), in order.
    pub fn metas(&self) -> &[Meta] {
        &self.metas
    }

    /// Makes the temp files durable. A large batch is flushed with one `syncfs` of the
    /// file system instead of one `fsync` per file (20,000 fsyncs cost seconds; one
    /// `syncfs` flushes the same data once). It only waits on the disk, so a caller may
    /// run it on another thread (see [`Batch::flusher`]) and go on working.
    pub fn flush(&self) -> Result<()> {
        if self.batch_sync {
            flush_dirs(&self.dirs)?;
        }
        Ok(())
    }

    /// What [`Batch::flush`] does, as a closure that owns what it needs.
    pub fn flusher(&self) -> impl FnOnce() -> Result<()> + Send + 'static {
        let dirs = if self.batch_sync {
            self.dirs.clone()
        } else {
            Vec::new()
        };
        move || flush_dirs(&dirs)
    }

    /// Renames every temp file into place (after a flush: every file is on disk before
    /// any rename makes it visible) and fsyncs each touched folder once. On an error,
    /// what is already renamed stays in place and the rest is removed.
    pub fn commit(mut self) -> Result<()> {
        let started = std::time::Instant::now();
        for (i, tmp, _) in std::mem::take(&mut self.staged.0) {
            let dest = &self.files[i].0;
            if let Err(e) = std::fs::rename(&tmp, dest) {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io(dest, e));
            }
        }
        let renamed = std::time::Instant::now();
        for d in &self.dirs {
            sync_dir(d)?;
        }
        tracing::debug!(
            "{} files: renames {:.1}ms, folder syncs {:.1}ms",
            self.files.len(),
            (renamed - started).as_secs_f64() * 1000.0,
            renamed.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }
}

fn flush_dirs(dirs: &[PathBuf]) -> Result<()> {
    for d in dirs {
        sync_filesystem_of(d)?;
    }
    Ok(())
}

/// Temp files not yet renamed into place; removed if dropped with any left.
#[derive(Default)]
struct Staged(Vec<(usize, PathBuf, Meta)>);

impl Drop for Staged {
    fn drop(&mut self) {
        remove_temps(self.0.iter().map(|(_, p, _)| p));
    }
}

fn remove_temps<'a>(paths: impl Iterator<Item = &'a PathBuf>) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Creates a new temp file in `dir` with the permissions of a new file (0666 less the
/// umask, as an editor would leave it; a random-named temp file would be 0600). The
/// name is unique to this process, writer and file; a stale file of that name (from a
/// crashed run of a process with the same id) makes it try another.
fn create_temp(dir: &Path, writer: usize, i: usize) -> Result<(PathBuf, std::fs::File)> {
    let pid = std::process::id();
    for attempt in 0..16u32 {
        let p = dir.join(format!("{TEMP_PREFIX}-{pid}-{writer}-{i}-{attempt}"));
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o666);
        match o.open(&p) {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    Err(Error::Input(format!(
        "{}: cannot create a temp file (too many stale {TEMP_PREFIX} files?)",
        dir.display()
    )))
}

/// From this many files on, one `syncfs` replaces the per-file fsyncs.
const SYNCFS_FROM_FILES: usize = 64;

/// From this many files on, `syncfs` is used when little else waits to be written.
const SYNCFS_WHEN_QUIET_FROM_FILES: usize = 8;

/// How much unwritten data the whole system may hold for a `syncfs` to count as cheap.
const QUIET_DIRTY_KB: u64 = 16 * 1024;

/// Whether to flush a batch of `n` files with one `syncfs` rather than `n` fsyncs.
/// Each fsync ends with a disk cache flush (about 0.4 ms each on the test VM, and
/// several fsyncs in parallel do not overlap), while `syncfs` flushes the whole file
/// system once: cheaper from a few files on, unless other programs have much unwritten
/// data (a build, say), which `syncfs` would wait for too.
fn use_syncfs(n: usize) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    n >= SYNCFS_FROM_FILES
        || (n >= SYNCFS_WHEN_QUIET_FROM_FILES
            && system_dirty_kb().is_some_and(|kb| kb <= QUIET_DIRTY_KB))
}

/// `Dirty` plus `Writeback` from `/proc/meminfo`, in KB.
fn system_dirty_kb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(field("Dirty:")? + field("Writeback:")?)
}

/// Flushes the file system holding `dir` (all of it: Linux has no narrower call that
/// covers many files at once). Repeated calls for folders on one file system are cheap.
#[cfg(target_os = "linux")]
fn sync_filesystem_of(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io(dir, e.into()))
}

#[cfg(not(target_os = "linux"))]
fn sync_filesystem_of(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncfs_only_for_batches() {
        assert!(!use_syncfs(1));
        assert!(!use_syncfs(SYNCFS_WHEN_QUIET_FROM_FILES - 1));
        assert_eq!(use_syncfs(SYNCFS_FROM_FILES), cfg!(target_os = "linux"));
        if cfg!(target_os = "linux") {
            assert!(system_dirty_kb().is_some());
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b.md");
        write_atomic(&p, b"one", true).unwrap();
        write_many(&[
            (p.clone(), &b"two"[..]),
            (d.path().join("a/c.md"), &b"three"[..]),
        ])
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2);
    }
}
