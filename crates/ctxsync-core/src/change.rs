//! Changes an agent pushes, in both first-class spellings.
//!
//! * seed form: `{path, from?, absent?, to}` sets `path` to `to`, and with `from` only if
//!   the current value equals it (`absent: true` instead asks that the path not exist).
//!   `{path, from?, remove: true}` removes, with the same optional test.
//! * RFC 6902 form: `{op: add|remove|replace|move|copy|test, path, value?, from?}`, where
//!   `from` is a *path* for move and copy, as in the RFC.
//!
//! Both parse to [`Change`]; unknown fields and ops are refused with a message that says
//! which.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::{check_depth, StrictValue, MAX_PATH_BYTES};
use crate::path::Path;

/// A field-level test that guards a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The current value must equal this.
    Value(Value),
    /// The path must not exist.
    Absent,
}

/// What a change does at its path.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Seed form: add the value, or replace what is there. Missing parent objects are
    /// created, as `mkdir -p` would.
    Set(Value),
    /// RFC add: insert into an array, or add (or replace) an object member.
    Add(Value),
    Remove,
    Replace(Value),
    Move {
        from: Path,
    },
    Copy {
        from: Path,
    },
    Test(Value),
}

/// One change of a push.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: Path,
    pub op: Op,
    /// Optional test on the current value at `path`, checked before the op.
    pub expect: Option<Expect>,
}

impl Change {
    pub fn set(path: Path, to: Value) -> Self {
        Self {
            path,
            op: Op::Set(to),
            expect: None,
        }
    }

    pub fn with_expect(mut self, expect: Expect) -> Self {
        self.expect = Some(expect);
        self
    }

    /// The paths this change writes (for ownership and overlap checks).
    pub fn written_paths(&self) -> Vec<&Path> {
        match &self.op {
            Op::Test(_) => vec![],
            Op::Move { from } => vec![from, &self.path],
            _ => vec![&self.path],
        }
    }

    /// The value this change proposes, for conflict reports.
    pub fn proposed_value(&self) -> Option<&Value> {
        match &self.op {
            Op::Set(v) | Op::Add(v) | Op::Replace(v) | Op::Test(v) => Some(v),
            Op::Remove | Op::Move { .. } | Op::Copy { .. } => None,
        }
    }

    pub fn op_name(&self) -> &'static str {
        match self.op {
            Op::Set(_) => "set",
            Op::Add(_) => "add",
            Op::Remove => "remove",
            Op::Replace(_) => "replace",
            Op::Move { .. } => "move",
            Op::Copy { .. } => "copy",
            Op::Test(_) => "test",
        }
    }
}

/// Why a change could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeError {
    #[error("change #{index}: {message}")]
    Invalid { index: usize, message: String },
}

/// The wire shape shared by both spellings; which fields are set decides the form.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<String>,
    path: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    from: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    absent: bool,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    to: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    remove: bool,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    value: Option<Value>,
}

impl WireChange {
    /// Bounds that make whatever is accepted readable back: path text length, and the
    /// nesting of every value the change carries.
    fn check_limits(&self) -> Result<(), String> {
        if self.path.len() > MAX_PATH_BYTES {
            return Err(format!(
                "the path is {} bytes long, over the limit of {MAX_PATH_BYTES}",
                self.path.len()
            ));
        }
        if let Some(Value::String(from)) = &self.from {
            if from.len() > MAX_PATH_BYTES && self.op.is_some() {
                return Err(format!(
                    "the `from` path is {} bytes long, over the limit of {MAX_PATH_BYTES}",
                    from.len()
                ));
            }
        }
        for (name, value) in [
            ("from", &self.from),
            ("to", &self.to),
            ("value", &self.value),
        ] {
            if let Some(v) = value {
                check_depth(v).map_err(|e| format!("`{name}` is {e}"))?;
            }
        }
        Ok(())
    }
}

/// Tells `from: null` (present, null) apart from a missing `from`.
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Change {
    /// Reads one change from its JSON (or YAML-turned-JSON) form.
    pub fn from_json(index: usize, value: &Value) -> Result<Self, ChangeError> {
        let invalid = |message: String| ChangeError::Invalid { index, message };
        if !value.is_object() {
            return Err(invalid(format!(
                "a change is an object with a `path`, found {}",
                type_name(value)
            )));
        }
        let mut wire = WireChange::deserialize(value).map_err(|e| invalid(e.to_string()))?;
        wire.check_limits().map_err(invalid)?;
        let path = Path::parse(&wire.path).map_err(|e| invalid(e.to_string()))?;
        match wire.op.take() {
            None => seed_form(wire, path).map_err(invalid),
            Some(op) => rfc_form(&op, wire, path).map_err(invalid),
        }
    }

    /// Reads a list of changes: a JSON array, or an object with a `changes` array (the
    /// seed's `sync_update`, optionally wrapped in `{sync_update: ...}`).
    pub fn list_from_json(value: &Value) -> Result<Vec<Self>, ChangeError> {
        let list = match value {
            Value::Array(items) => items,
            Value::Object(map) => {
                let inner = map.get("sync_update").unwrap_or(value);
                match inner.get("changes") {
                    Some(Value::Array(items)) => items,
                    _ => {
                        return Err(ChangeError::Invalid {
                            index: 0,
                            message: "expected a list of changes or an object with `changes:`"
                                .into(),
                        })
                    }
                }
            }
            other => {
                return Err(ChangeError::Invalid {
                    index: 0,
                    message: format!("expected a list of changes, found {}", type_name(other)),
                })
            }
        };
        list.iter()
            .enumerate()
            .map(|(i, v)| Change::from_json(i, v))
            .collect()
    }

    /// The wire form (seed form where it applies, RFC 6902 otherwise).
    pub fn to_json(&self) -> Value {
        let mut wire = WireChange {
            path: self.path.to_string(),
            ..WireChange::default()
        };
        match &self.expect {
            Some(Expect::Value(v)) if !matches!(self.op, Op::Move { .. } | Op::Copy { .. }) => {
                wire.from = Some(v.clone())
            }
            Some(Expect::Absent) => wire.absent = true,
            _ => {}
        }
        match &self.op {
            Op::Set(v) => wire.to = Some(v.clone()),
            Op::Remove if self.expect.is_some() => wire.remove = true,
            Op::Remove => wire.op = Some("remove".into()),
            Op::Add(v) => {
                wire.op = Some("add".into());
                wire.value = Some(v.clone());
            }
            Op::Replace(v) => {
                wire.op = Some("replace".into());
                wire.value = Some(v.clone());
            }
            Op::Test(v) => {
                wire.op = Some("test".into());
                wire.value = Some(v.clone());
            }
            Op::Move { from } => {
                wire.op = Some("move".into());
                wire.from = Some(Value::String(from.to_string()));
            }
            Op::Copy { from } => {
                wire.op = Some("copy".into());
                wire.from = Some(Value::String(from.to_string()));
            }
        }
        serde_json::to_value(wire).unwrap_or(Value::Null)
    }
}

impl Serialize for Change {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Strict: `.nan` and `.inf` are refused here rather than read as `null`.
        let value = StrictValue::deserialize(d)?.0;
        Change::from_json(0, &value).map_err(serde::de::Error::custom)
    }
}

fn seed_form(wire: WireChange, path: Path) -> Result<Change, String> {
    if wire.value.is_some() {
        return Err("`value` belongs to the RFC 6902 form; add `op:` or use `to:`".into());
    }
    let expect = match (wire.absent, wire.from) {
        (true, None | Some(Value::Null)) => Some(Expect::Absent),
        (true, Some(_)) => {
            return Err("`absent: true` cannot be combined with a `from` value".into())
        }
        (false, Some(v)) => Some(Expect::Value(v)),
        (false, None) => None,
    };
    let op = match (wire.to, wire.remove) {
        (Some(_), true) => {
            return Err("a change has either `to:` or `remove: true`, not both".into())
        }
        (Some(to), false) => Op::Set(to),
        (None, true) => Op::Remove,
        (None, false) => {
            return Err("missing `to:` (or `op:` for the RFC 6902 form, or `remove: true`)".into())
        }
    };
    Ok(Change { path, op, expect })
}

fn rfc_form(op: &str, wire: WireChange, path: Path) -> Result<Change, String> {
    if wire.to.is_some() || wire.remove || wire.absent {
        return Err(format!(
            "`to`, `remove` and `absent` belong to the seed form, not to `op: {op}`"
        ));
    }
    let need_value = |v: Option<Value>| v.ok_or_else(|| format!("`op: {op}` needs a `value`"));
    let from_path = |v: Option<Value>| match v {
        Some(Value::String(s)) => Path::parse(&s).map_err(|e| format!("`from`: {e}")),
        Some(_) => Err(format!("`from` of `op: {op}` is a path string")),
        None => Err(format!("`op: {op}` needs a `from` path")),
    };
    let no_from = |v: &Option<Value>| {
        if v.is_some() {
            Err(format!(
                "`op: {op}` takes no `from` (did you mean the seed form `{{path, from, to}}`?)"
            ))
        } else {
            Ok(())
        }
    };
    let op = match op {
        "add" => {
            no_from(&wire.from)?;
            Op::Add(need_value(wire.value)?)
        }
        "remove" => {
            no_from(&wire.from)?;
            Op::Remove
        }
        "replace" => {
            no_from(&wire.from)?;
            Op::Replace(need_value(wire.value)?)
        }
        "test" => {
            no_from(&wire.from)?;
            Op::Test(need_value(wire.value)?)
        }
        "move" => Op::Move {
            from: from_path(wire.from)?,
        },
        "copy" => Op::Copy {
            from: from_path(wire.from)?,
        },
        other => {
            return Err(format!(
                "unknown op {other:?} (expected add, remove, replace, move, copy or test)"
            ))
        }
    };
    Ok(Change {
        path,
        op,
        expect: None,
    })
}

/// "an object", "a string", ... for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_form_parses_with_and_without_from() {
        let c = Change::from_json(
            0,
            &json!({"path": "project_state.active_tasks[0].status", "from": "in_progress", "to": "completed"}),
        )
        .unwrap();
        assert_eq!(c.op, Op::Set(json!("completed")));
        assert_eq!(c.expect, Some(Expect::Value(json!("in_progress"))));
        let c = Change::from_json(0, &json!({"path": "a", "from": null, "to": 1})).unwrap();
        assert_eq!(c.expect, Some(Expect::Value(Value::Null)));
        let c = Change::from_json(0, &json!({"path": "a", "absent": true, "to": 1})).unwrap();
        assert_eq!(c.expect, Some(Expect::Absent));
        let c = Change::from_json(0, &json!({"path": "a", "to": 1})).unwrap();
        assert_eq!(c.expect, None);
    }

    #[test]
    fn rfc_ops_parse() {
        for (op, extra) in [
            ("add", json!({"value": 1})),
            ("remove", json!({})),
            ("replace", json!({"value": 1})),
            ("test", json!({"value": 1})),
            ("move", json!({"from": "/b"})),
            ("copy", json!({"from": "b.c"})),
        ] {
            let mut v = json!({"op": op, "path": "/a"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let c = Change::from_json(0, &v).unwrap();
            assert_eq!(c.op_name(), op);
            assert_eq!(Change::from_json(0, &c.to_json()).unwrap(), c);
        }
    }

    #[test]
    fn bad_changes_say_why() {
        let e = Change::from_json(3, &json!({"op": "frobnicate", "path": "/a"})).unwrap_err();
        assert!(e.to_string().contains("change #3"), "{e}");
        assert!(e.to_string().contains("unknown op \"frobnicate\""), "{e}");
        let e = Change::from_json(0, &json!({"op": "add", "path": "/a"})).unwrap_err();
        assert!(e.to_string().contains("needs a `value`"), "{e}");
        let e = Change::from_json(0, &json!({"path": "a..b", "to": 1})).unwrap_err();
        assert!(e.to_string().contains("bad path"), "{e}");
        let e = Change::from_json(0, &json!({"path": "a", "too": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(Change::from_json(0, &json!("a=1")).is_err());
        assert!(Change::from_json(0, &json!({"path": "a"})).is_err());
    }

    #[test]
    fn list_accepts_the_seed_sync_update() {
        let v = json!({"sync_update": {"operation": "push", "agent": "builder", "changes": [
            {"path": "a", "to": 1}, {"op": "remove", "path": "/b"}]}});
        assert_eq!(Change::list_from_json(&v).unwrap().len(), 2);
        assert!(Change::list_from_json(&json!(5)).is_err());
    }
}
