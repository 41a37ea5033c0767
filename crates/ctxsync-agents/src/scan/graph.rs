//! Reference resolution and the dependency graph.
//!
//! A reference resolves to a repository-relative path (through the rename map when its
//! target was renamed). Edges go from a library file to the library files it references;
//! an agent reaches everything reachable from its entry file (cycles are fine). The
//! registry stores each agent's reach with hashes, which is how a changed file maps to
//! the agents it affects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::discover::Library;
use crate::paths;
use crate::refs::{self, RawRef, RefKind};

/// Old path → new path, from renames detected in earlier runs.
pub type RenameMap = BTreeMap<String, String>;

/// Where a reference points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Repository-relative target (after renames), `None` when it would leave the repository.
    pub path: Option<String>,
    /// The target exists (as a library file, or any file or folder in the repository).
    pub exists: bool,
    /// The path as written resolved here before following the rename map.
    pub renamed_from: Option<String>,
}

/// Resolves `r`, found in library file `file`, against the library.
pub fn resolve(
    root: &Path,
    lib: &Library,
    renames: &RenameMap,
    file: &str,
    r: &RawRef,
) -> Resolved {
    let base = match r.kind {
        RefKind::At => lib.root_of(file).to_string(),
        RefKind::Link => paths::parent(file).to_string(),
    };
    let Some(joined) = paths::join(&base, &r.path) else {
        return Resolved {
            path: None,
            exists: false,
            renamed_from: None,
        };
    };
    let exists = |p: &str| lib.files.contains_key(p) || paths::abs(root, p).exists();
    if exists(&joined) {
        return Resolved {
            path: Some(joined),
            exists: true,
            renamed_from: None,
        };
    }
    let mut cur = joined.clone();
    for _ in 0..16 {
        match renames.get(&cur) {
            Some(next) => {
                cur = next.clone();
                if exists(&cur) {
                    return Resolved {
                        path: Some(cur),
                        exists: true,
                        renamed_from: Some(joined),
                    };
                }
            }
            None => break,
        }
    }
    Resolved {
        path: Some(joined),
        exists: false,
        renamed_from: None,
    }
}

/// Reads library files once and shares them between threads.
pub struct Texts<'a> {
    root: &'a Path,
    lib: &'a Library,
    /// Texts read before rendering (while hashing): looked up without a lock, since
    /// rendering threads look up every reference here.
    preloaded: HashMap<String, Arc<str>>,
    /// Texts read since.
    cache: Mutex<HashMap<String, Arc<str>>>,
}

impl<'a> Texts<'a> {
    /// The texts read so far, without the borrow of the library (to free them apart).
    pub fn into_cache(self) -> (HashMap<String, Arc<str>>, HashMap<String, Arc<str>>) {
        let cache = self.cache.into_inner().unwrap_or_else(|e| e.into_inner());
        (self.preloaded, cache)
    }

    /// A cache over `lib`.
    pub fn new(root: &'a Path, lib: &'a Library) -> Self {
        Self::preloaded(root, lib, HashMap::new())
    }

    /// A cache over `lib` holding `texts` already (library-relative path -> text).
    pub fn preloaded(root: &'a Path, lib: &'a Library, texts: HashMap<String, Arc<str>>) -> Self {
        Texts {
            root,
            lib,
            preloaded: texts,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The text of a library file. Only library files are read, never anything else.
    pub fn get(&self, rel: &str) -> Result<Arc<str>, String> {
        if let Some(t) = self.preloaded.get(rel) {
            return Ok(t.clone());
        }
        if let Some(t) = self.cache.lock().ok().and_then(|c| c.get(rel).cloned()) {
            return Ok(t);
        }
        if !self.lib.files.contains_key(rel) {
            return Err(format!("{rel}: not a library file"));
        }
        let bytes = std::fs::read(paths::abs(self.root, rel)).map_err(|e| format!("{rel}: {e}"))?;
        let text: Arc<str> = String::from_utf8(bytes)
            .map_err(|_| format!("{rel}: not UTF-8 text"))?
            .into();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(rel.to_string(), text.clone());
        }
        Ok(text)
    }

    /// The library.
    pub fn lib(&self) -> &Library {
        self.lib
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        self.root
    }
}

/// The reference graph over library files.
#[derive(Debug, Default)]
pub struct Graph {
    /// File → library files it references.
    pub edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Builds the graph over every library file (unreadable files have no edges).
    pub fn build(texts: &Texts<'_>, renames: &RenameMap) -> Self {
        let mut g = Graph::default();
        for f in texts.lib().files.keys() {
            let mut out = BTreeSet::new();
            if let Ok(t) = texts.get(f) {
                for r in refs::scan(&t) {
                    let res = resolve(texts.root(), texts.lib(), renames, f, &r);
                    if let Some(p) = res.path {
                        if texts.lib().files.contains_key(&p) && &p != f {
                            out.insert(p);
                        }
                    }
                }
            }
            g.edges.insert(f.clone(), out);
        }
        g
    }

    /// Everything reachable from `start`, `start` included.
    pub fn reach(&self, start: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_string()];
        while let Some(f) = stack.pop() {
            if !seen.insert(f.clone()) {
                continue;
            }
            if let Some(next) = self.edges.get(&f) {
                stack.extend(next.iter().filter(|n| !seen.contains(*n)).cloned());
            }
        }
        seen
    }

    /// Files with at least one incoming edge.
    pub fn referenced(&self) -> BTreeSet<&str> {
        self.edges
            .values()
            .flat_map(|s| s.iter().map(String::as_str))
            .collect()
    }

    /// Strongly connected components with more than one file: the reference cycles.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        // Iterative Tarjan, so deep libraries cannot overflow the stack.
        let nodes: Vec<&String> = self.edges.keys().collect();
        let idx: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let adj: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges[*n]
                    .iter()
                    .filter_map(|m| idx.get(m.as_str()).copied())
                    .collect()
            })
            .collect();
        let n = nodes.len();
        let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
        let (mut stack, mut next, mut out) = (Vec::new(), 0, Vec::new());
        for s in 0..n {
            if index[s] != usize::MAX {
                continue;
            }
            let mut call: Vec<(usize, usize)> = vec![(s, 0)];
            index[s] = next;
            low[s] = next;
            next += 1;
            stack.push(s);
            on[s] = true;
            while let Some(&mut (v, ref mut i)) = call.last_mut() {
                if *i < adj[v].len() {
                    let w = adj[v][*i];
                    *i += 1;
                    if index[w] == usize::MAX {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on[w] = true;
                        call.push((w, 0));
                    } else if on[w] {
                        low[v] = low[v].min(index[w]);
                    }
                } else {
                    call.pop();
                    if let Some(&(p, _)) = call.last() {
                        low[p] = low[p].min(low[v]);
                    }
                    if low[v] == index[v] {
                        let mut comp = Vec::new();
                        while let Some(w) = stack.pop() {
                            on[w] = false;
                            comp.push(nodes[w].clone());
                            if w == v {
                                break;
                            }
                        }
                        if comp.len() > 1 {
                            comp.sort();
                            out.push(comp);
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_and_cycles() {
        let mut g = Graph::default();
        let e = |a: &str, b: &[&str]| (a.to_string(), b.iter().map(|s| s.to_string()).collect());
        g.edges = [e("a", &["b"]), e("b", &["c"]), e("c", &["b"]), e("d", &[])]
            .into_iter()
            .collect();
        assert_eq!(g.reach("a").len(), 3);
        assert_eq!(g.cycles(), vec![vec!["b".to_string(), "c".to_string()]]);
        assert!(g.referenced().contains("c"));
        assert!(!g.referenced().contains("d"));
    }
}
