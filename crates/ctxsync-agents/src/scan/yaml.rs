//! The frontmatter YAML of generated files: written and read directly when it is the
//! plain kind ctxsync writes almost always (`key: value` lines and lists of one-line
//! plain strings), through serde_norway otherwise.
//!
//! A cold sync of a large library writes and then validates tens of thousands of
//! frontmatter blocks; through the YAML library that was a quarter of its CPU time.
//! Property tests hold both directions to serde_norway: what is written is byte for
//! byte what it writes, and what is read is what it reads.

/// A frontmatter value.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// A string.
    Str(&'a str),
    /// A list of strings.
    List(&'a [String]),
    /// A list of handoffs (VS Code's `label`, `agent`, `prompt`, `send`).
    Handoffs(&'a [crate::parse::Handoff]),
}

/// The frontmatter block of `fields` (in order), `---` lines included.
pub fn frontmatter(fields: &[(&str, Field<'_>)]) -> Result<String, String> {
    if let Some(fast) = write_plain(fields) {
        return Ok(fast);
    }
    let y =
        serde_norway::to_string(&to_mapping(fields)).map_err(|e| format!("frontmatter: {e}"))?;
    Ok(format!("---\n{y}---\n"))
}

fn to_mapping(fields: &[(&str, Field<'_>)]) -> serde_norway::Mapping {
    let mut map = serde_norway::Mapping::new();
    for (k, v) in fields {
        let v = match v {
            Field::Str(s) => serde_norway::Value::String(s.to_string()),
            Field::List(items) => serde_norway::Value::Sequence(
                items
                    .iter()
                    .map(|i| serde_norway::Value::String(i.clone()))
                    .collect(),
            ),
            Field::Handoffs(items) => serde_norway::Value::Sequence(
                items
                    .iter()
                    .map(|h| {
                        let mut m = serde_norway::Mapping::new();
                        let mut put = |k: &str, v: serde_norway::Value| {
                            m.insert(serde_norway::Value::String(k.into()), v);
                        };
                        put("label", serde_norway::Value::String(h.label.clone()));
                        put("agent", serde_norway::Value::String(h.agent.clone()));
                        if let Some(p) = &h.prompt {
                            put("prompt", serde_norway::Value::String(p.clone()));
                        }
                        if let Some(s) = h.send {
                            put("send", serde_norway::Value::Bool(s));
                        }
                        serde_norway::Value::Mapping(m)
                    })
                    .collect(),
            ),
        };
        map.insert(serde_norway::Value::String(k.to_string()), v);
    }
    map
}

/// `fields` written without the YAML library, when every key and value is plain-safe.
fn write_plain(fields: &[(&str, Field<'_>)]) -> Option<String> {
    let mut out = String::with_capacity(256);
    out.push_str("---\n");
    for (k, v) in fields {
        if !is_plain_safe(k) {
            return None;
        }
        out.push_str(k);
        out.push(':');
        match v {
            Field::Str(s) if is_plain_safe(s) => {
                out.push(' ');
                out.push_str(s);
            }
            Field::List(items) if !items.is_empty() && items.iter().all(|i| is_plain_safe(i)) => {
                for i in items.iter() {
                    out.push_str("\n- ");
                    out.push_str(i);
                }
            }
            _ => return None,
        }
        out.push('\n');
    }
    out.push_str("---\n");
    Some(out)
}

/// Parses frontmatter text (between the `---` lines) as YAML; text too large or too
/// deeply nested for the YAML library (see [`crate::parse::parse_frontmatter`]) is an
/// error without it.
pub fn parse(yaml: &str) -> Result<serde_norway::Value, serde_norway::Error> {
    use crate::parse::{flow_nesting_exceeds, MAX_FRONTMATTER_BYTES, MAX_FRONTMATTER_NESTING};
    match read_plain(yaml) {
        Some(v) => Ok(v),
        None if yaml.len() > MAX_FRONTMATTER_BYTES
            || flow_nesting_exceeds(yaml, MAX_FRONTMATTER_NESTING) =>
        {
            Err(<serde_norway::Error as serde::de::Error>::custom(format!(
                "larger than {MAX_FRONTMATTER_BYTES} bytes or nested more than \
                 {MAX_FRONTMATTER_NESTING} levels deep"
            )))
        }
        None => serde_norway::from_str(yaml),
    }
}

/// `yaml` read without the YAML library, when it is nothing but `key: value` lines
/// and `key:` lines followed by `- item` lines, every key, value and item plain-safe
/// and no key twice; `None` for anything else.
fn read_plain(yaml: &str) -> Option<serde_norway::Value> {
    use serde_norway::Value;
    let mut map = serde_norway::Mapping::new();
    let body = yaml.strip_suffix('\n')?;
    let mut lines = body.split('\n').peekable();
    while let Some(line) = lines.next() {
        let (key, value) = match line.split_once(": ") {
            Some((k, v)) => (k, Some(v)),
            None => (line.strip_suffix(':')?, None),
        };
        if !is_plain_safe(key) {
            return None;
        }
        let value = match value {
            Some(v) if is_plain_safe(v) => Value::String(v.to_string()),
            Some(_) => return None,
            None => {
                let mut items = Vec::new();
                while let Some(item) = lines.peek().and_then(|l| l.strip_prefix("- ")) {
                    if !is_plain_safe(item) {
                        return None;
                    }
                    items.push(Value::String(item.to_string()));
                    lines.next();
                }
                if items.is_empty() {
                    return None;
                }
                Value::Sequence(items)
            }
        };
        if map.insert(Value::String(key.to_string()), value).is_some() {
            return None;
        }
    }
    Some(Value::Mapping(map))
}

/// Whether YAML reads `s` back as the same string when written unquoted, and the
/// emitter would write it so: a conservative test (printable ASCII starting with a
/// letter, none of the sequences that end or comment a plain scalar, not a word YAML
/// reads as a boolean or null). Whatever it rejects goes through serde_norway.
pub fn is_plain_safe(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    if !first.is_ascii_alphabetic() || *last == b' ' || *last == b':' {
        return false;
    }
    if !b.iter().all(|c| (0x20..0x7f).contains(c)) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") {
        return false;
    }
    const WORDS: [&str; 10] = [
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "nan",
    ];
    !WORDS.iter().any(|w| s.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn via_serde(fields: &[(&str, Field<'_>)]) -> String {
        format!(
            "---\n{}---\n",
            serde_norway::to_string(&to_mapping(fields)).unwrap()
        )
    }

    /// Strings near the edges of plain YAML: indicators, spaces, colons, hashes,
    /// quotes, words YAML reads as other types, non-ASCII, line breaks.
    fn tricky() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z][a-zA-Z0-9 ,.;:#'\"()\\[\\]{}!?&*|>%@`~=+-]{0,30}",
            "[ -~]{0,12}",
            Just("true".to_string()),
            Just("Null".to_string()),
            Just("on".to_string()),
            Just("a: b".to_string()),
            Just("a #b".to_string()),
            Just("ends:".to_string()),
            Just("ends ".to_string()),
            Just("- item".to_string()),
            Just("é clair".to_string()),
            Just("line\nbreak".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn written_is_what_serde_norway_writes_and_read_is_what_it_reads(
            name in tricky(),
            desc in tricky(),
            tools in proptest::collection::vec(tricky(), 0..3),
        ) {
            let mut fields = vec![("name", Field::Str(&name)), ("description", Field::Str(&desc))];
            if !tools.is_empty() {
                fields.push(("tools", Field::List(&tools)));
            }
            let want = via_serde(&fields);
            if let Some(fast) = write_plain(&fields) {
                prop_assert_eq!(&fast, &want);
            }
            prop_assert_eq!(frontmatter(&fields).unwrap(), want.clone());
            let yaml = want.strip_prefix("---\n").and_then(|y| y.strip_suffix("---\n")).unwrap();
            let reference: serde_norway::Value = serde_norway::from_str(yaml).unwrap();
            if let Some(fast) = read_plain(yaml) {
                prop_assert_eq!(&fast, &reference);
            }
            prop_assert_eq!(parse(yaml).unwrap(), reference.clone());
            prop_assert_eq!(reference.get("name").and_then(|v| v.as_str()), Some(name.as_str()));
            prop_assert_eq!(reference.get("description").and_then(|v| v.as_str()), Some(desc.as_str()));
        }

        /// Any text, not only what ctxsync writes: what the fast reader accepts, the
        /// YAML library reads the same way.
        #[test]
        fn read_agrees_with_serde_norway_on_any_text(
            yaml in "([a-z:# -]{0,12}\n){0,5}",
        ) {
            if let Some(fast) = read_plain(&yaml) {
                let reference: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
                prop_assert_eq!(fast, reference);
            }
        }
    }

    #[test]
    fn plain_values_take_the_fast_path() {
        let tools = vec!["read".to_string(), "edit".to_string()];
        let fields = [
            ("name", Field::Str("backend-engineer")),
            (
                "description",
                Field::Str("Builds APIs, with tests (and care)."),
            ),
            ("tools", Field::List(&tools)),
        ];
        let text = "---\nname: backend-engineer\ndescription: Builds APIs, with tests (and care).\ntools:\n- read\n- edit\n---\n";
        assert_eq!(write_plain(&fields).as_deref(), Some(text));
        let yaml = &text[4..text.len() - 4];
        assert!(read_plain(yaml).is_some());
        assert!(write_plain(&[("name", Field::Str("true"))]).is_none());
        assert!(write_plain(&[("name", Field::Str("a: b"))]).is_none());
        // Duplicate keys and anything unusual are left to the YAML library.
        assert!(read_plain("name: a\nname: b\n").is_none());
        assert!(read_plain("name: 'quoted'\n").is_none());
        assert!(read_plain("name: [a\n").is_none());
        assert!(parse("name: [a\n").is_err());
        let deep = format!("name: {}\n", "[".repeat(20_000));
        assert!(parse(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested more than 64"));
    }
}
