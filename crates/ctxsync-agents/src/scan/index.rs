//! The scan index (`.ctxsync/agents/index`): a compact binary cache beside
//! `registry.json`, in the spirit of git's index.
//!
//! It holds what the last run saw of the library (every file's size, mtime and hash,
//! every folder's mtime) and, per agent, just enough to tell that nothing needs doing
//! (entry file, output sizes and mtimes, dependencies that were missing). A no-op run
//! reads this file (a few megabytes for 10,000 agents, no JSON) instead of the registry.
//!
//! It is only a cache: it names the exact `registry.json` it was written with (inode,
//! size, mtime, ctime) and ends with a BLAKE3 checksum, so one that is stale, torn or
//! foreign is ignored and the next run rebuilds it. That is also why it is written
//! without an fsync.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::registry::{FileRec, Registry};

const MAGIC: &[u8; 8] = b"CTXIDX02";

/// Identity of one version of `registry.json`: any rewrite (a rename onto it) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: u64,
    ctime_ns: u64,
}

impl Stamp {
    /// The stamp of the file at `path` now, if it exists.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp::from_metadata(&m))
    }

    #[cfg(unix)]
    fn from_metadata(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| {
            (s as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(n as u64)
        };
        Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    fn from_metadata(m: &std::fs::Metadata) -> Stamp {
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Stamp {
            ino: 0,
            size: m.len(),
            mtime_ns,
            ctime_ns: 0,
        }
    }
}

/// One output as last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOutput {
    /// Repository-relative path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns).
    pub mtime_ns: u64,
}

/// One registered agent, as far as a no-op check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexAgent {
    /// Agent name.
    pub name: String,
    /// Entry file.
    pub entry: String,
    /// Owned outputs, sorted by path.
    pub outputs: Vec<IndexOutput>,
    /// Dependencies that did not exist when it was rendered.
    pub missing: Vec<String>,
}

/// The decoded index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    /// The `registry.json` this index belongs to.
    pub registry: Stamp,
    /// When the library was scanned (ns).
    pub scanned_at_ns: u64,
    /// Render settings of the registry.
    pub config_fingerprint: String,
    /// Sources and excludes the folder listings were taken under.
    pub dirs_key: String,
    /// Library files.
    pub files: BTreeMap<String, FileRec>,
    /// Library folders → mtime (ns).
    pub dirs: BTreeMap<String, u64>,
    /// Agents, sorted by name.
    pub agents: Vec<IndexAgent>,
    /// The agents are exactly those the scan found (see [`Registry::scan_complete`]).
    pub complete: bool,
}

impl Index {
    /// Writes the index of `reg`, whose `registry.json` now has stamp `registry`,
    /// straight from the registry (a 10,000-agent library would otherwise hold its scan
    /// cache twice at the memory peak of a cold run).
    pub fn save_registry(reg: &Registry, registry: Stamp, path: &Path) -> Result<()> {
        Self::write_encoded(Self::encode_registry(reg), registry, path)
    }

    /// The index of `reg` before the stamp of its `registry.json` is known, so it can be
    /// built while the registry is being written: [`Index::write_encoded`] stamps it.
    pub fn encode_registry(reg: &Registry) -> Vec<u8> {
        let agents = reg.agents.iter().map(|(name, a)| {
            (
                name.as_str(),
                a.entry.as_str(),
                a.outputs
                    .iter()
                    .map(|(p, o)| (p.as_str(), o.size, o.mtime_ns)),
                a.sources
                    .iter()
                    .filter(|(_, h)| h.is_none())
                    .map(|(p, _)| p.as_str()),
            )
        });
        encode_parts(
            &Header {
                registry: Stamp::default(),
                complete: reg.scan_complete,
                scanned_at_ns: reg.scanned_at_ns,
                config_fingerprint: &reg.config_fingerprint,
                dirs_key: &reg.dirs_key,
            },
            &reg.files,
            &reg.dirs,
            agents,
        )
    }

    /// Writes an index from [`Index::encode_registry`], stamped with `registry`.
    pub fn write_encoded(mut bytes: Vec<u8>, registry: Stamp, path: &Path) -> Result<()> {
        let body_len = bytes.len().saturating_sub(32);
        if body_len < STAMP_AT + 32 {
            return Err(Error::Input("index: encoded bytes too short".into()));
        }
        let stamp = [
            registry.ino,
            registry.size,
            registry.mtime_ns,
            registry.ctime_ns,
        ];
        for (i, v) in stamp.iter().enumerate() {
            let at = STAMP_AT + 8 * i;
            bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let sum = blake3::hash(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(sum.as_bytes());
        crate::deploy::write_atomic(path, &bytes, false)
    }

    /// Loads the index at `path` if it belongs to the `registry.json` at `registry`
    /// as it is now; `None` when absent, stale or damaged.
    pub fn load(path: &Path, registry: &Path) -> Option<Index> {
        let bytes = std::fs::read(path).ok()?;
        let stamp = Stamp::of(registry)?;
        match decode(&bytes) {
            Some(ix) if ix.registry == stamp => Some(ix),
            Some(_) => {
                tracing::debug!("{}: stale, ignored", path.display());
                None
            }
            None => {
                tracing::debug!("{}: damaged, ignored", path.display());
                None
            }
        }
    }

    /// Writes the index atomically (no fsync: it is a cache, checked on load). Runs
    /// write theirs with [`Index::save_registry`]; this is for tests.
    #[cfg(test)]
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::deploy::write_atomic(path, &encode(self), false)
    }

    /// Removes the index (before the registry it describes is replaced).
    pub fn remove(path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

struct Writer {
    out: Vec<u8>,
    prev: String,
}

impl Writer {
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }
    /// A path in a sorted run: the length shared with the previous one, then the rest.
    fn path(&mut self, s: &str) {
        let shared = self
            .prev
            .bytes()
            .zip(s.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        // Cut on a character boundary so every suffix is valid UTF-8 by itself.
        let shared = (0..=shared)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        self.u64(shared as u64);
        self.str(&s[shared..]);
        self.prev.clear();
        self.prev.push_str(s);
    }
    fn end_run(&mut self) {
        self.prev.clear();
    }
}

struct Header<'a> {
    registry: Stamp,
    complete: bool,
    scanned_at_ns: u64,
    config_fingerprint: &'a str,
    dirs_key: &'a str,
}

#[cfg(test)]
fn encode(ix: &Index) -> Vec<u8> {
    let agents = ix.agents.iter().map(|a| {
        (
            a.name.as_str(),
            a.entry.as_str(),
            a.outputs
                .iter()
                .map(|o| (o.path.as_str(), o.size, o.mtime_ns)),
            a.missing.iter().map(String::as_str),
        )
    });
    encode_parts(
        &Header {
            registry: ix.registry,
            complete: ix.complete,
            scanned_at_ns: ix.scanned_at_ns,
            config_fingerprint: &ix.config_fingerprint,
            dirs_key: &ix.dirs_key,
        },
        &ix.files,
        &ix.dirs,
        agents,
    )
}

/// Where the registry's stamp starts in an encoded index (right after the magic): four
/// little-endian u64s (inode, size, mtime, ctime).
const STAMP_AT: usize = 8;

fn encode_parts<'a, O, M>(
    h: &Header<'_>,
    files: &BTreeMap<String, FileRec>,
    dirs: &BTreeMap<String, u64>,
    agents: impl ExactSizeIterator<Item = (&'a str, &'a str, O, M)>,
) -> Vec<u8>
where
    O: ExactSizeIterator<Item = (&'a str, u64, u64)>,
    M: Iterator<Item = &'a str> + Clone,
{
    let mut w = Writer {
        out: Vec::with_capacity(64 * (files.len() + dirs.len() + 4 * agents.len())),
        prev: String::new(),
    };
    w.out.extend_from_slice(MAGIC);
    debug_assert_eq!(w.out.len(), STAMP_AT);
    let s = h.registry;
    for v in [
        s.ino,
        s.size,
        s.mtime_ns,
        s.ctime_ns,
        u64::from(h.complete),
        h.scanned_at_ns,
    ] {
        w.u64(v);
    }
    w.str(h.config_fingerprint);
    w.str(h.dirs_key);
    w.u64(files.len() as u64);
    for (p, f) in files {
        w.path(p);
        w.u64(f.size);
        w.u64(f.mtime_ns);
        w.str(&f.hash);
    }
    w.end_run();
    w.u64(dirs.len() as u64);
    for (p, m) in dirs {
        w.path(p);
        w.u64(*m);
    }
    w.end_run();
    w.u64(agents.len() as u64);
    for (name, entry, outputs, missing) in agents {
        w.str(name);
        w.str(entry);
        w.u64(outputs.len() as u64);
        for (p, size, mtime) in outputs {
            w.str(p);
            w.u64(size);
            w.u64(mtime);
        }
        w.u64(missing.clone().count() as u64);
        for m in missing {
            w.str(m);
        }
    }
    let sum = blake3::hash(&w.out);
    w.out.extend_from_slice(sum.as_bytes());
    w.out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    prev: String,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        // A count can never exceed the bytes left: a damaged one must not allocate wildly.
        (n <= self.buf.len() - self.pos).then_some(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn path(&mut self) -> Option<String> {
        let shared = self.len()?;
        let rest = self.str()?;
        let head = self.prev.get(..shared)?;
        let mut p = String::with_capacity(shared + rest.len());
        p.push_str(head);
        p.push_str(rest);
        self.prev.clear();
        self.prev.push_str(&p);
        Some(p)
    }
    fn end_run(&mut self) {
        self.prev.clear();
    }
}

fn decode(bytes: &[u8]) -> Option<Index> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut r = Reader {
        buf: body,
        pos: 0,
        prev: String::new(),
    };
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let registry = Stamp {
        ino: r.u64()?,
        size: r.u64()?,
        mtime_ns: r.u64()?,
        ctime_ns: r.u64()?,
    };
    let complete = match r.u64()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let scanned_at_ns = r.u64()?;
    let config_fingerprint = r.str()?.to_string();
    let dirs_key = r.str()?.to_string();
    let n = r.len()?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        let p = r.path()?;
        let size = r.u64()?;
        let mtime_ns = r.u64()?;
        let hash = r.str()?.to_string();
        files.push((
            p,
            FileRec {
                hash,
                size,
                mtime_ns,
            },
        ));
    }
    r.end_run();
    let n = r.len()?;
    let mut dirs = Vec::with_capacity(n);
    for _ in 0..n {
        let p = r.path()?;
        dirs.push((p, r.u64()?));
    }
    r.end_run();
    let n = r.len()?;
    let mut agents = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?.to_string();
        let entry = r.str()?.to_string();
        let k = r.len()?;
        let mut outputs = Vec::with_capacity(k);
        for _ in 0..k {
            outputs.push(IndexOutput {
                path: r.str()?.to_string(),
                size: r.u64()?,
                mtime_ns: r.u64()?,
            });
        }
        let k = r.len()?;
        let mut missing = Vec::with_capacity(k);
        for _ in 0..k {
            missing.push(r.str()?.to_string());
        }
        agents.push(IndexAgent {
            name,
            entry,
            outputs,
            missing,
        });
    }
    (r.pos == body.len()).then_some(())?;
    Some(Index {
        registry,
        scanned_at_ns,
        config_fingerprint,
        dirs_key,
        // Written in key order, so the maps are built without re-sorting.
        files: files.into_iter().collect(),
        dirs: dirs.into_iter().collect(),
        agents,
        complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let mut ix = Index {
            registry: Stamp {
                ino: 7,
                size: 99,
                mtime_ns: 123,
                ctime_ns: 456,
            },
            scanned_at_ns: 789,
            complete: true,
            config_fingerprint: "fp".into(),
            dirs_key: "dk".into(),
            ..Default::default()
        };
        for p in [
            "agents/a/a.md",
            "agents/a/modules/x.md",
            "agents/é/b.md",
            "agents/éa.md",
        ] {
            ix.files.insert(
                p.into(),
                FileRec {
                    hash: "ab".repeat(32),
                    size: 10,
                    mtime_ns: 20,
                },
            );
        }
        ix.dirs.insert("agents".into(), 1);
        ix.dirs.insert("agents/a".into(), 2);
        ix.dirs.insert("agents/é".into(), 3);
        ix.agents.push(IndexAgent {
            name: "a".into(),
            entry: "agents/a/a.md".into(),
            outputs: vec![IndexOutput {
                path: ".github/agents/a.agent.md".into(),
                size: 5,
                mtime_ns: 6,
            }],
            missing: vec!["agents/a/gone.md".into()],
        });
        ix
    }

    #[test]
    fn round_trips() {
        let ix = sample();
        assert_eq!(decode(&encode(&ix)), Some(ix));
    }

    #[test]
    fn any_damage_is_detected() {
        let bytes = encode(&sample());
        for i in [0, 8, 40, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert_eq!(decode(&b), None, "flipped byte {i}");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 5]), None);
        assert_eq!(decode(b""), None);
    }

    #[test]
    fn a_stale_index_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let reg = d.path().join("registry.json");
        std::fs::write(&reg, "{}").unwrap();
        let mut ix = sample();
        ix.registry = Stamp::of(&reg).unwrap();
        let path = d.path().join("index");
        ix.save(&path).unwrap();
        assert_eq!(Index::load(&path, &reg), Some(ix));
        // Replaced the way the registry always is: a new file renamed over it.
        let tmp = d.path().join("tmp");
        std::fs::write(&tmp, "{} ").unwrap();
        std::fs::rename(&tmp, &reg).unwrap();
        assert_eq!(Index::load(&path, &reg), None);
    }
}
