//! The intent journal (`pending.json` in the state folder) of a run that changes
//! outputs: the generation it is about to record and every file change it is about to
//! make, written durably before the first output is put in place and removed once the
//! registry has adopted that generation.
//!
//! A run that dies in between (killed, power lost, an I/O error half-way) leaves some
//! outputs changed and the registry unaware of it. Without the journal the next run
//! took those outputs as already right (or as hand edits) and recorded only what it
//! wrote itself, so `rollback` left the dead run's changes in place: a mixed state.
//! The next run that reads the registry calls [`recover`]: each journaled change whose
//! after-state is on disk counts as ctxsync's (not a hand edit) and goes into the
//! generation that run records (`sync`), or becomes the generation the dead run was
//! writing (`rollback`), so rolling back restores exactly the generation before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backup::{hash, BlobStore};
use crate::deploy;
use crate::error::{Error, Result};
use crate::paths;
use crate::registry::{FileChange, OutRec, Registry};
use crate::state::StateDir;

/// What a run is about to do, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The generation the run will record.
    pub generation: u64,
    /// `sync` or `rollback`.
    pub kind: String,
    /// Every file it will change (hashes before and after).
    pub changes: Vec<FileChange>,
}

/// What a dead run left: the changes of its journal that reached the disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The kind of run that died.
    pub kind: String,
    /// Its changes that are on disk, as journaled.
    pub changes: Vec<FileChange>,
}

/// `pending.json` of `state`.
pub fn path(state: &StateDir) -> PathBuf {
    state.dir.join("pending.json")
}

/// Whether a journal is there (a run died, or is running now under the lock).
pub fn exists(state: &StateDir) -> bool {
    std::fs::symlink_metadata(path(state)).is_ok()
}

/// Journals the changes of `parts`, in order, as generation `generation`, durably
/// (file and folder flushed) before returning: the caller changes outputs only after
/// this. A file may appear more than once (a dead run's change, then this run's, see
/// [`recover`]).
pub fn write(state: &StateDir, generation: u64, kind: &str, parts: &[&[FileChange]]) -> Result<()> {
    struct Chained<'a>(&'a [&'a [FileChange]]);
    impl Serialize for Chained<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().flat_map(|p| p.iter()))
        }
    }
    #[derive(Serialize)]
    struct Out<'a> {
        generation: u64,
        kind: &'a str,
        changes: Chained<'a>,
    }
    let out = Out {
        generation,
        kind,
        changes: Chained(parts),
    };
    deploy::write_atomic_streamed(&path(state), |w| {
        serde_json::to_writer(w, &out).map_err(std::io::Error::other)
    })
}

/// Removes the journal once the registry holds its generation. Not flushed: a
/// journal left over is ignored by a registry at its generation or later.
pub fn clear(state: &StateDir) -> Result<()> {
    deploy::remove_file(&path(state))
}

/// Reads the journal a dead run left, if any, and returns its changes that reached the
/// disk; the records of `reg` are updated in memory so that those outputs count as
/// written by ctxsync (not as hand edits). A file journaled more than once (a run that
/// died while carrying an earlier dead run's change) counts as changed from its first
/// before-state to the last after-state found on disk. A journal the registry already
/// adopted is ignored. A `writer` (a run holding the lock, which will record what is
/// returned) also removes a stale journal and keeps the claimed outputs' bytes in the
/// backups (the dead run may not have packed them), so a later rollback can bring them
/// back; otherwise nothing is written.
pub fn recover(
    root: &Path,
    state: &StateDir,
    reg: &mut Registry,
    writer: bool,
) -> Result<Recovered> {
    let p = path(state);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let pending: Pending = serde_json::from_slice(&bytes).map_err(|e| Error::Registry {
        path: p.clone(),
        message: format!(
            "{e} (written atomically, so damaged by something else; move it away to go \
             on: an interrupted run's changes will then look like hand edits)"
        ),
    })?;
    if pending.generation <= reg.generation {
        if writer {
            clear(state)?;
        }
        return Ok(Recovered::default());
    }
    let gen = reg.generation + 1;
    // Each file's changes in journal order (usually one).
    let mut order: Vec<String> = Vec::new();
    let mut by_path: HashMap<String, Vec<FileChange>> = HashMap::new();
    for c in pending.changes {
        if !paths::is_safe_rel(&c.path) {
            return Err(Error::Registry {
                path: p,
                message: format!("names an unsafe path {:?}", c.path),
            });
        }
        let chain = by_path.entry(c.path.clone()).or_default();
        if chain.is_empty() {
            order.push(c.path.clone());
        }
        chain.push(c);
    }
    let blobs = BlobStore::new(state.backups());
    if writer {
        // The dead run's temp files beside its outputs (written, never renamed), and
        // its staging trees, which sit beside the topmost folder that was new.
        let mut folders = std::collections::BTreeSet::new();
        for p in &order {
            let mut f = paths::parent(p);
            while folders.insert(f) && !f.is_empty() {
                f = paths::parent(f);
            }
        }
        for f in folders {
            deploy::remove_stale_temps(&paths::abs(root, f));
        }
    }
    let mut landed = Vec::new();
    for path in order {
        let Some(chain) = by_path.remove(&path) else {
            continue;
        };
        let a = paths::abs(root, &path);
        let on_disk = match std::fs::symlink_metadata(&a) {
            // ctxsync never writes through a link: whatever is there is not its doing.
            Ok(m) if m.file_type().is_symlink() => continue,
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&a, e)),
        };
        let disk = match &on_disk {
            None => None,
            Some(_) => match std::fs::read(&a) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(&a, e)),
            },
        };
        let disk_hash = disk.as_deref().map(hash);
        // Not reached (or edited since) when no journaled after-state is on disk: not
        // ours to claim.
        let Some(last) = chain.iter().rposition(|c| c.after == disk_hash) else {
            continue;
        };
        let c = FileChange {
            agent: chain[last].agent.clone(),
            path,
            before: chain[0].before.clone(),
            after: disk_hash,
        };
        if c.before == c.after {
            continue; // back where the generation before left it
        }
        if let (true, Some(bytes)) = (writer, &disk) {
            blobs.put(bytes)?;
        }
        adopt(reg, &c, on_disk.as_ref(), gen);
        landed.push(c);
    }
    if writer && landed.is_empty() {
        clear(state)?; // nothing of it reached the disk: nothing to record
    }
    Ok(Recovered {
        kind: pending.kind,
        changes: landed,
    })
}

/// Records change `c`, found on disk (`meta`: the file written, `None`: removed), as
/// its agent's output in `reg`.
fn adopt(reg: &mut Registry, c: &FileChange, meta: Option<&std::fs::Metadata>, gen: u64) {
    let owner = c
        .agent
        .clone()
        .or_else(|| reg.owner_of(&c.path).map(str::to_string));
    let Some(owner) = owner else { return };
    match (meta, &c.after) {
        (Some(m), Some(h)) => {
            let rec = reg.touched_agent(owner, gen);
            rec.outputs.insert(
                c.path.clone(),
                OutRec {
                    hash: h.clone(),
                    size: m.len(),
                    mtime_ns: crate::dirfd::Meta::from_std(m).mtime_ns,
                },
            );
        }
        _ => {
            if let Some(rec) = reg.agents.get_mut(&owner) {
                rec.outputs.remove(&c.path);
                rec.generation = gen;
                if rec.entry.is_empty() && rec.outputs.is_empty() {
                    reg.agents.remove(&owner);
                }
            }
        }
    }
}

/// `own` (a run's changes) with the `carried` changes of a dead run folded in: a file
/// both changed keeps the dead run's before-state (what the generation before held),
/// a file only the dead run changed keeps its change.
pub fn merge(carried: Vec<FileChange>, mut own: Vec<FileChange>) -> Vec<FileChange> {
    if carried.is_empty() {
        return own;
    }
    let at: HashMap<String, usize> = own
        .iter()
        .enumerate()
        .map(|(i, c)| (c.path.clone(), i))
        .collect();
    let mut out = Vec::with_capacity(carried.len() + own.len());
    for c in carried {
        match at.get(&c.path) {
            Some(&i) => own[i].before = c.before,
            None => out.push(c),
        }
    }
    out.append(&mut own);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::AgentRec;

    fn change(path: &str, before: Option<&str>, after: Option<&str>) -> FileChange {
        FileChange {
            agent: Some("a".into()),
            path: path.into(),
            before: before.map(str::to_string),
            after: after.map(str::to_string),
        }
    }

    #[test]
    fn merge_keeps_the_dead_runs_before_state() {
        let carried = vec![
            change("x", Some("x0"), Some("x1")),
            change("y", None, Some("y1")),
        ];
        let own = vec![
            change("x", Some("x1"), Some("x2")),
            change("z", Some("z0"), None),
        ];
        assert_eq!(
            merge(carried, own),
            vec![
                change("y", None, Some("y1")),
                change("x", Some("x0"), Some("x2")),
                change("z", Some("z0"), None),
            ]
        );
    }

    /// Of a journal's changes, exactly those whose after-state is on disk are claimed,
    /// and the registry takes them as ctxsync's; a journal the registry already holds
    /// is dropped.
    #[test]
    fn recover_claims_what_reached_the_disk() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let state = StateDir::new(root);
        let put = |rel: &str, b: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b).unwrap();
        };
        put("out/written.md", b"new");
        put("out/not-yet.md", b"old");
        put("out/edited.md", b"by hand");
        let h = |b: &[u8]| Some(hash(b));
        let changes = [
            FileChange {
                agent: Some("a".into()),
                path: "out/written.md".into(),
                before: h(b"old"),
                after: h(b"new"),
            },
            FileChange {
                agent: Some("a".into()),
                path: "out/not-yet.md".into(),
                before: h(b"old"),
                after: h(b"new"),
            },
            FileChange {
                agent: Some("a".into()),
                path: "out/edited.md".into(),
                before: h(b"old"),
                after: h(b"new"),
            },
            FileChange {
                agent: Some("gone".into()),
                path: "out/removed.md".into(),
                before: h(b"old"),
                after: None,
            },
        ];
        write(&state, 1, "sync", &[&changes[..1], &changes[1..]]).unwrap();
        let mut reg = Registry::default();
        reg.agents.insert(
            "gone".into(),
            AgentRec {
                entry: String::new(),
                version: None,
                priority: Default::default(),
                sources: Default::default(),
                outputs: [(
                    "out/removed.md".to_string(),
                    OutRec {
                        hash: hash(b"old"),
                        size: 3,
                        mtime_ns: 0,
                    },
                )]
                .into(),
                generation: 0,
                handoffs: Vec::new(),
            },
        );
        let got = recover(root, &state, &mut reg, true).unwrap();
        assert_eq!(got.kind, "sync");
        let paths: Vec<&str> = got.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["out/written.md", "out/removed.md"]);
        assert_eq!(reg.agents["a"].outputs["out/written.md"].hash, hash(b"new"));
        assert_eq!(reg.agents["a"].outputs.len(), 1);
        assert!(!reg.agents.contains_key("gone"));
        assert!(exists(&state), "kept until a registry holds the generation");
        let blobs = BlobStore::new(state.backups());
        assert_eq!(
            blobs.get(&hash(b"new")).unwrap().as_deref(),
            Some(&b"new"[..])
        );
        // Once the registry is at that generation, the journal is stale.
        let mut adopted = Registry::default();
        adopted.generation = 1;
        let got = recover(root, &state, &mut adopted, true).unwrap();
        assert!(got.changes.is_empty());
        assert!(!exists(&state));
    }

    /// A run that died carrying an earlier dead run's change journals the file twice;
    /// whichever after-state is on disk, the change runs from the first before-state.
    #[test]
    fn a_file_journaled_twice_counts_from_its_first_before_state() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let state = StateDir::new(root);
        let h = |b: &[u8]| Some(hash(b));
        let chain = vec![
            change_h("out/x.md", h(b"v0"), h(b"v1")),
            change_h("out/x.md", h(b"v1"), h(b"v2")),
        ];
        write(&state, 1, "sync", &[&chain]).unwrap();
        std::fs::create_dir_all(root.join("out")).unwrap();
        for (disk, want) in [(b"v1", h(b"v1")), (b"v2", h(b"v2"))] {
            std::fs::write(root.join("out/x.md"), disk).unwrap();
            let got = recover(root, &state, &mut Registry::default(), false).unwrap();
            assert_eq!(got.changes, vec![change_h("out/x.md", h(b"v0"), want)]);
        }
        std::fs::write(root.join("out/x.md"), b"v0").unwrap();
        let got = recover(root, &state, &mut Registry::default(), false).unwrap();
        assert!(got.changes.is_empty(), "{got:?}");
    }

    fn change_h(path: &str, before: Option<String>, after: Option<String>) -> FileChange {
        FileChange {
            agent: Some("a".into()),
            path: path.into(),
            before,
            after,
        }
    }

    #[test]
    fn a_damaged_journal_is_an_error_that_names_it() {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::new(d.path());
        std::fs::create_dir_all(&state.dir).unwrap();
        std::fs::write(path(&state), b"{not json").unwrap();
        let e = recover(d.path(), &state, &mut Registry::default(), true).unwrap_err();
        assert!(e.to_string().contains("pending.json"), "{e}");
    }
}
