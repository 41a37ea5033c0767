//! Field ownership: rules `{path: glob, owners: [agents]}` decide who may write where.
//!
//! Globs are dotted: `*` matches one segment, `**` any number (zero included). An array
//! element is the segment `id=<id>` (or its position), so `project_state.active_tasks.*.status`
//! matches `project_state.active_tasks[id=task-1].status`. The most specific matching rule
//! wins (most literal segments, then most `*`, then the longest); no rule means anyone.
//! An owner `*` means every agent.

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::path::{element_id, Path, Segment};

/// One rule as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipRule {
    pub path: String,
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Glob {
    Literal(String),
    One,
    Any,
}

#[derive(Debug, Clone)]
struct Compiled {
    rule: OwnershipRule,
    globs: Vec<Glob>,
    specificity: (usize, usize, usize),
}

/// A set of rules, ready to check writes against.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    rules: Vec<Compiled>,
}

/// A write refused by a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotOwner {
    pub rule: String,
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ownership rule {path:?}: {reason}")]
pub struct RuleError {
    pub path: String,
    pub reason: String,
}

fn segment_text(segment: &Segment) -> String {
    match segment {
        Segment::Key(k) => k.clone(),
        Segment::Index(i) => i.to_string(),
        Segment::Append => "-".into(),
        Segment::Select { field, value } => format!("{field}={value}"),
    }
}

fn literal_matches(literal: &str, segment: &Segment) -> bool {
    let text = segment_text(segment);
    literal == text || literal.strip_prefix('[').and_then(|l| l.strip_suffix(']')) == Some(&text)
}

fn matches(globs: &[Glob], path: &[Segment]) -> bool {
    let Some((glob, rest)) = globs.split_first() else {
        return path.is_empty();
    };
    match glob {
        Glob::Any => (0..=path.len()).any(|skip| matches(rest, &path[skip..])),
        Glob::One => !path.is_empty() && matches(rest, &path[1..]),
        Glob::Literal(l) => path
            .split_first()
            .is_some_and(|(segment, tail)| literal_matches(l, segment) && matches(rest, tail)),
    }
}

/// True when some path strictly below `path` can match `globs`: the globs consume all of
/// `path` and still have something left to match.
fn can_match_below(globs: &[Glob], path: &[Segment]) -> bool {
    let Some((glob, _)) = globs.split_first() else {
        return false;
    };
    if path.is_empty() {
        return true;
    }
    match glob {
        // `**` can take in the rest of `path` and one more segment (and whatever `rest`
        // needs after it).
        Glob::Any => true,
        Glob::One => can_match_below(&globs[1..], &path[1..]),
        Glob::Literal(l) => {
            literal_matches(l, &path[0]) && can_match_below(&globs[1..], &path[1..])
        }
    }
}

/// The children of a container, named as canonical paths name them (list elements with
/// an `id` by it, the others by position).
fn children(value: Option<&Value>) -> Vec<(Segment, &Value)> {
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (Segment::Key(k.clone()), v))
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let segment = match element_id(e) {
                    Some(id) => Segment::Select {
                        field: "id".into(),
                        value: id,
                    },
                    None => Segment::Index(i),
                };
                (segment, e)
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Ownership {
    pub fn new(rules: Vec<OwnershipRule>) -> Result<Self, RuleError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let err = |reason: &str| RuleError {
                path: rule.path.clone(),
                reason: reason.to_owned(),
            };
            if rule.path.is_empty() {
                return Err(err("empty path glob"));
            }
            if rule.owners.is_empty() {
                return Err(err("a rule needs at least one owner"));
            }
            let globs: Vec<Glob> = rule
                .path
                .split('.')
                .map(|s| match s {
                    "" => Err(err("empty segment (two dots in a row?)")),
                    "*" => Ok(Glob::One),
                    "**" => Ok(Glob::Any),
                    s => Ok(Glob::Literal(s.to_owned())),
                })
                .collect::<Result<_, _>>()?;
            let literals = globs
                .iter()
                .filter(|g| matches!(g, Glob::Literal(_)))
                .count();
            let ones = globs.iter().filter(|g| matches!(g, Glob::One)).count();
            let specificity = (literals, ones, globs.len());
            compiled.push(Compiled {
                rule,
                globs,
                specificity,
            });
        }
        Ok(Self { rules: compiled })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Checks a write that replaces the value at `path` (canonical) by `new`, where `old`
    /// was: the path itself, and every path below it whose value differs between the two
    /// (a write to the root, or to any parent, touches everything under it, so it needs
    /// the ownership of every owned path it changes there; unchanged owned paths below
    /// are no one's concern). Only subtrees some rule can reach are walked.
    pub fn check_write(
        &self,
        agent: &str,
        path: &Path,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), NotOwner> {
        self.check(agent, path)?;
        if self.rules.is_empty() || old == new {
            return Ok(());
        }
        let mut below = path.segments().to_vec();
        self.check_changed_below(agent, &mut below, old, new)
    }

    fn reaches_below(&self, path: &[Segment]) -> bool {
        self.rules.iter().any(|r| can_match_below(&r.globs, path))
    }

    /// Checks the children of `at` whose values differ between `old` and `new`. Where both
    /// sides are containers of one kind the write passes through (it changes something
    /// further down, not the child as a whole); elsewhere the child is replaced, added or
    /// removed, so it and everything inside it on either side is written.
    fn check_changed_below(
        &self,
        agent: &str,
        at: &mut Vec<Segment>,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), NotOwner> {
        if !self.reaches_below(at) {
            return Ok(());
        }
        let same_kind = matches!(
            (old, new),
            (Some(Value::Object(_)), Some(Value::Object(_)))
                | (Some(Value::Array(_)), Some(Value::Array(_)))
        );
        if !same_kind {
            for side in [old, new].into_iter().flatten() {
                self.check_everything_below(agent, at, side)?;
            }
            return Ok(());
        }
        let old_children = children(old);
        let new_listed = children(new);
        let new_children: std::collections::HashMap<Segment, &Value> =
            new_listed.iter().cloned().collect();
        let old_names: std::collections::HashSet<&Segment> =
            old_children.iter().map(|(s, _)| s).collect();
        // A list whose elements cannot be told apart (two with one id), or whose common
        // elements changed order, changed as a whole: the list itself is written.
        let ambiguous =
            old_names.len() != old_children.len() || new_children.len() != new_listed.len();
        let reordered = matches!(old, Some(Value::Array(_))) && {
            let kept_old = old_children
                .iter()
                .map(|(s, _)| s)
                .filter(|s| new_children.contains_key(*s));
            let kept_new = new_listed
                .iter()
                .map(|(s, _)| s)
                .filter(|s| old_names.contains(s));
            !kept_old.eq(kept_new)
        };
        if ambiguous || reordered {
            self.check(agent, &Path::from_segments(at.clone()))?;
            for side in [old, new].into_iter().flatten() {
                self.check_everything_below(agent, at, side)?;
            }
            return Ok(());
        }
        for (segment, a) in &old_children {
            let b = new_children.get(segment).copied();
            self.check_child(agent, at, segment, Some(a), b)?;
        }
        for (segment, b) in &new_children {
            if !old_names.contains(segment) {
                self.check_child(agent, at, segment, None, Some(b))?;
            }
        }
        Ok(())
    }

    fn check_child(
        &self,
        agent: &str,
        at: &mut Vec<Segment>,
        segment: &Segment,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), NotOwner> {
        if old == new {
            return Ok(());
        }
        at.push(segment.clone());
        let passes_through = matches!(
            (old, new),
            (Some(Value::Object(_)), Some(Value::Object(_)))
                | (Some(Value::Array(_)), Some(Value::Array(_)))
        );
        let result = if passes_through {
            self.check_changed_below(agent, at, old, new)
        } else {
            self.check(agent, &Path::from_segments(at.clone()))
                .and_then(|()| self.check_changed_below(agent, at, old, new))
        };
        at.pop();
        result
    }

    /// Checks every path inside `value` (which sits at `at` and is written whole).
    fn check_everything_below(
        &self,
        agent: &str,
        at: &mut Vec<Segment>,
        value: &Value,
    ) -> Result<(), NotOwner> {
        if !self.reaches_below(at) {
            return Ok(());
        }
        for (segment, child) in children(Some(value)) {
            at.push(segment);
            let result = self
                .check(agent, &Path::from_segments(at.clone()))
                .and_then(|()| self.check_everything_below(agent, at, child));
            at.pop();
            result?;
        }
        Ok(())
    }

    /// Checks that `agent` may write `path` (a canonical path).
    pub fn check(&self, agent: &str, path: &Path) -> Result<(), NotOwner> {
        let best = self
            .rules
            .iter()
            .filter(|r| matches(&r.globs, path.segments()))
            .max_by_key(|r| r.specificity);
        match best {
            Some(r) if !r.rule.owners.iter().any(|o| o == agent || o == "*") => Err(NotOwner {
                rule: r.rule.path.clone(),
                owners: r.rule.owners.clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Ownership {
        Ownership::new(vec![
            OwnershipRule {
                path: "project_state.**".into(),
                owners: vec!["planner".into()],
            },
            OwnershipRule {
                path: "project_state.active_tasks.*.status".into(),
                owners: vec!["builder".into(), "planner".into()],
            },
            OwnershipRule {
                path: "decisions_log.**".into(),
                owners: vec!["*".into()],
            },
        ])
        .unwrap()
    }

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn most_specific_rule_wins() {
        let o = rules();
        assert!(o
            .check("builder", &p("project_state.active_tasks[id=t1].status"))
            .is_ok());
        let e = o
            .check("builder", &p("project_state.active_tasks[id=t1].owner"))
            .unwrap_err();
        assert_eq!(e.rule, "project_state.**");
        assert!(o.check("planner", &p("project_state")).is_ok());
        assert!(
            o.check("builder", &p("project_state")).is_err(),
            "** matches zero segments"
        );
        assert!(o.check("anyone", &p("decisions_log.recent[-]")).is_ok());
        assert!(
            o.check("anyone", &p("communication.notes")).is_ok(),
            "no rule = anyone"
        );
    }

    #[test]
    fn a_write_above_owned_paths_needs_their_owners() {
        use serde_json::json;
        let o = rules();
        let old = json!({"project_state": {"active_tasks": [{"id": "t1", "status": "a", "owner": "x"}]}, "notes": 1});
        // The root, rewritten by someone who owns nothing under project_state.
        let mut new = old.clone();
        new["project_state"]["active_tasks"][0]["owner"] = json!("y");
        let e = o
            .check_write("builder", &Path::root(), Some(&old), Some(&new))
            .unwrap_err();
        assert_eq!(e.rule, "project_state.**");
        // Only what changes counts: the same rewrite that leaves project_state alone is fine.
        let mut same = old.clone();
        same["notes"] = json!(2);
        assert!(o
            .check_write("builder", &Path::root(), Some(&old), Some(&same))
            .is_ok());
        // A status change below the root is the builder's to make.
        let mut status = old.clone();
        status["project_state"]["active_tasks"][0]["status"] = json!("done");
        assert!(o
            .check_write("builder", &Path::root(), Some(&old), Some(&status))
            .is_ok());
        // Reordering an owned list, or smuggling an element in under an id it already
        // has, changes the owned list.
        let log = json!({"project_state": {"active_tasks": [{"id": "t1"}, {"id": "t2"}]}});
        let mut reversed = log.clone();
        reversed["project_state"]["active_tasks"] = json!([{"id": "t2"}, {"id": "t1"}]);
        assert!(o
            .check_write("builder", &Path::root(), Some(&log), Some(&reversed))
            .is_err());
        let mut smuggled = log.clone();
        smuggled["project_state"]["active_tasks"] =
            json!([{"id": "t1", "evil": true}, {"id": "t1"}, {"id": "t2"}]);
        assert!(o
            .check_write("builder", &Path::root(), Some(&log), Some(&smuggled))
            .is_err());
        // Removing the root's contents wipes owned paths.
        assert!(o
            .check_write("builder", &Path::root(), Some(&old), Some(&json!({})))
            .is_err());
        assert!(o
            .check_write("planner", &Path::root(), Some(&old), Some(&json!({})))
            .is_ok());
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(Ownership::new(vec![OwnershipRule {
            path: "a..b".into(),
            owners: vec!["x".into()]
        }])
        .is_err());
        assert!(Ownership::new(vec![OwnershipRule {
            path: "a".into(),
            owners: vec![]
        }])
        .is_err());
    }
}
