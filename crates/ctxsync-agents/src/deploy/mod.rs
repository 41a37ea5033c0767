//! Atomic file operations: write to a temp file in the destination folder, fsync, rename
//! over the destination, fsync the folder. A reader sees the old bytes or the new bytes,
//! never a half file, and a crash leaves at most a stray temp file behind. A batch
//! headed for a folder that does not exist yet is staged in a hidden sibling folder
//! and renamed into place whole.
//!
//! The deploy stage around it: [`registry`] (what was written), [`backup`] (kept
//! generations), [`journal`] (intent before writing), [`rollback`], [`merge3`] and the
//! [`state`] folder with its run lock.

pub mod backup;
pub mod journal;
pub mod merge3;
pub mod registry;
pub mod rollback;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::dirfd::{Dir, Meta};

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

/// The environment variable of [`test_crash_point`].
pub const TEST_ABORT_AFTER_WRITES: &str = "CTXSYNC_TEST_ABORT_AFTER_WRITES";

/// Test hook, unset in normal use: with `CTXSYNC_TEST_ABORT_AFTER_WRITES=N` in the
/// environment the process aborts (as a crash would: no destructors, nothing more
/// flushed or recorded) right after the N-th output is put in place or removed, so
/// tests can stop a deploy half-way at a known point. Called by every writer of
/// outputs after each rename into place and each removal.
pub fn test_crash_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static LIMIT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    static DONE: AtomicUsize = AtomicUsize::new(0);
    let limit = LIMIT.get_or_init(|| std::env::var(TEST_ABORT_AFTER_WRITES).ok()?.parse().ok());
    if let Some(limit) = *limit {
        if DONE.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
            std::process::abort();
        }
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

/// Files written beside their destinations, not yet in place. Dropped before
/// [`Batch::commit`], it removes what it staged: nothing was changed.
pub struct Batch {
    /// Each file's destination, in the order given (the bytes are written already).
    dests: Vec<PathBuf>,
    /// Folders to flush: each existing destination folder and each staging folder.
    flush_dirs: Vec<PathBuf>,
    batch_sync: bool,
    staged: Staged,
    metas: Vec<Meta>,
}

/// Where the files of one destination folder are staged.
enum Stage {
    /// The folder exists: each file goes to a temp file beside its destination and is
    /// renamed over it.
    Beside(PathBuf),
    /// The folder does not exist yet: its files are written under their own names in a
    /// new hidden sibling folder, which is renamed into place whole. One rename instead
    /// of one per file (a first sync writes thousands of files into new folders), and
    /// the folder appears complete or not at all.
    FreshFolder { stage: PathBuf, dest: PathBuf },
}

/// Writes each of `files` to a temp file in its destination folder, or, for a folder
/// that does not exist yet, to a staging folder beside it (see [`Stage`]). One thread
/// per folder: creating files in one folder from several threads contends on the
/// folder's lock, measured 3x slower here. Small batches fsync each file; large ones
/// leave that to [`Batch::flush`]. On an error, everything staged so far is removed.
pub fn stage_many(files: &[(PathBuf, &[u8])]) -> Result<Batch> {
    let batch_sync = use_syncfs(files.len());
    let mut by_dir: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        if let Some(d) = f.0.parent() {
            by_dir.entry(d).or_default().push(i);
        }
    }
    let mut staged = Staged::default();
    // Folders first, once each, so the writers below do not race to create them.
    for (writer, d) in by_dir.keys().enumerate() {
        let stage = match std::fs::symlink_metadata(d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match d.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                    Stage::FreshFolder {
                        stage: create_stage_dir(parent, writer)?,
                        dest: d.to_path_buf(),
                    }
                }
                _ => {
                    std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
                    Stage::Beside(d.to_path_buf())
                }
            },
            _ => {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
                Stage::Beside(d.to_path_buf())
            }
        };
        staged.folders.push(stage);
    }
    let folders = &staged.folders;
    // Half-way through a large batch, a flush of what is written so far starts in the
    // background: the disk writes the first half while the second is being created,
    // and the flush before the commit waits only for the rest.
    let written = std::sync::atomic::AtomicUsize::new(0);
    let early_flush_at = (batch_sync && files.len() >= EARLY_FLUSH_FROM_FILES)
        .then_some(files.len() / 2)
        .and_then(|half| Some((half, flush_dir_of(folders.first()?).to_path_buf())));
    let (written, early_flush_at) = (&written, &early_flush_at);
    let results: Vec<Result<Vec<(usize, PathBuf, Meta)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = by_dir
            .into_values()
            .zip(folders)
            .enumerate()
            .map(|(writer, (part, stage))| {
                s.spawn(move || -> Result<Vec<(usize, PathBuf, Meta)>> {
                    let mut out = Vec::with_capacity(part.len());
                    // Files are created relative to the open folder: one lookup each,
                    // not one per component of the whole path.
                    let dir = Dir::open(flush_dir_of(stage));
                    let mut write_one = |i: usize| -> Result<()> {
                        let (dest, bytes) = &files[i];
                        let (tmp, mut f) = match stage {
                            Stage::Beside(_) => create_temp(&dir, writer, i)?,
                            Stage::FreshFolder { .. } => {
                                let name = dest.file_name().ok_or_else(|| {
                                    Error::Input(format!("{}: no file name", dest.display()))
                                })?;
                                let p = dir.path().join(name);
                                let f = dir
                                    .create_new(Path::new(name))
                                    .map_err(|e| Error::io(&p, e))?;
                                (p, f)
                            }
                        };
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
                        let n = written.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if let Some((at, dir)) = early_flush_at.as_ref().filter(|(at, _)| n == *at)
                        {
                            let dir = dir.clone();
                            tracing::debug!("early flush after {at} files");
                            // Detached: only a head start; the real flush comes later.
                            drop(
                                std::thread::Builder::new()
                                    .name("ctxsync-flush".into())
                                    .spawn(move || {
                                        let _ = sync_filesystem_of(&dir);
                                    }),
                            );
                        }
                        Ok(())
                    };
                    for i in part {
                        if let Err(e) = write_one(i) {
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
            Ok(v) => staged.files.extend(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e); // `staged` removes what it holds as it drops
    }
    let mut metas = vec![Meta::default(); files.len()];
    for (i, _, m) in &staged.files {
        metas[*i] = *m;
    }
    // One `syncfs` flushes a whole file system: one folder per file system is enough
    // (skills write thousands of folders; a flush each took minutes).
    let mut devices = BTreeSet::new();
    let flush_dirs = staged
        .folders
        .iter()
        .map(|s| flush_dir_of(s).to_path_buf())
        .filter(|d| device_of(d).is_none_or(|dev| devices.insert(dev)))
        .collect();
    Ok(Batch {
        dests: files.iter().map(|(p, _)| p.clone()).collect(),
        flush_dirs,
        batch_sync,
        staged,
        metas,
    })
}

/// The folder a stage's files are written in.
fn flush_dir_of(stage: &Stage) -> &Path {
    match stage {
        Stage::Beside(d) => d,
        Stage::FreshFolder { stage, .. } => stage,
    }
}

/// From this many files on, a flush starts half-way through staging.
const EARLY_FLUSH_FROM_FILES: usize = 2048;

impl Batch {
    /// Size and mtime of each file as written (renaming keeps both), in order.
    pub fn metas(&self) -> &[Meta] {
        &self.metas
    }

    /// Makes the staged files durable. A large batch is flushed with one `syncfs` of
    /// the file system instead of one `fsync` per file (20,000 fsyncs cost seconds; one
    /// `syncfs` flushes the same data once). It only waits on the disk, so a caller may
    /// run it on another thread (see [`Batch::flusher`]) and go on working.
    pub fn flush(&self) -> Result<()> {
        if self.batch_sync {
            flush_dirs(&self.flush_dirs)?;
        }
        Ok(())
    }

    /// What [`Batch::flush`] does, as a closure that owns what it needs.
    pub fn flusher(&self) -> impl FnOnce() -> Result<()> + Send + 'static {
        let dirs = if self.batch_sync {
            self.flush_dirs.clone()
        } else {
            Vec::new()
        };
        move || flush_dirs(&dirs)
    }

    /// Moves everything staged into place (after a flush: every file is on disk before
    /// any rename makes it visible) and fsyncs each touched folder once. On an error,
    /// what is already in place stays and the rest is removed.
    pub fn commit(mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let folders = std::mem::take(&mut self.staged.folders);
        let mut files = std::mem::take(&mut self.staged.files);
        // Staging folders whose rename failed (their destination appeared meanwhile):
        // their files are moved one by one like the others.
        let mut moved_whole = Vec::new();
        let mut to_sync = BTreeSet::new();
        for stage in &folders {
            match stage {
                Stage::Beside(d) => {
                    to_sync.insert(d.clone());
                }
                Stage::FreshFolder { stage, dest } => {
                    if !self.batch_sync {
                        // The staged names must be durable before they are published.
                        sync_dir(stage)?;
                    }
                    match std::fs::rename(stage, dest) {
                        Ok(()) => {
                            moved_whole.push(stage.as_path());
                            test_crash_point();
                        }
                        Err(e) => {
                            tracing::debug!(
                                "{}: appeared while staging ({e}); moving files one by one",
                                dest.display()
                            );
                            to_sync.insert(dest.clone());
                        }
                    }
                    if let Some(parent) = dest.parent() {
                        to_sync.insert(parent.to_path_buf());
                    }
                }
            }
        }
        files.retain(|(_, tmp, _)| !moved_whole.iter().any(|s| tmp.parent() == Some(*s)));
        let mut files = files.into_iter();
        while let Some((i, tmp, _)) = files.next() {
            let dest = &self.dests[i];
            if let Err(e) = std::fs::rename(&tmp, dest) {
                let _ = std::fs::remove_file(&tmp);
                // What is left is removed as `staged` drops.
                self.staged.files.extend(files);
                self.staged.folders = folders;
                return Err(Error::io(dest, e));
            }
            test_crash_point();
        }
        // Staging folders emptied one by one are removed (those renamed are gone).
        for stage in &folders {
            if let Stage::FreshFolder { stage, .. } = stage {
                if !moved_whole.contains(&stage.as_path()) {
                    let _ = std::fs::remove_dir(stage);
                }
            }
        }
        let renamed = std::time::Instant::now();
        if self.batch_sync && to_sync.len() > 1 {
            // As for the files: one `syncfs` per file system makes every rename durable.
            let mut devices = BTreeSet::new();
            for d in &to_sync {
                if device_of(d).is_none_or(|dev| devices.insert(dev)) {
                    sync_filesystem_of(d)?;
                }
            }
        } else {
            for d in &to_sync {
                sync_dir(d)?;
            }
        }
        tracing::debug!(
            "{} files: {} folders moved whole, renames {:.1}ms, folder syncs {:.1}ms",
            self.dests.len(),
            moved_whole.len(),
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

/// What is staged and not yet in place; removed if dropped with anything left.
#[derive(Default)]
struct Staged {
    files: Vec<(usize, PathBuf, Meta)>,
    folders: Vec<Stage>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        remove_temps(self.files.iter().map(|(_, p, _)| p));
        for stage in &self.folders {
            if let Stage::FreshFolder { stage, .. } = stage {
                let _ = std::fs::remove_dir(stage);
            }
        }
    }
}

fn remove_temps<'a>(paths: impl Iterator<Item = &'a PathBuf>) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// The temp names' process part, read once (each name would cost a `getpid`).
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Creates a new temp file in `dir`, with the permissions of a new file (0666 less the
/// umask, as an editor would leave it; a random-named temp file would be 0600). The
/// name is unique to this process, writer and file; a stale file of that name (from a
/// crashed run of a process with the same id) makes it try another.
fn create_temp(dir: &Dir, writer: usize, i: usize) -> Result<(PathBuf, std::fs::File)> {
    let pid = pid();
    for attempt in 0..16u32 {
        let name = format!("{TEMP_PREFIX}-{pid}-{writer}-{i}-{attempt}");
        match dir.create_new(Path::new(&name)) {
            Ok(f) => return Ok((dir.path().join(name), f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(dir.path().join(name), e)),
        }
    }
    Err(Error::Input(format!(
        "{}: cannot create a temp file (too many stale {TEMP_PREFIX} files?)",
        dir.path().display()
    )))
}

/// Creates a new, empty staging folder in `parent` (hidden, and named like temp files
/// so that discovery and the watcher skip it). Staging folders that a crashed run left
/// there are removed first: a first sync of a large library stages thousands of files.
fn create_stage_dir(parent: &Path, writer: usize) -> Result<PathBuf> {
    remove_stale_stages(parent);
    let pid = pid();
    for attempt in 0..16u32 {
        let p = parent.join(format!("{TEMP_PREFIX}-{pid}-dir{writer}-{attempt}"));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    Err(Error::Input(format!(
        "{}: cannot create a staging folder (too many stale {TEMP_PREFIX} folders?)",
        parent.display()
    )))
}

/// A staging folder this old is stale even where it cannot be told whether the process
/// that made it still runs.
const STALE_STAGE_SECS: u64 = 3600;

/// Removes the staging folders in `parent` left by runs that ended without committing
/// them: made by a process that no longer runs (Linux: no `/proc/<pid>`), or an hour
/// old. Best effort; what cannot be removed stays.
fn remove_stale_stages(parent: &Path) {
    remove_stale(parent, true);
}

/// Removes what runs that died left in output folder `dir`: temp files beside
/// outputs and staging folders (see [`remove_stale_stages`]). Best effort.
pub fn remove_stale_temps(dir: &Path) {
    remove_stale(dir, false);
}

/// [`remove_stale_stages`], and with `!only_stages` stale temp files too
/// (`<pid>-<writer>-<i>-<attempt>`).
fn remove_stale(parent: &Path, only_stages: bool) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!("{TEMP_PREFIX}-");
    for ent in entries.flatten() {
        let name = ent.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        // `<pid>-dir<writer>-<attempt>`
        let Some((pid, tail)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
        let is_stage = tail.starts_with("dir") && is_dir;
        let is_temp = !only_stages
            && !is_dir
            && tail.split('-').count() == 3
            && tail.split('-').all(|n| n.parse::<u64>().is_ok());
        if pid == self::pid() || !(is_stage || is_temp) {
            continue;
        }
        let gone = if cfg!(target_os = "linux") {
            !Path::new(&format!("/proc/{pid}")).exists()
        } else {
            false
        };
        let old = ent
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() >= STALE_STAGE_SECS);
        if (gone || old) && is_temp {
            let path = ent.path();
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!("removed a stale temp file {}", path.display()),
                Err(e) => tracing::debug!("{}: not removed: {e}", path.display()),
            }
        } else if gone || old {
            let path = ent.path();
            // Only our own staged files are in there: its files, then the folder.
            if let Ok(files) = std::fs::read_dir(&path) {
                for f in files.flatten() {
                    let _ = std::fs::remove_file(f.path());
                }
            }
            match std::fs::remove_dir(&path) {
                Ok(()) => tracing::info!("removed a stale staging folder {}", path.display()),
                Err(e) => tracing::debug!("{}: not removed: {e}", path.display()),
            }
        }
    }
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

/// The device (file system) a folder is on, where the platform says.
#[cfg(unix)]
fn device_of(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| m.dev())
}

#[cfg(not(unix))]
fn device_of(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests;
