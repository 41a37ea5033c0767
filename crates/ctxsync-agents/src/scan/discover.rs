//! Discovery: walks the configured source folders and classifies Markdown files.
//!
//! * `D/<basename D>.md` is a modular OpenAgentBuilder agent whose root is `D`; every
//!   other file below `D` (modules, tasks, checklists) is a support file of that agent.
//! * A file inside a `modules/`, `tasks/` or `checklists/` folder (anywhere below a
//!   source) is a support file too, never an agent: its root is the folder that holds
//!   that folder. So a modular agent's folder renamed away from `<folder>.md` keeps its
//!   main file as the agent (read as a single-file agent rooted at that folder: same
//!   name, same references) and its modules stay modules. A folder holding such support
//!   folders but no Markdown file of its own is reported: nothing in it is published.
//! * Any other `.md` file is a single-file agent (OpenAgentBuilder or a Claude Code
//!   subagent), whose root is its folder. `README.md` files are documentation.
//!
//! Excluded globs, hidden files, files the registry owns as outputs, and symlinks that
//! lead out of the library are skipped (the last with a warning).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::config::AgentsConfig;
use crate::dirfd::{Dir, Kind, Meta};
use crate::error::{Error, Result};
use crate::glob::GlobSet;
use crate::paths;

/// How an agent is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `agents/<group>/<agent>/<agent>.md` with modules/tasks/checklists.
    Modular,
    /// One file.
    Single,
}

/// One library file as seen on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: u64,
}

/// One discovered agent entry file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    /// Entry file, repository-relative.
    pub entry: String,
    /// Folder that `@modules/...` references resolve against.
    pub root: String,
    /// Layout.
    pub layout: Layout,
}

/// Everything discovery found.
#[derive(Debug, Default)]
pub struct Library {
    /// Every non-excluded `.md` file in the sources.
    pub files: BTreeMap<String, FileStat>,
    /// Agent entry files, sorted by path.
    pub agents: Vec<AgentEntry>,
    /// For each library file, the agent root it belongs to (for `@` resolution).
    pub roots: BTreeMap<String, String>,
    /// Modular agent roots.
    pub modular_roots: BTreeSet<String>,
    /// The source folders walked (repository-relative, no trailing `/`), for
    /// [`Library::is_support`].
    pub sources: Vec<String>,
    /// Things skipped that the user should know about.
    pub warnings: Vec<String>,
    /// Every folder walked by its real path -> its mtime (ns) when walked, or
    /// [`ALWAYS_LIST`] for one whose listing must not be reused (it holds a symlink or
    /// a file refused for its size).
    pub dirs: BTreeMap<String, u64>,
    /// Files read during the walk (when asked to: a first scan reads every file
    /// anyway), by path.
    pub read: Vec<(String, ReadFile)>,
}

/// A library file read during the walk.
#[derive(Debug)]
pub struct ReadFile {
    /// BLAKE3 of its bytes.
    pub hash: String,
    /// Its text, when it is UTF-8.
    pub text: Option<std::sync::Arc<str>>,
}

/// What the last scan saw, so folders unchanged since can be walked without listing
/// them: a folder's mtime changes whenever an entry is added, removed or renamed in it,
/// and file contents are still checked by each file's own `stat`.
pub struct DirCache<'a> {
    dirs: &'a BTreeMap<String, u64>,
    scanned_at_ns: u64,
    /// Folder -> (sub-folder names, file names and their stats), from the last scan.
    children: HashMap<&'a str, Children<'a>>,
    /// What a `stat` of every recorded folder and file found moved since the last scan
    /// ([`DirCache::trusting`]): everything else is taken as recorded, without a call.
    moved: Option<&'a Moved>,
}

/// A folder's recorded sub-folders and files.
type Children<'a> = (Vec<&'a str>, Vec<RecordedFile<'a>>);

/// A file's name in its folder and its stat, as recorded.
type RecordedFile<'a> = (&'a str, FileStat);

/// The folders and files of a scan index that no longer look as recorded (see
/// [`crate::noop`]): a folder whose mtime moved (or is too close to the scan to trust),
/// a file whose size or mtime did (or that is gone).
#[derive(Debug, Default)]
pub struct Moved {
    /// Folders, repository-relative.
    pub dirs: HashSet<String>,
    /// Files, repository-relative.
    pub files: HashSet<String>,
}

impl Moved {
    /// Nothing moved.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty()
    }
}

/// The recorded "mtime" of a folder that is listed on every scan.
pub const ALWAYS_LIST: u64 = u64::MAX;

/// Folders modified this close to the last scan may have changed within the same mtime
/// tick: they are listed again ("racy clean", as git calls it).
const RACY_MARGIN_NS: u64 = 50_000_000;

impl<'a> DirCache<'a> {
    pub fn new(
        dirs: &'a BTreeMap<String, u64>,
        files: impl Iterator<Item = (&'a str, FileStat)>,
        scanned_at_ns: u64,
    ) -> Self {
        let mut children: HashMap<&str, Children<'a>> = HashMap::new();
        for d in dirs.keys() {
            if let Some((parent, name)) = d.rsplit_once('/') {
                children.entry(parent).or_default().0.push(name);
            }
        }
        for (f, stat) in files {
            if let Some((parent, name)) = f.rsplit_once('/') {
                children.entry(parent).or_default().1.push((name, stat));
            }
        }
        DirCache {
            dirs,
            scanned_at_ns,
            children,
            moved: None,
        }
    }

    /// Trusts a `stat` of every recorded folder and file, taken just before the walk:
    /// what is not in `moved` is as recorded, so the walk neither opens nor `stat`s it
    /// again. Only for a scan without symlinks (a folder holding one is always listed,
    /// and loops are told apart by inode, which a trusted folder is not asked for).
    pub fn trusting(mut self, moved: &'a Moved) -> Self {
        self.moved = Some(moved);
        self
    }

    /// The last scan's children of `rel`, if its listing is still good at `mtime_ns`.
    fn unchanged(&self, rel: &str, mtime_ns: u64) -> Option<(&[&'a str], &[RecordedFile<'a>])> {
        let recorded = *self.dirs.get(rel)?;
        if recorded == ALWAYS_LIST
            || recorded != mtime_ns
            || mtime_ns.saturating_add(RACY_MARGIN_NS) >= self.scanned_at_ns
        {
            return None;
        }
        Some(
            self.children
                .get(rel)
                .map_or((&[][..], &[][..]), |(d, f)| (d.as_slice(), f.as_slice())),
        )
    }
}

impl Library {
    /// The texts of the files read during the walk (see [`Library::read`]), by path;
    /// `read` is left empty.
    pub fn take_texts(&mut self) -> HashMap<String, std::sync::Arc<str>> {
        std::mem::take(&mut self.read)
            .into_iter()
            .filter_map(|(p, r)| Some((p, r.text?)))
            .collect()
    }

    /// The agent root that `@` references in `file` resolve against.
    pub fn root_of<'a>(&'a self, file: &'a str) -> &'a str {
        self.roots
            .get(file)
            .map(String::as_str)
            .unwrap_or_else(|| paths::parent(file))
    }

    /// Whether library file `file` supports an agent (a module, task or checklist)
    /// rather than being one or documenting one.
    pub fn is_support(&self, file: &str) -> bool {
        if paths::file_name(file).eq_ignore_ascii_case("readme.md") {
            return false;
        }
        if support_root(file, &self.sources).is_some() {
            return true;
        }
        let root = self.root_of(file);
        self.modular_roots.contains(root) && paths::parent(file) != root
    }
}

/// Folders whose Markdown files support an agent and are never agents themselves.
pub const SUPPORT_FOLDERS: [&str; 3] = ["modules", "tasks", "checklists"];

/// The folder holding the outermost support folder (see [`SUPPORT_FOLDERS`]) that
/// `file` is in, counting only folders below its source; `None` outside one.
fn support_root<'a>(file: &'a str, sources: &[String]) -> Option<&'a str> {
    // The longest source `file` is below: a support folder's name in the source's own
    // path (say a source `docs/tasks`) says nothing about the file.
    let below = sources
        .iter()
        .filter(|s| {
            file.len() > s.len() && file.starts_with(s.as_str()) && file.as_bytes()[s.len()] == b'/'
        })
        .map(|s| s.len() + 1)
        .max()
        .unwrap_or(0);
    let dir = paths::parent(file);
    let mut start = below;
    while start < dir.len() {
        let end = dir[start..].find('/').map_or(dir.len(), |i| start + i);
        if SUPPORT_FOLDERS.contains(&&dir[start..end]) {
            return Some(dir[..start].trim_end_matches('/'));
        }
        start = end + 1;
    }
    None
}

/// Walks the sources of `cfg` under `root`; `owned_outputs` are skipped (our own files).
pub fn discover(
    root: &Path,
    cfg: &AgentsConfig,
    owned_outputs: &HashSet<String>,
) -> Result<Library> {
    discover_cached(root, cfg, owned_outputs, None, false)
}

/// [`discover`], reusing the listings of folders unchanged since `cache` was taken;
/// with `read_contents`, every file listed is also read and hashed
/// ([`Library::read`]).
pub fn discover_cached(
    root: &Path,
    cfg: &AgentsConfig,
    owned_outputs: &HashSet<String>,
    cache: Option<&DirCache<'_>>,
    read_contents: bool,
) -> Result<Library> {
    let excludes = GlobSet::new(&cfg.excludes);
    let mut lib = Library::default();
    let canon_root = root.canonicalize().map_err(|e| Error::io(root, e))?;
    let mut seen_dirs = HashSet::new();
    for src in &cfg.sources {
        let src = src.trim_end_matches('/');
        let abs = paths::abs(root, src);
        let Ok(canon_src) = abs.canonicalize() else {
            continue; // An absent source is normal (e.g. no .claude/agents).
        };
        if !canon_src.starts_with(&canon_root) {
            lib.warnings.push(format!(
                "{src}: source leads outside the repository, skipped"
            ));
            continue;
        }
        if !canon_src.is_dir() {
            continue;
        }
        // The walk checks each entry's own name against the excludes; the source's
        // path is checked here, once.
        if excludes.matches(src) {
            continue;
        }
        let id = dir_identity(&abs)?;
        let ctx = WalkCtx {
            cfg,
            excludes: &excludes,
            owned: owned_outputs,
            canon_src: &canon_src,
            cache,
            read_contents,
        };
        walk_source(&ctx, &abs, id, src, &mut lib, &mut seen_dirs)?;
    }
    // Trusted folders are told apart by path, not inode: a symlink that appeared since
    // the last scan could lead to one of them twice. Such a scan is redone untrusted.
    if let Some(cache) = cache.filter(|c| c.moved.is_some()) {
        if lib.dirs.values().any(|m| *m == ALWAYS_LIST) {
            let untrusted = DirCache {
                dirs: cache.dirs,
                scanned_at_ns: cache.scanned_at_ns,
                children: cache.children.clone(),
                moved: None,
            };
            return discover_cached(root, cfg, owned_outputs, Some(&untrusted), read_contents);
        }
    }
    lib.sources = cfg
        .sources
        .iter()
        .map(|s| s.trim_end_matches('/').to_string())
        .collect();
    classify(&mut lib);
    Ok(lib)
}

/// What identifies a folder however it was reached: its device and inode on Unix (one
/// `stat`, where resolving the path would cost a `readlink` per component per folder).
#[cfg(unix)]
fn dir_identity(dir: &Path) -> Result<DirId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    Ok(DirId::Inode(m.dev(), m.ino()))
}

/// A folder's identity from metadata already at hand.
#[cfg(unix)]
fn meta_identity(m: &crate::dirfd::Meta, _path: &Path) -> DirId {
    DirId::Inode(m.dev_ino.0, m.dev_ino.1)
}

#[cfg(not(unix))]
fn meta_identity(_m: &crate::dirfd::Meta, path: &Path) -> DirId {
    DirId::Path(path.to_path_buf())
}

#[cfg(not(unix))]
fn dir_identity(dir: &Path) -> Result<DirId> {
    Ok(DirId::Path(
        dir.canonicalize().map_err(|e| Error::io(dir, e))?,
    ))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum DirId {
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
struct WalkCtx<'a> {
    cfg: &'a AgentsConfig,
    excludes: &'a GlobSet,
    owned: &'a HashSet<String>,
    canon_src: &'a Path,
    cache: Option<&'a DirCache<'a>>,
    /// Read (and hash) each file listed.
    read_contents: bool,
}

/// A folder still to walk: path, identity, relative path, depth, mtime if known.
type DirJob = (PathBuf, DirId, String, usize, Option<u64>);

/// Walks one source: its top folder here, its sub-folders on a few threads (a large
/// library is tens of thousands of folders, and listing them is all system calls), then
/// the folders reached through symlinks, one at a time so none is walked twice.
fn walk_source(
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
enum WalkMode {
    /// List one folder; queue its real sub-folders in `jobs`.
    CollectSubdirs,
    /// Recurse into real sub-folders; queue linked ones in `deferred`.
    DeferLinks,
    /// Recurse into everything (loops stopped by `seen_dirs`).
    FollowLinks,
}

struct Walker<'a> {
    ctx: &'a WalkCtx<'a>,
    mode: WalkMode,
    lib: Library,
    seen_dirs: HashSet<DirId>,
    jobs: Vec<DirJob>,
    deferred: Vec<DirJob>,
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

fn mtime_of(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

fn classify(lib: &mut Library) {
    for f in lib.files.keys() {
        let dir = paths::parent(f);
        let stem = paths::file_name(f).trim_end_matches(".md");
        if !dir.is_empty()
            && paths::file_name(dir) == stem
            && support_root(f, &lib.sources).is_none()
        {
            lib.modular_roots.insert(dir.to_string());
        }
    }
    let mut agents = Vec::new();
    let mut roots = BTreeMap::new();
    // Folders holding support folders outside any modular agent -> how many support
    // files; and the folders that hold an agent file of their own.
    let mut orphaned: BTreeMap<&str, usize> = BTreeMap::new();
    let mut with_agent: HashSet<&str> = HashSet::new();
    for f in lib.files.keys() {
        let modular = ancestor_root(&lib.modular_roots, f);
        let support = match modular {
            Some(_) => None,
            None => support_root(f, &lib.sources),
        };
        let root = modular
            .or(support)
            .unwrap_or_else(|| paths::parent(f))
            .to_string();
        let is_readme = paths::file_name(f).eq_ignore_ascii_case("readme.md");
        match (modular, support) {
            (Some(r), _)
                if paths::parent(f) == r
                    && paths::file_name(f).trim_end_matches(".md") == paths::file_name(r) =>
            {
                agents.push(AgentEntry {
                    entry: f.clone(),
                    root: root.clone(),
                    layout: Layout::Modular,
                })
            }
            (Some(_), _) => {}
            (None, Some(s)) => {
                if !is_readme {
                    *orphaned.entry(s).or_default() += 1;
                }
            }
            (None, None) if !is_readme => {
                with_agent.insert(paths::parent(f));
                agents.push(AgentEntry {
                    entry: f.clone(),
                    root: root.clone(),
                    layout: Layout::Single,
                })
            }
            (None, None) => {}
        }
        roots.insert(f.clone(), root);
    }
    for (folder, n) in orphaned {
        if !with_agent.contains(folder) {
            let (shown, name) = match paths::file_name(folder) {
                "" => (".", "<name>"),
                n => (folder, n),
            };
            lib.warnings.push(format!(
                "{shown}: holds modules/, tasks/ or checklists/ but no agent file \
                 (expected {folder}/{name}.md); its {n} support files are not published"
            ));
        }
    }
    lib.agents = agents;
    lib.roots = roots;
}

/// The innermost modular root that contains `file`.
fn ancestor_root<'a>(roots: &'a BTreeSet<String>, file: &str) -> Option<&'a str> {
    let mut dir = paths::parent(file);
    while !dir.is_empty() {
        if let Some(r) = roots.get(dir) {
            return Some(r.as_str());
        }
        dir = paths::parent(dir);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(lib: &Library) -> impl Iterator<Item = (&str, FileStat)> {
        lib.files.iter().map(|(p, st)| (p.as_str(), st.clone()))
    }

    /// Compares two scans: the files with their stats, the folders, the agents.
    fn assert_same(got: &Library, want: &Library, what: &str) {
        assert_eq!(got.files, want.files, "{what}: files");
        assert_eq!(got.dirs, want.dirs, "{what}: folders");
        assert_eq!(got.agents, want.agents, "{what}: agents");
        assert_eq!(got.warnings, want.warnings, "{what}: warnings");
    }

    /// A walk that trusts a stat of the index for what did not move finds exactly what
    /// a full walk finds, after each kind of change.
    #[test]
    fn a_trusting_walk_finds_what_a_full_walk_finds() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let cfg = AgentsConfig::default();
        let put = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        for g in ["g1", "g2"] {
            for a in ["a", "b"] {
                put(&format!("agents/{g}/{a}/{a}.md"), "# A\n");
                put(&format!("agents/{g}/{a}/modules/m.md"), "# M\n");
            }
            put(&format!("agents/{g}/single.md"), "# S\n");
        }
        type Change<'a> = Box<dyn Fn() + 'a>;
        let changes: Vec<(&str, Change<'_>)> = vec![
            ("nothing", Box::new(|| {})),
            (
                "a file rewritten",
                Box::new(|| put("agents/g1/a/modules/m.md", "# M changed\n")),
            ),
            (
                "a file added",
                Box::new(|| put("agents/g1/b/modules/new.md", "# N\n")),
            ),
            (
                "a file removed",
                Box::new(|| std::fs::remove_file(root.join("agents/g2/single.md")).unwrap()),
            ),
            (
                "a folder added",
                Box::new(|| put("agents/g3/c/c.md", "# C\n")),
            ),
            (
                "a folder removed",
                Box::new(|| std::fs::remove_dir_all(root.join("agents/g2/b")).unwrap()),
            ),
            (
                "a folder renamed",
                Box::new(|| {
                    std::fs::rename(root.join("agents/g1/a"), root.join("agents/g1/z")).unwrap()
                }),
            ),
            #[cfg(unix)]
            (
                "a symlink added",
                Box::new(|| {
                    std::os::unix::fs::symlink("../g1/b", root.join("agents/g2/link")).unwrap()
                }),
            ),
        ];
        for (what, change) in changes {
            // Entries must be older than the racy margin for the index to vouch for them.
            std::thread::sleep(std::time::Duration::from_millis(60));
            let before = discover(root, &cfg, &HashSet::new()).unwrap();
            let scanned_at = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            change();
            let ix = crate::index::Index {
                scanned_at_ns: scanned_at,
                files: before
                    .files
                    .iter()
                    .map(|(p, st)| {
                        (
                            p.clone(),
                            crate::registry::FileRec {
                                hash: String::new(),
                                size: st.size,
                                mtime_ns: st.mtime_ns,
                            },
                        )
                    })
                    .collect(),
                dirs: before.dirs.clone(),
                complete: true,
                ..Default::default()
            };
            let moved = crate::noop::stat_index(root, &cfg, &ix).expect("the index can answer");
            assert_eq!(moved.is_empty(), what == "nothing", "{what}: {moved:?}");
            let cache = DirCache::new(&ix.dirs, stats(&before), scanned_at).trusting(&moved);
            let trusted =
                discover_cached(root, &cfg, &HashSet::new(), Some(&cache), false).unwrap();
            let full = discover(root, &cfg, &HashSet::new()).unwrap();
            assert_same(&trusted, &full, what);
        }
    }

    fn write_agent(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "# Agent\n").unwrap();
    }

    #[test]
    fn classifies_layouts() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str| {
            let a = d.path().join(p);
            std::fs::create_dir_all(a.parent().unwrap()).unwrap();
            std::fs::write(a, "# x\n").unwrap();
        };
        w("agents/core/orch/orch.md");
        w("agents/core/orch/modules/m.md");
        w("agents/core/orch/orch-backup.md");
        w("agents/dev/be.md");
        w("agents/README.md");
        w(".claude/agents/rev.md");
        let lib = discover(d.path(), &AgentsConfig::default(), &HashSet::new()).unwrap();
        let entries: Vec<_> = lib.agents.iter().map(|a| a.entry.as_str()).collect();
        assert_eq!(
            entries,
            [
                ".claude/agents/rev.md",
                "agents/core/orch/orch.md",
                "agents/dev/be.md"
            ]
        );
        assert_eq!(
            lib.root_of("agents/core/orch/modules/m.md"),
            "agents/core/orch"
        );
        assert!(!lib.files.contains_key("agents/core/orch/orch-backup.md"));
    }

    /// A modular agent's folder renamed away from `<folder>.md`: its main file stays the
    /// one agent, rooted where it was; nothing in `modules/`, `tasks/` or `checklists/`
    /// (anywhere below a source) becomes an agent; a support folder without an agent
    /// file beside it is reported.
    #[test]
    fn support_folders_never_become_agents() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str| write_agent(d.path(), p);
        w("agents/core/orch-v2/orch.md");
        w("agents/core/orch-v2/modules/capabilities/c.md");
        w("agents/core/orch-v2/modules/README.md");
        w("agents/core/orch-v2/tasks/t.md");
        w("agents/core/orch-v2/checklists/q.md");
        // A file named like its folder inside a support folder is no modular agent.
        w("agents/core/orch-v2/modules/modules.md");
        // Main file gone: reported, nothing published.
        w("agents/core/headless/tasks/t.md");
        w("agents/core/headless/modules/m.md");
        // Single-file agents sharing their group's tasks.
        w("agents/dev/be.md");
        w("agents/dev/fe.md");
        w("agents/dev/tasks/shared.md");
        // A source whose own path names a support folder.
        w("docs/tasks/helper.md");
        let cfg = AgentsConfig {
            sources: vec!["agents".into(), "docs/tasks/".into()],
            ..AgentsConfig::default()
        };
        let lib = discover(d.path(), &cfg, &HashSet::new()).unwrap();
        let entries: Vec<(&str, &str)> = lib
            .agents
            .iter()
            .map(|a| (a.entry.as_str(), a.root.as_str()))
            .collect();
        assert_eq!(
            entries,
            [
                ("agents/core/orch-v2/orch.md", "agents/core/orch-v2"),
                ("agents/dev/be.md", "agents/dev"),
                ("agents/dev/fe.md", "agents/dev"),
                ("docs/tasks/helper.md", "docs/tasks"),
            ]
        );
        for (f, root) in [
            (
                "agents/core/orch-v2/modules/capabilities/c.md",
                "agents/core/orch-v2",
            ),
            ("agents/core/orch-v2/tasks/t.md", "agents/core/orch-v2"),
            ("agents/dev/tasks/shared.md", "agents/dev"),
        ] {
            assert_eq!(lib.root_of(f), root, "{f}");
            assert!(lib.is_support(f), "{f}");
        }
        assert!(!lib.is_support("agents/core/orch-v2/modules/README.md"));
        assert!(!lib.is_support("agents/dev/be.md"));
        assert!(lib.modular_roots.is_empty(), "{:?}", lib.modular_roots);
        assert_eq!(
            lib.warnings,
            [
                "agents/core/headless: holds modules/, tasks/ or checklists/ but no agent file \
              (expected agents/core/headless/headless.md); its 2 support files are not published"
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlink_out_of_library_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.md"), "# s\n").unwrap();
        std::fs::create_dir_all(d.path().join("agents")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.md"),
            d.path().join("agents/s.md"),
        )
        .unwrap();
        let lib = discover(d.path(), &AgentsConfig::default(), &HashSet::new()).unwrap();
        assert!(lib.files.is_empty());
        assert!(lib.warnings.iter().any(|w| w.contains("not followed")));
    }

    #[test]
    fn a_first_scan_reads_and_hashes_what_it_lists() {
        let d = tempfile::tempdir().unwrap();
        write_agent(d.path(), "agents/a/a.md");
        std::fs::write(d.path().join("agents/a/latin1.md"), b"caf\xe9\n").unwrap();
        std::fs::write(d.path().join("agents/big.md"), "x".repeat(100)).unwrap();
        let cfg = AgentsConfig {
            max_file_bytes: 50,
            ..AgentsConfig::default()
        };
        let lib = discover_cached(d.path(), &cfg, &HashSet::new(), None, true).unwrap();
        let read: BTreeMap<&str, &ReadFile> =
            lib.read.iter().map(|(p, r)| (p.as_str(), r)).collect();
        assert_eq!(
            read.keys().copied().collect::<Vec<_>>(),
            vec!["agents/a/a.md", "agents/a/latin1.md"]
        );
        let text = std::fs::read(d.path().join("agents/a/a.md")).unwrap();
        assert_eq!(read["agents/a/a.md"].hash, crate::backup::hash(&text));
        assert_eq!(
            read["agents/a/a.md"].text.as_deref().map(str::as_bytes),
            Some(&text[..])
        );
        assert!(read["agents/a/latin1.md"].text.is_none());
        // Too large: refused with a warning, not read, and its folder listed every time.
        assert!(!lib.files.contains_key("agents/big.md"));
        assert!(lib.warnings.iter().any(|w| w.contains("agents/big.md")));
        assert_eq!(lib.dirs["agents"], ALWAYS_LIST);
        // The same files and stats as a scan that does not read.
        let listed = discover(d.path(), &cfg, &HashSet::new()).unwrap();
        assert_eq!(listed.files, lib.files);
        assert!(listed.read.is_empty());
    }

    #[test]
    fn unchanged_folders_reuse_their_listing_and_changed_ones_are_listed() {
        let d = tempfile::tempdir().unwrap();
        let write = |rel: &str| write_agent(d.path(), rel);
        write("agents/a/a.md");
        write("agents/b/b.md");
        let cfg = AgentsConfig::default();
        let first = discover(d.path(), &cfg, &HashSet::new()).unwrap();
        assert!(first.dirs.contains_key("agents/b"), "{:?}", first.dirs);
        // A cache that (wrongly) lacks b.md proves the listing of an unchanged folder is
        // reused rather than read again.
        let files: Vec<(&str, FileStat)> = first
            .files
            .iter()
            .filter(|(f, _)| *f != "agents/b/b.md")
            .map(|(f, st)| (f.as_str(), st.clone()))
            .collect();
        let later = u64::MAX / 2;
        let cache = DirCache::new(&first.dirs, files.iter().cloned(), later);
        let cached = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&cache), false).unwrap();
        assert!(cached.files.contains_key("agents/a/a.md"));
        assert!(!cached.files.contains_key("agents/b/b.md"));
        // A folder that changed is listed again: its new and old files both appear, and
        // so does a new sub-folder of an unchanged-looking parent once the parent moved.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write("agents/b/c.md");
        write("agents/new/new.md");
        let again = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&cache), false).unwrap();
        for f in [
            "agents/a/a.md",
            "agents/b/b.md",
            "agents/b/c.md",
            "agents/new/new.md",
        ] {
            assert!(
                again.files.contains_key(f),
                "{f} missing: {:?}",
                again.files.keys()
            );
        }
        // A folder modified close to the scan is never trusted ("racy clean").
        let racy = DirCache::new(&first.dirs, files.iter().cloned(), 0);
        let listed = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&racy), false).unwrap();
        assert!(listed.files.contains_key("agents/b/b.md"));
    }

    /// A folder holding a symlink is listed on every scan, and the reused listing of
    /// its parent must still lead to it (an earlier version lost its agents on the
    /// third run, and never saw a file added to it).
    #[cfg(unix)]
    #[test]
    fn a_folder_holding_a_link_stays_reachable_from_a_cached_parent() {
        let d = tempfile::tempdir().unwrap();
        let write = |rel: &str| write_agent(d.path(), rel);
        write("agents/g/a/a.md");
        write("agents/h/b.md");
        std::fs::create_dir_all(d.path().join("agents/u")).unwrap();
        std::os::unix::fs::symlink("../h/b.md", d.path().join("agents/g/linked.md")).unwrap();
        std::os::unix::fs::symlink("../h/b.md", d.path().join("agents/u/only-a-link.md")).unwrap();
        let cfg = AgentsConfig::default();
        let first = discover(d.path(), &cfg, &HashSet::new()).unwrap();
        assert_eq!(first.dirs.get("agents/g"), Some(&ALWAYS_LIST));
        let later = u64::MAX / 2;
        let cache = DirCache::new(&first.dirs, stats(&first), later);
        let again = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&cache), false).unwrap();
        assert_eq!(
            again.files.keys().collect::<Vec<_>>(),
            first.files.keys().collect::<Vec<_>>()
        );
        // A file added to the always-listed folder changes only that folder's mtime.
        write("agents/u/new.md");
        let third = discover_cached(d.path(), &cfg, &HashSet::new(), Some(&cache), false).unwrap();
        assert!(
            third.files.contains_key("agents/u/new.md"),
            "{:?}",
            third.files.keys()
        );
        assert!(third.files.contains_key("agents/g/a/a.md"));
    }
}
