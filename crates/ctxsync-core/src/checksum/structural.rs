//! The structural hash (format `b3m1`), computed from scratch: the definition a second
//! implementation follows (DESIGN §7, test vectors in `docs/checksum-vectors.json`).
//!
//! `B(bytes)` is BLAKE3-256. `u64le(n)` is n as 8 little-endian bytes. `Σ` adds 32-byte
//! values as little-endian 256-bit integers, modulo 2^256.
//!
//! | value | hash |
//! |---|---|
//! | `null` | `B(0x00)` |
//! | `false` / `true` | `B(0x01 0x00)` / `B(0x01 0x01)` |
//! | number | `B(0x02 ‖ its JSON text)` (as in the canonical JSON) |
//! | string | `B(0x03 ‖ its UTF-8 bytes)` |
//! | array of n | `B(0x04 ‖ u64le(n) ‖ Σᵢ B(0x06 ‖ u64le(i) ‖ hash(elementᵢ)))` |
//! | object of n | `B(0x05 ‖ u64le(n) ‖ Σₖ B(0x07 ‖ u64le(len k) ‖ k ‖ hash(value of k)))` |
//!
//! The checksum is the lowercase hex of the document's hash. Member order does not
//! matter (a sum is commutative), element order does (each element's index is hashed
//! with it). The sum makes the hash incremental; it is an integrity check against damage
//! and bugs, like the CRCs of a storage engine, not a signature against someone crafting
//! collisions (a writer who could do that can write the document anyway).

use serde_json::Value;

/// A BLAKE3-256 output.
pub type Hash = [u8; 32];

pub(super) const TAG_NULL: u8 = 0x00;
pub(super) const TAG_BOOL: u8 = 0x01;
pub(super) const TAG_NUMBER: u8 = 0x02;
pub(super) const TAG_STRING: u8 = 0x03;
pub(super) const TAG_ARRAY: u8 = 0x04;
pub(super) const TAG_OBJECT: u8 = 0x05;
pub(super) const TAG_ELEMENT: u8 = 0x06;
pub(super) const TAG_MEMBER: u8 = 0x07;

/// A value's hash and the bytes of its canonical JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Summary {
    pub hash: Hash,
    pub size: u64,
}

/// A 256-bit little-endian accumulator of member (or element) hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Sum([u64; 4]);

impl Sum {
    fn limbs(hash: &Hash) -> [u64; 4] {
        let mut limbs = [0u64; 4];
        for (limb, chunk) in limbs.iter_mut().zip(hash.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            *limb = u64::from_le_bytes(bytes);
        }
        limbs
    }

    pub fn add(&mut self, hash: &Hash) {
        let mut carry = false;
        for (limb, other) in self.0.iter_mut().zip(Self::limbs(hash)) {
            let (a, c1) = limb.overflowing_add(other);
            let (b, c2) = a.overflowing_add(u64::from(carry));
            *limb = b;
            carry = c1 || c2;
        }
    }

    pub fn sub(&mut self, hash: &Hash) {
        let mut borrow = false;
        for (limb, other) in self.0.iter_mut().zip(Self::limbs(hash)) {
            let (a, b1) = limb.overflowing_sub(other);
            let (b, b2) = a.overflowing_sub(u64::from(borrow));
            *limb = b;
            borrow = b1 || b2;
        }
    }

    fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }
}

/// The hash of a container with `count` members or elements whose entries sum to `sum`.
pub(super) fn container_hash(tag: u8, count: usize, sum: Sum) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[tag]);
    h.update(&(count as u64).to_le_bytes());
    h.update(&sum.to_bytes());
    *h.finalize().as_bytes()
}

/// The entry an object member adds to its object's sum.
pub(super) fn member_entry(key: &str, value: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_MEMBER]);
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(value);
    *h.finalize().as_bytes()
}

/// The entry an array element adds to its array's sum.
pub(super) fn element_entry(index: usize, value: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_ELEMENT]);
    h.update(&(index as u64).to_le_bytes());
    h.update(value);
    *h.finalize().as_bytes()
}

/// Bytes of a string in canonical JSON: quoted, with serde_json's escapes.
pub(super) fn escaped_len(s: &str) -> u64 {
    let mut n = 2u64;
    for b in s.bytes() {
        n += match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        };
    }
    n
}

/// Canonical JSON bytes of a container whose entries hold `entries` bytes.
pub(super) fn container_size(count: usize, entries: u64) -> u64 {
    2 + entries + (count as u64).saturating_sub(1)
}

/// Hash and size of a scalar (anything but an object or array).
pub(super) fn scalar(value: &Value) -> Summary {
    match value {
        Value::Null => Summary {
            hash: *blake3::hash(&[TAG_NULL]).as_bytes(),
            size: 4,
        },
        Value::Bool(b) => Summary {
            hash: *blake3::hash(&[TAG_BOOL, u8::from(*b)]).as_bytes(),
            size: if *b { 4 } else { 5 },
        },
        Value::Number(n) => {
            let text = n.to_string();
            let mut h = blake3::Hasher::new();
            h.update(&[TAG_NUMBER]);
            h.update(text.as_bytes());
            Summary {
                hash: *h.finalize().as_bytes(),
                size: text.len() as u64,
            }
        }
        Value::String(s) => {
            let mut h = blake3::Hasher::new();
            h.update(&[TAG_STRING]);
            h.update(s.as_bytes());
            Summary {
                hash: *h.finalize().as_bytes(),
                size: escaped_len(s),
            }
        }
        // Containers are summed by their callers.
        Value::Array(_) | Value::Object(_) => summarize(value),
    }
}

/// Hash and canonical size of any value, from scratch.
pub(super) fn summarize(value: &Value) -> Summary {
    match value {
        Value::Object(map) => {
            let mut sum = Sum::default();
            let mut entries = 0;
            for (key, member) in map {
                let s = summarize(member);
                sum.add(&member_entry(key, &s.hash));
                entries += escaped_len(key) + 1 + s.size;
            }
            Summary {
                hash: container_hash(TAG_OBJECT, map.len(), sum),
                size: container_size(map.len(), entries),
            }
        }
        Value::Array(items) => {
            let mut sum = Sum::default();
            let mut entries = 0;
            for (i, item) in items.iter().enumerate() {
                let s = summarize(item);
                sum.add(&element_entry(i, &s.hash));
                entries += s.size;
            }
            Summary {
                hash: container_hash(TAG_ARRAY, items.len(), sum),
                size: container_size(items.len(), entries),
            }
        }
        scalar_value => scalar(scalar_value),
    }
}

/// The structural hash of `value`.
pub fn hash_value(value: &Value) -> Hash {
    summarize(value).hash
}

/// The checksum of `value` (hex of its structural hash) and the bytes of its canonical
/// JSON, computed from scratch.
pub fn checksum_and_size(value: &Value) -> (String, u64) {
    let s = summarize(value);
    (hex(&s.hash), s.size)
}

/// The checksum of `value`: the hex of its structural hash.
pub fn checksum(value: &Value) -> String {
    hex(&summarize(value).hash)
}

pub(super) fn hex(hash: &Hash) -> String {
    blake3::Hash::from_bytes(*hash).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{canonical_json, legacy_checksum_and_size};
    use serde_json::json;

    #[test]
    fn member_order_does_not_matter_and_element_order_does() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(checksum(&a), checksum(&b));
        assert_ne!(checksum(&json!([1, 2])), checksum(&json!([2, 1])));
        assert_ne!(checksum(&json!({"a": 1})), checksum(&json!({"a": "1"})));
        assert_ne!(checksum(&json!({})), checksum(&json!([])));
        assert_ne!(checksum(&json!(null)), checksum(&json!(false)));
    }

    #[test]
    fn the_size_is_the_canonical_json_length() {
        for value in [
            json!({"a": "quote\" back\\ nl\n tab\t ctl\u{1} del\u{7f} é ✓", "b": [1, 2.5, -3e40, null, true, false, {}], "": []}),
            json!([]),
            json!("x"),
            json!({"nested": {"deep": [[], [{}], [1, [2, [3]]]]}}),
        ] {
            assert_eq!(
                checksum_and_size(&value).1,
                canonical_json(&value).len() as u64,
                "{value}"
            );
            assert_eq!(
                checksum_and_size(&value).1,
                legacy_checksum_and_size(&value).1
            );
        }
    }

    #[test]
    fn sums_wrap_and_undo() {
        let mut s = Sum::default();
        let max = [0xffu8; 32];
        s.add(&max);
        s.add(&[1u8; 32]);
        s.sub(&[1u8; 32]);
        s.sub(&max);
        assert_eq!(s, Sum::default());
    }
}
