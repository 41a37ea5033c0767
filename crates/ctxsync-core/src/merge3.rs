//! Three-way merge of documents.
//!
//! `ctxsync sync` pulls what other agents pushed ("theirs") into an agent's working copy
//! ("mine"), both descended from the revision the agent last pulled ("base"). Per path:
//! a side that did not change yields to the side that did; equal changes are taken once;
//! different changes are a *true* conflict, reported with all three values and settled
//! in `merged` by [`Prefer`]. Objects merge key by key and lists whose elements carry a
//! unique `id` merge element by element; every other ambiguity is a conflict, because a
//! silent guess about what an agent meant is worse than asking.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::diff::{id_list, select_id};
use crate::path::Path;

/// Which side a true conflict is settled for in [`Merge::merged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// The working copy's value.
    Mine,
    /// The value other agents pushed.
    Theirs,
}

/// A path both sides changed differently. `None` means absent on that side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeConflict {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mine: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub theirs: Option<Value>,
}

/// The merged document and the conflicts settled by [`Prefer`] on the way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merge {
    pub merged: Value,
    pub conflicts: Vec<MergeConflict>,
}

/// Merges `mine` and `theirs`, both descended from `base`.
pub fn merge3(base: &Value, mine: &Value, theirs: &Value, prefer: Prefer) -> Merge {
    let mut conflicts = Vec::new();
    let merged = merge_value(
        &Path::root(),
        Some(base),
        Some(mine),
        Some(theirs),
        prefer,
        &mut conflicts,
    )
    // Unreachable with both sides present (every branch returns one of them or a
    // merge of them), but never panic: fall back to the preferred side.
    .unwrap_or_else(|| match prefer {
        Prefer::Mine => mine.clone(),
        Prefer::Theirs => theirs.clone(),
    });
    Merge { merged, conflicts }
}

/// The merged value at `path`, `None` for "absent".
fn merge_value(
    path: &Path,
    base: Option<&Value>,
    mine: Option<&Value>,
    theirs: Option<&Value>,
    prefer: Prefer,
    conflicts: &mut Vec<MergeConflict>,
) -> Option<Value> {
    if mine == theirs {
        return mine.cloned();
    }
    if mine == base {
        return theirs.cloned();
    }
    if theirs == base {
        return mine.cloned();
    }
    match (base, mine, theirs) {
        (Some(Value::Object(b)), Some(Value::Object(m)), Some(Value::Object(t))) => {
            return Some(Value::Object(merge_objects(
                path, b, m, t, prefer, conflicts,
            )));
        }
        (Some(Value::Array(b)), Some(Value::Array(m)), Some(Value::Array(t))) => {
            if let Some(merged) = merge_arrays(path, b, m, t, prefer, conflicts) {
                return Some(Value::Array(merged));
            }
        }
        _ => {}
    }
    conflicts.push(MergeConflict {
        path: path.to_string(),
        base: base.cloned(),
        mine: mine.cloned(),
        theirs: theirs.cloned(),
    });
    match prefer {
        Prefer::Mine => mine.cloned(),
        Prefer::Theirs => theirs.cloned(),
    }
}

fn merge_objects(
    path: &Path,
    base: &Map<String, Value>,
    mine: &Map<String, Value>,
    theirs: &Map<String, Value>,
    prefer: Prefer,
    conflicts: &mut Vec<MergeConflict>,
) -> Map<String, Value> {
    // Base keys first so surviving members keep their place, then theirs' new keys, then
    // mine's (the same order as list additions).
    let mut keys: Vec<&String> = base.keys().collect();
    keys.extend(theirs.keys().filter(|k| !base.contains_key(*k)));
    keys.extend(
        mine.keys()
            .filter(|k| !base.contains_key(*k) && !theirs.contains_key(*k)),
    );
    let mut out = Map::new();
    for key in keys {
        let merged = merge_value(
            &path.key(key),
            base.get(key),
            mine.get(key),
            theirs.get(key),
            prefer,
            conflicts,
        );
        if let Some(value) = merged {
            out.insert(key.clone(), value);
        }
    }
    out
}

/// Merges two changed lists, or `None` when only a whole-list conflict is honest.
fn merge_arrays(
    path: &Path,
    base: &[Value],
    mine: &[Value],
    theirs: &[Value],
    prefer: Prefer,
    conflicts: &mut Vec<MergeConflict>,
) -> Option<Vec<Value>> {
    if let (Some(base_ids), Some(mine_ids), Some(theirs_ids)) =
        (id_list(base), id_list(mine), id_list(theirs))
    {
        // A side that reordered the elements it kept means "this order"; merging by id
        // would drop that, so it is a conflict on the whole list.
        if reordered(&base_ids, &mine_ids) || reordered(&base_ids, &theirs_ids) {
            return None;
        }
        let base_by_id: HashMap<&str, &Value> =
            base_ids.iter().map(String::as_str).zip(base).collect();
        let mine_by_id: HashMap<&str, &Value> =
            mine_ids.iter().map(String::as_str).zip(mine).collect();
        let in_theirs: HashSet<&str> = theirs_ids.iter().map(String::as_str).collect();
        let mut out = Vec::with_capacity(theirs.len().max(mine.len()));
        for (id, element) in theirs_ids.iter().zip(theirs) {
            let merged = merge_value(
                &path.child(select_id(id)),
                base_by_id.get(id.as_str()).copied(),
                mine_by_id.get(id.as_str()).copied(),
                Some(element),
                prefer,
                conflicts,
            );
            out.extend(merged);
        }
        for (id, element) in mine_ids.iter().zip(mine) {
            if in_theirs.contains(id.as_str()) {
                continue;
            }
            let merged = merge_value(
                &path.child(select_id(id)),
                base_by_id.get(id.as_str()).copied(),
                Some(element),
                None,
                prefer,
                conflicts,
            );
            out.extend(merged);
        }
        return Some(out);
    }
    // Plain lists: only "both appended" has one obvious answer.
    let n = base.len();
    if mine.len() >= n && theirs.len() >= n && mine[..n] == *base && theirs[..n] == *base {
        let mut out = base.to_vec();
        out.extend_from_slice(&theirs[n..]);
        out.extend_from_slice(&mine[n..]);
        return Some(out);
    }
    None
}

/// True when `side` keeps some of `base`'s ids in a different relative order.
fn reordered(base_ids: &[String], side_ids: &[String]) -> bool {
    let in_side: HashSet<&str> = side_ids.iter().map(String::as_str).collect();
    let in_base: HashSet<&str> = base_ids.iter().map(String::as_str).collect();
    let kept_in_base = base_ids.iter().filter(|id| in_side.contains(id.as_str()));
    let kept_in_side = side_ids.iter().filter(|id| in_base.contains(id.as_str()));
    !kept_in_base.eq(kept_in_side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merge(base: Value, mine: Value, theirs: Value, prefer: Prefer) -> Merge {
        merge3(&base, &mine, &theirs, prefer)
    }

    #[test]
    fn one_sided_and_equal_changes_merge_cleanly() {
        let m = merge(
            json!({"a": 1, "b": 1, "c": 1, "d": 1}),
            json!({"a": 2, "b": 1, "c": 3, "e": 1}),
            json!({"a": 1, "b": 2, "c": 3, "d": 1}),
            Prefer::Theirs,
        );
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        assert_eq!(m.merged, json!({"a": 2, "b": 2, "c": 3, "e": 1}));
    }

    #[test]
    fn both_changed_differently_is_a_conflict_settled_by_prefer() {
        let (b, mi, th) = (
            json!({"s": {"x": "todo", "y": 1}}),
            json!({"s": {"x": "done", "y": 1}}),
            json!({"s": {"x": "blocked", "y": 2}}),
        );
        let m = merge(b.clone(), mi.clone(), th.clone(), Prefer::Mine);
        assert_eq!(m.merged, json!({"s": {"x": "done", "y": 2}}));
        assert_eq!(
            m.conflicts,
            vec![MergeConflict {
                path: "s.x".into(),
                base: Some(json!("todo")),
                mine: Some(json!("done")),
                theirs: Some(json!("blocked")),
            }]
        );
        let t = merge(b, mi, th, Prefer::Theirs);
        assert_eq!(t.merged, json!({"s": {"x": "blocked", "y": 2}}));
        assert_eq!(t.conflicts, m.conflicts);
    }

    #[test]
    fn both_added_same_key_differently_is_a_conflict() {
        let m = merge(json!({}), json!({"k": {"a": 1}}), json!({"k": {"b": 2}}), Prefer::Theirs);
        assert_eq!(m.merged, json!({"k": {"b": 2}}));
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].path, "k");
        assert_eq!(m.conflicts[0].base, None);
        // The same addition on both sides is not a conflict.
        let m = merge(json!({}), json!({"k": 1}), json!({"k": 1}), Prefer::Theirs);
        assert!(m.conflicts.is_empty());
        assert_eq!(m.merged, json!({"k": 1}));
    }

    #[test]
    fn removed_vs_unchanged_is_removed_and_removed_vs_modified_conflicts() {
        let m = merge(json!({"a": 1, "b": 1}), json!({"b": 1}), json!({"a": 1, "b": 1}), Prefer::Theirs);
        assert!(m.conflicts.is_empty());
        assert_eq!(m.merged, json!({"b": 1}));

        let base = json!({"a": {"v": 1}});
        let m = merge(base.clone(), json!({}), json!({"a": {"v": 2}}), Prefer::Mine);
        assert_eq!(m.merged, json!({}));
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].mine, None);
        assert_eq!(m.conflicts[0].theirs, Some(json!({"v": 2})));
        let t = merge(base, json!({}), json!({"a": {"v": 2}}), Prefer::Theirs);
        assert_eq!(t.merged, json!({"a": {"v": 2}}));
    }

    #[test]
    fn id_lists_merge_by_id() {
        let base = json!({"t": [{"id": "a", "s": 1}, {"id": "b", "s": 1}, {"id": "c", "s": 1}]});
        let mine = json!({"t": [{"id": "a", "s": 2}, {"id": "b", "s": 1}, {"id": "c", "s": 1}, {"id": "m", "s": 0}]});
        let theirs = json!({"t": [{"id": "a", "s": 1}, {"id": "c", "s": 1}, {"id": "x", "s": 0}]});
        let m = merge(base, mine, theirs, Prefer::Theirs);
        assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        assert_eq!(
            m.merged,
            json!({"t": [{"id": "a", "s": 2}, {"id": "c", "s": 1}, {"id": "x", "s": 0}, {"id": "m", "s": 0}]})
        );
    }

    #[test]
    fn id_list_remove_vs_modify_conflicts_on_the_element() {
        let base = json!({"t": [{"id": "a", "s": 1}, {"id": "b", "s": 1}]});
        let mine = json!({"t": [{"id": "b", "s": 1}]});
        let theirs = json!({"t": [{"id": "a", "s": 5}, {"id": "b", "s": 2}]});
        let m = merge(base.clone(), mine.clone(), theirs.clone(), Prefer::Mine);
        assert_eq!(m.merged, json!({"t": [{"id": "b", "s": 2}]}));
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].path, "t[id=a]");
        let t = merge(base, mine, theirs, Prefer::Theirs);
        assert_eq!(t.merged, json!({"t": [{"id": "a", "s": 5}, {"id": "b", "s": 2}]}));
    }

    #[test]
    fn id_list_reorder_against_a_change_is_a_whole_list_conflict() {
        let base = json!({"t": [{"id": "a"}, {"id": "b"}]});
        let mine = json!({"t": [{"id": "b"}, {"id": "a"}]});
        let theirs = json!({"t": [{"id": "a", "s": 1}, {"id": "b"}]});
        let m = merge(base, mine.clone(), theirs, Prefer::Mine);
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].path, "t");
        assert_eq!(m.merged, mine);
    }

    #[test]
    fn plain_lists_merge_only_when_both_appended() {
        let m = merge(json!({"l": ["a"]}), json!({"l": ["a", "m"]}), json!({"l": ["a", "t"]}), Prefer::Mine);
        assert!(m.conflicts.is_empty());
        assert_eq!(m.merged, json!({"l": ["a", "t", "m"]}));

        let m = merge(json!({"l": ["a", "b"]}), json!({"l": ["b"]}), json!({"l": ["a", "b", "c"]}), Prefer::Theirs);
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].path, "l");
        assert_eq!(m.merged, json!({"l": ["a", "b", "c"]}));
    }

    #[test]
    fn type_change_against_an_edit_conflicts() {
        let m = merge(json!({"a": {"x": 1}}), json!({"a": [1]}), json!({"a": {"x": 2}}), Prefer::Theirs);
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.merged, json!({"a": {"x": 2}}));
    }

    #[test]
    fn prefer_and_conflicts_serialize() {
        assert_eq!(serde_json::to_value(Prefer::Mine).unwrap(), json!("mine"));
        assert_eq!(serde_json::from_value::<Prefer>(json!("theirs")).unwrap(), Prefer::Theirs);
        let c = MergeConflict {
            path: "a".into(),
            base: None,
            mine: Some(json!(1)),
            theirs: Some(Value::Null),
        };
        assert_eq!(serde_json::to_value(c).unwrap(), json!({"path": "a", "mine": 1, "theirs": null}));
    }
}
