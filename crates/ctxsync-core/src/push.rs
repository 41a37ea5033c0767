//! The push protocol: requests, answers, and the decision of what a push applies.
//!
//! [`evaluate`] is the whole of DESIGN §3 steps 2–4 as a pure function: given the current
//! document, the writes made since the agent's base revision and the ownership rules, it
//! applies what may be applied and reports the rest as conflicts (with both values) or
//! rejections. The store calls it inside its write transaction, so the local and the
//! remote mode decide identically.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::{apply_change_within, canonicalize, get, undo, ApplyError, Edit};
use crate::change::{Change, Expect, Op};
use crate::claims::ClaimGuard;
use crate::level::Level;
use crate::limits::{Budget, LimitError};
use crate::ownership::Ownership;
use crate::path::{element_id, Path, Segment};

/// How a push treats conflicting changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Apply every non-conflicting change, report the conflicts.
    #[default]
    Merge,
    /// All or nothing.
    Atomic,
    /// Apply everything, last writer wins; the overwritten values stay in the op log.
    Force,
    /// Like merge, and the conflicting changes are stored as open conflicts.
    Defer,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "merge" => Ok(Self::Merge),
            "atomic" => Ok(Self::Atomic),
            "force" => Ok(Self::Force),
            "defer" => Ok(Self::Defer),
            other => Err(format!(
                "unknown strategy {other:?} (expected merge, atomic, force or defer)"
            )),
        }
    }
}

/// A push, as an agent sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub agent: String,
    #[serde(default)]
    pub level: Level,
    /// The revision the agent last saw; `None` checks every change only by its own test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_revision: Option<u64>,
    /// Idempotency key: a replay returns the stored answer and changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    pub changes: Vec<Change>,
}

/// Why a change conflicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictReason {
    TestFailed,
    ConcurrentWrite,
    DuplicateId,
    MissingPath,
}

impl ConflictReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TestFailed => "test_failed",
            Self::ConcurrentWrite => "concurrent_write",
            Self::DuplicateId => "duplicate_id",
            Self::MissingPath => "missing_path",
        }
    }
}

/// A change that was not applied because the document moved under it. Carries both
/// values so the agent can decide without another round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Position of the change in the push.
    pub index: usize,
    pub path: String,
    pub reason: ConflictReason,
    /// What the agent wanted (absent for a removal). A missing field means absent,
    /// `null` means the value `null`.
    #[serde(
        default,
        deserialize_with = "crate::change::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub yours: Option<Value>,
    /// What is there now (absent when the path does not exist).
    #[serde(
        default,
        deserialize_with = "crate::change::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub current: Option<Value>,
    pub modified_by: Option<String>,
    pub modified_at_revision: Option<u64>,
    /// The change itself, so a deferred conflict can be applied later.
    pub change: Change,
    /// Set when the conflict was stored (strategy `defer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

/// A change refused by an ownership rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub index: usize,
    pub path: String,
    pub reason: String,
    pub rule: String,
    pub owners: Vec<String>,
}

/// A change that was applied, named by its canonical path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: usize,
    pub op: String,
    pub path: String,
}

/// The answer to a push.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// The new revision, or the current one when nothing was applied.
    pub revision: u64,
    pub applied: Vec<Applied>,
    pub conflicts: Vec<Conflict>,
    pub rejected: Vec<Rejection>,
    pub checksum: String,
    #[serde(default)]
    pub replayed: bool,
    /// What the pushing agent had not seen (`behind`, `changed_sections`,
    /// `since_revision`), filled in by whoever answers the agent; never stored with the
    /// idempotency key, so a replay carries a fresh one.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub stale: Option<crate::records::StaleView>,
}

impl PushResponse {
    /// The HTTP status DESIGN §3 gives this answer: 200 when anything applied or nothing
    /// conflicted, 409 when conflicts stopped it, 403 when everything was `not_owner`.
    pub fn status(&self) -> u16 {
        if !self.applied.is_empty() {
            200
        } else if !self.conflicts.is_empty() {
            409
        } else if !self.rejected.is_empty() {
            403
        } else {
            200
        }
    }

    /// True when something the agent asked for did not happen.
    pub fn is_partial(&self) -> bool {
        !self.conflicts.is_empty() || !self.rejected.is_empty()
    }
}

/// A write recorded after the agent's base revision.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorWrite {
    pub revision: u64,
    pub agent: String,
    pub path: Path,
}

/// What a push would do to a document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub edits: Vec<Edit>,
    pub applied: Vec<Applied>,
    pub conflicts: Vec<Conflict>,
    pub rejected: Vec<Rejection>,
}

/// A push that is wrong in itself (not because of other agents): nothing is applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("change #{index}: {message}")]
pub struct InvalidPush {
    pub index: usize,
    pub message: String,
    /// Set when the push was refused for a bound (size, depth, work), not for a mistake
    /// in a change: a store answers it as "too large".
    pub limit: Option<LimitError>,
}

/// Applies `request` to `doc` (in place) and says what happened. On `Err` and under a
/// failed `atomic` push, `doc` is left as it was.
///
/// `current_revision` is the document's revision; `since_base` are the writes of the
/// revisions after `request.base_revision`, oldest first.
pub fn evaluate(
    doc: &mut Value,
    request: &PushRequest,
    current_revision: u64,
    since_base: &[PriorWrite],
    ownership: &Ownership,
) -> Result<Evaluation, InvalidPush> {
    evaluate_within(
        doc,
        request,
        current_revision,
        since_base,
        ownership,
        Budget::unlimited(),
    )
}

/// [`evaluate`] within a [`Budget`]: the changes may not grow the document past its
/// quota, nest it past [`crate::limits::MAX_DEPTH`] or write more than the budget's bytes
/// *while they apply* (a push over any bound is an [`InvalidPush`] with `limit` set, and
/// nothing is applied).
pub fn evaluate_within(
    doc: &mut Value,
    request: &PushRequest,
    current_revision: u64,
    since_base: &[PriorWrite],
    ownership: &Ownership,
    budget: Budget,
) -> Result<Evaluation, InvalidPush> {
    evaluate_at(
        doc,
        request,
        current_revision,
        since_base,
        ownership,
        budget,
        None,
    )
}

/// [`evaluate_within`] that also enforces the document's claims live at `now_ms` (the
/// store's clock; `None` enforces none): a change writing at, below or above a path
/// another agent holds a live claim on, or to that claim's entry, is rejected with reason
/// `claimed` (the holder in `owners`, the claimed path in `rule`) unless the strategy is
/// `force`. Ownership is checked first and still applies under `force`.
pub fn evaluate_at(
    doc: &mut Value,
    request: &PushRequest,
    current_revision: u64,
    since_base: &[PriorWrite],
    ownership: &Ownership,
    mut budget: Budget,
    now_ms: Option<u64>,
) -> Result<Evaluation, InvalidPush> {
    let moved_on = match request.base_revision {
        Some(base) if base > current_revision => {
            return Err(InvalidPush {
                index: 0,
                message: format!(
                    "base_revision {base} is ahead of the current revision {current_revision}"
                ),
                limit: None,
            })
        }
        Some(base) => base < current_revision,
        None => false,
    };
    let force = request.strategy == Strategy::Force;
    let mut out = Evaluation::default();
    // The claims as they were before this push: a push cannot lift someone's claim and
    // write under it in one go.
    let guard = match now_ms {
        Some(now) if !force => ClaimGuard::new(doc, now),
        _ => ClaimGuard::default(),
    };

    'changes: for (index, change) in request.changes.iter().enumerate() {
        let written: Vec<Path> = change
            .written_paths()
            .into_iter()
            .map(|p| canonicalize(doc, p))
            .collect();
        for (path, old, new) in touched(doc, change, &written) {
            if let Err(not_owner) = ownership.check_write(&request.agent, &path, old, new) {
                out.rejected.push(Rejection {
                    index,
                    path: path.to_string(),
                    reason: "not_owner".into(),
                    rule: not_owner.rule,
                    owners: not_owner.owners,
                });
                continue 'changes;
            }
        }
        if !guard.is_empty() {
            if let Some(claim) = written
                .iter()
                .find_map(|path| guard.blocking(&request.agent, path))
            {
                out.rejected.push(Rejection {
                    index,
                    path: change.path.to_string(),
                    reason: "claimed".into(),
                    rule: claim.path.clone(),
                    owners: vec![claim.holder.clone()],
                });
                continue 'changes;
            }
        }

        let tested = change.expect.is_some() || matches!(change.op, Op::Test(_));
        if moved_on && !force && !tested {
            let hit = written
                .iter()
                .find_map(|path| latest_overlap(since_base, path, change));
            if let Some(prior) = hit {
                out.conflicts.push(conflict(
                    doc,
                    index,
                    change,
                    ConflictReason::ConcurrentWrite,
                    Some(prior),
                ));
                continue;
            }
        }

        let forced;
        let to_apply = if force && change.expect.is_some() {
            forced = Change {
                expect: None,
                ..change.clone()
            };
            &forced
        } else {
            change
        };
        match apply_change_within(doc, to_apply, &mut budget) {
            Ok(edits) => {
                // Where the change landed: for a move, the place it moved to.
                let path = edits
                    .last()
                    .map_or_else(|| change.path.to_string(), |e| e.path.to_string());
                out.applied.push(Applied {
                    index,
                    op: change.op_name().into(),
                    path,
                });
                out.edits.extend(edits);
            }
            Err(err) => {
                let reason = match &err {
                    ApplyError::TestFailed { .. } => ConflictReason::TestFailed,
                    ApplyError::DuplicateId { .. } => ConflictReason::DuplicateId,
                    ApplyError::MissingPath { .. } => {
                        // A path that vanished because someone removed it is a conflict;
                        // one that never existed is the agent's mistake.
                        let removed_by_other = moved_on
                            && written
                                .iter()
                                .any(|p| latest_overlap(since_base, p, change).is_some());
                        if removed_by_other {
                            ConflictReason::MissingPath
                        } else {
                            return Err(invalid(doc, &mut out, index, &err));
                        }
                    }
                    ApplyError::Invalid { .. } => {
                        return Err(invalid(doc, &mut out, index, &err));
                    }
                    ApplyError::Limit(limit) => {
                        let mut e = invalid(doc, &mut out, index, &err);
                        e.limit = Some(limit.clone());
                        return Err(e);
                    }
                };
                let prior = written
                    .iter()
                    .find_map(|p| latest_overlap(since_base, p, change));
                let mut c = conflict(doc, index, change, reason, prior);
                if let ApplyError::DuplicateId { id, .. } = &err {
                    // "Current" is the element that already has the id, not the `[-]` slot.
                    c.current = change
                        .path
                        .split_last()
                        .and_then(|(list, _)| get(doc, &list))
                        .and_then(Value::as_array)
                        .and_then(|items| {
                            items
                                .iter()
                                .find(|e| element_id(e).as_deref() == Some(id.as_str()))
                        })
                        .cloned();
                }
                out.conflicts.push(c);
            }
        }
    }

    if request.strategy == Strategy::Atomic
        && (!out.conflicts.is_empty() || !out.rejected.is_empty())
    {
        undo(doc, &out.edits).map_err(|e| InvalidPush {
            index: 0,
            message: e.to_string(),
            limit: None,
        })?;
        out.edits.clear();
        out.applied.clear();
    }
    Ok(out)
}

fn invalid(doc: &mut Value, out: &mut Evaluation, index: usize, err: &ApplyError) -> InvalidPush {
    // Undo cannot fail on edits we just made; if it did, the message says so.
    let message = match undo(doc, &out.edits) {
        Ok(()) => err.to_string(),
        Err(undo_err) => format!("{err} (and undo failed: {undo_err})"),
    };
    InvalidPush {
        index,
        message,
        limit: None,
    }
}

/// What a change writes, for the ownership check: each written path (canonical) with its
/// value before and after.
fn touched<'a>(
    doc: &'a Value,
    change: &'a Change,
    written: &[Path],
) -> Vec<(Path, Option<&'a Value>, Option<&'a Value>)> {
    let moved = match &change.op {
        Op::Move { from } | Op::Copy { from } => get(doc, from),
        _ => None,
    };
    let new = change.proposed_value().or(moved);
    match &change.op {
        Op::Move { .. } => vec![
            (written[0].clone(), moved, None),
            (written[1].clone(), get(doc, &change.path), new),
        ],
        Op::Remove => vec![(written[0].clone(), get(doc, &change.path), None)],
        Op::Add(_) | Op::Copy { .. } => {
            // An add into a list inserts; into an object it replaces what is there.
            let old = match change.path.segments().last() {
                Some(Segment::Key(_)) => get(doc, &change.path).filter(|_| {
                    change
                        .path
                        .split_last()
                        .and_then(|(parent, _)| get(doc, &parent))
                        .is_some_and(Value::is_object)
                }),
                _ => None,
            };
            written.iter().map(|p| (p.clone(), old, new)).collect()
        }
        _ => written
            .iter()
            .map(|p| (p.clone(), get(doc, &change.path), new))
            .collect(),
    }
}

fn conflict(
    doc: &Value,
    index: usize,
    change: &Change,
    reason: ConflictReason,
    prior: Option<&PriorWrite>,
) -> Conflict {
    Conflict {
        index,
        path: change.path.to_string(),
        reason,
        yours: change.proposed_value().cloned(),
        current: get(doc, &change.path).cloned(),
        modified_by: prior.map(|p| p.agent.clone()),
        modified_at_revision: prior.map(|p| p.revision),
        change: change.clone(),
        id: None,
    }
}

/// The newest write since the base that touches what `change` writes at `path`.
/// An append only collides with a rewrite of its list (or above), or with an element of
/// the same id.
fn latest_overlap<'a>(
    since_base: &'a [PriorWrite],
    path: &Path,
    change: &Change,
) -> Option<&'a PriorWrite> {
    let append = match path.split_last() {
        Some((list, Segment::Append)) => Some((
            list,
            change
                .proposed_value()
                .and_then(element_id)
                .map(|id| Segment::Select {
                    field: "id".into(),
                    value: id,
                }),
        )),
        _ => None,
    };
    since_base.iter().rev().find(|prior| match &append {
        Some((list, id)) => {
            list.starts_with(&prior.path)
                || id
                    .as_ref()
                    .is_some_and(|id| prior.path.overlaps(&list.child(id.clone())))
        }
        None => prior.path.overlaps(path),
    })
}

/// Turns a conflict back into a change that settles it in favour of "mine".
pub fn force_change(conflict: &Conflict) -> Change {
    Change {
        expect: None::<Expect>,
        ..conflict.change.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::OwnershipRule;
    use serde_json::json;

    fn seed() -> Value {
        json!({"project_state": {"active_tasks": [
            {"id": "task-123", "status": "in_progress", "owner": "builder"}
        ], "completed_tasks": []}})
    }

    fn req(agent: &str, base: u64, strategy: Strategy, changes: Value) -> PushRequest {
        PushRequest {
            agent: agent.into(),
            level: Level::Checkpoint,
            base_revision: Some(base),
            request_id: None,
            strategy,
            summary: String::new(),
            changes: Change::list_from_json(&changes).unwrap(),
        }
    }

    fn writes(edits: &[Edit], revision: u64, agent: &str) -> Vec<PriorWrite> {
        edits
            .iter()
            .map(|e| PriorWrite {
                revision,
                agent: agent.into(),
                path: e.path.clone(),
            })
            .collect()
    }

    /// The seed's own example: from one base the planner adds two tasks and the builder
    /// completes an existing one; both apply under merge and nothing is lost.
    #[test]
    fn seed_conflict_example_merges() {
        let mut doc = seed();
        let none = Ownership::default();
        let planner = req(
            "planner",
            0,
            Strategy::Merge,
            json!([
                {"path": "project_state.active_tasks[-]", "to": {"id": "task-125", "status": "todo"}},
                {"path": "project_state.active_tasks[-]", "to": {"id": "task-126", "status": "todo"}},
            ]),
        );
        let first = evaluate(&mut doc, &planner, 0, &[], &none).unwrap();
        assert_eq!(first.applied.len(), 2);
        let builder = req(
            "builder",
            0,
            Strategy::Merge,
            json!([
                {"path": "project_state.active_tasks[0].status", "from": "in_progress", "to": "completed"},
            ]),
        );
        let second = evaluate(
            &mut doc,
            &builder,
            1,
            &writes(&first.edits, 1, "planner"),
            &none,
        )
        .unwrap();
        assert_eq!(second.applied.len(), 1, "{second:?}");
        assert!(second.conflicts.is_empty());
        let tasks = doc["project_state"]["active_tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[0]["status"], "completed");
    }

    #[test]
    fn same_field_conflicts_with_both_values() {
        let mut doc = seed();
        let none = Ownership::default();
        let a = req(
            "planner",
            0,
            Strategy::Merge,
            json!([{"path": "project_state.active_tasks[id=task-123].status", "to": "blocked"}]),
        );
        let first = evaluate(&mut doc, &a, 0, &[], &none).unwrap();
        let before = doc.clone();
        let b = req(
            "builder",
            0,
            Strategy::Atomic,
            json!([
                {"path": "project_state.completed_tasks[-]", "to": {"id": "task-123"}},
                {"path": "project_state.active_tasks[id=task-123].status", "to": "completed"},
            ]),
        );
        let second = evaluate(&mut doc, &b, 1, &writes(&first.edits, 1, "planner"), &none).unwrap();
        assert!(second.applied.is_empty());
        assert!(second.edits.is_empty());
        assert_eq!(doc, before, "atomic applies nothing");
        let c = &second.conflicts[0];
        assert_eq!(c.reason, ConflictReason::ConcurrentWrite);
        assert_eq!(c.yours, Some(json!("completed")));
        assert_eq!(c.current, Some(json!("blocked")));
        assert_eq!(c.modified_by.as_deref(), Some("planner"));
        assert_eq!(c.modified_at_revision, Some(1));
    }

    #[test]
    fn force_overwrites_and_tests_are_ignored() {
        let mut doc = seed();
        let r = req(
            "x",
            0,
            Strategy::Force,
            json!([{"path": "project_state.active_tasks[0].status", "from": "nope", "to": "done"}]),
        );
        let e = evaluate(&mut doc, &r, 0, &[], &Ownership::default()).unwrap();
        assert_eq!(e.applied.len(), 1);
        assert_eq!(doc["project_state"]["active_tasks"][0]["status"], "done");
    }

    #[test]
    fn non_owner_is_rejected_others_apply() {
        let mut doc = seed();
        let rules = Ownership::new(vec![OwnershipRule {
            path: "project_state.active_tasks.*.owner".into(),
            owners: vec!["planner".into()],
        }])
        .unwrap();
        let r = req(
            "builder",
            0,
            Strategy::Merge,
            json!([
                {"path": "project_state.active_tasks[0].owner", "to": "builder2"},
                {"path": "project_state.active_tasks[0].status", "to": "done"},
            ]),
        );
        let e = evaluate(&mut doc, &r, 0, &[], &rules).unwrap();
        assert_eq!(e.rejected.len(), 1);
        assert_eq!(e.rejected[0].reason, "not_owner");
        assert_eq!(e.applied.len(), 1);
        assert_eq!(doc["project_state"]["active_tasks"][0]["owner"], "builder");
    }

    #[test]
    fn from_on_a_missing_path_is_invalid_and_changes_nothing() {
        let mut doc = seed();
        let r = req(
            "a",
            0,
            Strategy::Merge,
            json!([
                {"path": "project_state.phase", "to": "x"},
                {"path": "project_state.nope", "from": 1, "to": 2},
            ]),
        );
        let err = evaluate(&mut doc, &r, 0, &[], &Ownership::default()).unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(doc, seed());
    }

    #[test]
    fn duplicate_append_conflicts() {
        let mut doc = seed();
        let r = req(
            "a",
            0,
            Strategy::Merge,
            json!([{"path": "project_state.active_tasks[-]", "to": {"id": "task-123"}}]),
        );
        let e = evaluate(&mut doc, &r, 0, &[], &Ownership::default()).unwrap();
        assert_eq!(e.conflicts[0].reason, ConflictReason::DuplicateId);
        assert_eq!(
            e.conflicts[0]
                .current
                .as_ref()
                .and_then(|c| c.get("status")),
            Some(&json!("in_progress")),
            "current is the element that has the id"
        );
    }
}
