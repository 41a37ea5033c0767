//! Editing a client's JSON (or JSONC) configuration in place: the file is parsed into a
//! concrete syntax tree (`jsonc-parser`'s CST), only the properties ctxsync owns are set,
//! and the tree is printed back, so other servers, other keys, comments, key order and
//! the file's own indentation survive. A property that already holds the wanted value is
//! not touched at all, which is what makes a second run byte-identical.

use jsonc_parser::cst::{CstArray, CstInputValue, CstNode, CstObject, CstRootNode};
use jsonc_parser::ParseOptions;
use serde_json::Value;

use crate::InputError;

/// Which grammar a client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Plain JSON (Claude Code's `.mcp.json` and `settings.json`, Cursor's `mcp.json`):
    /// a comment there would break the client, so it is refused, not kept.
    Json,
    /// JSON with `//` and `/* */` comments and trailing commas (VS Code, Gemini CLI).
    Jsonc,
}

/// A parsed configuration file. The root must outlive every node taken from it (the
/// CST holds weak references to its ancestors), hence one owner for all edits.
pub struct JsonFile {
    root: CstRootNode,
}

/// Only what the clients themselves accept: comments and trailing commas for JSONC, none
/// of JSON5's other liberties.
fn options(dialect: Dialect) -> ParseOptions {
    let jsonc = dialect == Dialect::Jsonc;
    ParseOptions {
        allow_comments: jsonc,
        allow_loose_object_property_names: false,
        allow_trailing_commas: jsonc,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        ..ParseOptions::default()
    }
}

impl JsonFile {
    /// Parses `text`; `file` names it in errors (with the line and column of the fault).
    /// An empty file counts as `{}`; any other top level than an object is refused.
    pub fn parse(text: &str, dialect: Dialect, file: &str) -> Result<Self, InputError> {
        let text = ctxsync_core::limits::strip_bom(text);
        let text = if text.trim().is_empty() { "{}\n" } else { text };
        if dialect == Dialect::Json {
            // serde_json's own messages for plain JSON ("trailing comma at line 3 column 5").
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return Err(InputError(format!(
                    "{file}: not valid JSON: {e}; fix or move the file, ctxsync does not overwrite it"
                )));
            }
        }
        let root = CstRootNode::parse(text, &options(dialect)).map_err(|e| {
            InputError(format!(
                "{file}: not valid {} at line {}, column {}: {}; fix or move the file, ctxsync does not overwrite it",
                if dialect == Dialect::Json { "JSON" } else { "JSON with comments" },
                e.line_display(),
                e.column_display(),
                e.kind()
            ))
        })?;
        match root.value() {
            Some(v) if v.as_object().is_some() => Ok(Self { root }),
            _ => Err(InputError(format!(
                "{file}: the top level is not a JSON object; fix or move the file, ctxsync does not overwrite it"
            ))),
        }
    }

    /// The whole document as a value.
    pub fn value(&self) -> Value {
        self.root.to_serde_value().unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        self.root.to_string()
    }

    /// The object at `path` (keys from the top), created where missing; an input error
    /// naming the key when something else than an object is there.
    pub fn object(&self, path: &[&str], file: &str) -> Result<CstObject, InputError> {
        let mut obj = self.root.object_value_or_set();
        for (depth, key) in path.iter().enumerate() {
            obj = obj.object_value_or_create(key).ok_or_else(|| {
                InputError(format!(
                    "{file}: `{}` is not an object; fix or move the file, ctxsync does not overwrite it",
                    path[..=depth].join(".")
                ))
            })?;
        }
        Ok(obj)
    }

    /// The array `key` of `obj`, created when missing.
    pub fn array(
        &self,
        obj: &CstObject,
        key: &str,
        what: &str,
        file: &str,
    ) -> Result<CstArray, InputError> {
        obj.array_value_or_create(key).ok_or_else(|| {
            InputError(format!(
                "{file}: `{what}` is not an array; fix or move the file, ctxsync does not overwrite it"
            ))
        })
    }
}

/// Sets each of `fields` on `obj`, leaving a property alone when it already holds that
/// value (its formatting and comments stay) and every property not named here.
pub fn set_fields(obj: &CstObject, fields: &[(&str, Value)]) {
    for (key, value) in fields {
        match obj.get(key) {
            Some(prop) if prop.value().and_then(|v| v.to_serde_value()).as_ref() == Some(value) => {
            }
            Some(prop) => prop.set_value(input(value)),
            None => {
                obj.append(key, input(value));
            }
        }
    }
}

/// The value of `key` in a JSON object node, if it is one.
pub fn field(node: &CstNode, key: &str) -> Option<Value> {
    node.as_object()?.get(key)?.value()?.to_serde_value()
}

/// A value in the form the CST inserts.
pub fn input(value: &Value) -> CstInputValue {
    match value {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(items) => CstInputValue::Array(items.iter().map(input).collect()),
        Value::Object(map) => {
            CstInputValue::Object(map.iter().map(|(k, v)| (k.clone(), input(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn setting_fields_keeps_comments_and_other_keys() {
        let text = "{\n  // servers\n  \"servers\": {\n    \"other\": {\"command\": \"x\"}, // keep\n  },\n}\n";
        let file = JsonFile::parse(text, Dialect::Jsonc, "mcp.json").unwrap();
        let obj = file.object(&["servers", "ctxsync"], "mcp.json").unwrap();
        set_fields(
            &obj,
            &[("command", json!("ctxsync")), ("args", json!(["mcp"]))],
        );
        let out = file.text();
        assert!(
            out.contains("// servers") && out.contains("// keep"),
            "{out}"
        );
        let again = JsonFile::parse(&out, Dialect::Jsonc, "mcp.json").unwrap();
        assert_eq!(again.value()["servers"]["other"]["command"], "x");
        assert_eq!(again.value()["servers"]["ctxsync"]["args"], json!(["mcp"]));
        // Setting the same values again changes nothing.
        let obj = again.object(&["servers", "ctxsync"], "mcp.json").unwrap();
        set_fields(
            &obj,
            &[("command", json!("ctxsync")), ("args", json!(["mcp"]))],
        );
        assert_eq!(again.text(), out);
    }

    #[test]
    fn plain_json_refuses_comments_with_the_line() {
        let err = JsonFile::parse("{\n  // no\n}", Dialect::Json, ".mcp.json")
            .err()
            .unwrap();
        assert!(
            err.0.contains(".mcp.json") && err.0.contains("line 2 column"),
            "{err}"
        );
    }

    #[test]
    fn a_top_level_array_or_a_non_object_key_is_refused() {
        assert!(JsonFile::parse("[1]", Dialect::Json, "f").is_err());
        let file = JsonFile::parse("{\"servers\": 3}", Dialect::Jsonc, "f").unwrap();
        let err = file.object(&["servers", "ctxsync"], "f").err().unwrap();
        assert!(err.0.contains("`servers` is not an object"), "{err}");
    }
}
