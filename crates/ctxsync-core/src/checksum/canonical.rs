//! The canonical JSON of a document (keys sorted, no whitespace), and the checksum format
//! stores used before the structural hash: BLAKE3 of that text. The canonical JSON also
//! defines a document's size (its bytes), which quotas count.

use std::io::Write;

use serde_json::Value;

/// Writes the canonical JSON of `value` into `out`.
pub fn write_canonical(value: &Value, out: &mut impl Write) -> std::io::Result<()> {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.write_all(b"{")?;
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":")?;
                write_canonical(&map[key], out)?;
            }
            out.write_all(b"}")
        }
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out)?;
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(out, scalar).map_err(Into::into),
    }
}

/// The canonical JSON text of `value`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_canonical(value, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Counts bytes without keeping them.
struct Counter<'a> {
    hasher: &'a mut blake3::Hasher,
    bytes: u64,
}

impl Write for Counter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// BLAKE3 (hex) of the canonical JSON, and its size in bytes.
pub fn legacy_checksum_and_size(value: &Value) -> (String, u64) {
    let mut hasher = blake3::Hasher::new();
    let mut counter = Counter {
        hasher: &mut hasher,
        bytes: 0,
    };
    let _ = write_canonical(
        value,
        &mut std::io::BufWriter::with_capacity(8192, &mut counter),
    );
    let bytes = counter.bytes;
    (hasher.finalize().to_hex().to_string(), bytes)
}

/// BLAKE3 (hex) of the canonical JSON: the checksum format before the structural hash,
/// still what op-log rows and snapshots of older stores carry, and the fingerprint of
/// idempotency keys (which must stay what it was when a key was stored).
pub fn legacy_checksum(value: &Value) -> String {
    legacy_checksum_and_size(value).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
        assert_eq!(legacy_checksum(&a), legacy_checksum(&b));
        assert_ne!(legacy_checksum(&a), legacy_checksum(&json!({"a": 1})));
        assert_eq!(
            legacy_checksum_and_size(&a).1,
            canonical_json(&a).len() as u64
        );
    }
}
