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

#[cfg(test)]
mod tests;
mod walk;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::config::AgentsConfig;
use crate::dirfd::{Dir, Kind, Meta};
use crate::error::{Error, Result};
use crate::glob::GlobSet;
use crate::paths;
use walk::*;

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
