//! The incremental structural hash: a tree of hashes kept beside a document.
//!
//! The writer tells the tree every edit it applies ([`ChecksumTree::note`]); the tree
//! takes the edited members out of their containers' sums and marks them dirty. The next
//! [`ChecksumTree::refresh`] hashes only the dirty values (and what was newly written)
//! and adds them back, so a push costs O(size of the change × depth), plus O(elements
//! after the position) for an insertion into or a removal from the middle of an array
//! (their indices move, and an element's index is part of its entry).
//!
//! The tree never trusts itself past a surprise: an edit whose pointer does not fit its
//! shape, or a refresh that finds the document's shape differs from the tree's, rebuilds
//! the affected part from the document, so the result always equals [`super::checksum`]
//! of the document (a property test checks this after random pushes).

use std::collections::HashMap;

use serde_json::Value;

use super::structural::{
    container_hash, container_size, element_entry, escaped_len, hex, member_entry, scalar, Sum,
    Summary, TAG_ARRAY, TAG_OBJECT,
};
use crate::apply::{Edit, EditOp};

/// The hashes of one document, updated along the paths its edits touch.
#[derive(Debug, Default)]
pub struct ChecksumTree {
    root: Node,
}

#[derive(Debug, Default)]
enum Node {
    /// Not hashed yet (new, or rebuilt after a surprise): hashed from the document.
    #[default]
    Unknown,
    Leaf(Summary),
    Object(Box<Container<String>>),
    Array(Box<Container<usize>>),
}

/// An object or array: its members' entries summed, and which members are out of it.
#[derive(Debug)]
struct Container<K> {
    /// Sum of the entries of every member whose `entry` is set.
    sum: Sum,
    /// Bytes those entries take in canonical JSON.
    entries_size: u64,
    /// Members whose entries are out of the sum (their `entry` is `None`).
    dirty: Vec<K>,
    /// For arrays: every element at or after this position is out of the sum too.
    dirty_from: Option<usize>,
    /// Set while nothing below is dirty.
    summary: Option<Summary>,
    members: Members,
}

#[derive(Debug)]
enum Members {
    Object(HashMap<String, Member>),
    Array(Vec<Member>),
}

#[derive(Debug, Default)]
struct Member {
    node: Node,
    /// This member's entry in its container's sum, and the bytes it adds there.
    entry: Option<(super::Hash, u64)>,
}

impl ChecksumTree {
    /// A tree that knows nothing yet: the first refresh hashes the whole document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes note of one edit applied to the document (in the order they were applied).
    pub fn note(&mut self, edit: &Edit) {
        let tokens = match pointer_tokens(&edit.pointer) {
            Some(tokens) => tokens,
            None => {
                self.root = Node::Unknown;
                return;
            }
        };
        if tokens.is_empty() || !note_at(&mut self.root, &tokens, edit.op) {
            self.root = Node::Unknown;
        }
    }

    /// Takes note of edits applied in order.
    pub fn note_all<'a>(&mut self, edits: impl IntoIterator<Item = &'a Edit>) {
        for edit in edits {
            self.note(edit);
        }
    }

    /// The checksum of `doc` (which must be the document every noted edit was applied
    /// to) and its canonical JSON size, hashing only what changed since the last refresh.
    pub fn refresh(&mut self, doc: &Value) -> (String, u64) {
        let s = refresh(&mut self.root, doc);
        (hex(&s.hash), s.size)
    }

    /// Forgets everything: the next refresh hashes the whole document.
    pub fn clear(&mut self) {
        self.root = Node::Unknown;
    }
}

/// RFC 6901 tokens of a recorded pointer (`None` if it is not one).
fn pointer_tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// A recorded array position ("0", "12"; not "01").
fn index_of(token: &str) -> Option<usize> {
    if token == "0" || (!token.starts_with('0') && !token.is_empty()) {
        token.parse().ok()
    } else {
        None
    }
}

/// Applies an edit's effect on the hashes below `node`; false when the pointer does not
/// fit the tree (the caller then rebuilds).
fn note_at(node: &mut Node, tokens: &[String], op: EditOp) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return false;
    };
    match node {
        // Rebuilt from the document at the next refresh anyway.
        Node::Unknown => true,
        Node::Leaf(_) => false,
        Node::Object(c) => {
            c.summary = None;
            let Members::Object(members) = &mut c.members else {
                return false;
            };
            if rest.is_empty() {
                match op {
                    EditOp::Add | EditOp::Replace => {
                        if let Some(old) = members.insert(first.clone(), Member::default()) {
                            take_out(&mut c.sum, &mut c.entries_size, old.entry);
                        }
                        c.dirty.push(first.clone());
                        true
                    }
                    EditOp::Remove => match members.remove(first) {
                        Some(old) => {
                            take_out(&mut c.sum, &mut c.entries_size, old.entry);
                            true
                        }
                        None => false,
                    },
                }
            } else {
                let Some(member) = members.get_mut(first) else {
                    return false;
                };
                if member.entry.is_some() {
                    take_out(&mut c.sum, &mut c.entries_size, member.entry.take());
                    c.dirty.push(first.clone());
                }
                note_at(&mut member.node, rest, op)
            }
        }
        Node::Array(c) => {
            c.summary = None;
            let Some(i) = index_of(first) else {
                return false;
            };
            let Members::Array(members) = &mut c.members else {
                return false;
            };
            if rest.is_empty() {
                match op {
                    EditOp::Add if i <= members.len() => {
                        // Every element from i on moves one place: out of the sum.
                        for m in &mut members[i..] {
                            take_out(&mut c.sum, &mut c.entries_size, m.entry.take());
                        }
                        members.insert(i, Member::default());
                        c.dirty_from = Some(c.dirty_from.map_or(i, |d| d.min(i)));
                        true
                    }
                    EditOp::Replace if i < members.len() => {
                        let old = std::mem::take(&mut members[i]);
                        take_out(&mut c.sum, &mut c.entries_size, old.entry);
                        c.dirty.push(i);
                        true
                    }
                    EditOp::Remove if i < members.len() => {
                        for m in &mut members[i..] {
                            take_out(&mut c.sum, &mut c.entries_size, m.entry.take());
                        }
                        members.remove(i);
                        c.dirty_from = Some(c.dirty_from.map_or(i, |d| d.min(i)));
                        true
                    }
                    _ => false,
                }
            } else {
                let Some(member) = members.get_mut(i) else {
                    return false;
                };
                if member.entry.is_some() {
                    take_out(&mut c.sum, &mut c.entries_size, member.entry.take());
                    c.dirty.push(i);
                }
                note_at(&mut member.node, rest, op)
            }
        }
    }
}

fn take_out(sum: &mut Sum, size: &mut u64, entry: Option<(super::Hash, u64)>) {
    if let Some((hash, bytes)) = entry {
        sum.sub(&hash);
        *size -= bytes;
    }
}

/// Hashes what is dirty below `node` against `value`, rebuilding where shapes differ.
fn refresh(node: &mut Node, value: &Value) -> Summary {
    match refresh_in_place(node, value) {
        Some(s) => s,
        None => rebuild(node, value),
    }
}

/// [`refresh`] without the rebuild: `None` when `node` does not fit `value`.
fn refresh_in_place(node: &mut Node, value: &Value) -> Option<Summary> {
    match (node, value) {
        (Node::Leaf(s), v) if !v.is_object() && !v.is_array() => Some(*s),
        (Node::Object(c), Value::Object(map)) => {
            if let Some(s) = c.summary {
                return (c.members_len() == map.len()).then_some(s);
            }
            let Members::Object(members) = &mut c.members else {
                return None;
            };
            for key in std::mem::take(&mut c.dirty) {
                // Removed again after it was marked: nothing to add.
                let Some(member) = members.get_mut(&key) else {
                    continue;
                };
                if member.entry.is_some() {
                    continue;
                }
                let v = map.get(&key)?;
                let s = refresh(&mut member.node, v);
                let entry = member_entry(&key, &s.hash);
                let bytes = escaped_len(&key) + 1 + s.size;
                c.sum.add(&entry);
                c.entries_size += bytes;
                member.entry = Some((entry, bytes));
            }
            if members.len() != map.len() {
                return None;
            }
            let s = Summary {
                hash: container_hash(TAG_OBJECT, map.len(), c.sum),
                size: container_size(map.len(), c.entries_size),
            };
            c.summary = Some(s);
            Some(s)
        }
        (Node::Array(c), Value::Array(items)) => {
            if let Some(s) = c.summary {
                return (c.members_len() == items.len()).then_some(s);
            }
            let Members::Array(members) = &mut c.members else {
                return None;
            };
            if members.len() != items.len() {
                return None;
            }
            let from = c.dirty_from.take().unwrap_or(items.len());
            let dirty = std::mem::take(&mut c.dirty);
            for i in dirty.into_iter().chain(from..items.len()) {
                let (Some(member), Some(v)) = (members.get_mut(i), items.get(i)) else {
                    continue;
                };
                if member.entry.is_some() {
                    continue;
                }
                let s = refresh(&mut member.node, v);
                let entry = element_entry(i, &s.hash);
                c.sum.add(&entry);
                c.entries_size += s.size;
                member.entry = Some((entry, s.size));
            }
            let s = Summary {
                hash: container_hash(TAG_ARRAY, items.len(), c.sum),
                size: container_size(items.len(), c.entries_size),
            };
            c.summary = Some(s);
            Some(s)
        }
        _ => None,
    }
}

impl<K> Container<K> {
    fn members_len(&self) -> usize {
        match &self.members {
            Members::Object(m) => m.len(),
            Members::Array(m) => m.len(),
        }
    }
}

/// Replaces `node` with a tree hashed from scratch from `value`.
fn rebuild(node: &mut Node, value: &Value) -> Summary {
    let (fresh, s) = build(value);
    *node = fresh;
    s
}

fn build(value: &Value) -> (Node, Summary) {
    match value {
        Value::Object(map) => {
            let mut sum = Sum::default();
            let mut entries_size = 0;
            let mut members = HashMap::with_capacity(map.len());
            for (key, v) in map {
                let (node, s) = build(v);
                let entry = member_entry(key, &s.hash);
                let bytes = escaped_len(key) + 1 + s.size;
                sum.add(&entry);
                entries_size += bytes;
                members.insert(
                    key.clone(),
                    Member {
                        node,
                        entry: Some((entry, bytes)),
                    },
                );
            }
            let s = Summary {
                hash: container_hash(TAG_OBJECT, map.len(), sum),
                size: container_size(map.len(), entries_size),
            };
            let c = Container {
                sum,
                entries_size,
                dirty: Vec::new(),
                dirty_from: None,
                summary: Some(s),
                members: Members::Object(members),
            };
            (Node::Object(Box::new(c)), s)
        }
        Value::Array(items) => {
            let mut sum = Sum::default();
            let mut entries_size = 0;
            let mut members = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                let (node, s) = build(v);
                let entry = element_entry(i, &s.hash);
                sum.add(&entry);
                entries_size += s.size;
                members.push(Member {
                    node,
                    entry: Some((entry, s.size)),
                });
            }
            let s = Summary {
                hash: container_hash(TAG_ARRAY, items.len(), sum),
                size: container_size(items.len(), entries_size),
            };
            let c = Container {
                sum,
                entries_size,
                dirty: Vec::new(),
                dirty_from: None,
                summary: Some(s),
                members: Members::Array(members),
            };
            (Node::Array(Box::new(c)), s)
        }
        scalar_value => {
            let s = scalar(scalar_value);
            (Node::Leaf(s), s)
        }
    }
}
