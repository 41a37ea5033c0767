//! Writing a batch of outputs atomically: [`stage_many`] writes every file out of sight
//! (a temp file beside an existing destination, or a whole new folder tree staged in a
//! hidden sibling), [`Batch::flush`] makes it durable, [`Batch::commit`] renames it into
//! place. A reader sees each file old or new, a new folder complete or not at all.
//!
//! A cold sync with Agent Skills creates ten thousand new folders (a skill and the
//! folders of its companion files), so the work is split into units, not files: an
//! existing folder, or the topmost new folder with everything below it. A bounded pool of
//! writers takes units largest first; each unit is written by one thread (parallel
//! creates in one folder contend on its lock) and a new tree costs one rename, however
//! many folders and files it holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{
    create_stage_dir, device_of, pid, remove_stale_stages, sync_dir, sync_filesystem_of,
    test_crash_point, use_syncfs, TEMP_PREFIX,
};
use crate::dirfd::{Dir, Meta};
use crate::error::{Error, Result};

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
    /// Folders to flush: one existing folder per file system written to.
    flush_dirs: Vec<PathBuf>,
    batch_sync: bool,
    staged: Staged,
    metas: Vec<Meta>,
}

/// Where the files of one unit are staged.
enum Stage {
    /// The folder exists: each file goes to a temp file beside its destination and is
    /// renamed over it.
    Beside(PathBuf),
    /// Folder `dest` does not exist yet (nor, maybe, some folders below it): the whole
    /// tree is written under its own names in `stage`, a new hidden sibling of `dest`,
    /// which is renamed into place once. `dirs` are the folders made in the stage,
    /// parents first (flushed one by one when the batch is too small for a `syncfs`).
    FreshTree {
        stage: PathBuf,
        dest: PathBuf,
        dirs: Vec<PathBuf>,
    },
}

/// One unit of work, planned before any writer starts.
struct Unit {
    /// An existing folder: the destination itself, or the parent of a new tree.
    anchor: PathBuf,
    /// `Some(top)`: the files go into new folder `top` (below `anchor`), staged whole.
    fresh: Option<PathBuf>,
    /// Each destination folder of the unit (relative to `top` for a new tree, empty for
    /// the top itself) and the indices of its files.
    folders: Vec<(PathBuf, Vec<usize>)>,
    files: usize,
}

/// A file written out of sight: its index in the batch, its unit, where it is.
struct StagedFile {
    index: usize,
    unit: usize,
    tmp: PathBuf,
    meta: Meta,
}

/// How many units are written at once: file creation is mostly system calls on
/// folders held by one writer each, so a few more writers than cores keep the cores
/// busy while one waits, without thousands of threads for thousands of folders.
fn writers(units: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).clamp(2, 16).min(units.max(1))
}

/// Whether `p` exists (anything that cannot be told counts as existing: writing there
/// reports the problem). Cached: sibling destinations share their ancestors.
fn exists(cache: &mut HashMap<PathBuf, bool>, p: &Path) -> bool {
    if let Some(&e) = cache.get(p) {
        return e;
    }
    let e =
        !matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    cache.insert(p.to_path_buf(), e);
    e
}

/// Groups the destination folders of `files` into units (see the module doc).
fn plan_units(files: &[(PathBuf, &[u8])]) -> Result<Vec<Unit>> {
    let mut by_dir: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let d =
            f.0.parent()
                .ok_or_else(|| Error::Input(format!("{}: no parent folder", f.0.display())))?;
        by_dir.entry(d).or_default().push(i);
    }
    let mut cache = HashMap::new();
    let mut units: Vec<Unit> = Vec::new();
    let mut tree_of: HashMap<PathBuf, usize> = HashMap::new();
    for (d, idx) in by_dir {
        if exists(&mut cache, d) {
            units.push(Unit {
                anchor: d.to_path_buf(),
                fresh: None,
                files: idx.len(),
                folders: vec![(PathBuf::new(), idx)],
            });
            continue;
        }
        // The topmost missing folder on the way down to `d`.
        let mut top = d;
        while let Some(up) = top.parent().filter(|u| !u.as_os_str().is_empty()) {
            if exists(&mut cache, up) {
                break;
            }
            top = up;
        }
        let Some(anchor) = top.parent().filter(|u| !u.as_os_str().is_empty()) else {
            // A relative path with nothing above it to stage in: made in place.
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            cache.insert(d.to_path_buf(), true);
            units.push(Unit {
                anchor: d.to_path_buf(),
                fresh: None,
                files: idx.len(),
                folders: vec![(PathBuf::new(), idx)],
            });
            continue;
        };
        let rel = d.strip_prefix(top).unwrap_or(Path::new("")).to_path_buf();
        let u = *tree_of.entry(top.to_path_buf()).or_insert_with(|| {
            units.push(Unit {
                anchor: anchor.to_path_buf(),
                fresh: Some(top.to_path_buf()),
                folders: Vec::new(),
                files: 0,
            });
            units.len() - 1
        });
        units[u].files += idx.len();
        units[u].folders.push((rel, idx));
    }
    split_bare_tops(units)
}

/// A new tree whose top holds no file of its own (`.github` over `agents/` and
/// `skills/`, `skills/` over ten thousand skills) would be one writer's work and one
/// rename for unrelated outputs: its top is made right away (an empty folder is all a
/// reader can see of it) and each sub-folder becomes a unit of its own, down to folders
/// that hold files. Every folder with files still appears complete or not at all.
fn split_bare_tops(units: Vec<Unit>) -> Result<Vec<Unit>> {
    let mut done = Vec::with_capacity(units.len());
    let mut todo = units;
    while let Some(unit) = todo.pop() {
        let Some(top) = unit.fresh.as_ref() else {
            done.push(unit);
            continue;
        };
        if unit
            .folders
            .iter()
            .any(|(rel, _)| rel.as_os_str().is_empty())
        {
            done.push(unit);
            continue;
        }
        match std::fs::create_dir(top) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(top, e)),
        }
        let mut subs: BTreeMap<PathBuf, Unit> = BTreeMap::new();
        for (rel, idx) in unit.folders {
            let mut comps = rel.components();
            let Some(first) = comps.next() else { continue };
            let sub = subs.entry(top.join(first)).or_insert_with_key(|k| Unit {
                anchor: top.clone(),
                fresh: Some(k.clone()),
                folders: Vec::new(),
                files: 0,
            });
            sub.files += idx.len();
            sub.folders.push((comps.as_path().to_path_buf(), idx));
        }
        todo.extend(subs.into_values());
    }
    Ok(done)
}

/// What one writer did with one unit; `stage` is set as soon as a staging folder
/// exists, so that a failure later still cleans it up.
#[derive(Default)]
struct UnitOut {
    stage: Option<Stage>,
    files: Vec<StagedFile>,
    error: Option<Error>,
}

/// Writes each of `files` to a temp file in its destination folder, or, for a folder
/// that does not exist yet, into a staging tree beside the topmost new folder (see
/// [`Stage`]). Small batches fsync each file; large ones leave that to
/// [`Batch::flush`]. On an error, everything staged so far is removed.
pub fn stage_many(files: &[(PathBuf, &[u8])]) -> Result<Batch> {
    let mut batch = stage(files)?;
    batch.dests = files.iter().map(|(p, _)| p.clone()).collect();
    Ok(batch)
}

/// [`stage_many`] that keeps the given destination paths instead of copies of them (a
/// cold sync of a large library stages tens of thousands of files).
pub fn stage_owned(files: Vec<(PathBuf, &[u8])>) -> Result<Batch> {
    let mut batch = stage(&files)?;
    batch.dests = files.into_iter().map(|(p, _)| p).collect();
    Ok(batch)
}

/// [`stage_many`] without the destinations filled in.
fn stage(files: &[(PathBuf, &[u8])]) -> Result<Batch> {
    let batch_sync = use_syncfs(files.len());
    let units = plan_units(files)?;
    // Parents of new trees: what a crashed run left there goes first, once per parent.
    let parents: BTreeSet<&Path> = units
        .iter()
        .filter(|u| u.fresh.is_some())
        .map(|u| u.anchor.as_path())
        .collect();
    for p in parents {
        remove_stale_stages(p);
    }
    // Largest units first, so the big flat folders do not start last.
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&u| std::cmp::Reverse(units[u].files));
    // Half-way through a large batch, a flush of what is written so far starts in the
    // background: the disk writes the first half while the second is being created,
    // and the flush before the commit waits only for the rest.
    let written = AtomicUsize::new(0);
    let early_flush_at = (batch_sync && files.len() >= EARLY_FLUSH_FROM_FILES)
        .then_some(files.len() / 2)
        .and_then(|half| Some((half, units.first()?.anchor.clone())));
    let next = AtomicUsize::new(0);
    let (units_ref, order, written, next, early) =
        (&units, &order, &written, &next, &early_flush_at);
    let outs: Vec<Vec<(usize, UnitOut)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers(units.len()))
            .map(|_| {
                s.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&u) = order.get(k) else { break };
                        let mut out = UnitOut::default();
                        if let Err(e) =
                            write_unit(files, u, &units_ref[u], batch_sync, &mut out, &|| {
                                let n = written.fetch_add(1, Ordering::Relaxed) + 1;
                                if let Some((at, dir)) = early.as_ref().filter(|(at, _)| n == *at) {
                                    early_flush(*at, dir.clone());
                                }
                            })
                        {
                            out.error = Some(e);
                            done.push((u, out));
                            // The others stop at their next unit.
                            next.store(usize::MAX / 2, Ordering::Relaxed);
                            break;
                        }
                        done.push((u, out));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(
                        usize::MAX,
                        UnitOut {
                            error: Some(Error::Input("writer thread panicked".into())),
                            ..UnitOut::default()
                        },
                    )]
                })
            })
            .collect()
    });
    let mut staged = Staged::default();
    let mut first_error = None;
    let mut stages: Vec<Option<Stage>> = (0..units.len()).map(|_| None).collect();
    for (u, out) in outs.into_iter().flatten() {
        staged.files.extend(out.files);
        if let (Some(slot), Some(st)) = (stages.get_mut(u), out.stage) {
            *slot = Some(st);
        }
        if let Some(e) = out.error {
            first_error.get_or_insert(e);
        }
    }
    staged.folders = stages;
    if let Some(e) = first_error {
        return Err(e); // `staged` removes what it holds as it drops
    }
    if staged.folders.iter().any(Option::is_none) {
        // Every unit was taken (no error stopped the writers), so this cannot be; say
        // so rather than commit half a batch.
        return Err(Error::Input("a unit of the batch was not written".into()));
    }
    let mut metas = vec![Meta::default(); files.len()];
    for f in &staged.files {
        metas[f.index] = f.meta;
    }
    // One `syncfs` flushes a whole file system: one folder per file system is enough.
    let anchors: BTreeSet<&Path> = units.iter().map(|u| u.anchor.as_path()).collect();
    let mut devices = BTreeSet::new();
    let flush_dirs = anchors
        .into_iter()
        .filter(|d| device_of(d).is_none_or(|dev| devices.insert(dev)))
        .map(Path::to_path_buf)
        .collect();
    Ok(Batch {
        dests: Vec::new(),
        flush_dirs,
        batch_sync,
        staged,
        metas,
    })
}

/// Starts a background flush of the file system holding `dir` (only a head start: the
/// real flush comes later, so it is not waited for).
fn early_flush(at: usize, dir: PathBuf) {
    tracing::debug!("early flush after {at} files");
    drop(
        std::thread::Builder::new()
            .name("ctxsync-flush".into())
            .spawn(move || {
                let _ = sync_filesystem_of(&dir);
            }),
    );
}

/// Writes unit `u`'s files out of sight, recording in `out` everything it made.
fn write_unit(
    files: &[(PathBuf, &[u8])],
    u: usize,
    unit: &Unit,
    batch_sync: bool,
    out: &mut UnitOut,
    on_written: &dyn Fn(),
) -> Result<()> {
    let stage_root = match &unit.fresh {
        None => {
            out.stage = Some(Stage::Beside(unit.anchor.clone()));
            None
        }
        Some(top) => {
            let stage = create_stage_dir(&unit.anchor, u)?;
            out.stage = Some(Stage::FreshTree {
                stage: stage.clone(),
                dest: top.clone(),
                dirs: vec![stage.clone()],
            });
            Some(stage)
        }
    };
    for (rel, idx) in &unit.folders {
        let folder = match &stage_root {
            None => unit.anchor.clone(),
            Some(stage) if rel.as_os_str().is_empty() => stage.clone(),
            Some(stage) => {
                let d = stage.join(rel);
                make_dirs(stage, rel, out)?;
                d
            }
        };
        // Files are created relative to the open folder: one lookup each, not one per
        // component of the whole path.
        let dir = Dir::open(&folder);
        for &i in idx {
            let (dest, bytes) = &files[i];
            let (tmp, mut f) = if stage_root.is_none() {
                create_temp(&dir, u, i)?
            } else {
                let name = dest
                    .file_name()
                    .ok_or_else(|| Error::Input(format!("{}: no file name", dest.display())))?;
                let p = folder.join(name);
                let f = dir
                    .create_new(Path::new(name))
                    .map_err(|e| Error::io(&p, e))?;
                (p, f)
            };
            // Recorded before anything can fail, so a failure cleans it up.
            out.files.push(StagedFile {
                index: i,
                unit: u,
                tmp,
                meta: Meta::default(),
            });
            let tmp = &out.files[out.files.len() - 1].tmp;
            f.write_all(bytes).map_err(|e| Error::io(tmp, e))?;
            if !batch_sync {
                f.sync_all().map_err(|e| Error::io(tmp, e))?;
            }
            let m = f.metadata().map_err(|e| Error::io(tmp, e))?;
            if let Some(last) = out.files.last_mut() {
                last.meta = Meta::from_std(&m);
            }
            on_written();
        }
    }
    Ok(())
}

/// Makes `stage/rel` and the folders above it that the stage does not hold yet,
/// recording each (parents first) in the unit's stage.
fn make_dirs(stage: &Path, rel: &Path, out: &mut UnitOut) -> Result<()> {
    let Some(Stage::FreshTree { dirs, .. }) = &mut out.stage else {
        return Ok(());
    };
    let mut d = stage.to_path_buf();
    for c in rel.components() {
        d.push(c);
        // The folders of one tree are made in order, so a folder seen before is last
        // in the list or an ancestor of it; a linear scan of a handful is enough.
        if dirs.contains(&d) {
            continue;
        }
        match std::fs::create_dir(&d) {
            Ok(()) => dirs.push(d.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&d, e)),
        }
    }
    Ok(())
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
        let mut folders = std::mem::take(&mut self.staged.folders);
        let files = std::mem::take(&mut self.staged.files);
        // Units whose tree went into place whole.
        let mut moved_whole = vec![false; folders.len()];
        let mut to_sync = BTreeSet::new();
        for (u, stage) in folders.iter().enumerate() {
            match stage {
                None => {}
                Some(Stage::Beside(d)) => {
                    to_sync.insert(d.clone());
                }
                Some(Stage::FreshTree { stage, dest, dirs }) => {
                    if !self.batch_sync {
                        // The staged names must be durable before they are published.
                        for d in dirs.iter().rev() {
                            sync_dir(d)?;
                        }
                    }
                    match std::fs::rename(stage, dest) {
                        Ok(()) => {
                            moved_whole[u] = true;
                            test_crash_point();
                        }
                        Err(e) => {
                            tracing::debug!(
                                "{}: appeared while staging ({e}); moving files one by one",
                                dest.display()
                            );
                        }
                    }
                    if let Some(parent) = dest.parent() {
                        to_sync.insert(parent.to_path_buf());
                    }
                }
            }
        }
        let mut rest = files.into_iter().filter(|f| !moved_whole[f.unit]);
        while let Some(f) = rest.next() {
            let dest = &self.dests[f.index];
            let moved = (|| {
                if let Some(Some(Stage::FreshTree { dest: top, .. })) = folders.get(f.unit) {
                    // The tree's folders may not all be there: made, and their new
                    // names flushed, like the files'.
                    if let Some(d) = dest.parent() {
                        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
                        let mut up = Some(d);
                        while let Some(x) = up.filter(|x| x.starts_with(top)) {
                            to_sync.insert(x.to_path_buf());
                            up = x.parent();
                        }
                    }
                }
                std::fs::rename(&f.tmp, dest).map_err(|e| Error::io(dest, e))
            })();
            if let Err(e) = moved {
                let _ = std::fs::remove_file(&f.tmp);
                // What is left is removed as `staged` drops (the trees that went into
                // place are not staged any more).
                self.staged.files.extend(rest);
                for (u, m) in moved_whole.iter().enumerate() {
                    if *m {
                        folders[u] = None;
                    }
                }
                self.staged.folders = folders;
                return Err(e);
            }
            test_crash_point();
        }
        // Staging trees emptied one by one are removed (those renamed are gone).
        for (u, stage) in folders.iter().enumerate() {
            if let Some(Stage::FreshTree { stage, .. }) = stage {
                if !moved_whole[u] {
                    let _ = std::fs::remove_dir_all(stage);
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
            moved_whole.iter().filter(|m| **m).count(),
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
    files: Vec<StagedFile>,
    /// Per unit, where its files are staged.
    folders: Vec<Option<Stage>>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(&f.tmp);
        }
        for stage in self.folders.iter().flatten() {
            if let Stage::FreshTree { stage, .. } = stage {
                // Only what we staged is in there; symlinks are not followed.
                let _ = std::fs::remove_dir_all(stage);
            }
        }
    }
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
