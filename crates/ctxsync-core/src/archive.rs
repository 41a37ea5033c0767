//! Archival of list paths (seed: "archive old decisions and completed tasks"): which
//! entries of a list go to the archive, and the one revision that moves them.
//!
//! A rule keeps the newest `keep` entries of a list (lists grow by appends, so the
//! newest are at the end) and adds the number it moved to a counter field. Archival is
//! pure here: [`plan`] looks at a document and answers the changes of the archival
//! revision plus the entries to store; a backend commits both in one transaction, so an
//! entry is in the document or in the archive, never in neither.

use serde_json::Value;

use crate::change::{Change, Expect, Op};
use crate::path::{Path, PathError};

/// Keep the newest `keep` entries of the list at `path`; the rest are archived and
/// `counter` (when set) grows by their number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRule {
    /// The list's path (dotted or pointer), e.g. `decisions_log.recent`.
    pub path: String,
    pub keep: usize,
    /// A number field that counts the archived entries, e.g. `decisions_log.archived_count`.
    pub counter: Option<String>,
}

/// The default number of entries a seed-template list keeps.
pub const DEFAULT_KEEP: usize = 50;

/// The seed template's rules: `decisions_log.recent` (counted in
/// `decisions_log.archived_count`, as the seed shows) and `project_state.completed_tasks`
/// (counted in `project_state.archived_tasks_count`).
pub fn seed_rules(keep: usize) -> Vec<ArchiveRule> {
    vec![
        ArchiveRule {
            path: "decisions_log.recent".into(),
            keep,
            counter: Some("decisions_log.archived_count".into()),
        },
        ArchiveRule {
            path: "project_state.completed_tasks".into(),
            keep,
            counter: Some("project_state.archived_tasks_count".into()),
        },
    ]
}

/// How far past `keep` a list may grow before an automatic archival runs, so a busy list
/// costs one archival revision per `slack` appends, not one per append.
pub fn auto_slack(keep: usize) -> usize {
    (keep / 10).max(1)
}

/// One entry leaving a list for the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedEntry {
    /// The list's path as the rule names it (canonical pointer form).
    pub list: String,
    /// The entry's `id` field, when it has a scalar one.
    pub id: Option<String>,
    pub entry: Value,
}

/// The archival revision to make: its changes and the entries they move.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivePlan {
    pub changes: Vec<Change>,
    pub entries: Vec<ArchivedEntry>,
    /// Summary for the op log, e.g. `archived 12 of decisions_log.recent`.
    pub summary: String,
}

/// A rule that cannot be applied: its path or counter does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArchiveRuleError {
    #[error("archive rule path: {0}")]
    Path(#[from] PathError),
    #[error("archive rule {path:?}: `keep` must be at least 1")]
    KeepZero { path: String },
}

/// Checks every rule once (at configuration time) so [`plan`] never meets a bad one.
pub fn check_rules(rules: &[ArchiveRule]) -> Result<(), ArchiveRuleError> {
    for rule in rules {
        if rule.keep == 0 {
            return Err(ArchiveRuleError::KeepZero {
                path: rule.path.clone(),
            });
        }
        Path::parse(&rule.path)?;
        if let Some(counter) = &rule.counter {
            Path::parse(counter)?;
        }
    }
    Ok(())
}

/// What archival would do to `doc` now: for every rule whose list holds more than
/// `keep + slack` entries, move all but the newest `keep`. `None` when nothing is due.
/// A rule whose path is missing or not a list is skipped (the document is the user's);
/// a counter that exists but is not a non-negative integer is left alone (the entries
/// still move: the archive is the record, the counter only a convenience).
pub fn plan(doc: &Value, rules: &[ArchiveRule], slack: usize) -> Option<ArchivePlan> {
    let mut changes = Vec::new();
    let mut entries = Vec::new();
    let mut parts = Vec::new();
    for rule in rules {
        let Ok(path) = Path::parse(&rule.path) else {
            continue;
        };
        let Some(Value::Array(list)) = crate::apply::get(doc, &path) else {
            continue;
        };
        if list.len() <= rule.keep.saturating_add(slack) {
            continue;
        }
        let moving = list.len() - rule.keep;
        let list_name = path.to_pointer();
        for entry in &list[..moving] {
            // Always the first element: each removal shifts the rest down by one. The
            // test makes the op log say exactly what left.
            changes.push(Change {
                path: path.child(crate::path::Segment::Index(0)),
                op: Op::Remove,
                expect: Some(Expect::Value(entry.clone())),
            });
            entries.push(ArchivedEntry {
                list: list_name.clone(),
                id: crate::path::element_id(entry),
                entry: entry.clone(),
            });
        }
        if let Some(counter) = rule.counter.as_deref().and_then(|c| Path::parse(c).ok()) {
            match crate::apply::get(doc, &counter) {
                None | Some(Value::Null) => {
                    changes.push(Change::set(counter, Value::from(moving as u64)));
                }
                Some(Value::Number(n)) if n.as_u64().is_some() => {
                    let before = n.as_u64().unwrap_or(0);
                    changes.push(Change::set(
                        counter,
                        Value::from(before.saturating_add(moving as u64)),
                    ));
                }
                Some(_) => {}
            }
        }
        parts.push(format!("{moving} of {}", rule.path));
    }
    if entries.is_empty() {
        return None;
    }
    Some(ArchivePlan {
        changes,
        entries,
        summary: format!("archived {}", parts.join(", ")),
    })
}

/// One archived entry as a store hands it out.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveRecord {
    /// Position in the context's archive, 1.. in the order entries were archived.
    pub seq: u64,
    /// The list the entry left (a JSON Pointer, e.g. `/decisions_log/recent`).
    pub list: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The archival revision that moved it.
    pub revision: u64,
    pub ts_ms: u64,
    pub entry: Value,
}

/// Which archived entries to read: all filters optional and combined with "and".
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveQuery {
    /// Only this list (dotted path or pointer).
    pub list: Option<String>,
    /// Only the entry (or entries: an id may have been archived twice after a revert)
    /// with this `id`.
    pub id: Option<String>,
    /// Only entries whose JSON text contains this, ignoring ASCII case.
    pub text: Option<String>,
    /// Only entries after this `seq` (paging).
    pub after: Option<u64>,
    /// At most this many (the store caps it).
    pub limit: Option<u64>,
}

/// Most records one archive read answers.
pub const MAX_ARCHIVE_PAGE: u64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(decisions: usize, tasks: usize) -> Value {
        json!({
            "project_state": {
                "completed_tasks": (0..tasks).map(|i| json!({"id": format!("t{i}")})).collect::<Vec<_>>(),
            },
            "decisions_log": {
                "recent": (0..decisions).map(|i| json!({"id": format!("d{i}")})).collect::<Vec<_>>(),
                "archived_count": 45,
            }
        })
    }

    #[test]
    fn nothing_is_due_within_keep_plus_slack() {
        assert_eq!(plan(&doc(55, 3), &seed_rules(50), 5), None);
    }

    #[test]
    fn moves_the_oldest_and_counts_them() {
        let mut d = doc(60, 52);
        let plan = plan(&d, &seed_rules(50), 0).expect("due");
        assert_eq!(plan.entries.len(), 10 + 2);
        assert_eq!(plan.entries[0].id.as_deref(), Some("d0"));
        assert_eq!(plan.entries[9].id.as_deref(), Some("d9"));
        assert_eq!(plan.entries[10].id.as_deref(), Some("t0"));
        for change in &plan.changes {
            crate::apply::apply_change(&mut d, change).expect("applies");
        }
        let recent = d["decisions_log"]["recent"].as_array().expect("list");
        assert_eq!(recent.len(), 50);
        assert_eq!(recent[0]["id"], "d10");
        assert_eq!(d["decisions_log"]["archived_count"], 55);
        assert_eq!(d["project_state"]["archived_tasks_count"], 2);
        assert_eq!(d["project_state"]["completed_tasks"][0]["id"], "t2");
    }

    #[test]
    fn a_counter_that_is_not_a_count_is_left_alone() {
        let mut d = doc(3, 0);
        d["decisions_log"]["archived_count"] = json!("many");
        let plan = plan(&d, &seed_rules(1), 0).expect("due");
        assert_eq!(plan.entries.len(), 2);
        assert!(plan.changes.iter().all(|c| matches!(c.op, Op::Remove)));
    }

    #[test]
    fn missing_or_non_list_paths_are_skipped() {
        let d = json!({"decisions_log": {"recent": "not a list"}});
        assert_eq!(plan(&d, &seed_rules(1), 0), None);
        assert_eq!(plan(&json!({}), &seed_rules(1), 0), None);
    }

    #[test]
    fn bad_rules_are_refused_up_front() {
        let zero = ArchiveRule {
            path: "a.b".into(),
            keep: 0,
            counter: None,
        };
        assert!(check_rules(&[zero]).is_err());
        let bad = ArchiveRule {
            path: "a[".into(),
            keep: 1,
            counter: None,
        };
        assert!(check_rules(&[bad]).is_err());
        assert!(check_rules(&seed_rules(DEFAULT_KEEP)).is_ok());
    }
}
