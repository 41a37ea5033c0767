//! Checksums of documents.
//!
//! The checksum of a document is its **structural hash** (format `b3m1`, DESIGN §7): BLAKE3
//! over each value, where an object or array hashes the *sum* of its members' hashes
//! instead of their concatenation. A change to one member then changes its container's
//! hash by one subtraction and one addition, so the writer keeps the hashes of the newest
//! document in a [`ChecksumTree`] and a push costs hashing along the changed paths, not
//! the whole document. Anyone can compute it on their own copy: [`checksum`] is the
//! from-scratch definition, and `docs/checksum-vectors.json` holds test vectors.
//!
//! Stores written before the structural hash keep their op-log and snapshot checksums in
//! the older format (BLAKE3 of the canonical JSON, [`legacy_checksum`]);
//! [`matches_stored`] accepts either, so `verify` passes on them.

mod canonical;
mod structural;
mod tree;

pub use canonical::{canonical_json, legacy_checksum, legacy_checksum_and_size, write_canonical};
pub use structural::{checksum, checksum_and_size, hash_value, Hash};
pub use tree::ChecksumTree;

/// Whether `stored` is the checksum of `value`, in the structural format or in the
/// format stores used before it (the canonical-JSON hash, only computed on a mismatch).
pub fn matches_stored(value: &serde_json::Value, stored: &str) -> bool {
    checksum(value) == stored || legacy_checksum(value) == stored
}
