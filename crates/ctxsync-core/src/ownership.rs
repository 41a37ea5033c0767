//! Field ownership: rules `{path: glob, owners: [agents]}` decide who may write where.
//!
//! Globs are dotted: `*` matches one segment, `**` any number (zero included). An array
//! element is the segment `id=<id>` (or its position), so `project_state.active_tasks.*.status`
//! matches `project_state.active_tasks[id=task-1].status`. The most specific matching rule
//! wins (most literal segments, then most `*`, then the longest); no rule means anyone.
//! An owner `*` means every agent.

use serde::{Deserialize, Serialize};

use crate::path::{Path, Segment};

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
