//! Paths into a context document.
//!
//! Two spellings are accepted and parse to the same [`Path`]:
//!
//! * RFC 6901 JSON Pointers: `/project_state/active_tasks/0/status`
//! * dotted paths: `project_state.active_tasks[id=task-123].status`, with the selectors
//!   `[n]` (position), `[-]` (append), `[id=value]` and `[key=value]` (the element whose
//!   `key` field equals `value`).
//!
//! The op log stores *canonical* paths: every array element that has an `id` is named by
//! it, so a concurrent insert before it never shifts what the path points at.

use std::fmt;

use serde_json::Value;

use crate::limits::MAX_PATH_SEGMENTS;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// An object key. On an array, a key that is a plain decimal number is a position
    /// (JSON Pointer cannot tell the two apart; the document can).
    Key(String),
    /// An array position, from a dotted `[n]`.
    Index(usize),
    /// The end of an array (`[-]` or the pointer token `-`); valid only for adding.
    Append,
    /// The array element whose field `field` equals `value`.
    Select { field: String, value: String },
}

/// A parsed path: a list of segments from the document root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Path {
    segments: Vec<Segment>,
}

/// Why a path could not be parsed; `at` is the byte offset where it went wrong. `input`
/// is the path as given, shortened to its first 200 characters so an error about a huge
/// path stays readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path {input:?} at byte {at}: {reason}")]
pub struct PathError {
    pub input: String,
    pub at: usize,
    pub reason: String,
}

impl PathError {
    pub fn new(input: &str, at: usize, reason: impl Into<String>) -> Self {
        const SHOWN: usize = 200;
        let input = match input.char_indices().nth(SHOWN) {
            Some((cut, _)) => format!("{}... ({} bytes)", &input[..cut], input.len()),
            None => input.to_owned(),
        };
        Self {
            input,
            at,
            reason: reason.into(),
        }
    }
}

impl Path {
    /// The document root.
    pub fn root() -> Self {
        Self::default()
    }

    pub fn from_segments(segments: Vec<Segment>) -> Self {
        Self { segments }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The path with one more segment.
    pub fn child(&self, segment: Segment) -> Self {
        let mut segments = self.segments.clone();
        segments.push(segment);
        Self { segments }
    }

    pub fn key(&self, key: &str) -> Self {
        self.child(Segment::Key(key.to_owned()))
    }

    /// The path without its last segment, and that segment.
    pub fn split_last(&self) -> Option<(Path, &Segment)> {
        let (last, parent) = self.segments.split_last()?;
        Some((
            Path {
                segments: parent.to_vec(),
            },
            last,
        ))
    }

    /// True when one path is a prefix of the other (or they are equal): a write to one
    /// can change what the other reads.
    pub fn overlaps(&self, other: &Path) -> bool {
        self.segments
            .iter()
            .zip(&other.segments)
            .all(|(a, b)| a == b)
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &Path) -> bool {
        other.segments.len() <= self.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a == b)
    }

    /// Parses either spelling: a leading `/` (or the empty string) means JSON Pointer.
    /// At most [`MAX_PATH_SEGMENTS`] segments (a canonical path has as many as the path it
    /// came from, so whatever was accepted also reads back).
    pub fn parse(input: &str) -> Result<Self, PathError> {
        let path = if input.is_empty() || input.starts_with('/') {
            Self::parse_pointer(input)
        } else {
            Self::parse_dotted(input)
        }?;
        if path.segments.len() > MAX_PATH_SEGMENTS {
            return Err(PathError::new(
                input,
                0,
                format!(
                    "{} segments, over the limit of {MAX_PATH_SEGMENTS}",
                    path.segments.len()
                ),
            ));
        }
        Ok(path)
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// RFC 6901: `/a/b~1c/0`; `""` is the root.
    pub fn parse_pointer(input: &str) -> Result<Self, PathError> {
        if input.is_empty() {
            return Ok(Self::root());
        }
        let err = |at: usize, reason: &str| PathError::new(input, at, reason);
        let Some(rest) = input.strip_prefix('/') else {
            return Err(err(0, "a JSON Pointer starts with '/'"));
        };
        let mut segments = Vec::new();
        let mut offset = 1;
        for token in rest.split('/') {
            let mut decoded = String::with_capacity(token.len());
            let mut chars = token.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some((_, '0')) => decoded.push('~'),
                        Some((_, '1')) => decoded.push('/'),
                        _ => return Err(err(offset + i, "'~' must be followed by '0' or '1'")),
                    }
                } else {
                    decoded.push(c);
                }
            }
            offset += token.len() + 1;
            segments.push(if decoded == "-" {
                Segment::Append
            } else {
                Segment::Key(decoded)
            });
        }
        Ok(Self { segments })
    }

    /// `key ( "." key | "[" selector "]" )*`.
    pub fn parse_dotted(input: &str) -> Result<Self, PathError> {
        DottedParser {
            input,
            bytes: input.as_bytes(),
            pos: 0,
        }
        .parse()
    }

    /// The RFC 6901 spelling. `Select` segments have no pointer form; they are written
    /// in their dotted form, so resolve a path (see [`crate::apply`]) before asking for
    /// a pointer that other tools must read.
    pub fn to_pointer(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
                Segment::Index(i) => out.push_str(&i.to_string()),
                Segment::Append => out.push('-'),
                Segment::Select { field, value } => {
                    out.push_str(&format!("[{field}={value}]").replace('/', "~1"))
                }
            }
        }
        out
    }
}

impl fmt::Display for Path {
    /// The dotted spelling, quoting keys that need it. Parsing it gives the same path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write_key(f, k)?;
                }
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Append => f.write_str("[-]")?,
                Segment::Select { field, value } => {
                    f.write_str("[")?;
                    write_key(f, field)?;
                    f.write_str("=")?;
                    if is_plain_value(value) {
                        f.write_str(value)?;
                    } else {
                        write_quoted(f, value)?;
                    }
                    f.write_str("]")?;
                }
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Path {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Path {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Path::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Path {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Path::parse(s)
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_plain_value(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| !matches!(b, b']' | b'"' | b'[' | b'\\') && !b.is_ascii_whitespace())
}

fn write_key(f: &mut fmt::Formatter<'_>, k: &str) -> fmt::Result {
    if is_plain_key(k) {
        f.write_str(k)
    } else {
        write_quoted(f, k)
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

struct DottedParser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl DottedParser<'_> {
    fn err(&self, reason: impl Into<String>) -> PathError {
        PathError::new(self.input, self.pos, reason)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn parse(mut self) -> Result<Path, PathError> {
        let mut segments = vec![Segment::Key(self.key()?)];
        while let Some(b) = self.peek() {
            match b {
                b'.' => {
                    self.pos += 1;
                    segments.push(Segment::Key(self.key()?));
                }
                b'[' => {
                    self.pos += 1;
                    segments.push(self.selector()?);
                }
                _ => return Err(self.err(format!("expected '.' or '[', found {:?}", b as char))),
            }
        }
        Ok(Path { segments })
    }

    /// A bare key `[A-Za-z0-9_-]+` or a quoted string.
    fn key(&mut self) -> Result<String, PathError> {
        if self.peek() == Some(b'"') {
            return self.quoted();
        }
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(match self.peek() {
                None => self.err("expected a key, found the end of the path"),
                Some(b) => self.err(format!(
                    "expected a key ([A-Za-z0-9_-]+ or a \"quoted string\"), found {:?}",
                    b as char
                )),
            });
        }
        Ok(self.input[start..self.pos].to_owned())
    }

    fn quoted(&mut self) -> Result<String, PathError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.input[self.pos..].chars().next() else {
                self.pos = open;
                return Err(self.err("unterminated quoted string"));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(escaped) = self.input[self.pos..].chars().next() else {
                        self.pos = open;
                        return Err(self.err("unterminated quoted string"));
                    };
                    self.pos += escaped.len_utf8();
                    out.push(escaped);
                }
                c => out.push(c),
            }
        }
    }

    /// After `[`: `n`, `-`, or `field=value`, then `]`.
    fn selector(&mut self) -> Result<Segment, PathError> {
        let segment = match self.peek() {
            Some(b'-') if self.bytes.get(self.pos + 1) == Some(&b']') => {
                self.pos += 1;
                Segment::Append
            }
            Some(b) if b.is_ascii_digit() => {
                let start = self.pos;
                while matches!(self.peek(), Some(b) if b.is_ascii_digit()) {
                    self.pos += 1;
                }
                if self.peek() == Some(b'=') {
                    // A numeric field name such as `[0=x]`.
                    self.pos = start;
                    self.select()?
                } else {
                    let digits = &self.input[start..self.pos];
                    let n = digits.parse::<usize>().map_err(|_| {
                        self.pos = start;
                        self.err("array position is too large")
                    })?;
                    Segment::Index(n)
                }
            }
            Some(_) => self.select()?,
            None => return Err(self.err("unterminated '[' selector")),
        };
        match self.peek() {
            Some(b']') => {
                self.pos += 1;
                Ok(segment)
            }
            None => Err(self.err("unterminated '[' selector: expected ']'")),
            Some(b) => Err(self.err(format!("expected ']', found {:?}", b as char))),
        }
    }

    fn select(&mut self) -> Result<Segment, PathError> {
        let field = self.key()?;
        if self.peek() != Some(b'=') {
            return Err(
                self.err("expected '=' in selector (use [n], [-], [id=value] or [field=value])")
            );
        }
        self.pos += 1;
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let start = self.pos;
            while matches!(self.peek(), Some(b) if b != b']') {
                self.pos += 1;
            }
            if start == self.pos {
                return Err(self.err("empty selector value"));
            }
            self.input[start..self.pos].to_owned()
        };
        Ok(Segment::Select { field, value })
    }
}

/// True when the array element `element` is the one a `[field=value]` selector names.
/// Strings compare as text; numbers and booleans by their JSON spelling.
#[allow(clippy::cmp_owned)] // `Value == &str` would never match numbers
pub fn selector_matches(element: &Value, field: &str, value: &str) -> bool {
    match element.get(field) {
        Some(Value::String(s)) => s == value,
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string() == value,
        _ => false,
    }
}

/// The `id` of an array element, as a selector value, if it has a scalar one.
pub fn element_id(element: &Value) -> Option<String> {
    match element.get("id")? {
        Value::String(s) => Some(s.clone()),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn dotted_with_every_selector() {
        let path = p("project_state.active_tasks[id=task-123].status");
        assert_eq!(
            path.segments(),
            &[
                Segment::Key("project_state".into()),
                Segment::Key("active_tasks".into()),
                Segment::Select {
                    field: "id".into(),
                    value: "task-123".into()
                },
                Segment::Key("status".into()),
            ]
        );
        assert_eq!(p("a[0]").segments()[1], Segment::Index(0));
        assert_eq!(p("a[-]").segments()[1], Segment::Append);
        assert_eq!(
            p("a[name=redis]").segments()[1],
            Segment::Select {
                field: "name".into(),
                value: "redis".into()
            }
        );
    }

    #[test]
    fn pointer_and_escapes() {
        let path = p("/a~1b/c~0d/0/-");
        assert_eq!(
            path.segments(),
            &[
                Segment::Key("a/b".into()),
                Segment::Key("c~d".into()),
                Segment::Key("0".into()),
                Segment::Append,
            ]
        );
        assert!(p("").is_root());
        assert_eq!(path.to_pointer(), "/a~1b/c~0d/0/-");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "a.b[3].c",
            "a[id=x].b",
            "\"weird key\".b",
            "a[id=\"with ]bracket\"]",
            "a[-]",
            "x.\"dotted.key\"[name=a b]",
        ] {
            let path = p(s);
            assert_eq!(Path::parse(&path.to_string()).unwrap(), path, "{s}");
        }
    }

    #[test]
    fn errors_say_where_and_why() {
        let e = Path::parse("a..b").unwrap_err();
        assert_eq!(e.at, 2);
        assert!(e.reason.contains("expected a key"), "{e}");
        let e = Path::parse("a[id=x").unwrap_err();
        assert!(e.reason.contains("unterminated"), "{e}");
        let e = Path::parse("a[x]").unwrap_err();
        assert!(e.reason.contains("expected '='"), "{e}");
        let e = Path::parse("/a/~2").unwrap_err();
        assert!(e.reason.contains("'~'"), "{e}");
        assert!(Path::parse("a b").is_err());
        assert!(Path::parse("a[99999999999999999999999]").is_err());
    }

    #[test]
    fn overlap_is_prefix_either_way() {
        assert!(p("a.b").overlaps(&p("a.b.c")));
        assert!(p("a.b.c").overlaps(&p("a.b")));
        assert!(p("a.b").overlaps(&p("a.b")));
        assert!(!p("a.b").overlaps(&p("a.c")));
        assert!(!p("a[id=x].s").overlaps(&p("a[id=y].s")));
    }
}
