//! Document diff: the changes that turn one document into another.
//!
//! [`diff`] is what `ctxsync sync` pushes: it compares the agent's working copy with the
//! base it pulled and emits seed-form changes guarded by `from` tests, so the server can
//! tell "I changed this" from "I changed this, assuming it still was that". Lists whose
//! elements all carry a unique `id` are compared element by element and addressed as
//! `[id=...]`, so a concurrent insert elsewhere in the list never shifts a target.
//!
//! The one promise that beats everything else is exactness: applying the changes to
//! `base` gives `mine`, including the order of every list. Where a granular description
//! could not keep that promise (a reordered list, an insert in the middle), the whole list
//! is set instead.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::change::{Change, Expect, Op};
use crate::path::{element_id, Path, Segment};

/// The changes that turn `base` into `mine`, in an order in which they apply.
///
/// Both are expected to be objects (a document root is always one). If either is not,
/// the answer is one root `set`, which [`crate::apply_change`] refuses when `mine` is not
/// an object: an error is better than a diff that silently does not reproduce `mine`.
pub fn diff(base: &Value, mine: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    match (base, mine) {
        (Value::Object(_), Value::Object(_)) => diff_value(&Path::root(), base, mine, &mut out),
        _ if base == mine => {}
        _ => out
            .push(Change::set(Path::root(), mine.clone()).with_expect(Expect::Value(base.clone()))),
    }
    out
}

fn diff_value(path: &Path, base: &Value, mine: &Value, out: &mut Vec<Change>) {
    if base == mine {
        return;
    }
    match (base, mine) {
        (Value::Object(b), Value::Object(m)) => diff_objects(path, b, m, out),
        (Value::Array(b), Value::Array(m)) => diff_arrays(path, b, m, out),
        _ => out.push(set_from(path, base, mine)),
    }
}

/// `set path: mine` guarded by `from: base`.
fn set_from(path: &Path, base: &Value, mine: &Value) -> Change {
    Change::set(path.clone(), mine.clone()).with_expect(Expect::Value(base.clone()))
}

fn diff_objects(
    path: &Path,
    base: &Map<String, Value>,
    mine: &Map<String, Value>,
    out: &mut Vec<Change>,
) {
    for (key, old) in base {
        match mine.get(key) {
            Some(new) => diff_value(&path.key(key), old, new, out),
            None => out.push(Change {
                path: path.key(key),
                op: Op::Remove,
                expect: Some(Expect::Value(old.clone())),
            }),
        }
    }
    for (key, new) in mine {
        if !base.contains_key(key) {
            out.push(Change::set(path.key(key), new.clone()).with_expect(Expect::Absent));
        }
    }
}

/// The ids of a list whose elements are all objects with a unique scalar `id`.
pub(crate) fn id_list(items: &[Value]) -> Option<Vec<String>> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        if !item.is_object() {
            return None;
        }
        let id = element_id(item)?;
        if !seen.insert(id.clone()) {
            return None;
        }
        ids.push(id);
    }
    Some(ids)
}

/// The canonical segment of the element with this id.
pub(crate) fn select_id(id: &str) -> Segment {
    Segment::Select {
        field: "id".into(),
        value: id.to_owned(),
    }
}

fn diff_arrays(path: &Path, base: &[Value], mine: &[Value], out: &mut Vec<Change>) {
    if let (Some(base_ids), Some(mine_ids)) = (id_list(base), id_list(mine)) {
        if diff_id_arrays(path, base, &base_ids, mine, &mine_ids, out) {
            return;
        }
    } else if mine.len() > base.len()
        && mine[..base.len()] == *base
        && appends_keep_ids(base, &mine[base.len()..])
    {
        for item in &mine[base.len()..] {
            out.push(Change::set(path.child(Segment::Append), item.clone()));
        }
        return;
    }
    out.push(
        Change::set(path.clone(), Value::Array(mine.to_vec()))
            .with_expect(Expect::Value(Value::Array(base.to_vec()))),
    );
}

/// True when appending `added` one by one to `base` cannot be refused for a duplicate
/// `id` (apply refuses an element whose id is already in the list).
fn appends_keep_ids(base: &[Value], added: &[Value]) -> bool {
    let mut seen: HashSet<String> = base.iter().filter_map(element_id).collect();
    added
        .iter()
        .filter_map(element_id)
        .all(|id| seen.insert(id))
}

/// Element-wise diff of two id lists; false (and nothing emitted) when the result would
/// not keep `mine`'s order: common elements reordered, or an element added before the
/// last common one (appending is the only position-free way to add).
fn diff_id_arrays(
    path: &Path,
    base: &[Value],
    base_ids: &[String],
    mine: &[Value],
    mine_ids: &[String],
    out: &mut Vec<Change>,
) -> bool {
    let in_base: HashSet<&str> = base_ids.iter().map(String::as_str).collect();
    let in_mine: HashSet<&str> = mine_ids.iter().map(String::as_str).collect();
    let common_in_base: Vec<&str> = base_ids
        .iter()
        .map(String::as_str)
        .filter(|id| in_mine.contains(id))
        .collect();
    let common_in_mine: Vec<&str> = mine_ids
        .iter()
        .map(String::as_str)
        .filter(|id| in_base.contains(id))
        .collect();
    if common_in_base != common_in_mine {
        return false;
    }
    let last_common = mine_ids
        .iter()
        .rposition(|id| in_base.contains(id.as_str()));
    let first_added = mine_ids
        .iter()
        .position(|id| !in_base.contains(id.as_str()));
    if matches!((last_common, first_added), (Some(last), Some(first)) if first < last) {
        return false;
    }
    // Removals first: they are addressed by id, so they shift nothing the later changes
    // name, and appends then land after exactly the surviving common elements.
    for (id, old) in base_ids.iter().zip(base) {
        if !in_mine.contains(id.as_str()) {
            out.push(Change {
                path: path.child(select_id(id)),
                op: Op::Remove,
                expect: Some(Expect::Value(old.clone())),
            });
        }
    }
    for (id, new) in mine_ids.iter().zip(mine) {
        // Common elements keep their place; only their insides can differ.
        let Some(pos) = base_ids.iter().position(|b| b == id) else {
            continue;
        };
        diff_value(&path.child(select_id(id)), &base[pos], new, out);
    }
    for (id, new) in mine_ids.iter().zip(mine) {
        if !in_base.contains(id.as_str()) {
            out.push(Change::set(path.child(Segment::Append), new.clone()));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::apply_all;
    use serde_json::json;

    /// Applies the diff and checks it reproduces `mine` exactly, list order included.
    fn roundtrip(base: &Value, mine: &Value) -> Vec<Change> {
        let changes = diff(base, mine);
        let mut doc = base.clone();
        apply_all(&mut doc, &changes).unwrap();
        assert_eq!(&doc, mine);
        assert_eq!(
            crate::checksum::canonical_json(&doc),
            crate::checksum::canonical_json(mine)
        );
        changes
    }

    fn paths(changes: &[Change]) -> Vec<String> {
        changes.iter().map(|c| c.path.to_string()).collect()
    }

    #[test]
    fn equal_documents_have_no_changes() {
        let doc = json!({"a": {"b": [1, 2]}, "c": [{"id": "x"}]});
        assert!(diff(&doc, &doc).is_empty());
    }

    #[test]
    fn objects_diff_by_key_with_tests() {
        let base = json!({"a": 1, "b": {"c": "x", "d": true}, "gone": [1]});
        let mine = json!({"a": 2, "b": {"c": "x", "d": false, "e": null}, "new": {"k": 1}});
        let changes = roundtrip(&base, &mine);
        assert_eq!(paths(&changes), ["a", "b.d", "b.e", "gone", "new"]);
        assert_eq!(changes[0].expect, Some(Expect::Value(json!(1))));
        assert_eq!(changes[2].expect, Some(Expect::Absent));
        assert_eq!(changes[3].op, Op::Remove);
        assert_eq!(changes[3].expect, Some(Expect::Value(json!([1]))));
        assert_eq!(changes[4].expect, Some(Expect::Absent));
    }

    #[test]
    fn type_change_is_one_set() {
        let changes = roundtrip(&json!({"a": {"b": 1}}), &json!({"a": [1]}));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].op, Op::Set(json!([1])));
        assert_eq!(changes[0].expect, Some(Expect::Value(json!({"b": 1}))));
    }

    #[test]
    fn id_array_element_edits_are_addressed_by_id() {
        let base = json!({"t": [{"id": "t1", "s": "todo"}, {"id": "t2", "s": "todo"}, {"id": 3, "s": "x"}]});
        let mine = json!({"t": [{"id": "t1", "s": "done"}, {"id": 3, "s": "x"}, {"id": "t4", "s": "new"}]});
        let changes = roundtrip(&base, &mine);
        assert_eq!(paths(&changes), ["t[id=t2]", "t[id=t1].s", "t[-]"]);
        assert_eq!(changes[0].op, Op::Remove);
        assert_eq!(
            changes[0].expect,
            Some(Expect::Value(json!({"id": "t2", "s": "todo"})))
        );
        assert_eq!(changes[1].expect, Some(Expect::Value(json!("todo"))));
        assert_eq!(changes[2].expect, None);
    }

    #[test]
    fn id_array_reorder_is_one_whole_set() {
        let base = json!({"t": [{"id": "a"}, {"id": "b"}]});
        let mine = json!({"t": [{"id": "b"}, {"id": "a", "x": 1}]});
        let changes = roundtrip(&base, &mine);
        assert_eq!(paths(&changes), ["t"]);
        assert_eq!(changes[0].expect, Some(Expect::Value(base["t"].clone())));
    }

    #[test]
    fn id_array_insert_before_the_end_is_one_whole_set() {
        let base = json!({"t": [{"id": "a"}, {"id": "b"}]});
        let mine = json!({"t": [{"id": "new"}, {"id": "a"}, {"id": "b"}]});
        assert_eq!(paths(&roundtrip(&base, &mine)), ["t"]);
    }

    #[test]
    fn append_only_lists_are_appends() {
        let base = json!({"l": ["a"], "t": [{"id": "a"}]});
        let mine = json!({"l": ["a", "b", "c"], "t": [{"id": "a"}, {"id": "b"}]});
        let changes = roundtrip(&base, &mine);
        assert_eq!(paths(&changes), ["l[-]", "l[-]", "t[-]"]);
        assert!(changes.iter().all(|c| c.expect.is_none()));
    }

    #[test]
    fn other_list_edits_are_one_whole_set() {
        let changes = roundtrip(&json!({"l": ["a", "b"]}), &json!({"l": ["b"]}));
        assert_eq!(paths(&changes), ["l"]);
        // A list whose appended objects repeat an id cannot be appended to one by one;
        // it is one whole set, which apply refuses (ids name elements, so they differ).
        let base = json!({"l": [{"id": 1}, 5]});
        let changes = diff(&base, &json!({"l": [{"id": 1}, 5, {"id": 1}]}));
        assert_eq!(paths(&changes), ["l"]);
        let mut doc = base.clone();
        assert!(apply_all(&mut doc, &changes).is_err());
        assert_eq!(doc, base);
    }

    #[test]
    fn odd_keys_round_trip_through_their_text() {
        let base = json!({"a b": {"x.y": 1, "-": 2, "~/": 3, "0": 4, "": 5}});
        let mine = json!({"a b": {"x.y": 2, "-": 3, "~/": 4, "0": 5, "": 6}});
        let changes = roundtrip(&base, &mine);
        for change in &changes {
            assert_eq!(Path::parse(&change.path.to_string()).unwrap(), change.path);
            let wire = Change::from_json(0, &change.to_json()).unwrap();
            assert_eq!(&wire, change);
        }
    }

    #[test]
    fn non_object_roots_do_not_panic() {
        assert!(diff(&json!(1), &json!(1)).is_empty());
        let changes = diff(&json!([1]), &json!({"a": 1}));
        let mut doc = json!([1]);
        apply_all(&mut doc, &changes).unwrap();
        assert_eq!(doc, json!({"a": 1}));
        let mut doc = json!({"a": 1});
        assert!(apply_all(&mut doc, &diff(&json!({"a": 1}), &json!(2))).is_err());
    }
}
