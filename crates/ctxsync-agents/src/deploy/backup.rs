//! Content-addressed backups: every replaced, removed or written output is stored once,
//! which is what rollback and three-way merges read from.
//!
//! Replaced and removed files (what rollback needs) are loose blobs under
//! `backups/<first two hex>/<blake3 hex>`, written durably. The bytes a run writes (the
//! bases of later three-way merges) go into one pack file per run under
//! `backups/packs/`: a run that writes 20,000 outputs creates one file, not 20,000.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::deploy::{write_atomic, write_atomic_streamed};
use crate::error::{Error, Result};

/// The BLAKE3 hex digest used everywhere as a content id.
pub fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A content-addressed blob store.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    /// Where each packed blob is: pack file, offset, length. Read on first need.
    packed: OnceLock<HashMap<String, (PathBuf, u64, usize)>>,
}

impl Clone for BlobStore {
    fn clone(&self) -> Self {
        BlobStore::new(self.dir.clone())
    }
}

/// A pack record: 64 hex digits of the BLAKE3 id, the length as 8 little-endian bytes,
/// then the bytes.
const PACK_HEADER: usize = 64 + 8;

impl BlobStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BlobStore {
            dir: dir.into(),
            packed: OnceLock::new(),
        }
    }

    fn packs_dir(&self) -> PathBuf {
        self.dir.join("packs")
    }

    /// Stores many blobs in one new pack file, without fsync (merge bases: a pack lost
    /// in a crash only means a later `--merge` reports a conflict instead; a torn record
    /// fails the hash check on read and counts as absent). Blobs already kept are skipped.
    pub fn put_many_fast(&self, blobs: &[(&str, &[u8])]) {
        if blobs.is_empty() {
            return;
        }
        let dir = self.packs_dir();
        // Streamed to the file: a cold run of a large library writes tens of megabytes.
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let tmp = tempfile::Builder::new()
                .prefix(crate::deploy::TEMP_PREFIX)
                .tempfile_in(&dir)?;
            let mut out = std::io::BufWriter::new(tmp);
            let count = write_pack(&mut out, blobs)?;
            let tmp = out.into_inner().map_err(|e| e.into_error())?;
            let name = format!(
                "{}-{}-{}.pack",
                crate::events::now_ms(),
                std::process::id(),
                count
            );
            tmp.persist(dir.join(name)).map_err(|e| e.error)?;
            Ok(())
        });
        if let Err(e) = written {
            tracing::debug!("merge bases not kept: {e}");
        }
    }

    /// The index of every pack, built once per store value.
    fn pack_index(&self) -> &HashMap<String, (PathBuf, u64, usize)> {
        self.packed.get_or_init(|| {
            let mut index = HashMap::new();
            let Ok(rd) = std::fs::read_dir(self.packs_dir()) else {
                return index;
            };
            for ent in rd.flatten() {
                let path = ent.path();
                if path.extension().is_none_or(|e| e != "pack") {
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let mut at = 0usize;
                while at + PACK_HEADER <= bytes.len() {
                    let Ok(h) = std::str::from_utf8(&bytes[at..at + 64]) else {
                        break;
                    };
                    let mut len = [0u8; 8];
                    len.copy_from_slice(&bytes[at + 64..at + PACK_HEADER]);
                    let len = u64::from_le_bytes(len) as usize;
                    let start = at + PACK_HEADER;
                    if start.checked_add(len).is_none_or(|end| end > bytes.len()) {
                        break; // a torn tail: what came before still counts
                    }
                    index.insert(h.to_owned(), (path.clone(), start as u64, len));
                    at = start + len;
                }
            }
            index
        })
    }

    fn get_packed(&self, h: &str) -> Option<Vec<u8>> {
        let (path, offset, len) = self.pack_index().get(h)?;
        let bytes = std::fs::read(path).ok()?;
        let start = *offset as usize;
        let blob = bytes.get(start..start + len)?.to_vec();
        (hash(&blob) == h).then_some(blob)
    }

    fn path(&self, h: &str) -> Option<PathBuf> {
        // Ids come from the registry file; refuse anything that is not a hex digest.
        (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(&h[..2]).join(h))
    }

    /// Stores `bytes` (no-op when already present) and returns its id.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let h = hash(bytes);
        if let Some(p) = self.path(&h) {
            if !p.exists() {
                write_atomic(&p, bytes, true)?;
            }
        }
        Ok(h)
    }

    /// Reads a blob; `None` when it is not kept (pruned or never stored).
    pub fn get(&self, h: &str) -> Result<Option<Vec<u8>>> {
        let Some(p) = self.path(h) else {
            return Ok(None);
        };
        match std::fs::read(&p) {
            Ok(b) if hash(&b) == h => Ok(Some(b)),
            Ok(_) => Err(Error::Input(format!(
                "{}: backup is corrupt (hash mismatch)",
                p.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.get_packed(h)),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// True when the blob is present.
    pub fn has(&self, h: &str) -> bool {
        self.path(h).is_some_and(|p| p.exists()) || self.pack_index().contains_key(h)
    }

    /// Deletes every blob not in `keep`; returns how many were deleted.
    pub fn gc(&self, keep: &HashSet<String>) -> Result<usize> {
        let mut n = self.gc_packs(keep)?;
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(n);
        };
        for sub in rd.flatten() {
            if sub.file_name() == "packs" {
                continue;
            }
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                if !keep.contains(&name) && !name.starts_with('.') {
                    remove(&f.path())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

impl BlobStore {
    /// Drops packs none of whose blobs are kept, and rewrites packs that are mostly
    /// garbage into a smaller one. Returns how many blobs were dropped.
    fn gc_packs(&self, keep: &HashSet<String>) -> Result<usize> {
        let mut by_pack: HashMap<&PathBuf, Vec<(&String, u64, usize)>> = HashMap::new();
        for (h, (path, offset, len)) in self.pack_index() {
            by_pack.entry(path).or_default().push((h, *offset, *len));
        }
        let mut dropped = 0;
        for (path, blobs) in by_pack {
            let kept: Vec<_> = blobs.iter().filter(|(h, _, _)| keep.contains(*h)).collect();
            if kept.len() == blobs.len() || kept.len() * 2 > blobs.len() {
                continue; // all or mostly alive: not worth rewriting yet
            }
            dropped += blobs.len() - kept.len();
            if !kept.is_empty() {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                let live: Vec<&[u8]> = kept
                    .iter()
                    .filter_map(|(_, off, len)| bytes.get(*off as usize..*off as usize + len))
                    .collect();
                // A fresh store value: the rewritten blobs must not count as present.
                BlobStore::new(self.dir.clone()).put_many_unindexed(&live)?;
            }
            remove(path)?;
        }
        Ok(dropped)
    }

    /// Like `put_many_fast` but durable and without consulting the index (for gc).
    fn put_many_unindexed(&self, blobs: &[&[u8]]) -> Result<()> {
        let name = format!("{}-{}-gc.pack", crate::events::now_ms(), std::process::id());
        let hashes: Vec<String> = blobs.iter().map(|b| hash(b)).collect();
        let hashed: Vec<(&str, &[u8])> = hashes
            .iter()
            .map(String::as_str)
            .zip(blobs.iter().copied())
            .collect();
        write_atomic_streamed(&self.packs_dir().join(name), |out| {
            write_pack(out, &hashed).map(|_| ())
        })
    }
}

/// Writes `blobs` as pack records (each distinct blob once); returns how many.
/// Only duplicates within one call are skipped: checking older packs would mean reading
/// them all, and a blob written again is rare (unchanged outputs are never rewritten);
/// gc drops the spare copy.
fn write_pack(out: &mut dyn Write, blobs: &[(&str, &[u8])]) -> std::io::Result<usize> {
    let mut seen = HashSet::new();
    for (h, bytes) in blobs {
        if !seen.insert(*h) {
            continue;
        }
        out.write_all(h.as_bytes())?;
        out.write_all(&(bytes.len() as u64).to_le_bytes())?;
        out.write_all(bytes)?;
    }
    Ok(seen.len())
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_gc() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::new(d.path().join("b"));
        let h = s.put(b"hello").unwrap();
        assert_eq!(s.get(&h).unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(s.get("../../etc").unwrap(), None);
        assert_eq!(s.gc(&HashSet::new()).unwrap(), 1);
        assert_eq!(s.get(&h).unwrap(), None);
    }

    #[test]
    fn packed_blobs_read_back_and_gc_drops_dead_packs() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("b");
        let blobs: [&[u8]; 4] = [b"one", b"two", b"one", b"three"];
        let hashes: Vec<String> = blobs.iter().map(|b| hash(b)).collect();
        let pairs: Vec<(&str, &[u8])> = hashes.iter().map(String::as_str).zip(blobs).collect();
        BlobStore::new(&dir).put_many_fast(&pairs[..3]);
        BlobStore::new(&dir).put_many_fast(&pairs[3..]);
        let s = BlobStore::new(&dir);
        for text in [&b"one"[..], b"two", b"three"] {
            assert_eq!(s.get(&hash(text)).unwrap().as_deref(), Some(text));
            assert!(s.has(&hash(text)));
        }
        // Keep only "one": the pack holding just "three" goes, the half-dead first pack
        // is rewritten with "one" alone.
        let keep: HashSet<String> = [hash(b"one")].into_iter().collect();
        assert_eq!(s.gc(&keep).unwrap(), 2);
        let s = BlobStore::new(&dir);
        assert_eq!(s.get(&hash(b"one")).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(s.get(&hash(b"three")).unwrap(), None);
        assert_eq!(s.get(&hash(b"two")).unwrap(), None);
        // A torn pack tail is ignored, the records before it still read.
        let pack = std::fs::read_dir(dir.join("packs"))
            .unwrap()
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes.extend_from_slice(&[b'a'; 70]);
        std::fs::write(&pack, bytes).unwrap();
        let s = BlobStore::new(&dir);
        assert_eq!(s.get(&hash(b"one")).unwrap().as_deref(), Some(&b"one"[..]));
    }
}
