//! YAML answers that every YAML reader reads back as the JSON they came from.
//!
//! serde_norway writes a string plain whenever a YAML 1.2 reader would take it for a
//! string, but YAML 1.1 readers (PyYAML, many others) read `00_` or `1_000` as numbers,
//! `1:20` as 80, `2024-01-20` as a date and `on` as true. A context or agent named
//! like that came back as another type (found by schemathesis, which reads YAML with
//! PyYAML). Here a string is written plain only when it is an identifier-like word
//! both versions read as that string, and double-quoted otherwise, with every
//! character a reader might not take as itself (controls, line separators, a BOM)
//! escaped. Floats always carry a dot and a signed exponent, as YAML 1.1 wants.

use serde_json::{Number, Value};

/// `value` as a YAML document in block style.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    if is_block(value) {
        block(&mut out, value, 0);
    } else {
        scalar(&mut out, value);
        out.push('\n');
    }
    out
}

/// A non-empty mapping or sequence: written over lines, not inline.
fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes the non-empty collection `value`, every line indented by `indent`.
fn block(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                pad(out, indent);
                let mut written = String::new();
                string(&mut written, key);
                // An implicit key is at most 1024 characters; a longer one is explicit.
                if written.chars().count() > 1024 {
                    out.push_str("? ");
                    out.push_str(&written);
                    out.push('\n');
                    pad(out, indent);
                } else {
                    out.push_str(&written);
                }
                out.push(':');
                if is_block(item) {
                    out.push('\n');
                    block(out, item, indent + 2);
                } else {
                    out.push(' ');
                    scalar(out, item);
                    out.push('\n');
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                pad(out, indent);
                out.push('-');
                if is_block(item) {
                    // The first line goes after the dash: `- key: value`, `- - x`.
                    out.push(' ');
                    let mut inner = String::new();
                    block(&mut inner, item, indent + 2);
                    out.push_str(inner.get(indent + 2..).unwrap_or(&inner));
                } else {
                    out.push(' ');
                    scalar(out, item);
                    out.push('\n');
                }
            }
        }
        other => {
            pad(out, indent);
            scalar(out, other);
            out.push('\n');
        }
    }
}

/// A scalar or an empty collection, inline.
fn scalar(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => number(out, n),
        Value::String(s) => string(out, s),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

fn number(out: &mut String, n: &Number) {
    let text = n.to_string();
    if n.is_f64() {
        // YAML 1.1 floats need a dot, and a sign on the exponent: 1e300 -> 1.0e+300.
        let (mantissa, exponent) = match text.split_once(['e', 'E']) {
            Some((m, e)) => (m, Some(e)),
            None => (text.as_str(), None),
        };
        out.push_str(mantissa);
        if !mantissa.contains('.') {
            out.push_str(".0");
        }
        if let Some(e) = exponent {
            out.push('e');
            if !e.starts_with(['-', '+']) {
                out.push('+');
            }
            out.push_str(e);
        }
    } else {
        out.push_str(&text);
    }
}

/// Words YAML 1.1 reads as booleans or null (compared without case).
const RESERVED: [&str; 10] = [
    "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~",
];

/// True when `s` can be written plain: starts with a letter, holds only letters,
/// digits, `_ . - /` and single inner spaces, and is no reserved word.
fn is_plain(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(first) = bytes.first() else {
        return false;
    };
    first.is_ascii_alphabetic()
        && !s.ends_with(' ')
        && !s.contains("  ")
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/' | b' '))
        && !RESERVED.iter().any(|w| w.eq_ignore_ascii_case(s))
}

fn string(out: &mut String, s: &str) {
    if is_plain(s) {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Controls, DEL and C1 (NEL is a line break in YAML 1.1), the Unicode line
            // and paragraph separators, the BOM and the two non-characters YAML 1.1
            // readers refuse.
            c if (c as u32) < 0x20
                || (0x7f..=0x9f).contains(&(c as u32))
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn round_trip(value: &Value) -> Value {
        let text = to_string(value);
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
    }

    #[test]
    fn strings_any_reader_could_mistake_are_quoted() {
        for s in [
            "00_",
            "1_000",
            "0x1f",
            "1:20",
            "2024-01-20",
            "2024-01-20T09:00:00Z",
            "on",
            "Off",
            "YES",
            "n",
            "~",
            "null",
            "",
            " lead",
            "trail ",
            "a: b",
            "a #c",
            "-",
            "- x",
            "? x",
            ".inf",
            ".nan",
            "1e3",
            "12",
            "3.5",
            "@x",
            "`x",
            "!tag",
            "&a",
            "*a",
            "|",
            ">",
            "%x",
            "{a}",
            "[a]",
            "a,b",
            "'q'",
            "\"q\"",
            "é",
            "a\nb",
            "\u{85}",
            "\u{2028}",
            "\u{feff}x",
        ] {
            let text = to_string(&json!(s));
            assert!(text.starts_with('"'), "{s:?} was written plain: {text}");
            assert_eq!(round_trip(&json!(s)), json!(s), "{text}");
        }
        for s in [
            "default",
            "builder",
            "project_state.current_phase",
            "Use Redis now",
            "a-b/c",
        ] {
            assert_eq!(to_string(&json!(s)), format!("{s}\n"));
        }
    }

    #[test]
    fn floats_carry_a_dot_and_a_signed_exponent() {
        assert_eq!(to_string(&json!(1e300)), "1.0e+300\n");
        assert_eq!(to_string(&json!(1.5e-7)), "1.5e-7\n");
        assert_eq!(to_string(&json!(0.25)), "0.25\n");
        assert_eq!(to_string(&json!(3.0)), "3.0\n");
        assert_eq!(to_string(&json!(-7)), "-7\n");
        assert_eq!(to_string(&json!(u64::MAX)), format!("{}\n", u64::MAX));
    }

    #[test]
    fn nesting_is_block_style() {
        let v = json!({"a": {"b": [1, {"c": "x", "d": []}, [2, 3]], "e": {}}, "f": null});
        assert_eq!(
            to_string(&v),
            "a:\n  b:\n    - 1\n    - c: x\n      d: []\n    - - 2\n      - 3\n  e: {}\nf: null\n"
        );
        assert_eq!(round_trip(&v), v);
    }

    #[test]
    fn a_key_over_1024_characters_is_explicit() {
        let long = "k".repeat(2000);
        let v = json!({ long.clone(): {"x": 1}, "short": [long] });
        assert!(to_string(&v).starts_with("? kkk"));
        assert_eq!(round_trip(&v), v);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            "[a-z0-9_:. #-]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z0-9_:. -]{0,6}|\\PC{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_reads_back_unchanged(value in json_value()) {
            prop_assert_eq!(round_trip(&value), value);
        }
    }
}
