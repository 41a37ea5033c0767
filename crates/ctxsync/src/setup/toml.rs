//! Editing Codex's `config.toml` in place with `toml_edit`: only the keys of
//! `[mcp_servers.ctxsync]` that ctxsync owns are set, and a key that already holds the
//! wanted value is left as it is, so comments, other tables, other servers and the
//! user's formatting survive and a second run is byte-identical.

use serde_json::Value;
use toml_edit::{Array, DocumentMut, Item, Table, TableLike};

use crate::InputError;

/// A parsed `config.toml`.
pub struct TomlFile {
    doc: DocumentMut,
}

impl TomlFile {
    /// Parses `text`; `file` names it in errors (toml_edit's message carries the line and
    /// column and shows the offending line).
    pub fn parse(text: &str, file: &str) -> Result<Self, InputError> {
        let text = ctxsync_core::limits::strip_bom(text);
        text.parse::<DocumentMut>()
            .map(|doc| Self { doc })
            .map_err(|e| {
                InputError(format!(
                    "{file}: not valid TOML: {}; fix or move the file, ctxsync does not overwrite it",
                    e.to_string().trim_end()
                ))
            })
    }

    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// The key/value pairs of the table at `path` as JSON (strings, numbers, booleans,
    /// arrays, nested tables), or `None` when there is no table there.
    pub fn table_value(&self, path: &[&str]) -> Option<Value> {
        let mut item = self.doc.as_item();
        for key in path {
            item = item.as_table_like()?.get(key)?;
        }
        item_to_json(item)
    }

    /// Sets `fields` in the table at `path`, creating it (as a `[a.b]` header, its
    /// parents implicit) when missing; an input error when something else is there.
    pub fn set_fields(
        &mut self,
        path: &[&str],
        fields: &[(&str, Value)],
        file: &str,
    ) -> Result<(), InputError> {
        let mut table: &mut dyn TableLike = self.doc.as_table_mut();
        for (depth, key) in path.iter().enumerate() {
            if table.get(key).is_none() {
                let mut fresh = Table::new();
                // `[mcp_servers.ctxsync]` alone, without an empty `[mcp_servers]` above it.
                fresh.set_implicit(depth + 1 < path.len());
                table.insert(key, Item::Table(fresh));
            }
            table = table
                .get_mut(key)
                .and_then(Item::as_table_like_mut)
                .ok_or_else(|| {
                    InputError(format!(
                        "{file}: `{}` is not a table; fix or move the file, ctxsync does not overwrite it",
                        path[..=depth].join(".")
                    ))
                })?;
        }
        for (key, value) in fields {
            if table.get(key).and_then(item_to_json).as_ref() == Some(value) {
                continue;
            }
            let Some(mut new) = json_to_value(value) else {
                continue;
            };
            // A comment after the old value stays after the new one.
            if let Some(old) = table.get(key).and_then(Item::as_value) {
                *new.decor_mut() = old.decor().clone();
            }
            table.insert(key, Item::Value(new));
        }
        Ok(())
    }
}

/// The TOML for a JSON string, number, boolean or array of them.
fn json_to_value(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::String(s) => s.as_str().into(),
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::Array(items) => {
            let mut array = Array::new();
            for item in items {
                array.push(json_to_value(item)?);
            }
            array.into()
        }
        Value::Null | Value::Object(_) => return None,
    })
}

fn item_to_json(item: &Item) -> Option<Value> {
    match item {
        Item::Value(v) => value_to_json(v),
        Item::Table(t) => Some(Value::Object(
            t.iter()
                .filter_map(|(k, v)| Some((k.to_owned(), item_to_json(v)?)))
                .collect(),
        )),
        Item::None | Item::ArrayOfTables(_) => None,
    }
}

fn value_to_json(value: &toml_edit::Value) -> Option<Value> {
    use toml_edit::Value as V;
    Some(match value {
        V::String(s) => Value::String(s.value().clone()),
        V::Integer(i) => Value::from(*i.value()),
        V::Float(f) => serde_json::Number::from_f64(*f.value()).map(Value::Number)?,
        V::Boolean(b) => Value::Bool(*b.value()),
        V::Datetime(d) => Value::String(d.value().to_string()),
        V::Array(a) => Value::Array(a.iter().filter_map(value_to_json).collect()),
        V::InlineTable(t) => Value::Object(
            t.iter()
                .filter_map(|(k, v)| Some((k.to_owned(), value_to_json(v)?)))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_new_server_table_keeps_comments_and_other_tables() {
        let text =
            "# my codex config\nmodel = \"o3\"\n\n[mcp_servers.other]\ncommand = \"x\" # keep\n";
        let mut changed = TomlFile::parse(text, "c").unwrap();
        changed
            .set_fields(&["mcp_servers", "other"], &[("command", json!("y"))], "c")
            .unwrap();
        assert!(
            changed.text().contains("command = \"y\" # keep"),
            "{}",
            changed.text()
        );
        let mut file = TomlFile::parse(text, "config.toml").unwrap();
        let fields = [("command", json!("/bin/ctxsync")), ("args", json!(["mcp"]))];
        file.set_fields(&["mcp_servers", "ctxsync"], &fields, "config.toml")
            .unwrap();
        let out = file.text();
        assert!(out.starts_with(text), "{out}");
        assert!(out.contains("[mcp_servers.ctxsync]"), "{out}");
        assert!(!out.contains("[mcp_servers]\n"), "{out}");
        let mut again = TomlFile::parse(&out, "config.toml").unwrap();
        again
            .set_fields(&["mcp_servers", "ctxsync"], &fields, "config.toml")
            .unwrap();
        assert_eq!(again.text(), out);
        assert_eq!(
            again.table_value(&["mcp_servers", "ctxsync"]),
            Some(json!({"command": "/bin/ctxsync", "args": ["mcp"]}))
        );
    }

    #[test]
    fn malformed_toml_names_the_file_and_line() {
        let err = TomlFile::parse("a = 1\n[b\n", "config.toml").err().unwrap();
        assert!(
            err.0.contains("config.toml") && err.0.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn a_non_table_in_the_way_is_refused() {
        let mut file = TomlFile::parse("mcp_servers = 3\n", "c").unwrap();
        let err = file
            .set_fields(&["mcp_servers", "ctxsync"], &[], "c")
            .err()
            .unwrap();
        assert!(err.0.contains("`mcp_servers` is not a table"), "{err}");
    }
}
