//! Property tests of the document model: apply/undo/replay, diff, pushes, id paths and
//! three-way merge, over random documents.
//!
//! Documents come from proptest strategies (nested objects with odd keys, scalars, id
//! lists, plain string lists). Changes and mutations are driven by a seeded generator
//! that looks at the *current* document, so they are mostly valid and cover every op;
//! the seed is part of the failing input proptest reports.

use std::collections::BTreeSet;

use ctxsync_core::apply::{apply_edit, undo};
use ctxsync_core::checksum::{canonical_json, checksum, checksum_and_size, ChecksumTree};
use ctxsync_core::level::Level;
use ctxsync_core::ownership::Ownership;
use ctxsync_core::push::{evaluate, PriorWrite, PushRequest, Strategy as PushStrategy};
use ctxsync_core::{
    apply_all, apply_change, canonicalize, diff, get, merge3, Change, Edit, Expect, Op, Path,
    Prefer, Segment,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------
// Documents

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-f]{1,2}",
        1 => Just("odd key".to_owned()),
        1 => Just("x.y".to_owned()),
        1 => Just("-".to_owned()),
        1 => Just("~/".to_owned()),
        1 => Just("0".to_owned()),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-20i64..20).prop_map(|n| json!(n)),
        "[a-z]{0,3}".prop_map(Value::String),
    ]
}

/// `[{"id": "t3", "status": ..., "n": ...}, ...]` with unique ids, some numeric.
fn id_list() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_set(0u8..12, 0..5),
        prop::collection::vec((scalar(), scalar()), 5),
        any::<u64>(),
    )
        .prop_map(|(ids, fields, seed)| {
            let mut rng = Rng(seed);
            let mut items: Vec<Value> = ids
                .into_iter()
                .zip(fields)
                .map(|(n, (status, extra))| {
                    let id = if n == 11 {
                        json!(11)
                    } else {
                        json!(format!("t{n}"))
                    };
                    json!({"id": id, "status": status, "n": extra})
                })
                .collect();
            rng.shuffle(&mut items);
            Value::Array(items)
        })
}

fn string_list() -> impl Strategy<Value = Value> {
    prop::collection::vec("[a-z]{1,2}", 0..4)
        .prop_map(|v| Value::Array(v.into_iter().map(Value::String).collect()))
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![4 => scalar(), 1 => id_list(), 1 => string_list()];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop::collection::btree_map(key(), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

fn document() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), value(), 1..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

// ---------------------------------------------------------------------------------------
// Seeded randomness for mutations and changes

struct Rng(u64);

impl Rng {
    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
    fn scalar(&mut self) -> Value {
        match self.below(4) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(2)),
            2 => json!(self.below(40) as i64 - 20),
            _ => json!(format!("v{}", self.below(50))),
        }
    }
    fn new_value(&mut self) -> Value {
        match self.below(5) {
            0 => json!({"k": self.scalar()}),
            1 => json!([self.scalar(), self.scalar()]),
            _ => self.scalar(),
        }
    }
    fn new_element(&mut self) -> Value {
        json!({"id": format!("new{}", self.below(1000)), "status": self.scalar()})
    }
}

fn is_id_list(items: &[Value]) -> bool {
    let ids: Vec<String> = items
        .iter()
        .filter_map(ctxsync_core::path::element_id)
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    !items.is_empty()
        && items.iter().all(Value::is_object)
        && ids.len() == items.len()
        && unique.len() == ids.len()
}

/// A random edit of `value`, as an agent editing its working copy would make.
fn mutate(value: &Value, rng: &mut Rng, depth: usize) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                match rng.below(6) {
                    0 => {} // removed
                    1 | 2 if depth < 4 => {
                        out.insert(k.clone(), mutate(v, rng, depth + 1));
                    }
                    3 if rng.chance(3) => {
                        out.insert(k.clone(), rng.new_value());
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            if rng.chance(3) {
                out.insert(format!("n{}", rng.below(100)), rng.new_value());
            }
            Value::Object(out)
        }
        Value::Array(items) if is_id_list(items) => {
            let mut items = items.clone();
            for _ in 0..=rng.below(3) {
                match rng.below(6) {
                    0 if !items.is_empty() => {
                        let i = rng.below(items.len());
                        let id = items[i]["id"].clone();
                        let mut changed = mutate(&items[i], rng, depth + 1);
                        if let Some(map) = changed.as_object_mut() {
                            map.insert("id".into(), id);
                        }
                        items[i] = changed;
                    }
                    1 if !items.is_empty() => {
                        items.remove(rng.below(items.len()));
                    }
                    2 => items.push(rng.new_element()),
                    3 => {
                        let at = rng.below(items.len() + 1);
                        items.insert(at, rng.new_element());
                    }
                    4 if items.len() > 1 => {
                        let (i, j) = (rng.below(items.len()), rng.below(items.len()));
                        items.swap(i, j);
                    }
                    _ => {}
                }
            }
            Value::Array(items)
        }
        Value::Array(items) => {
            let mut items = items.clone();
            match rng.below(4) {
                0 => items.push(rng.scalar()),
                1 if !items.is_empty() => {
                    let i = rng.below(items.len());
                    items[i] = rng.scalar();
                }
                2 if !items.is_empty() => {
                    items.remove(rng.below(items.len()));
                }
                _ => {}
            }
            Value::Array(items)
        }
        _ if rng.chance(2) => rng.scalar(),
        other => other.clone(),
    }
}

/// Every path in `doc` below the root, array elements both by position and by id.
fn all_paths(doc: &Value) -> Vec<Path> {
    fn walk(at: &Path, v: &Value, out: &mut Vec<Path>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let p = at.key(k);
                    out.push(p.clone());
                    walk(&p, child, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let by_pos = at.child(Segment::Index(i));
                    out.push(by_pos.clone());
                    walk(&by_pos, child, out);
                    if let Some(id) = ctxsync_core::path::element_id(child) {
                        out.push(at.child(Segment::Select {
                            field: "id".into(),
                            value: id,
                        }));
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&Path::root(), doc, &mut out);
    out
}

/// One random change of `doc`, restricted to paths under `top` keys when given.
fn random_change(
    doc: &Value,
    rng: &mut Rng,
    top: Option<&BTreeSet<String>>,
    fresh: &str,
) -> Option<Change> {
    let inside = |p: &Path| match (top, p.segments().first()) {
        (None, _) => true,
        (Some(keys), Some(Segment::Key(k))) => keys.contains(k),
        _ => false,
    };
    let paths: Vec<Path> = all_paths(doc).into_iter().filter(|p| inside(p)).collect();
    let objects: Vec<Path> = std::iter::once(Path::root())
        .filter(|_| top.is_none())
        .chain(
            paths
                .iter()
                .filter(|p| get(doc, p).is_some_and(Value::is_object))
                .cloned(),
        )
        .collect();
    let arrays: Vec<Path> = paths
        .iter()
        .filter(|p| get(doc, p).is_some_and(Value::is_array))
        .cloned()
        .collect();
    let pick = |rng: &mut Rng, from: &[Path]| -> Option<Path> {
        (!from.is_empty()).then(|| from[rng.below(from.len())].clone())
    };
    let new_key = |rng: &mut Rng, parent: &Path| parent.key(&format!("{fresh}{}", rng.below(100)));
    let change = match rng.below(9) {
        0 | 1 => {
            let p = pick(rng, &paths)?;
            let mut c = Change::set(p.clone(), rng.new_value());
            if rng.chance(2) {
                c = c.with_expect(Expect::Value(get(doc, &p)?.clone()));
            }
            c
        }
        2 => {
            let parent = if top.is_some() {
                // A new top-level key of one's own, or one under an owned object.
                if rng.chance(2) {
                    Path::root()
                } else {
                    pick(rng, &objects)?
                }
            } else {
                pick(rng, &objects)?
            };
            Change::set(new_key(rng, &parent), rng.new_value()).with_expect(Expect::Absent)
        }
        3 => Change {
            path: pick(rng, &paths)?,
            op: Op::Remove,
            expect: None,
        },
        4 => {
            let list = pick(rng, &arrays)?;
            let len = get(doc, &list)?.as_array()?.len();
            let seg = if rng.chance(3) {
                Segment::Append
            } else {
                Segment::Index(rng.below(len + 1))
            };
            let value = if rng.chance(2) {
                rng.new_element()
            } else {
                rng.scalar()
            };
            Change {
                path: list.child(seg),
                op: Op::Add(value),
                expect: None,
            }
        }
        5 => Change {
            path: pick(rng, &paths)?,
            op: Op::Replace(rng.new_value()),
            expect: None,
        },
        6 => {
            let from = pick(rng, &paths)?;
            let parent = pick(rng, &objects)?;
            Change {
                path: new_key(rng, &parent),
                op: Op::Move { from },
                expect: None,
            }
        }
        7 => {
            let from = pick(rng, &paths)?;
            let parent = pick(rng, &objects)?;
            Change {
                path: new_key(rng, &parent),
                op: Op::Copy { from },
                expect: None,
            }
        }
        _ => {
            let p = pick(rng, &paths)?;
            Change {
                op: Op::Test(get(doc, &p)?.clone()),
                path: p,
                expect: None,
            }
        }
    };
    Some(change)
}

/// Up to `n` changes that apply one after the other to `doc` (invalid ones are dropped
/// while generating, against a scratch copy).
fn valid_changes(
    doc: &Value,
    seed: u64,
    n: usize,
    top: Option<&BTreeSet<String>>,
    fresh: &str,
) -> Vec<Change> {
    let mut rng = Rng(seed);
    let mut scratch = doc.clone();
    let mut out = Vec::new();
    for _ in 0..n * 3 {
        if out.len() == n {
            break;
        }
        if let Some(change) = random_change(&scratch, &mut rng, top, fresh) {
            if apply_change(&mut scratch, &change).is_ok() {
                out.push(change);
            }
        }
    }
    out
}

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Top-level keys split in two by position: what each of two agents may touch.
fn split_keys(doc: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut a = BTreeSet::new();
    let mut b = BTreeSet::new();
    if let Some(map) = doc.as_object() {
        for (i, k) in map.keys().enumerate() {
            if i % 2 == 0 {
                a.insert(k.clone())
            } else {
                b.insert(k.clone())
            };
        }
    }
    (a, b)
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config())]

    /// apply_all then undo restores the document exactly, and replaying the recorded
    /// edits on the original gives what applying the changes gave.
    #[test]
    fn apply_then_undo_restores_and_replay_matches(doc in document(), seed in any::<u64>(), n in 1usize..8) {
        let changes = valid_changes(&doc, seed, n, None, "new");
        let mut applied = doc.clone();
        let edits: Vec<Edit> = apply_all(&mut applied, &changes)
            .map_err(|(i, e)| TestCaseError::fail(format!("change #{i} {:?}: {e}", changes[i])))?;

        let mut replayed = doc.clone();
        for edit in &edits {
            apply_edit(&mut replayed, edit).map_err(|e| TestCaseError::fail(format!("{edit:?}: {e}")))?;
        }
        prop_assert_eq!(&replayed, &applied);
        prop_assert_eq!(checksum(&replayed), checksum(&applied));

        let mut restored = applied.clone();
        undo(&mut restored, &edits).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&restored, &doc);
        prop_assert_eq!(checksum(&restored), checksum(&doc));
    }

    /// The incremental checksum kept beside a document equals the from-scratch one (and
    /// its size the canonical JSON's length) after any sequence of pushes: every change
    /// kind, id lists, moves, removals, inserts in the middle of arrays, and undos.
    #[test]
    fn incremental_checksum_equals_from_scratch(doc in document(), seed in any::<u64>(), rounds in 1usize..6) {
        let mut tree = ChecksumTree::new();
        let mut current = doc.clone();
        prop_assert_eq!(tree.refresh(&current), checksum_and_size(&current));
        for round in 0..rounds {
            let changes = valid_changes(&current, seed.wrapping_add(round as u64), 1 + round % 4, None, "r");
            let edits = apply_all(&mut current, &changes)
                .map_err(|(i, e)| TestCaseError::fail(format!("change #{i}: {e}")))?;
            tree.note_all(&edits);
            if round % 3 == 2 {
                // A push refused after applying (over the quota) is undone, and the tree
                // is told the inverse edits.
                let before = current.clone();
                undo(&mut current, &edits).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let inverse: Vec<Edit> = edits.iter().rev().map(Edit::inverse).collect();
                tree.note_all(&inverse);
                let (sum, size) = tree.refresh(&current);
                prop_assert_eq!(&sum, &checksum(&current));
                prop_assert_eq!(size, canonical_json(&current).len() as u64);
                current = before;
                tree.note_all(&edits);
            }
            let (sum, size) = tree.refresh(&current);
            prop_assert_eq!(&sum, &checksum(&current), "after round {}", round);
            prop_assert_eq!(size, canonical_json(&current).len() as u64);
        }
    }

    /// A list that fails part-way leaves the document exactly as it was.
    #[test]
    fn failed_apply_all_changes_nothing(doc in document(), seed in any::<u64>(), n in 0usize..6) {
        let mut changes = valid_changes(&doc, seed, n, None, "new");
        changes.push(Change {
            path: Path::parse("no_such_key.below").unwrap(),
            op: Op::Replace(json!(1)),
            expect: None,
        });
        let mut after = doc.clone();
        let err = apply_all(&mut after, &changes);
        prop_assert!(err.is_err());
        prop_assert_eq!(err.err().map(|(i, _)| i), Some(changes.len() - 1));
        prop_assert_eq!(&after, &doc);
        prop_assert_eq!(checksum(&after), checksum(&doc));
    }

    /// diff then apply reproduces `mine` (list order included) for a mutation of base.
    #[test]
    fn diff_then_apply_reproduces_a_mutation(base in document(), seed in any::<u64>()) {
        let mine = mutate(&base, &mut Rng(seed), 0);
        let changes = diff(&base, &mine);
        let mut doc = base.clone();
        apply_all(&mut doc, &changes).map_err(|(i, e)| TestCaseError::fail(format!("change #{i} {:?}: {e}", changes[i])))?;
        prop_assert_eq!(&doc, &mine);
        prop_assert_eq!(checksum(&doc), checksum(&mine));
        // Every change survives its wire form.
        for change in &changes {
            prop_assert_eq!(&Change::from_json(0, &change.to_json()).unwrap(), change);
        }
    }

    /// ... and for two unrelated documents.
    #[test]
    fn diff_then_apply_reproduces_any_document(base in document(), mine in document()) {
        let changes = diff(&base, &mine);
        let mut doc = base.clone();
        apply_all(&mut doc, &changes).map_err(|(i, e)| TestCaseError::fail(format!("change #{i} {:?}: {e}", changes[i])))?;
        prop_assert_eq!(&doc, &mine);
        prop_assert_eq!(checksum(&doc), checksum(&mine));
    }

    /// Two pushes from the same base touching disjoint paths commute, without conflicts.
    #[test]
    fn disjoint_pushes_commute(base in document(), seed_a in any::<u64>(), seed_b in any::<u64>(), tested in any::<bool>()) {
        let (keys_a, keys_b) = split_keys(&base);
        let strip = |mut cs: Vec<Change>| {
            // Half the runs push without `from` tests, so the overlap check is exercised.
            if !tested {
                for c in &mut cs { c.expect = None; }
            }
            cs
        };
        let changes_a = strip(valid_changes(&base, seed_a, 4, Some(&keys_a), "a_"));
        let changes_b = strip(valid_changes(&base, seed_b, 4, Some(&keys_b), "b_"));
        let request = |agent: &str, changes: &[Change]| PushRequest {
            agent: agent.into(),
            level: Level::Checkpoint,
            base_revision: Some(0),
            request_id: None,
            strategy: PushStrategy::Merge,
            summary: String::new(),
            changes: changes.to_vec(),
        };
        let owners = Ownership::default();
        let run = |first: (&str, &[Change]), second: (&str, &[Change])| -> Result<Value, TestCaseError> {
            let mut doc = base.clone();
            let one = evaluate(&mut doc, &request(first.0, first.1), 0, &[], &owners)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(one.conflicts.is_empty(), "{:?}", one.conflicts);
            let since: Vec<PriorWrite> = one.edits.iter().map(|e| PriorWrite {
                revision: 1,
                agent: first.0.into(),
                path: e.path.clone(),
            }).collect();
            let two = evaluate(&mut doc, &request(second.0, second.1), 1, &since, &owners)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(two.conflicts.is_empty(), "{:?}", two.conflicts);
            prop_assert_eq!(two.applied.len(), second.1.len());
            Ok(doc)
        };
        let ab = run(("a", changes_a.as_slice()), ("b", changes_b.as_slice()))?;
        let ba = run(("b", changes_b.as_slice()), ("a", changes_a.as_slice()))?;
        prop_assert_eq!(&ab, &ba);
        prop_assert_eq!(checksum(&ab), checksum(&ba));
    }

    /// `[id=X]` names the same element after inserts anywhere before it, and its
    /// canonical path does not change.
    #[test]
    fn id_target_survives_concurrent_inserts(
        n in 1usize..6,
        target in 0usize..6,
        inserts in prop::collection::vec(any::<u16>(), 1..5),
    ) {
        let target = target % n;
        let items: Vec<Value> = (0..n).map(|i| json!({"id": format!("t{i}"), "status": "todo", "n": i})).collect();
        let mut doc = json!({"p": {"list": items}});
        let id = format!("t{target}");
        let by_pos = Path::parse(&format!("p.list[{target}].status")).unwrap();
        let canonical = canonicalize(&doc, &by_pos);
        prop_assert_eq!(canonical.to_string(), format!("p.list[id={id}].status"));

        for (k, at) in inserts.iter().enumerate() {
            let len = doc["p"]["list"].as_array().map_or(0, Vec::len);
            // The first insert always goes to the front.
            let at = if k == 0 { 0 } else { *at as usize % (len + 1) };
            let insert = Change {
                path: Path::parse(&format!("p.list[{at}]")).unwrap(),
                op: Op::Add(json!({"id": format!("new{k}"), "status": "todo"})),
                expect: None,
            };
            apply_change(&mut doc, &insert).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let before = doc.clone();
        let edit = Change::set(Path::parse(&format!("p.list[id={id}].status")).unwrap(), json!("done"))
            .with_expect(Expect::Value(json!("todo")));
        let edits = apply_change(&mut doc, &edit).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(edits.len(), 1);
        prop_assert_eq!(&edits[0].path, &canonical);

        let list = doc["p"]["list"].as_array().cloned().unwrap_or_default();
        let old_list = before["p"]["list"].as_array().cloned().unwrap_or_default();
        let pos = list.iter().position(|e| e["id"] == id.as_str()).unwrap();
        prop_assert_eq!(&list[pos], &json!({"id": id.clone(), "status": "done", "n": target}));
        for (i, (now, was)) in list.iter().zip(&old_list).enumerate() {
            if i != pos {
                prop_assert_eq!(now, was);
            }
        }
        let moved = Path::parse(&format!("p.list[{pos}].status")).unwrap();
        prop_assert_eq!(canonicalize(&doc, &moved), canonical);
    }

    /// merge3 identities: one side unchanged, or both the same.
    #[test]
    fn merge3_identities(base in document(), seed in any::<u64>(), prefer_mine in any::<bool>()) {
        let prefer = if prefer_mine { Prefer::Mine } else { Prefer::Theirs };
        let x = mutate(&base, &mut Rng(seed), 0);
        let m = merge3(&base, &x, &base, prefer);
        prop_assert!(m.conflicts.is_empty());
        prop_assert_eq!(&m.merged, &x);
        let m = merge3(&base, &base, &x, prefer);
        prop_assert!(m.conflicts.is_empty());
        prop_assert_eq!(&m.merged, &x);
        let m = merge3(&base, &x, &x, prefer);
        prop_assert!(m.conflicts.is_empty());
        prop_assert_eq!(&m.merged, &x);
    }

    /// Edits of disjoint top-level keys both land, without conflicts.
    #[test]
    fn merge3_disjoint_edits_both_land(base in document(), seed_m in any::<u64>(), seed_t in any::<u64>(), prefer_mine in any::<bool>()) {
        let prefer = if prefer_mine { Prefer::Mine } else { Prefer::Theirs };
        let (keys_m, keys_t) = split_keys(&base);
        let Some(map) = base.as_object() else { return Err(TestCaseError::fail("not an object")) };
        let edit_side = |keys: &BTreeSet<String>, seed: u64, fresh: &str| {
            let mut rng = Rng(seed);
            let mut side = map.clone();
            for k in keys {
                match rng.below(4) {
                    0 => { side.shift_remove(k); }
                    1 | 2 => {
                        let v = mutate(&map[k], &mut rng, 1);
                        side.insert(k.clone(), v);
                    }
                    _ => {}
                }
            }
            if rng.chance(2) {
                let v = rng.new_value();
                side.insert(format!("{fresh}{}", rng.below(10)), v);
            }
            Value::Object(side)
        };
        let mine = edit_side(&keys_m, seed_m, "m_");
        let theirs = edit_side(&keys_t, seed_t, "t_");
        // Expected: each side's value for its own keys and new keys.
        let mut expected = Map::new();
        for k in map.keys() {
            let owner = if keys_m.contains(k) { &mine } else { &theirs };
            if let Some(v) = owner.get(k) {
                expected.insert(k.clone(), v.clone());
            }
        }
        for side in [&mine, &theirs] {
            for (k, v) in side.as_object().into_iter().flatten() {
                if !map.contains_key(k) {
                    expected.insert(k.clone(), v.clone());
                }
            }
        }
        let m = merge3(&base, &mine, &theirs, prefer);
        prop_assert!(m.conflicts.is_empty(), "{:?}", m.conflicts);
        prop_assert_eq!(m.merged, Value::Object(expected));
    }

    /// Whatever the inputs, the two preferences report the same conflicts, agree where
    /// there are none, and settle each conflict for the preferred side.
    #[test]
    fn merge3_prefer_only_settles_conflicts(base in document(), seed_m in any::<u64>(), seed_t in any::<u64>()) {
        let mine = mutate(&base, &mut Rng(seed_m), 0);
        let theirs = mutate(&base, &mut Rng(seed_t), 0);
        let m = merge3(&base, &mine, &theirs, Prefer::Mine);
        let t = merge3(&base, &mine, &theirs, Prefer::Theirs);
        prop_assert_eq!(&m.conflicts, &t.conflicts);
        if m.conflicts.is_empty() {
            prop_assert_eq!(&m.merged, &t.merged);
        }
        for c in &m.conflicts {
            prop_assert!(c.mine != c.theirs && c.mine != c.base && c.theirs != c.base);
            // Settled values are what the preferred side said (conflict paths name
            // object keys and id elements, which `get` resolves).
            let path = Path::parse(&c.path).unwrap();
            prop_assert_eq!(get(&m.merged, &path), c.mine.as_ref());
            prop_assert_eq!(get(&t.merged, &path), c.theirs.as_ref());
        }
    }
}

/// Recorded edits under a member named `-` replay and undo (its pointer is `/-`, which
/// must not be read as "append" inside an object).
#[test]
fn edits_under_a_dash_key_undo() {
    let doc = json!({"-": {"a": 1}, "l": {"-": [1]}});
    let changes = diff(&doc, &json!({"-": {"a": 2}, "l": {"-": [1, 2]}}));
    let mut after = doc.clone();
    let edits = apply_all(&mut after, &changes).unwrap();
    let mut replayed = doc.clone();
    for edit in &edits {
        apply_edit(&mut replayed, edit).unwrap();
    }
    assert_eq!(replayed, after);
    undo(&mut after, &edits).unwrap();
    assert_eq!(after, doc);
}
