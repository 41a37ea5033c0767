//! What a pull or an event stream shows of a document: the requested sections (with
//! their nesting kept), the op-log edits that touch them, and the collapsed delta.
//!
//! Sections are dotted paths of object keys (`project_state`, `decisions_log.recent`).
//! A delta is the op-log edits after `since`, in order, that touch a section; an edit is
//! dropped when a later edit of the same delta replaces its path (or a prefix of it)
//! wholesale, and only when the collapsed list still turns the document at `since` into
//! exactly the document at the new revision, which [`collapse_verified`] checks.

use ctxsync_core::apply::{apply_edit, Edit, EditOp};
use ctxsync_core::{checksum, Path, Segment};
use serde_json::{Map, Value};

use crate::errors::ApiError;

/// Parsed `sections=` of a request; empty means the whole document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sections(Vec<Path>);

impl Sections {
    /// Parses a comma-separated list of dotted key paths.
    pub fn parse(spec: Option<&str>) -> Result<Self, ApiError> {
        let Some(spec) = spec else {
            return Ok(Self::default());
        };
        let mut out = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let path = Path::parse(part).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if path.is_root() {
                return Ok(Self::default());
            }
            if !path.segments().iter().all(|s| matches!(s, Segment::Key(_))) {
                return Err(ApiError::bad_request(format!(
                    "section {part:?} must name object members only (like decisions_log.recent)"
                )));
            }
            out.push(path);
        }
        Ok(Self(out))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    pub fn paths(&self) -> &[Path] {
        &self.0
    }

    /// True when a write at `path` can change what the sections show.
    pub fn touches(&self, path: &Path) -> bool {
        self.is_all() || self.0.iter().any(|s| s.overlaps(path))
    }

    /// The document cut down to the sections, keeping their nesting. Missing sections
    /// are left out.
    pub fn project(&self, doc: &Value) -> Value {
        if self.is_all() {
            return doc.clone();
        }
        let mut out = Value::Object(Map::new());
        for section in &self.0 {
            let Some(value) = ctxsync_core::get(doc, section) else {
                continue;
            };
            let mut target = &mut out;
            let segments = section.segments();
            for (i, segment) in segments.iter().enumerate() {
                let Segment::Key(key) = segment else { break };
                let Value::Object(map) = target else { break };
                if i + 1 == segments.len() {
                    map.insert(key.clone(), value.clone());
                    break;
                }
                target = map
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
        out
    }

    /// The edits that touch the sections, in order.
    pub fn filter<'a>(&self, edits: impl IntoIterator<Item = &'a Edit>) -> Vec<Edit> {
        edits
            .into_iter()
            .filter(|e| self.touches(&e.path))
            .cloned()
            .collect()
    }
}

/// True when `later` writes the whole value at `earlier`'s path or above it, so that
/// `earlier` is a candidate to drop.
fn overwrites(later: &Edit, earlier: &Edit) -> bool {
    if !matches!(later.op, EditOp::Replace | EditOp::Add) {
        return false;
    }
    if earlier.path == later.path {
        // Same path: only a replace after a replace keeps positions and key order.
        earlier.op == EditOp::Replace && later.op == EditOp::Replace
    } else {
        earlier.path.starts_with(&later.path)
    }
}

/// The candidate collapse: drops every edit that a later edit overwrites wholesale.
pub fn collapse(edits: &[Edit]) -> Vec<Edit> {
    let mut keep = vec![true; edits.len()];
    for (i, earlier) in edits.iter().enumerate() {
        if edits[i + 1..]
            .iter()
            .any(|later| overwrites(later, earlier))
        {
            keep[i] = false;
        }
    }
    edits
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(e, _)| e.clone())
        .collect()
}

/// Collapses `edits` if that is exact: `base` is the document at `since`, `expected` the
/// checksum at the new revision. Returns the edits unchanged when nothing can be
/// dropped or the collapsed list would not give the same document.
pub fn collapse_verified(edits: Vec<Edit>, base: Option<Value>, expected: &str) -> Vec<Edit> {
    let collapsed = collapse(&edits);
    if collapsed.len() == edits.len() {
        return edits;
    }
    let Some(mut doc) = base else {
        return edits;
    };
    let exact =
        collapsed.iter().all(|e| apply_edit(&mut doc, e).is_ok()) && checksum(&doc) == expected;
    if exact {
        collapsed
    } else {
        edits
    }
}

/// True when the candidate collapse would drop something (so the caller knows whether it
/// needs the base document to verify).
pub fn would_collapse(edits: &[Edit]) -> bool {
    edits.iter().enumerate().any(|(i, earlier)| {
        edits[i + 1..]
            .iter()
            .any(|later| overwrites(later, earlier))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctxsync_core::{apply_change, Change};
    use proptest::prelude::*;
    use serde_json::json;

    fn sections(s: &str) -> Sections {
        Sections::parse(Some(s)).unwrap()
    }

    #[test]
    fn project_keeps_nesting_and_skips_missing() {
        let doc = json!({"a": {"b": 1, "c": 2}, "d": [1], "e": 3});
        assert_eq!(
            sections("a.b,d,nope.x").project(&doc),
            json!({"a": {"b": 1}, "d": [1]})
        );
        assert_eq!(Sections::parse(None).unwrap().project(&doc), doc);
        assert!(Sections::parse(Some("a[0]")).is_err());
        assert!(Sections::parse(Some("a..b")).is_err());
    }

    #[test]
    fn touches_is_overlap() {
        let s = sections("project_state.active_tasks");
        assert!(s.touches(&Path::parse("project_state").unwrap()));
        assert!(s.touches(&Path::parse("project_state.active_tasks[id=t].status").unwrap()));
        assert!(!s.touches(&Path::parse("project_state.blocked_tasks").unwrap()));
    }

    fn run(doc: &mut Value, change: Value) -> Vec<Edit> {
        apply_change(doc, &Change::from_json(0, &change).unwrap()).unwrap()
    }

    #[test]
    fn replace_after_replace_collapses() {
        let base = json!({"a": {"b": 1}, "l": [{"id": "x", "v": 1}]});
        let mut doc = base.clone();
        let mut edits = run(&mut doc, json!({"path": "a.b", "to": 2}));
        edits.extend(run(&mut doc, json!({"path": "l[id=x].v", "to": 2})));
        edits.extend(run(&mut doc, json!({"path": "a.b", "to": 3})));
        edits.extend(run(&mut doc, json!({"path": "a", "to": {"z": 1}})));
        let collapsed = collapse_verified(edits.clone(), Some(base.clone()), &checksum(&doc));
        assert_eq!(collapsed.len(), 2, "{collapsed:?}");
        let mut replay = base;
        for e in &collapsed {
            apply_edit(&mut replay, e).unwrap();
        }
        assert_eq!(replay, doc);
    }

    /// A random sequence of changes on a small document: whatever the collapse drops,
    /// applying the delta to the document at `since` gives the document at the end.
    fn change_strategy() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec!["a", "b", "c"]);
        let id = prop::sample::select(vec!["t1", "t2", "t3", "t4"]);
        prop_oneof![
            (key.clone(), 0..5i64).prop_map(|(k, v)| json!({"path": format!("o.{k}"), "to": v})),
            (0..5i64).prop_map(|v| json!({"path": "o", "to": {"a": v}})),
            (id.clone(), 0..5i64)
                .prop_map(|(i, v)| json!({"path": "l[-]", "to": {"id": i, "v": v}})),
            (id.clone(), 0..5i64)
                .prop_map(|(i, v)| json!({"path": format!("l[id={i}].v"), "to": v})),
            id.clone()
                .prop_map(|i| json!({"op": "remove", "path": format!("l[id={i}]")})),
            (0..3usize, 0..5i64).prop_map(|(n, v)| json!({"path": format!("l[{n}].v"), "to": v})),
            (0..3usize).prop_map(|n| json!({"op": "remove", "path": format!("/l/{n}")})),
            (0..3usize, 0..5i64).prop_map(
                |(n, v)| json!({"op": "add", "path": format!("/l/{n}"), "value": {"v": v}})
            ),
            (0..5i64).prop_map(|v| json!({"path": "l", "to": [{"id": "t1", "v": v}]})),
            key.prop_map(|k| json!({"op": "remove", "path": format!("/o/{k}")})),
        ]
    }

    proptest! {
        #[test]
        fn delta_replays_exactly(changes in prop::collection::vec(change_strategy(), 1..25), split in 0usize..25) {
            let mut doc = json!({"o": {"a": 0}, "l": [{"id": "t1", "v": 0}, {"v": 9}]});
            let mut log: Vec<Edit> = Vec::new();
            let mut at_since = None;
            let split = split.min(changes.len());
            for (i, c) in changes.iter().enumerate() {
                if i == split {
                    at_since = Some((doc.clone(), log.len()));
                }
                if let Ok(change) = Change::from_json(0, c) {
                    if let Ok(edits) = apply_change(&mut doc, &change) {
                        log.extend(edits);
                    }
                }
            }
            let (base, from) = at_since.unwrap_or((doc.clone(), log.len()));
            let delta = collapse_verified(log[from..].to_vec(), Some(base.clone()), &checksum(&doc));
            prop_assert!(delta.len() <= log.len() - from);
            let mut replay = base;
            for e in &delta {
                prop_assert!(apply_edit(&mut replay, e).is_ok());
            }
            prop_assert_eq!(checksum(&replay), checksum(&doc));
            prop_assert_eq!(replay, doc);
        }
    }
}
