//! Applying changes to a document.
//!
//! A [`Change`] is applied in two steps: its path is resolved against the document (the
//! selectors become concrete positions), then the op is carried out and recorded as one
//! or more [`Edit`]s. An edit names its target twice: by its *canonical* path (array
//! elements with an `id` named by it; what conflict detection compares) and by the
//! concrete JSON Pointer it had when applied (what replay and undo use, so they are
//! exact). [`apply_all`] is all or nothing: on the first failure every edit made so far
//! is undone.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::change::{type_name, Change, Expect, Op};
use crate::limits::{self, Budget, LimitError, MAX_DEPTH};
use crate::path::{element_id, selector_matches, Path, Segment};

/// A primitive edit, as stored in the op log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EditOp {
    Add,
    Remove,
    Replace,
}

/// One applied edit with the values before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    pub op: EditOp,
    /// Canonical dotted path.
    pub path: Path,
    /// Concrete RFC 6901 pointer at the time of applying.
    pub pointer: String,
    /// `None` when there was nothing (an add); `Some(Value::Null)` when the value was
    /// `null`. Stored as a missing field and `null` respectively, so the two never mix.
    #[serde(
        default,
        deserialize_with = "crate::change::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub old: Option<Value>,
    #[serde(
        default,
        deserialize_with = "crate::change::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub new: Option<Value>,
}

impl Edit {
    /// The edit that undoes this one.
    pub fn inverse(&self) -> Edit {
        let op = match self.op {
            EditOp::Add => EditOp::Remove,
            EditOp::Remove => EditOp::Add,
            EditOp::Replace => EditOp::Replace,
        };
        Edit {
            op,
            path: self.path.clone(),
            pointer: self.pointer.clone(),
            old: self.new.clone(),
            new: self.old.clone(),
        }
    }
}

/// Why a change could not be applied. The document is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    #[error("path {path} does not exist")]
    MissingPath { path: String },
    #[error(
        "test failed at {path}: expected {}, found {}",
        show(expected),
        show(actual)
    )]
    TestFailed {
        path: String,
        expected: Option<Value>,
        actual: Option<Value>,
    },
    #[error("{path} already has an element with id {id:?}")]
    DuplicateId { path: String, id: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// The change would take the document past a bound (depth, size, work per push).
    #[error("{0}")]
    Limit(LimitError),
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "nothing (absent)".into(),
        Some(v) => v.to_string(),
    }
}

/// A concrete step into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn pointer_of(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        out.push('/');
        match step {
            Step::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// The canonical segment of the array element at `index`.
fn canonical_element(element: &Value, index: usize) -> Segment {
    match element_id(element) {
        Some(id) => Segment::Select {
            field: "id".into(),
            value: id,
        },
        None => Segment::Index(index),
    }
}

/// A numeric key as JSON Pointer writes array positions ("0", "12"; not "01").
fn pointer_index(key: &str) -> Option<usize> {
    if key == "0" || (!key.starts_with('0') && !key.is_empty()) {
        key.parse().ok()
    } else {
        None
    }
}

/// Where one segment leads inside `container`.
enum Found {
    Member(String),
    Element(usize),
    /// A member or position that does not exist (yet).
    MissingMember(String),
    MissingElement(usize),
    /// `[-]`, or a selector that matched nothing.
    Append,
    NoMatch,
}

fn find(container: &Value, segment: &Segment, at: &Path) -> Result<Found, ApplyError> {
    let invalid = |message: String| ApplyError::Invalid {
        path: at.to_string(),
        message,
    };
    match (container, segment) {
        (Value::Object(map), Segment::Key(k)) => Ok(if map.contains_key(k) {
            Found::Member(k.clone())
        } else {
            Found::MissingMember(k.clone())
        }),
        (Value::Object(_), _) => Err(invalid(format!(
            "is an object; `{}` selects in a list",
            Path::from_segments(vec![segment.clone()])
        ))),
        (Value::Array(items), Segment::Key(k)) => match pointer_index(k) {
            Some(i) if i < items.len() => Ok(Found::Element(i)),
            Some(i) => Ok(Found::MissingElement(i)),
            None => Err(invalid(format!(
                "is a list; use [n], [-] or [id=...] instead of the key {k:?}"
            ))),
        },
        (Value::Array(items), Segment::Index(i)) => Ok(if *i < items.len() {
            Found::Element(*i)
        } else {
            Found::MissingElement(*i)
        }),
        (Value::Array(_), Segment::Append) => Ok(Found::Append),
        (Value::Array(items), Segment::Select { field, value }) => Ok(items
            .iter()
            .position(|e| selector_matches(e, field, value))
            .map_or(Found::NoMatch, Found::Element)),
        (scalar, _) => Err(invalid(format!(
            "is {}, not an object or a list",
            type_name(scalar)
        ))),
    }
}

/// A resolved parent plus what the last segment names.
struct Located {
    parent_steps: Vec<Step>,
    parent_canonical: Path,
    last: Found,
}

/// Resolves every segment but the last, which may name something that does not exist.
/// On a missing intermediate, returns how many segments did resolve.
fn locate(doc: &Value, path: &Path) -> Result<Result<Located, usize>, ApplyError> {
    let Some((parent, last)) = path.split_last() else {
        return Err(ApplyError::Invalid {
            path: "(root)".into(),
            message: "the document root cannot be the target of this op".into(),
        });
    };
    let mut current = doc;
    let mut steps = Vec::new();
    let mut canonical = Path::root();
    for (depth, segment) in parent.segments().iter().enumerate() {
        match find(current, segment, &canonical)? {
            Found::Member(k) => {
                current = &current[k.as_str()];
                canonical = canonical.key(&k);
                steps.push(Step::Key(k));
            }
            Found::Element(i) => {
                current = &current[i];
                canonical = canonical.child(canonical_element(current, i));
                steps.push(Step::Index(i));
            }
            Found::Append => {
                return Err(ApplyError::Invalid {
                    path: path.to_string(),
                    message: "[-] (append) may only be the last segment".into(),
                })
            }
            Found::MissingMember(_) | Found::MissingElement(_) | Found::NoMatch => {
                return Ok(Err(depth))
            }
        }
    }
    let last = find(current, last, &canonical)?;
    Ok(Ok(Located {
        parent_steps: steps,
        parent_canonical: canonical,
        last,
    }))
}

/// The value at `path`, if it exists. Type mismatches (a key on a list, ...) count as
/// "does not exist".
pub fn get<'a>(doc: &'a Value, path: &Path) -> Option<&'a Value> {
    let mut current = doc;
    for segment in path.segments() {
        current = match find(current, segment, &Path::root()).ok()? {
            Found::Member(k) => &current[k.as_str()],
            Found::Element(i) => &current[i],
            _ => return None,
        };
    }
    Some(current)
}

/// The canonical form of `path` in `doc` (selectors and positions replaced by ids where
/// the element has one). Resolves as far as the document goes; the rest is kept as given.
pub fn canonicalize(doc: &Value, path: &Path) -> Path {
    let mut current = Some(doc);
    let mut out = Vec::with_capacity(path.segments().len());
    for segment in path.segments() {
        let next = current.and_then(|c| match find(c, segment, &Path::root()).ok()? {
            Found::Member(k) => Some((Segment::Key(k.clone()), &c[k.as_str()])),
            Found::Element(i) => Some((canonical_element(&c[i], i), &c[i])),
            _ => None,
        });
        match next {
            Some((canonical, value)) => {
                out.push(canonical);
                current = Some(value);
            }
            None => {
                out.push(match segment {
                    Segment::Key(k) if current.is_some_and(Value::is_array) => {
                        pointer_index(k).map_or(segment.clone(), Segment::Index)
                    }
                    other => other.clone(),
                });
                current = None;
            }
        }
    }
    Path::from_segments(out)
}

fn navigate_mut<'a>(doc: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    let mut current = doc;
    for step in steps {
        current = match step {
            Step::Key(k) => current.as_object_mut()?.get_mut(k)?,
            Step::Index(i) => current.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(current)
}

fn internal(path: &Path) -> ApplyError {
    ApplyError::Invalid {
        path: path.to_string(),
        message: "the document changed while applying (internal error)".into(),
    }
}

/// Refuses a new array element whose `id` another element (other than `except`) has.
fn check_unique_id(
    items: &[Value],
    element: &Value,
    except: Option<usize>,
    at: &Path,
) -> Result<(), ApplyError> {
    if let Some(id) = element_id(element) {
        let taken = items
            .iter()
            .enumerate()
            .any(|(i, e)| Some(i) != except && element_id(e).as_deref() == Some(id.as_str()));
        if taken {
            return Err(ApplyError::DuplicateId {
                path: at.to_string(),
                id,
            });
        }
    }
    Ok(())
}

/// How a write treats what is already at the target.
#[derive(Clone, Copy, PartialEq)]
enum WriteMode {
    /// RFC add: insert into lists, add or replace object members.
    Add,
    /// RFC replace: the target must exist.
    Replace,
    /// Seed form: replace if there, add otherwise (appending only through `[-]`).
    Set,
}

fn write(doc: &mut Value, path: &Path, value: Value, mode: WriteMode) -> Result<Edit, ApplyError> {
    let located = match locate(doc, path)? {
        Ok(located) => located,
        Err(depth) if mode == WriteMode::Set => return create_parents(doc, path, depth, value),
        Err(_) => {
            return Err(ApplyError::MissingPath {
                path: path.to_string(),
            })
        }
    };
    let Located {
        parent_steps,
        parent_canonical,
        last,
    } = located;
    let container = navigate_mut(doc, &parent_steps).ok_or_else(|| internal(path))?;
    let mut steps = parent_steps;
    match (container, last) {
        (Value::Object(map), Found::Member(k)) => {
            let old = map.insert(k.clone(), value.clone());
            let canonical = parent_canonical.key(&k);
            steps.push(Step::Key(k));
            Ok(Edit {
                op: EditOp::Replace,
                path: canonical,
                pointer: pointer_of(&steps),
                old,
                new: Some(value),
            })
        }
        (Value::Object(map), Found::MissingMember(k)) => {
            if mode == WriteMode::Replace {
                return Err(ApplyError::MissingPath {
                    path: path.to_string(),
                });
            }
            map.insert(k.clone(), value.clone());
            let canonical = parent_canonical.key(&k);
            steps.push(Step::Key(k));
            Ok(Edit {
                op: EditOp::Add,
                path: canonical,
                pointer: pointer_of(&steps),
                old: None,
                new: Some(value),
            })
        }
        (Value::Array(items), Found::Element(i)) if mode != WriteMode::Add => {
            check_unique_id(items, &value, Some(i), &parent_canonical)?;
            let canonical = parent_canonical.child(canonical_element(&items[i], i));
            let old = std::mem::replace(&mut items[i], value.clone());
            steps.push(Step::Index(i));
            Ok(Edit {
                op: EditOp::Replace,
                path: canonical,
                pointer: pointer_of(&steps),
                old: Some(old),
                new: Some(value),
            })
        }
        (
            Value::Array(items),
            found @ (Found::Element(_) | Found::MissingElement(_) | Found::Append),
        ) => {
            let index = match found {
                Found::Element(i) => i,
                Found::MissingElement(i) if i == items.len() && mode == WriteMode::Add => i,
                Found::MissingElement(i) => {
                    return Err(ApplyError::Invalid {
                        path: path.to_string(),
                        message: format!(
                        "position {i} is past the end of the list (length {}); use [-] to append",
                        items.len()
                    ),
                    })
                }
                _ if mode == WriteMode::Replace => {
                    return Err(ApplyError::Invalid {
                        path: path.to_string(),
                        message: "[-] (append) can only add".into(),
                    })
                }
                _ => items.len(),
            };
            check_unique_id(items, &value, None, &parent_canonical)?;
            items.insert(index, value.clone());
            let canonical = parent_canonical.child(canonical_element(&value, index));
            steps.push(Step::Index(index));
            Ok(Edit {
                op: EditOp::Add,
                path: canonical,
                pointer: pointer_of(&steps),
                old: None,
                new: Some(value),
            })
        }
        (_, Found::NoMatch) => Err(ApplyError::MissingPath {
            path: path.to_string(),
        }),
        _ => Err(internal(path)),
    }
}

/// Seed-form `set` below missing objects: adds the first missing key with the rest of the
/// path built as nested objects, like `mkdir -p`.
fn create_parents(
    doc: &mut Value,
    path: &Path,
    resolved: usize,
    value: Value,
) -> Result<Edit, ApplyError> {
    let segments = path.segments();
    let missing = &segments[resolved + 1..];
    if !missing.iter().all(|s| matches!(s, Segment::Key(_))) {
        return Err(ApplyError::MissingPath {
            path: path.to_string(),
        });
    }
    let mut nested = value;
    for segment in missing.iter().rev() {
        if let Segment::Key(k) = segment {
            let mut map = Map::new();
            map.insert(k.clone(), nested);
            nested = Value::Object(map);
        }
    }
    let first_missing = Path::from_segments(segments[..=resolved].to_vec());
    if !matches!(segments[resolved], Segment::Key(_)) {
        return Err(ApplyError::MissingPath {
            path: first_missing.to_string(),
        });
    }
    // The parent of the first missing key must be an object for this to make sense.
    write(doc, &first_missing, nested, WriteMode::Add)
}

fn remove(doc: &mut Value, path: &Path) -> Result<Edit, ApplyError> {
    let missing = || ApplyError::MissingPath {
        path: path.to_string(),
    };
    let Located {
        parent_steps,
        parent_canonical,
        last,
    } = locate(doc, path)?.map_err(|_| missing())?;
    let container = navigate_mut(doc, &parent_steps).ok_or_else(|| internal(path))?;
    let mut steps = parent_steps;
    let (canonical, old) = match (container, last) {
        (Value::Object(map), Found::Member(k)) => {
            let old = map.shift_remove(&k).ok_or_else(|| internal(path))?;
            steps.push(Step::Key(k.clone()));
            (parent_canonical.key(&k), old)
        }
        (Value::Array(items), Found::Element(i)) => {
            let canonical = parent_canonical.child(canonical_element(&items[i], i));
            steps.push(Step::Index(i));
            (canonical, items.remove(i))
        }
        (_, Found::Append) => {
            return Err(ApplyError::Invalid {
                path: path.to_string(),
                message: "[-] (append) can only add".into(),
            })
        }
        _ => return Err(missing()),
    };
    Ok(Edit {
        op: EditOp::Remove,
        path: canonical,
        pointer: pointer_of(&steps),
        old: Some(old),
        new: None,
    })
}

fn check_expect(doc: &Value, change: &Change) -> Result<(), ApplyError> {
    let Some(expect) = &change.expect else {
        return Ok(());
    };
    if change.path.segments().last() == Some(&Segment::Append) {
        return match expect {
            Expect::Absent => Ok(()),
            Expect::Value(_) => Err(ApplyError::Invalid {
                path: change.path.to_string(),
                message: "a `from` test cannot apply to [-] (append)".into(),
            }),
        };
    }
    let actual = get(doc, &change.path);
    match (expect, actual) {
        (Expect::Absent, None) => Ok(()),
        (Expect::Value(v), Some(a)) if a == v => Ok(()),
        (Expect::Value(_), None) => Err(ApplyError::MissingPath {
            path: change.path.to_string(),
        }),
        (expected, actual) => Err(ApplyError::TestFailed {
            path: change.path.to_string(),
            expected: match expected {
                Expect::Value(v) => Some(v.clone()),
                Expect::Absent => None,
            },
            actual: actual.cloned(),
        }),
    }
}

/// Applies one change. On error the document is unchanged.
pub fn apply_change(doc: &mut Value, change: &Change) -> Result<Vec<Edit>, ApplyError> {
    apply_change_within(doc, change, &mut Budget::unlimited())
}

/// Applies one change within `budget`: the document may not nest deeper than
/// [`MAX_DEPTH`], grow past the budget's size, or take more written bytes than it has
/// left. Every bound is checked *before* the value is copied into the document, so a
/// change that would blow up is refused at the cost of measuring it, never of building
/// it. On error the document (and the budget) are unchanged.
pub fn apply_change_within(
    doc: &mut Value,
    change: &Change,
    budget: &mut Budget,
) -> Result<Vec<Edit>, ApplyError> {
    check_expect(doc, change)?;
    let incoming = match &change.op {
        Op::Set(v) | Op::Add(v) | Op::Replace(v) => Some(v),
        Op::Copy { from } | Op::Move { from } => get(doc, from),
        Op::Remove | Op::Test(_) => None,
    };
    let mut next = budget.clone();
    if let Some(value) = incoming {
        if change.path.segment_count() + limits::depth(value) > MAX_DEPTH {
            return Err(ApplyError::Limit(LimitError::TooDeep { limit: MAX_DEPTH }));
        }
        if let Some((list, id)) = limits::duplicate_id(value) {
            let inside = if list.is_empty() {
                "the list".to_owned()
            } else {
                format!("the list at {list}")
            };
            return Err(ApplyError::Invalid {
                path: change.path.to_string(),
                message: format!(
                    "{inside} in the value holds two elements with id {id:?}; ids name list elements, so they must differ"
                ),
            });
        }
        let bytes = limits::json_size(value);
        next.write(bytes).map_err(ApplyError::Limit)?;
        // A key (or list separator) beside the value; an upper estimate is enough, the
        // exact size is the store's to check after.
        let overhead = change.path.segments().last().map_or(0, |s| match s {
            Segment::Key(k) => k.len() as u64 + 4,
            _ => 1,
        });
        let replaced = match change.op {
            // RFC add inserts into a list, and replaces an object member.
            Op::Add(_) | Op::Copy { .. } | Op::Move { .. } => change
                .path
                .split_last()
                .filter(|(parent, _)| get(doc, parent).is_some_and(Value::is_object))
                .and_then(|_| get(doc, &change.path)),
            _ => get(doc, &change.path),
        };
        let moved = matches!(change.op, Op::Move { .. }).then_some(bytes);
        let removed = replaced.map(limits::json_size).or(moved).unwrap_or(0);
        next.resize(bytes + overhead, removed)
            .map_err(ApplyError::Limit)?;
    } else if matches!(change.op, Op::Remove) {
        let removed = get(doc, &change.path).map_or(0, limits::json_size);
        next.resize(0, removed).map_err(ApplyError::Limit)?;
    }
    let edits = apply_unbounded(doc, change)?;
    *budget = next;
    Ok(edits)
}

fn apply_unbounded(doc: &mut Value, change: &Change) -> Result<Vec<Edit>, ApplyError> {
    let path = &change.path;
    if path.is_root() && !matches!(change.op, Op::Test(_)) {
        return match &change.op {
            Op::Set(v) | Op::Replace(v) | Op::Add(v) if v.is_object() => {
                let old = std::mem::replace(doc, v.clone());
                Ok(vec![Edit {
                    op: EditOp::Replace,
                    path: Path::root(),
                    pointer: String::new(),
                    old: Some(old),
                    new: Some(v.clone()),
                }])
            }
            _ => Err(ApplyError::Invalid {
                path: "(root)".into(),
                message: "the document root can only be replaced by an object".into(),
            }),
        };
    }
    match &change.op {
        Op::Set(v) => write(doc, path, v.clone(), WriteMode::Set).map(|e| vec![e]),
        Op::Add(v) => write(doc, path, v.clone(), WriteMode::Add).map(|e| vec![e]),
        Op::Replace(v) => write(doc, path, v.clone(), WriteMode::Replace).map(|e| vec![e]),
        Op::Remove => remove(doc, path).map(|e| vec![e]),
        Op::Test(v) => match get(doc, path) {
            Some(actual) if actual == v => Ok(vec![]),
            actual => Err(ApplyError::TestFailed {
                path: path.to_string(),
                expected: Some(v.clone()),
                actual: actual.cloned(),
            }),
        },
        Op::Copy { from } => {
            let value = get(doc, from)
                .cloned()
                .ok_or_else(|| ApplyError::MissingPath {
                    path: from.to_string(),
                })?;
            write(doc, path, value, WriteMode::Add).map(|e| vec![e])
        }
        Op::Move { from } => {
            if path.starts_with(from) && path != from {
                return Err(ApplyError::Invalid {
                    path: path.to_string(),
                    message: format!("cannot move {from} into itself"),
                });
            }
            if path == from {
                return Ok(vec![]);
            }
            let removed = remove(doc, from)?;
            let value = removed.old.clone().unwrap_or(Value::Null);
            match write(doc, path, value, WriteMode::Add) {
                Ok(added) => Ok(vec![removed, added]),
                Err(e) => {
                    apply_edit(doc, &removed.inverse())?;
                    Err(e)
                }
            }
        }
    }
}

/// Applies every change or none: on the first error, undoes what was done and returns
/// the index of the failing change.
pub fn apply_all(doc: &mut Value, changes: &[Change]) -> Result<Vec<Edit>, (usize, ApplyError)> {
    let mut edits = Vec::new();
    for (index, change) in changes.iter().enumerate() {
        match apply_change(doc, change) {
            Ok(mut e) => edits.append(&mut e),
            Err(err) => {
                undo(doc, &edits).map_err(|e| (index, e))?;
                return Err((index, err));
            }
        }
    }
    Ok(edits)
}

/// Undoes `edits` (which were applied to `doc` in order).
pub fn undo(doc: &mut Value, edits: &[Edit]) -> Result<(), ApplyError> {
    for edit in edits.iter().rev() {
        apply_edit(doc, &edit.inverse())?;
    }
    Ok(())
}

/// Replays one recorded edit by its concrete pointer (for replay from a snapshot and for
/// undo; exact because the pointer is what it was when first applied).
pub fn apply_edit(doc: &mut Value, edit: &Edit) -> Result<(), ApplyError> {
    let bad = |message: &str| ApplyError::Invalid {
        path: edit.pointer.clone(),
        message: message.to_owned(),
    };
    let path = Path::parse_pointer(&edit.pointer).map_err(|e| bad(&e.to_string()))?;
    let Some((parent, last)) = path.split_last() else {
        let new = edit
            .new
            .clone()
            .ok_or_else(|| bad("root edit without a value"))?;
        *doc = new;
        return Ok(());
    };
    let mut container = &mut *doc;
    for segment in parent.segments() {
        let k = match segment {
            Segment::Key(k) => k.as_str(),
            // The pointer token `-` parses as "append", but a recorded pointer names an
            // existing member or position, so here it is the object key "-".
            Segment::Append => "-",
            _ => return Err(bad("unexpected segment in a recorded pointer")),
        };
        container = match container {
            Value::Object(map) => map.get_mut(k),
            Value::Array(items) => pointer_index(k).and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| bad("recorded pointer does not resolve"))?;
    }
    let key = match last {
        Segment::Key(k) => k.as_str(),
        Segment::Append => "-",
        _ => return Err(bad("unexpected segment in a recorded pointer")),
    };
    match (container, edit.op) {
        (Value::Object(map), EditOp::Add | EditOp::Replace) => {
            let new = edit
                .new
                .clone()
                .ok_or_else(|| bad("edit without a new value"))?;
            map.insert(key.to_owned(), new);
        }
        (Value::Object(map), EditOp::Remove) => {
            map.shift_remove(key)
                .ok_or_else(|| bad("recorded member is missing"))?;
        }
        (Value::Array(items), op) => {
            let i = pointer_index(key).ok_or_else(|| bad("recorded position is not a number"))?;
            match op {
                EditOp::Add if i <= items.len() => {
                    let new = edit
                        .new
                        .clone()
                        .ok_or_else(|| bad("edit without a new value"))?;
                    items.insert(i, new);
                }
                EditOp::Replace if i < items.len() => {
                    items[i] = edit
                        .new
                        .clone()
                        .ok_or_else(|| bad("edit without a new value"))?;
                }
                EditOp::Remove if i < items.len() => {
                    items.remove(i);
                }
                _ => return Err(bad("recorded position is out of range")),
            }
        }
        _ => return Err(bad("recorded pointer does not resolve")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(v: Value) -> Change {
        Change::from_json(0, &v).unwrap()
    }

    fn doc() -> Value {
        json!({"project_state": {"active_tasks": [
            {"id": "task-123", "status": "in_progress"},
            {"id": "task-124", "status": "todo"}
        ], "phase": "impl"}, "notes": ["a"]})
    }

    #[test]
    fn set_by_id_records_canonical_and_pointer() {
        let mut d = doc();
        let edits = apply_change(
            &mut d,
            &change(json!({"path": "project_state.active_tasks[1].status", "from": "todo", "to": "done"})),
        )
        .unwrap();
        assert_eq!(d["project_state"]["active_tasks"][1]["status"], "done");
        assert_eq!(
            edits[0].path.to_string(),
            "project_state.active_tasks[id=task-124].status"
        );
        assert_eq!(edits[0].pointer, "/project_state/active_tasks/1/status");
        assert_eq!(edits[0].old, Some(json!("todo")));
    }

    #[test]
    fn failed_test_changes_nothing() {
        let mut d = doc();
        let err = apply_change(
            &mut d,
            &change(json!({"path": "project_state.phase", "from": "design", "to": "x"})),
        )
        .unwrap_err();
        assert!(matches!(err, ApplyError::TestFailed { .. }));
        assert_eq!(d, doc());
    }

    #[test]
    fn set_creates_missing_objects_but_not_list_elements() {
        let mut d = doc();
        apply_change(&mut d, &change(json!({"path": "a.b.c", "to": 1}))).unwrap();
        assert_eq!(d["a"]["b"]["c"], 1);
        let err = apply_change(
            &mut d,
            &change(json!({"path": "project_state.active_tasks[id=nope].status", "to": 1})),
        )
        .unwrap_err();
        assert!(matches!(err, ApplyError::MissingPath { .. }), "{err:?}");
    }

    #[test]
    fn append_refuses_duplicate_ids() {
        let mut d = doc();
        let err = apply_change(
            &mut d,
            &change(json!({"path": "project_state.active_tasks[-]", "to": {"id": "task-123"}})),
        )
        .unwrap_err();
        assert!(matches!(err, ApplyError::DuplicateId { .. }));
        let edits = apply_change(
            &mut d,
            &change(json!({"path": "project_state.active_tasks[-]", "to": {"id": "task-9"}})),
        )
        .unwrap();
        assert_eq!(
            edits[0].path.to_string(),
            "project_state.active_tasks[id=task-9]"
        );
        assert_eq!(edits[0].pointer, "/project_state/active_tasks/2");
    }

    #[test]
    fn rfc_ops_follow_the_rfc() {
        let mut d = doc();
        apply_change(
            &mut d,
            &change(json!({"op": "add", "path": "/notes/0", "value": "z"})),
        )
        .unwrap();
        assert_eq!(d["notes"], json!(["z", "a"]));
        apply_change(
            &mut d,
            &change(json!({"op": "move", "from": "/notes/0", "path": "/moved"})),
        )
        .unwrap();
        assert_eq!(d["moved"], "z");
        apply_change(
            &mut d,
            &change(json!({"op": "copy", "from": "/moved", "path": "/notes/-"})),
        )
        .unwrap();
        assert_eq!(d["notes"], json!(["a", "z"]));
        apply_change(&mut d, &change(json!({"op": "remove", "path": "/moved"}))).unwrap();
        assert!(d.get("moved").is_none());
        assert!(apply_change(
            &mut d,
            &change(json!({"op": "replace", "path": "/nope", "value": 1}))
        )
        .is_err());
        assert!(apply_change(
            &mut d,
            &change(json!({"op": "test", "path": "/notes/0", "value": "a"}))
        )
        .is_ok());
        assert!(apply_change(
            &mut d,
            &change(json!({"op": "move", "from": "/project_state", "path": "/project_state/x"}))
        )
        .is_err());
    }

    #[test]
    fn apply_all_is_all_or_nothing() {
        let mut d = doc();
        let changes = vec![
            change(json!({"path": "notes[-]", "to": "b"})),
            change(json!({"path": "project_state.phase", "to": "review"})),
            change(json!({"path": "project_state.phase", "from": "nope", "to": "x"})),
        ];
        let (index, _) = apply_all(&mut d, &changes).unwrap_err();
        assert_eq!(index, 2);
        assert_eq!(d, doc());
    }

    #[test]
    fn type_errors_are_invalid_not_panics() {
        let mut d = doc();
        for bad in [
            json!({"path": "project_state.phase.x", "to": 1}),
            json!({"path": "project_state[0]", "to": 1}),
            json!({"path": "project_state.active_tasks.foo", "to": 1}),
            json!({"path": "notes[5]", "to": 1}),
            json!({"path": "notes[-].x", "to": 1}),
            json!({"op": "remove", "path": "/notes/-"}),
            json!({"path": "", "to": 5}),
        ] {
            let err = apply_change(&mut d, &change(bad.clone())).unwrap_err();
            assert!(
                matches!(
                    err,
                    ApplyError::Invalid { .. } | ApplyError::MissingPath { .. }
                ),
                "{bad}: {err:?}"
            );
            assert_eq!(d, doc());
        }
    }
}
