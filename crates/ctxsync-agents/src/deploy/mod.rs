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
mod batch;
pub mod journal;
pub mod merge3;
pub mod registry;
pub mod rollback;
pub mod state;

pub use batch::{stage_many, stage_owned, write_many, Batch};

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The temp names' process part, read once (each name would cost a `getpid`).
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Creates a new, empty staging folder in `parent` (hidden, and named like temp files
/// so that discovery and the watcher skip it). The caller removes the staging folders
/// a crashed run left there first ([`remove_stale_stages`]), once per parent: a first
/// sync with skills stages ten thousand folders in one parent, and listing it for each
/// of them made the run quadratic.
fn create_stage_dir(parent: &Path, writer: usize) -> Result<PathBuf> {
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
pub(crate) fn remove_stale_stages(parent: &Path) {
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
            // Only what we staged is in there (files, and the sub-folders of a staged
            // tree); `remove_dir_all` does not follow symlinks.
            match std::fs::remove_dir_all(&path) {
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
