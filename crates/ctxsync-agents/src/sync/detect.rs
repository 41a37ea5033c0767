//! The detect phase: answer from the scan index when nothing moved, hash what
//! changed, find renames and the agents whose recorded dependencies or outputs moved.

use super::*;

/// The recorded size and mtime of each library file, for a [`discover::DirCache`].
pub(super) fn recorded_stats(
    files: &BTreeMap<String, FileRec>,
) -> impl Iterator<Item = (&str, discover::FileStat)> {
    files.iter().map(|(p, r)| {
        (
            p.as_str(),
            discover::FileStat {
                size: r.size,
                mtime_ns: r.mtime_ns,
            },
        )
    })
}

/// What the scan index alone says of a run.
pub(super) enum FromIndex {
    /// Nothing to do: the library's agent count and the walk's warnings.
    NoOp(usize, Vec<String>),
    /// Something moved; the library as walked on the way (under the owned outputs and
    /// the folder cache the registry would give), for the run to go on with.
    Walked(Library),
    /// Not asked (a full, check or one-agent run), or no index for these settings.
    Unused,
}

/// Stats every folder, file and output the index lists. When nothing moved, the run
/// needs neither a walk nor the registry; otherwise the walk trusts what did not move.
pub(super) fn answer_from_index(
    root: &Path,
    cfg: &AgentsConfig,
    opts: &SyncOptions,
    index: Option<&Index>,
    fingerprint: &str,
    dirs_key: &str,
    phases: &mut Phases,
) -> Result<FromIndex> {
    let Some(ix) = index.filter(|ix| {
        !opts.full
            && !opts.check
            && opts.agent.is_none()
            && ix.config_fingerprint == fingerprint
            && ix.dirs_key == dirs_key
    }) else {
        return Ok(FromIndex::Unused);
    };
    let moved = noop::stat_index(root, cfg, ix);
    if moved.as_ref().is_some_and(|m| m.is_empty())
        && noop::agents_unchanged(root, cfg, ix, |p| ix.files.contains_key(p))
    {
        return Ok(FromIndex::NoOp(ix.agents.len(), Vec::new()));
    }
    phases.mark("verify");
    // Something moved, or the index could not answer alone (folders listed on every
    // scan, agents not all registered): walk, reusing unchanged listings and, when the
    // index was stat-ed whole, trusting what did not move.
    let owned: HashSet<String> = ix
        .agents
        .iter()
        .flat_map(|a| a.outputs.iter().map(|o| o.path.clone()))
        .collect();
    let cache = discover::DirCache::new(&ix.dirs, recorded_stats(&ix.files), ix.scanned_at_ns);
    let cache = match &moved {
        Some(m) => cache.trusting(m),
        None => cache,
    };
    let lib = discover::discover_cached(root, cfg, &owned, Some(&cache), false)?;
    drop(cache);
    phases.mark("walk");
    if noop::nothing_to_do(root, cfg, &lib, ix) {
        let answer = FromIndex::NoOp(lib.agents.len(), lib.warnings.clone());
        drop_in_background(lib);
        Ok(answer)
    } else {
        Ok(FromIndex::Walked(lib))
    }
}

/// Renames in this batch: a file that went and another that came with the same bytes,
/// each the only one of its hash to go or come.
pub(super) fn detect_renames(
    recorded: &BTreeMap<String, FileRec>,
    now: &BTreeMap<String, discover::FileStat>,
    file_hashes: &HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut new_renames = Vec::new();
    if recorded.is_empty() {
        return new_renames;
    }
    // Both maps are sorted by path: one pass side by side finds what went and what
    // came (lookups would compare long common path prefixes over and over).
    let mut gone: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut fresh: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut before = recorded.iter().peekable();
    let mut after = now.keys().peekable();
    loop {
        let order = match (before.peek(), after.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((b, _)), Some(n)) => b.as_str().cmp(n.as_str()),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((p, r)) = before.next() {
                    gone.entry(r.hash.as_str()).or_default().push(p);
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some(p) = after.next() {
                    if let Some(h) = file_hashes.get(p) {
                        fresh.entry(h.as_str()).or_default().push(p);
                    }
                }
            }
            std::cmp::Ordering::Equal => {
                before.next();
                after.next();
            }
        }
    }
    for (h, olds) in &gone {
        if let (1, Some(news)) = (olds.len(), fresh.get(h)) {
            if news.len() == 1 {
                new_renames.push((olds[0].to_string(), news[0].to_string()));
            }
        }
    }
    new_renames.sort();
    new_renames
}

pub(super) fn read_opt(root: &Path, rel: &str) -> Result<Option<Vec<u8>>> {
    let a = paths::abs(root, rel);
    match std::fs::symlink_metadata(&a) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::Input(format!(
                "{rel}: output path is a symlink; refusing to write through it"
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(a, e)),
    }
    match std::fs::read(&a) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(a, e)),
    }
}

/// A target folder (or its nearest existing ancestor) must resolve inside the repository,
/// so a symlinked `.github` cannot send writes elsewhere.
pub(crate) fn check_target_dir(root: &Path, dir: &str) -> std::result::Result<(), String> {
    let Ok(canon_root) = root.canonicalize() else {
        return Ok(());
    };
    let mut cur = paths::abs(root, dir);
    loop {
        if cur.exists() {
            return match cur.canonicalize() {
                Ok(c) if c.starts_with(&canon_root) => Ok(()),
                _ => Err(format!(
                    "{dir}: target folder resolves outside the repository"
                )),
            };
        }
        if !cur.pop() {
            return Ok(());
        }
    }
}

pub(super) fn is_dirty(
    root: &Path,
    cfg: &AgentsConfig,
    lib: &Library,
    hashes: &HashMap<String, String>,
    name: &str,
    rec: &AgentRec,
) -> bool {
    for (p, h) in &rec.sources {
        let now = if lib.files.contains_key(p) {
            hashes.get(p)
        } else {
            None
        };
        if now != h.as_ref() {
            return true;
        }
        // A missing non-library target (a folder, say) may have appeared.
        if h.is_none() && !lib.files.contains_key(p) && paths::abs(root, p).exists() {
            return true;
        }
    }
    if !outputs_as_expected(cfg, name, &rec.entry, rec.outputs.keys()) {
        return true;
    }
    rec.outputs
        .iter()
        .any(|(p, o)| !output_unchanged(root, p, o.size, o.mtime_ns))
}

/// Hashes of every library file: recorded ones where size and mtime match, read and
/// hashed otherwise. Also says whether a file was re-read only for being racy.
pub(super) fn hash_files(
    root: &Path,
    lib: &Library,
    reg: &Registry,
    read_in_walk: Vec<(String, discover::ReadFile)>,
) -> (HashMap<String, String>, bool, HashMap<String, Arc<str>>) {
    let mut out = HashMap::with_capacity(lib.files.len());
    let mut texts = HashMap::with_capacity(read_in_walk.len());
    for (p, read) in read_in_walk {
        if let Some(t) = read.text {
            texts.insert(p.clone(), t);
        }
        out.insert(p, read.hash);
    }
    let mut todo = Vec::new();
    let mut racy = false;
    for (p, st) in &lib.files {
        if out.contains_key(p) {
            continue;
        }
        match reg.files.get(p) {
            Some(r) if r.size == st.size && r.mtime_ns == st.mtime_ns => {
                if st.mtime_ns.saturating_add(RACY_MARGIN_NS) < reg.scanned_at_ns {
                    out.insert(p.clone(), r.hash.clone());
                } else {
                    racy = true;
                    todo.push(p.as_str());
                }
            }
            _ => todo.push(p.as_str()),
        }
    }
    if todo.is_empty() {
        return (out, racy, texts);
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = todo.len().div_ceil(threads).max(1);
    // (path, hash, text when it is UTF-8)
    type Hashed = (String, String, Option<Arc<str>>);
    let results: Vec<Vec<Hashed>> = std::thread::scope(|s| {
        let hs: Vec<_> = todo
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .filter_map(|p| {
                            let b = std::fs::read(paths::abs(root, p)).ok()?;
                            let h = hash(&b);
                            let t = String::from_utf8(b).ok().map(Arc::<str>::from);
                            Some((p.to_string(), h, t))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for part in results {
        for (p, h, t) in part {
            if let Some(t) = t {
                texts.insert(p.clone(), t);
            }
            out.insert(p, h);
        }
    }
    (out, racy, texts)
}

/// References of the rendered agents that point at nothing now and did not before this
/// run (or belong to an agent new in it), as `agent: path`: what `agents check` will
/// list that this run introduced, an agent removed from under its callers included.
pub(super) fn new_broken_refs(root: &Path, reg: &Registry, rendered: &[Rendered]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rendered {
        let before = reg.agents.get(&r.name);
        for (p, h) in &r.sources {
            if h.is_some() || paths::abs(root, p).exists() {
                continue;
            }
            let was_missing = before
                .and_then(|b| b.sources.get(p))
                .is_some_and(|old| old.is_none());
            if !was_missing {
                out.push(format!("{}: {p}", r.name));
            }
        }
    }
    out.sort();
    out
}
