//! The bounds every input is held to, so that anything accepted can be read back,
//! replayed and reverted, and nothing an agent sends can make the server do unbounded
//! work.
//!
//! * **Depth.** A document may nest at most [`MAX_DEPTH`] objects and lists. JSON readers
//!   (serde_json's default recursion limit is 128) and every recursive walk over a
//!   document (checksums, diff, merge, serialization, drop) must be able to read what was
//!   written, so the bound sits well below theirs.
//! * **Paths.** At most [`MAX_PATH_SEGMENTS`] segments and [`MAX_PATH_BYTES`] bytes of text.
//! * **Text nesting.** [`check_text_nesting`] refuses deeply nested JSON/YAML *before* it
//!   reaches a parser: YAML's flow-mapping scanner is quadratic in the nesting depth (50,000
//!   `{a: ` take 8 s of CPU in serde_norway), which would stall a server's worker.
//! * **Values.** [`StrictValue`] deserializes any format into a JSON value, refusing what
//!   JSON cannot hold (`.nan`, `.inf`) instead of silently turning it into `null`, and
//!   refusing documents deeper than [`MAX_DEPTH`] while it reads.
//! * **Growth.** [`Budget`] bounds what the changes of one push may write and what the
//!   document may grow to *while they apply*, so a small request cannot amplify itself
//!   (RFC 6902 `copy` from the root, repeated) into gigabytes before a quota is checked.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

/// Deepest nesting of objects and lists a document may have (the root object is 1).
pub const MAX_DEPTH: usize = 100;
/// Most segments a path may have.
pub const MAX_PATH_SEGMENTS: usize = MAX_DEPTH;
/// Longest path text, in bytes.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
/// Deepest bracket nesting [`check_text_nesting`] lets through to a parser. Above
/// [`MAX_DEPTH`] on purpose: the pre-scan does not know YAML's plain scalars, so a `[`
/// inside text counts too; the exact bound is checked on the parsed value.
pub const MAX_TEXT_NESTING: usize = 4 * MAX_DEPTH;

/// Why an input is out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("{what} is not a number JSON can hold; write it as a string")]
    NotFinite { what: &'static str },
    #[error(
        "the changes would grow the document to about {size} bytes while applying, over the quota of {limit}; nothing was applied"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "the changes write over {limit} bytes of values in one push; split it; nothing was applied"
    )]
    TooMuchWork { limit: u64 },
}

/// How deeply `value` nests objects and lists (a scalar is 0, `{}` is 1). Iterative, so
/// it is safe on any value.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|c| (c, d + 1)));
            }
            Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// The first list inside `value` (as a path of keys and positions from `value`) that holds
/// two elements with the same `id`, and that id. Ids are how canonical paths name list
/// elements, so two alike would make `[id=...]` ambiguous (and let a write hide one
/// element behind another).
pub fn duplicate_id(value: &Value) -> Option<(String, String)> {
    let mut stack = vec![(value, String::new())];
    while let Some((v, at)) = stack.pop() {
        match v {
            Value::Object(map) => {
                stack.extend(map.iter().map(|(k, c)| (c, format!("{at}/{k}"))));
            }
            Value::Array(items) => {
                let mut seen = std::collections::HashSet::new();
                for item in items {
                    if let Some(id) = crate::path::element_id(item) {
                        if !seen.insert(id.clone()) {
                            return Some((at, id));
                        }
                    }
                }
                stack.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c, format!("{at}/{i}"))),
                );
            }
            _ => {}
        }
    }
    None
}

/// Refuses a document nested deeper than [`MAX_DEPTH`].
pub fn check_depth(value: &Value) -> Result<(), LimitError> {
    if depth(value) > MAX_DEPTH {
        Err(LimitError::TooDeep { limit: MAX_DEPTH })
    } else {
        Ok(())
    }
}

/// A cheap linear scan of JSON or YAML text that refuses bracket nesting deeper than
/// [`MAX_TEXT_NESTING`] before any parser sees it.
///
/// Brackets inside quoted strings do not count, so text ctxsync itself wrote (a working
/// copy holding strings full of `[`) always reads back. A quote counts as the start of a
/// string only where a YAML or JSON node can start (after `[ { , : - ?` or at the start of
/// a line), and a string is skipped at most to the end of its line: YAML that merely
/// looks quoted to this scan (a `"` inside plain text) can hide the brackets of that one
/// line, where YAML itself reads them as text, never real nesting on the lines after
/// it. `#` comments are skipped likewise. Block-style YAML nesting is left to the parser,
/// which bounds it itself in linear time.
pub fn check_text_nesting(text: &[u8]) -> Result<(), LimitError> {
    let mut depth = 0usize;
    let mut node_start = true;
    let mut after_space = true;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            b'"' | b'\'' if node_start => {
                i = skip_quoted(text, i);
                node_start = false;
                after_space = false;
                continue;
            }
            b'#' if after_space => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_TEXT_NESTING {
                    return Err(LimitError::TooDeep {
                        limit: MAX_TEXT_NESTING,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        let next_is_space = matches!(text.get(i + 1), None | Some(b' ' | b'\t' | b'\r' | b'\n'));
        node_start = match b {
            b'[' | b'{' | b',' | b'\n' => true,
            // JSON writes `"a":"b"`; a `:` that YAML reads as text makes this scan skip
            // at most the rest of its line.
            b':' => true,
            b'-' | b'?' => next_is_space,
            b' ' | b'\t' | b'\r' => node_start,
            _ => false,
        };
        after_space = matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        i += 1;
    }
    Ok(())
}

/// The index just past the string starting at `start` (a `"` with `\` escapes, or a `'`
/// with `''`), or the end of its line when it does not close on it.
fn skip_quoted(text: &[u8], start: usize) -> usize {
    let quote = text[start];
    let mut i = start + 1;
    while i < text.len() && text[i] != b'\n' {
        match text[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && text.get(i + 1) == Some(&b'\'') => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Text with a leading UTF-8 byte-order mark removed (editors on Windows write one; YAML
/// and JSON parsers reject it).
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Bytes with a leading UTF-8 byte-order mark removed.
pub fn strip_bom_bytes(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

/// A JSON value read from any serde format under ctxsync's rules: no NaN or infinities
/// (refused, never mapped to `null`), no nesting deeper than [`MAX_DEPTH`] (refused while
/// reading, before the deep part is built).
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LevelSeed { depth: 0 }.deserialize(d).map(StrictValue)
    }
}

/// Deserializes `T` where every JSON value inside is read as a [`StrictValue`].
pub fn strict<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    StrictValue::deserialize(d).map(|v| v.0)
}

/// Like [`strict`], for an optional field that tells `null` (present) from missing.
pub fn strict_present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    StrictValue::deserialize(d).map(|v| Some(v.0))
}

struct LevelSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for LevelSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl LevelSeed {
    fn enter<E: de::Error>(&self) -> Result<LevelSeed, E> {
        if self.depth >= MAX_DEPTH {
            Err(E::custom(LimitError::TooDeep { limit: MAX_DEPTH }))
        } else {
            Ok(LevelSeed {
                depth: self.depth + 1,
            })
        }
    }
}

impl<'de> Visitor<'de> for LevelSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Into::into)
            .or_else(|_| u64::try_from(v).map(Into::into))
            .map(Value::Number)
            .map_err(|_| E::custom("an integer outside the 64-bit range; write it as a string"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(|v| Value::Number(v.into()))
            .map_err(|_| E::custom("an integer outside the 64-bit range; write it as a string"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            E::custom(LimitError::NotFinite {
                what: if v.is_nan() { "NaN" } else { "an infinity" },
            })
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(LevelSeed { depth: inner.depth })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<MapKey>()? {
            let value = map.next_value_seed(LevelSeed { depth: inner.depth })?;
            out.insert(key.0, value);
        }
        Ok(Value::Object(out))
    }
}

/// An object key: YAML allows scalars of any type as keys; JSON keys are strings, so
/// numbers and booleans are written as their text. `null`, lists and maps as keys are
/// refused (they have no faithful JSON spelling).
struct MapKey(String);

impl<'de> Deserialize<'de> for MapKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = MapKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean as an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<MapKey, E> {
                Ok(MapKey(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<MapKey, E> {
                Ok(MapKey(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MapKey, E> {
                if v.is_finite() {
                    Ok(MapKey(v.to_string()))
                } else {
                    Err(E::custom("a NaN or infinite object key"))
                }
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

/// Canonical JSON size of `value` in bytes, without building the text.
pub fn json_size(value: &Value) -> u64 {
    let mut counter = ByteCount(0);
    // Counting cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

struct ByteCount(u64);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the changes of one push may still do: grow the document up to `max_size`
/// (an upper estimate, kept as edits apply; the store checks the exact size after) and
/// write at most `max_written` bytes of values in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Estimated canonical size of the document now.
    pub size: u64,
    pub max_size: u64,
    /// Bytes of values written so far by this push.
    pub written: u64,
    pub max_written: u64,
}

impl Budget {
    /// No bound at all (tests, local tools that apply their own changes).
    pub fn unlimited() -> Self {
        Self {
            size: 0,
            max_size: u64::MAX,
            written: 0,
            max_written: u64::MAX,
        }
    }

    /// A document of `size` bytes that may grow to `max_size`; one push may write values
    /// totalling twice that (enough to rewrite a whole document at its quota and then
    /// some; far below what would exhaust memory).
    pub fn for_document(size: u64, max_size: u64) -> Self {
        Self {
            size,
            max_size,
            written: 0,
            max_written: max_size.saturating_mul(2).max(1024 * 1024),
        }
    }

    /// Accounts for a value of `bytes` about to be written (before it is cloned into the
    /// document).
    pub fn write(&mut self, bytes: u64) -> Result<(), LimitError> {
        let written = self.written.saturating_add(bytes);
        if written > self.max_written {
            return Err(LimitError::TooMuchWork {
                limit: self.max_written,
            });
        }
        self.written = written;
        Ok(())
    }

    /// Accounts for the document growing by `added` and shrinking by `removed` bytes.
    pub fn resize(&mut self, added: u64, removed: u64) -> Result<(), LimitError> {
        let size = self.size.saturating_add(added).saturating_sub(removed);
        if size > self.max_size {
            return Err(LimitError::TooLarge {
                size,
                limit: self.max_size,
            });
        }
        self.size = size;
        Ok(())
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::unlimited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [{"b": 1}]})), 3);
    }

    #[test]
    fn strict_value_refuses_deep_input_and_keeps_null() {
        let ok = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let v: StrictValue = serde_json::from_str(&ok).unwrap();
        assert_eq!(depth(&v.0), MAX_DEPTH);
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let err = serde_json::from_str::<StrictValue>(&deep).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        let v: StrictValue = serde_json::from_str(r#"{"a": null}"#).unwrap();
        assert_eq!(v.0, json!({"a": null}));
    }

    #[test]
    fn text_nesting_is_bounded_before_parsing() {
        assert!(check_text_nesting("{a: ".repeat(50_000).as_bytes()).is_err());
        assert!(check_text_nesting("[".repeat(MAX_TEXT_NESTING + 1).as_bytes()).is_err());
        assert!(check_text_nesting("[".repeat(MAX_TEXT_NESTING).as_bytes()).is_ok());
        let flat = "[1],".repeat(100_000);
        assert!(check_text_nesting(flat.as_bytes()).is_ok());
        // Strings full of brackets, as ctxsync writes them (YAML and JSON), read back.
        let many = "[".repeat(MAX_TEXT_NESTING);
        let yaml =
            format!("notes:\n  a: '{many}'\n  b: '{many}'\n  c: \"{many}\\\"\"\n- '{many}''s'\n");
        assert!(check_text_nesting(yaml.as_bytes()).is_ok(), "quoted YAML");
        let json = serde_json::json!({"a": many, "b": [many.clone(), many.clone()]}).to_string();
        assert!(check_text_nesting(json.as_bytes()).is_ok(), "quoted JSON");
        let commented = format!("a: 1 # {many}{many}\n");
        assert!(check_text_nesting(commented.as_bytes()).is_ok());
        // A quote inside plain text hides at most its own line: nesting on later lines
        // still counts.
        let bomb = "{a: ".repeat(MAX_TEXT_NESTING + 1);
        for hidden in [
            format!("a: x \"\nb: {bomb}"),
            format!("a: b, \"x\nc: {bomb}"),
            format!("a: b [ , \"x\nc: {bomb}"),
            format!("a: '\n{bomb}"),
        ] {
            assert!(
                check_text_nesting(hidden.as_bytes()).is_err(),
                "{}",
                &hidden[..12]
            );
        }
    }

    #[test]
    fn budget_bounds_growth_and_work() {
        let mut b = Budget::for_document(100, 1000);
        assert!(b.resize(800, 0).is_ok());
        assert!(matches!(b.resize(200, 0), Err(LimitError::TooLarge { .. })));
        assert_eq!(b.size, 900, "a refused resize changes nothing");
        let mut b = Budget::for_document(0, 10);
        assert!(b.write(1024 * 1024).is_ok());
        assert!(matches!(b.write(1), Err(LimitError::TooMuchWork { .. })));
    }

    #[test]
    fn bom_is_stripped() {
        assert_eq!(strip_bom("\u{feff}a: 1"), "a: 1");
        assert_eq!(strip_bom_bytes(b"\xef\xbb\xbfa"), b"a");
        assert_eq!(strip_bom("a"), "a");
    }
}
