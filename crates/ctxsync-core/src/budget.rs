//! `budget_tokens`: trims a document to fit a token budget, most important first, and
//! names what it left out.
//!
//! The document is cut into units: every element of a list, and below two levels of
//! objects, every remaining member as a whole. Units are kept in this order: blocked
//! tasks, high-priority pending questions, active tasks, the newest decisions, then
//! everything else in document order. Tokens are counted with a real BPE tokenizer
//! (o200k_base, via tiktoken-rs) on the compact JSON of the result.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;

/// The tokenizer, loaded on first use (it takes a moment to build).
fn bpe() -> &'static CoreBPE {
    static BPE: OnceLock<&'static CoreBPE> = OnceLock::new();
    BPE.get_or_init(tiktoken_rs::o200k_base_singleton)
}

/// Tokens of `text` under o200k_base.
pub fn count_tokens(text: &str) -> usize {
    bpe().encode_ordinary(text).len()
}

/// Tokens of a value's compact JSON.
pub fn count_value(value: &Value) -> usize {
    count_tokens(&serde_json::to_string(value).unwrap_or_default())
}

/// A step into the document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug)]
struct Unit {
    steps: Vec<Step>,
    /// Dotted name, for `omitted`.
    name: String,
    rank: u8,
    /// Order within the rank.
    order: i64,
    tokens: usize,
}

/// The result of trimming.
#[derive(Debug, Clone, PartialEq)]
pub struct Trimmed {
    pub document: Value,
    /// Dotted paths of what was left out, in document order.
    pub omitted: Vec<String>,
    pub tokens: usize,
}

fn element_name(parent: &str, element: &Value, index: usize) -> String {
    match element.get("id") {
        Some(Value::String(id)) => format!("{parent}[id={id}]"),
        Some(Value::Number(id)) => format!("{parent}[id={id}]"),
        _ => format!("{parent}[{index}]"),
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn rank_of(name_path: &[&str], element: &Value) -> u8 {
    match name_path {
        ["project_state", "blocked_tasks"] => 0,
        ["communication", "pending_questions"] => {
            let p = element
                .get("priority")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            if matches!(p.as_str(), "critical" | "urgent" | "high") {
                1
            } else {
                4
            }
        }
        ["project_state", "active_tasks"] => 2,
        ["decisions_log", "recent"] => 3,
        _ => 4,
    }
}

fn split(
    value: &Value,
    steps: &mut Vec<Step>,
    keys: &mut Vec<String>,
    name: &str,
    units: &mut Vec<Unit>,
    seq: &mut i64,
) {
    match value {
        Value::Object(map) if steps.len() < 2 && !map.is_empty() => {
            for (k, v) in map {
                steps.push(Step::Key(k.clone()));
                keys.push(k.clone());
                split(v, steps, keys, &join(name, k), units, seq);
                keys.pop();
                steps.pop();
            }
        }
        Value::Array(items) if !steps.is_empty() && !items.is_empty() => {
            let key_path: Vec<&str> = keys.iter().map(String::as_str).collect();
            let is_decisions = key_path == ["decisions_log", "recent"];
            for (i, item) in items.iter().enumerate() {
                steps.push(Step::Index(i));
                *seq += 1;
                let rank = rank_of(&key_path, item);
                // Newest decisions first: by timestamp when present, else later first.
                let order = if is_decisions { -(i as i64) } else { *seq };
                units.push(Unit {
                    steps: steps.clone(),
                    name: element_name(name, item, i),
                    rank,
                    order,
                    tokens: count_value(item) + 1,
                });
                steps.pop();
            }
        }
        other => {
            *seq += 1;
            let key_tokens = keys.last().map_or(0, |k| count_tokens(k) + 2);
            units.push(Unit {
                steps: steps.clone(),
                name: name.to_owned(),
                rank: 4,
                order: *seq,
                tokens: count_value(other) + key_tokens,
            });
        }
    }
}

/// Keeps only the parts of `value` at or above the `kept` step paths.
fn keep(value: &Value, prefix: &mut Vec<Step>, kept: &BTreeSet<Vec<Step>>) -> Option<Value> {
    if kept.contains(prefix) {
        return Some(value.clone());
    }
    let below = kept
        .range(prefix.clone()..)
        .next()
        .is_some_and(|k| k.starts_with(prefix));
    if !below {
        return None;
    }
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                prefix.push(Step::Key(k.clone()));
                if let Some(v) = keep(v, prefix, kept) {
                    out.insert(k.clone(), v);
                }
                prefix.pop();
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, v) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                if let Some(v) = keep(v, prefix, kept) {
                    out.push(v);
                }
                prefix.pop();
            }
            Some(Value::Array(out))
        }
        _ => None,
    }
}

/// Trims `doc` to at most `budget` tokens (of its compact JSON).
pub fn trim(doc: &Value, budget: usize) -> Trimmed {
    let total = count_value(doc);
    if total <= budget {
        return Trimmed {
            document: doc.clone(),
            omitted: Vec::new(),
            tokens: total,
        };
    }
    let mut units = Vec::new();
    split(
        doc,
        &mut Vec::new(),
        &mut Vec::new(),
        "",
        &mut units,
        &mut 0,
    );
    let mut order: Vec<usize> = (0..units.len()).collect();
    // Decisions: newest timestamp first when every decision has one.
    let decisions_ts: Option<Vec<String>> = doc
        .get("decisions_log")
        .and_then(|d| d.get("recent"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    e.get("timestamp")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        });
    order.sort_by(|&a, &b| {
        let (ua, ub) = (&units[a], &units[b]);
        ua.rank.cmp(&ub.rank).then_with(|| {
            if ua.rank == 3 {
                if let (Some(ts), Some(Step::Index(ia)), Some(Step::Index(ib))) =
                    (&decisions_ts, ua.steps.last(), ub.steps.last())
                {
                    let (ta, tb) = (ts.get(*ia), ts.get(*ib));
                    return tb.cmp(&ta).then(ib.cmp(ia));
                }
            }
            ua.order.cmp(&ub.order)
        })
    });
    // Greedy by estimate, then check the real count and give back from the end.
    let overhead = 2;
    let mut used = overhead;
    let mut chosen: Vec<usize> = Vec::new();
    for &i in &order {
        if used + units[i].tokens <= budget {
            used += units[i].tokens;
            chosen.push(i);
        }
    }
    loop {
        let kept: BTreeSet<Vec<Step>> = chosen.iter().map(|&i| units[i].steps.clone()).collect();
        let document = keep(doc, &mut Vec::new(), &kept).unwrap_or(Value::Object(Map::new()));
        let tokens = count_value(&document);
        if tokens <= budget || chosen.is_empty() {
            let chosen_set: BTreeSet<usize> = chosen.iter().copied().collect();
            let omitted = omitted_names(&units, &chosen_set);
            return Trimmed {
                document,
                omitted,
                tokens,
            };
        }
        // Drop the least important units until the estimate is under by the excess.
        let mut excess = tokens - budget;
        while excess > 0 {
            let Some(i) = chosen.pop() else { break };
            excess = excess.saturating_sub(units[i].tokens.max(1));
        }
    }
}

/// Names of the omitted units; a list whose elements are all omitted is named once.
fn omitted_names(units: &[Unit], chosen: &BTreeSet<usize>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < units.len() {
        let unit = &units[i];
        if chosen.contains(&i) {
            i += 1;
            continue;
        }
        if let Some(Step::Index(_)) = unit.steps.last() {
            let parent = &unit.steps[..unit.steps.len() - 1];
            let mut j = i;
            let mut all = true;
            while j < units.len()
                && units[j].steps.len() == unit.steps.len()
                && units[j].steps.starts_with(parent)
            {
                if chosen.contains(&j) {
                    all = false;
                }
                j += 1;
            }
            if all {
                let name = unit
                    .name
                    .rsplit_once('[')
                    .map_or(unit.name.as_str(), |(p, _)| p);
                out.push(name.to_owned());
                i = j;
                continue;
            }
        }
        out.push(unit.name.clone());
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fitting_document_is_untouched() {
        let doc = crate::template::seed();
        let t = trim(&doc, 100_000);
        assert_eq!(t.document, doc);
        assert!(t.omitted.is_empty());
    }

    #[test]
    fn most_important_first() {
        let filler: Vec<Value> = (0..50)
            .map(|i| json!({"id": format!("n{i}"), "text": "a long note about nothing in particular, repeated"}))
            .collect();
        let doc = json!({
            "project_state": {
                "blocked_tasks": [{"id": "b1", "reason": "waiting"}],
                "active_tasks": [{"id": "a1", "status": "in_progress"}],
            },
            "communication": {"pending_questions": [
                {"id": "q-low", "priority": "low", "question": "x"},
                {"id": "q-high", "priority": "high", "question": "y"}
            ]},
            "decisions_log": {"recent": [
                {"id": "d-old", "timestamp": "2024-01-01T00:00:00Z"},
                {"id": "d-new", "timestamp": "2024-02-01T00:00:00Z"}
            ]},
            "notes": filler,
        });
        let t = trim(&doc, 120);
        assert!(t.tokens <= 120, "{}", t.tokens);
        assert_eq!(t.tokens, count_value(&t.document));
        let d = &t.document;
        assert_eq!(d["project_state"]["blocked_tasks"][0]["id"], "b1");
        assert_eq!(d["communication"]["pending_questions"][0]["id"], "q-high");
        assert_eq!(d["project_state"]["active_tasks"][0]["id"], "a1");
        let decisions: Vec<&str> = d["decisions_log"]["recent"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["id"].as_str())
            .collect();
        assert!(decisions.contains(&"d-new"), "{decisions:?}");
        // Tighter: the newest decision stays when the older one must go.
        let with_decisions = count_value(
            &json!({"project_state": doc["project_state"], "communication": {"pending_questions": [doc["communication"]["pending_questions"][1]]}, "decisions_log": {"recent": [doc["decisions_log"]["recent"][1]]}}),
        );
        let t2 = trim(&doc, with_decisions + 2);
        let kept: Vec<&str> = t2.document["decisions_log"]["recent"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(kept, ["d-new"], "{:?}", t2.omitted);
        assert!(
            t.omitted.iter().any(|o| o.starts_with("notes")),
            "{:?}",
            t.omitted
        );
        // A tiny budget keeps nothing but still answers.
        let t = trim(&doc, 1);
        assert!(!t.omitted.is_empty());
    }
}
