//! The walk of one source folder: listings in parallel, reused from the folder cache
//! when a folder's mtime says nothing changed, symlinks kept inside the library.

use super::*;

/// What identifies a folder however it was reached: its device and inode on Unix (one
/// `stat`, where resolving the path would cost a `readlink` per component per folder).
#[cfg(unix)]
pub(super) fn dir_identity(dir: &Path) -> Result<DirId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    Ok(DirId::Inode(m.dev(), m.ino()))
}

/// A folder's identity from metadata already at hand.
#[cfg(unix)]
pub(super) fn meta_identity(m: &crate::dirfd::Meta, _path: &Path) -> DirId {
    DirId::Inode(m.dev_ino.0, m.dev_ino.1)
}

#[cfg(not(unix))]
pub(super) fn meta_identity(_m: &crate::dirfd::Meta, path: &Path) -> DirId {
    DirId::Path(path.to_path_buf())
}

#[cfg(not(unix))]
pub(super) fn dir_identity(dir: &Path) -> Result<DirId> {
    Ok(DirId::Path(
        dir.canonicalize().map_err(|e| Error::io(dir, e))?,
    ))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum DirId {
    #[cfg_attr(not(unix), allow(dead_code))]
    Inode(u64, u64),
    /// On Unix, a folder trusted as recorded (see [`DirCache::trusting`]).
    Path(PathBuf),
}

impl DirId {
    /// The identity of a real (not linked) sub-folder, from the folder listing itself:
    /// its inode on the parent's device (a mount point inside a library would only make
    /// the loop check stricter, never walk anything twice).
    fn child(&self, ino: u64, name: &str) -> DirId {
        match self {
            DirId::Inode(dev, _) => DirId::Inode(*dev, ino),
            DirId::Path(p) => DirId::Path(p.join(name)),
        }
    }
}

/// What every walker of one source shares.
pub(super) struct WalkCtx<'a> {
    pub(super) cfg: &'a AgentsConfig,
    pub(super) excludes: &'a GlobSet,
    pub(super) owned: &'a HashSet<String>,
    pub(super) canon_src: &'a Path,
    pub(super) cache: Option<&'a DirCache<'a>>,
    /// Read (and hash) each file listed.
    pub(super) read_contents: bool,
}

/// A folder still to walk: path, identity, relative path, depth, mtime if known.
pub(super) type DirJob = (PathBuf, DirId, String, usize, Option<u64>);

/// Walks one source: its top folder here, its sub-folders on a few threads (a large
/// library is tens of thousands of folders, and listing them is all system calls), then
/// the folders reached through symlinks, one at a time so none is walked twice.
pub(super) fn walk_source(
    ctx: &WalkCtx<'_>,
    abs: &Path,
    id: DirId,
    rel: &str,
    lib: &mut Library,
    seen_dirs: &mut HashSet<DirId>,
) -> Result<()> {
    let mut top = Walker::new(ctx, WalkMode::CollectSubdirs);
    top.walk(&Dir::open(abs), id, rel, 0)?;
    let jobs = std::mem::take(&mut top.jobs);
    let mut deferred = std::mem::take(&mut top.deferred);
    let mut parts = vec![top];
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = jobs.len().div_ceil(threads).max(1);
    let results: Vec<Result<Walker<'_>>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || -> Result<Walker<'_>> {
                    let mut w = Walker::new(ctx, WalkMode::DeferLinks);
                    for (path, id, rel, depth, mtime) in part {
                        w.walk_at(&Dir::open(path), id.clone(), rel, *depth, *mtime)?;
                    }
                    Ok(w)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Input("folder walker panicked".into())))
            })
            .collect()
    });
    for r in results {
        parts.push(r?);
    }
    for mut part in parts {
        lib.files.append(&mut part.lib.files);
        lib.dirs.append(&mut part.lib.dirs);
        lib.warnings.append(&mut part.lib.warnings);
        lib.read.append(&mut part.lib.read);
        seen_dirs.extend(part.seen_dirs.drain());
        deferred.append(&mut part.deferred);
    }
    // Links last, against every folder already walked.
    let mut linked = Walker::new(ctx, WalkMode::FollowLinks);
    linked.seen_dirs = std::mem::take(seen_dirs);
    for (path, id, rel, depth, _) in deferred {
        linked.walk(&Dir::open(&path), id, &rel, depth)?;
    }
    lib.files.append(&mut linked.lib.files);
    lib.dirs.append(&mut linked.lib.dirs);
    lib.warnings.append(&mut linked.lib.warnings);
    lib.read.append(&mut linked.lib.read);
    *seen_dirs = linked.seen_dirs;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WalkMode {
    /// List one folder; queue its real sub-folders in `jobs`.
    CollectSubdirs,
    /// Recurse into real sub-folders; queue linked ones in `deferred`.
    DeferLinks,
    /// Recurse into everything (loops stopped by `seen_dirs`).
    FollowLinks,
}

pub(super) struct Walker<'a> {
    pub(super) ctx: &'a WalkCtx<'a>,
    pub(super) mode: WalkMode,
    pub(super) lib: Library,
    pub(super) seen_dirs: HashSet<DirId>,
    pub(super) jobs: Vec<DirJob>,
    pub(super) deferred: Vec<DirJob>,
}

impl<'a> Walker<'a> {
    fn new(ctx: &'a WalkCtx<'a>, mode: WalkMode) -> Self {
        Self {
            ctx,
            mode,
            lib: Library::default(),
            seen_dirs: HashSet::new(),
            jobs: Vec::new(),
            deferred: Vec::new(),
        }
    }

    /// Walks `dir`, whose identity the caller knows (so a folder costs no extra `stat`).
    fn walk(&mut self, dir: &Dir, id: DirId, rel: &str, depth: usize) -> Result<()> {
        self.walk_at(dir, id, rel, depth, None)
    }

    /// [`Self::walk`] when the folder's mtime is already known.
    fn walk_at(
        &mut self,
        handle: &Dir,
        id: DirId,
        rel: &str,
        depth: usize,
        known_mtime: Option<u64>,
    ) -> Result<()> {
        if depth > 32 {
            self.lib
                .warnings
                .push(format!("{rel}: folder nesting deeper than 32, skipped"));
            return Ok(());
        }
        if !self.seen_dirs.insert(id.clone()) {
            return Ok(()); // Reached twice through a symlink: walk once.
        }
        let dir = handle.path();
        // Only folders reached by their real path are cached (mode != FollowLinks).
        let mtime_ns = match known_mtime {
            Some(m) => Some(m),
            None if self.mode == WalkMode::FollowLinks => None,
            None => match std::fs::metadata(dir) {
                Ok(m) => Some(mtime_of(&m)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(_) => None,
            },
        };
        if let (Some(cache), Some(mtime), true) =
            (self.ctx.cache, mtime_ns, self.mode != WalkMode::FollowLinks)
        {
            if let Some((subdirs, files)) = cache.unchanged(rel, mtime) {
                return self.walk_unchanged(handle, rel, depth, mtime, subdirs, files);
            }
        }
        let mut always_list = false;
        // A folder reached without opening it (trusted as recorded) that must be
        // listed after all.
        let reopened;
        let handle = if handle.is_open() {
            handle
        } else {
            reopened = Dir::open(handle.path());
            &reopened
        };
        let mut entries = match handle.list() {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for ent in entries {
            let Some(name) = ent.name.to_str() else {
                self.lib.warnings.push(format!(
                    "{rel}/{}: file name is not UTF-8, skipped",
                    ent.name.to_string_lossy()
                ));
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let child_rel = format!("{rel}/{name}");
            if self.ctx.excludes.matches_entry(&child_rel, name)
                || self.ctx.owned.contains(&child_rel)
            {
                continue;
            }
            let mut kind = ent.kind;
            if kind == Kind::Unknown {
                kind = match handle.stat(name) {
                    Ok(m) if m.is_dir => Kind::Dir,
                    Ok(m) if m.is_file => Kind::File,
                    Ok(_) => match std::fs::symlink_metadata(dir.join(name)) {
                        Ok(m) if m.file_type().is_symlink() => Kind::Symlink,
                        _ => Kind::Other,
                    },
                    Err(_) => continue,
                };
            }
            let linked = kind == Kind::Symlink;
            always_list |= linked;
            if linked {
                let path = dir.join(name);
                match path.canonicalize() {
                    Ok(t) if t.starts_with(self.ctx.canon_src) => match std::fs::metadata(&path) {
                        Ok(m) if m.is_dir() => {
                            let job = (
                                path.clone(),
                                dir_identity(&path)?,
                                child_rel,
                                depth + 1,
                                None,
                            );
                            match self.mode {
                                WalkMode::FollowLinks => {
                                    self.walk(&Dir::open(&job.0), job.1, &job.2, job.3)?
                                }
                                _ => self.deferred.push(job),
                            }
                        }
                        Ok(m) if m.is_file() && name.ends_with(".md") => {
                            self.add_file(child_rel, &Meta::from_std(&m), None);
                        }
                        _ => {}
                    },
                    _ => {
                        self.lib.warnings.push(format!(
                            "{child_rel}: symlink leads out of the library, not followed"
                        ));
                    }
                }
                continue;
            }
            if kind == Kind::Dir {
                let child_id = id.child(ent.ino, name);
                // A real sub-folder's mtime comes from a stat relative to this open
                // folder, so walking it needs no stat of its whole path.
                let mtime = handle.stat(name).ok().map(|m| m.mtime_ns);
                match self.mode {
                    WalkMode::CollectSubdirs => {
                        self.jobs
                            .push((dir.join(name), child_id, child_rel, depth + 1, mtime))
                    }
                    _ => {
                        self.walk_at(&handle.child(name), child_id, &child_rel, depth + 1, mtime)?
                    }
                }
            } else if kind == Kind::File && name.ends_with(".md") {
                // A first scan reads every file anyway: read it now, relative to the open
                // folder, and take its metadata from the open file.
                let read = if self.ctx.read_contents {
                    handle.read_file(name, self.ctx.cfg.max_file_bytes)
                } else {
                    handle.stat(name).map(|meta| (meta, None))
                };
                // A file that cannot be read is still a library file: reading it again
                // later reports why, where dropping it would remove its agent's outputs.
                let read = read.or_else(|_| handle.stat(name).map(|meta| (meta, None)));
                if let Ok((meta, bytes)) = read {
                    if meta.is_file {
                        always_list |= !self.add_file(child_rel, &meta, bytes);
                    }
                }
            }
        }
        // A folder holding a link is always listed: the link's target can change
        // without the folder changing. It is still recorded, so that its parent's
        // reused listing leads to it.
        if self.mode != WalkMode::FollowLinks {
            let mtime = match (mtime_ns, always_list) {
                (Some(m), false) => m,
                _ => ALWAYS_LIST,
            };
            self.lib.dirs.insert(rel.to_owned(), mtime);
        }
        Ok(())
    }

    /// Records library file `rel` (and its bytes, when read); false when it is refused
    /// for its size (with a warning), so its folder is listed on every scan: its size
    /// may drop without the folder changing.
    fn add_file(&mut self, rel: String, meta: &Meta, bytes: Option<Vec<u8>>) -> bool {
        if meta.size > self.ctx.cfg.max_file_bytes {
            self.lib.warnings.push(format!(
                "{rel}: {} bytes is over max_file_bytes ({}), refused",
                meta.size, self.ctx.cfg.max_file_bytes
            ));
            return false;
        }
        if let Some(bytes) = bytes {
            let hash = crate::backup::hash(&bytes);
            let text = String::from_utf8(bytes)
                .ok()
                .map(std::sync::Arc::<str>::from);
            self.lib.read.push((rel.clone(), ReadFile { hash, text }));
        }
        self.lib.files.insert(
            rel,
            FileStat {
                size: meta.size,
                mtime_ns: meta.mtime_ns,
            },
        );
        true
    }

    /// Walks a folder unchanged since the last scan from its recorded listing: no
    /// `opendir`/`getdents`, one `stat` per entry (each file's own content may have
    /// changed; each sub-folder's own listing may have). With a trusted stat of the
    /// index ([`DirCache::trusting`]), not even that for what did not move.
    fn walk_unchanged(
        &mut self,
        dir: &Dir,
        rel: &str,
        depth: usize,
        mtime: u64,
        subdirs: &[&str],
        files: &[RecordedFile<'_>],
    ) -> Result<()> {
        let cache = self.ctx.cache;
        let moved = cache.and_then(|c| c.moved);
        self.lib.dirs.insert(rel.to_owned(), mtime);
        for (name, recorded) in files {
            let child_rel = format!("{rel}/{name}");
            if self.ctx.excludes.matches_entry(&child_rel, name)
                || self.ctx.owned.contains(&child_rel)
            {
                continue;
            }
            if moved.is_some_and(|m| !m.files.contains(&child_rel)) {
                self.lib.files.insert(child_rel, recorded.clone());
                continue;
            }
            let Ok(meta) = dir.stat(name) else {
                continue; // gone since: the folder's mtime would say so, but be safe
            };
            if !meta.is_file {
                continue;
            }
            if !self.add_file(child_rel, &meta, None) {
                self.lib.dirs.insert(rel.to_owned(), ALWAYS_LIST);
            }
        }
        for name in subdirs {
            let child_rel = format!("{rel}/{name}");
            let path = dir.path().join(name);
            let trusted = moved
                .filter(|m| !m.dirs.contains(&child_rel))
                .and(cache)
                .and_then(|c| c.dirs.get(&child_rel));
            let (id, child_mtime, handle) = match trusted {
                // As recorded: no handle opened unless it must be listed after all.
                Some(m) => (DirId::Path(path.clone()), *m, Dir::unopened(&path)),
                None => {
                    let Ok(meta) = dir.stat(name) else {
                        continue;
                    };
                    if !meta.is_dir {
                        continue; // replaced by something else: its folder's mtime would show it
                    }
                    (meta_identity(&meta, &path), meta.mtime_ns, dir.child(name))
                }
            };
            match self.mode {
                WalkMode::CollectSubdirs => {
                    self.jobs
                        .push((path, id, child_rel, depth + 1, Some(child_mtime)))
                }
                _ => self.walk_at(&handle, id, &child_rel, depth + 1, Some(child_mtime))?,
            }
        }
        Ok(())
    }
}
