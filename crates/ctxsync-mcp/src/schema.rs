//! The tool list: names, descriptions, input and output schemas, written by hand.
//!
//! Clients are strict about input schemas (several reject a top-level `oneOf`/`anyOf`,
//! any `$ref`, or `null` in an `enum`), and a derived schema of `Option<Enum>` produces
//! exactly those. So every input schema here is one flat object of plain properties,
//! and [`check_flat`] (run by the tests on every tool) holds them to that.
//!
//! Every answer shares the fields of [`common_output`] (`revision`, `behind`,
//! `changed_sections`); each tool's output schema adds its own.

use serde_json::{json, Map, Value};

/// The tools, in the order `tools/list` gives them.
pub const TOOL_NAMES: [&str; 12] = [
    "pull",
    "get",
    "set",
    "push",
    "conflicts",
    "resolve",
    "history",
    "claim",
    "release",
    "wait",
    "handover",
    "who",
];

const LEVELS: [&str; 4] = ["critical", "checkpoint", "periodic", "session"];
const STRATEGIES: [&str; 4] = ["merge", "atomic", "force", "defer"];

fn context_prop() -> Value {
    json!({"type": "string", "description": "Context name (default: the server's context)."})
}

fn level_prop() -> Value {
    json!({"type": "string", "enum": LEVELS,
           "description": "Sync level of the write (default checkpoint); critical is fanned out at once."})
}

fn strategy_prop() -> Value {
    json!({"type": "string", "enum": STRATEGIES,
           "description": "merge (default: apply what does not conflict), atomic (all or nothing), force (last writer wins) or defer (store conflicts for resolve)."})
}

/// An input schema: a flat object with these properties, the listed ones required.
fn input(properties: Value, required: &[&str]) -> Value {
    let mut props = match properties {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    props.insert("context".into(), context_prop());
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

/// The fields every answer carries, plus `extra`.
fn output(extra: Value, required: &[&str]) -> Value {
    let mut props = common_output();
    if let Value::Object(map) = extra {
        props.extend(map);
    }
    let mut req: Vec<&str> = vec!["context", "revision", "behind", "changed_sections"];
    req.extend_from_slice(required);
    json!({"type": "object", "properties": props, "required": req})
}

/// `context`, `revision`, `behind`, `changed_sections`.
fn common_output() -> Map<String, Value> {
    let value = json!({
        "context": {"type": "string"},
        "revision": {"type": "integer", "description": "The context's revision this answer reflects."},
        "behind": {"type": "integer", "description": "Revisions by other agents since the one you last saw."},
        "changed_sections": {"type": "array", "items": {"type": "string"},
                             "description": "Sections those revisions wrote (first two path segments)."},
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn push_output() -> Value {
    output(
        json!({
            "applied": {"type": "array", "items": {"type": "object"}},
            "conflicts": {"type": "array", "items": {"type": "object"},
                          "description": "path, reason, yours, current, modified_by, modified_at_revision."},
            "rejected": {"type": "array", "items": {"type": "object"}},
            "checksum": {"type": "string"},
            "replayed": {"type": "boolean"},
        }),
        &["applied", "conflicts", "rejected"],
    )
}

/// One tool as `tools/list` shows it (MCP's `Tool` JSON).
fn tool(
    name: &str,
    title: &str,
    description: &str,
    input: Value,
    output: Value,
    read_only: bool,
) -> Value {
    json!({
        "name": name,
        "title": title,
        "description": description,
        "inputSchema": input,
        "outputSchema": output,
        "annotations": {"title": title, "readOnlyHint": read_only, "destructiveHint": false,
                        "openWorldHint": false},
    })
}

/// Every tool definition, as JSON.
pub fn tools() -> Vec<Value> {
    let path = |what: &str| json!({"type": "string", "description": what});
    vec![
        tool(
            "pull",
            "Pull the shared context",
            "Read the shared context (or some sections) at its newest revision, or only what changed after `since`. `budget_tokens` trims the answer to fit, most important first (blocked tasks, urgent questions, active tasks, newest decisions), naming what it left out.",
            input(
                json!({
                    "sections": {"type": "array", "items": {"type": "string"},
                                 "description": "Sections to read, as dotted paths (project_state, decisions_log.recent); all when empty."},
                    "since": {"type": "integer", "minimum": 0,
                              "description": "Return only the edits made after this revision."},
                    "budget_tokens": {"type": "integer", "minimum": 1,
                                      "description": "Trim the document to about this many tokens (not with since)."},
                }),
                &[],
            ),
            output(
                json!({
                    "checksum": {"type": "string"},
                    "document": {"type": "object", "description": "The document or the sections (full pulls)."},
                    "omitted": {"type": "array", "items": {"type": "string"}},
                    "since": {"type": "integer"},
                    "edits": {"type": "array", "items": {"type": "object"},
                              "description": "Edits after since (delta pulls): revision, agent, op, path, value."},
                }),
                &["checksum"],
            ),
            true,
        ),
        tool(
            "get",
            "Read one value",
            "Read the value at a path (dotted like project_state.active_tasks[id=task-1].status, or a JSON Pointer).",
            input(
                json!({
                    "path": path("Dotted path or JSON Pointer."),
                    "revision": {"type": "integer", "minimum": 0, "description": "Read at this revision instead of the newest."},
                }),
                &["path"],
            ),
            output(
                json!({"path": {"type": "string"}, "exists": {"type": "boolean"},
                       "value": {"description": "The value (absent when exists is false)."}}),
                &["path", "exists"],
            ),
            true,
        ),
        tool(
            "set",
            "Set one value",
            "Set a path to a value in one revision. With `from`, only if the current value equals it; with `absent: true`, only if the path does not exist yet. `list[-]` appends, `list[id=x]` addresses an element by id. A conflict is an error result carrying both values.",
            input(
                json!({
                    "path": path("Where to write (dotted path or JSON Pointer)."),
                    "value": {"description": "The new value (any JSON)."},
                    "from": {"description": "Write only if the current value equals this (any JSON)."},
                    "absent": {"type": "boolean", "description": "Write only if the path does not exist yet."},
                    "level": level_prop(),
                    "strategy": strategy_prop(),
                    "summary": {"type": "string", "description": "What the write is for (kept in the op log)."},
                }),
                &["path", "value"],
            ),
            push_output(),
            false,
        ),
        tool(
            "push",
            "Push changes",
            "Push a list of changes as one revision. Each change is seed form {path, from?, absent?, to} or {path, from?, remove: true}, or RFC 6902 {op: add|remove|replace|move|copy|test, path, value?, from?}. With base_revision (the revision you read), changes to paths others wrote since conflict. Conflicts and refusals are an error result listing path, reason, yours, current, modified_by, modified_at_revision.",
            input(
                json!({
                    "changes": {"type": "array", "items": {"type": "object"}, "minItems": 1,
                                "description": "The changes, in order."},
                    "base_revision": {"type": "integer", "minimum": 0, "description": "The revision the changes were made against."},
                    "strategy": strategy_prop(),
                    "level": level_prop(),
                    "summary": {"type": "string", "description": "What the push is for (kept in the op log)."},
                    "request_id": {"type": "string", "description": "Idempotency key: a repeated key returns the stored answer."},
                }),
                &["changes"],
            ),
            push_output(),
            false,
        ),
        tool(
            "conflicts",
            "List open conflicts",
            "List the open (deferred) conflicts of the context, each with both values; settle one with resolve.",
            input(json!({}), &[]),
            output(json!({"conflicts": {"type": "array", "items": {"type": "object"}}}), &["conflicts"]),
            true,
        ),
        tool(
            "resolve",
            "Settle a conflict",
            "Settle an open conflict: prefer mine applies your stored change (forced), theirs discards it.",
            input(
                json!({
                    "id": {"type": "integer", "minimum": 1, "description": "The conflict id (from conflicts)."},
                    "prefer": {"type": "string", "enum": ["mine", "theirs"], "description": "Whose value wins."},
                }),
                &["id", "prefer"],
            ),
            output(json!({"id": {"type": "integer"}, "prefer": {"type": "string"},
                          "push": {"type": "object", "description": "The push made for mine."}}), &["id", "prefer"]),
            false,
        ),
        tool(
            "history",
            "Op log",
            "The newest revisions of the op log: who, level, when, summary and the paths written.",
            input(
                json!({
                    "last": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "How many entries (default 20)."},
                    "agent": {"type": "string", "description": "Only this agent's revisions."},
                    "level": {"type": "string", "enum": LEVELS, "description": "Only revisions pushed at this level."},
                }),
                &[],
            ),
            output(json!({"entries": {"type": "array", "items": {"type": "object"}}}), &["entries"]),
            true,
        ),
        tool(
            "claim",
            "Claim a task or field",
            "Take a lease on a list element or field (typically project_state.active_tasks[id=task-7]) for ttl_seconds: one revision, exactly one of several claimants wins. Others' writes to it are refused with `claimed` until it is released or expires. The holder renews by claiming again. Held by someone else: an error result naming the holder and expiry.",
            input(
                json!({
                    "path": path("What to claim (dotted path)."),
                    "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 86400, "description": "Lease length (default 600)."},
                }),
                &["path"],
            ),
            output(json!({"granted": {"type": "boolean"}, "renewed": {"type": "boolean"},
                          "claim": {"type": "object", "description": "path, holder, claimed_at_ms, expires_at_ms."}}),
                   &["granted", "claim"]),
            false,
        ),
        tool(
            "release",
            "Release a claim",
            "Give up your claim on a path.",
            input(json!({"path": path("The claimed path.")}), &["path"]),
            output(json!({"released": {"type": "boolean"}, "outcome": {"type": "string"},
                          "claim": {"type": "object"}}), &["released", "outcome"]),
            false,
        ),
        tool(
            "wait",
            "Wait for a change",
            "Block until a revision after `since` exists that matches `levels` and `sections`, or until timeout_seconds (at most 30) pass. Returns the matching revisions (changed: true) or changed: false.",
            input(
                json!({
                    "since": {"type": "integer", "minimum": 0, "description": "Wait for revisions after this one (default: the current revision)."},
                    "levels": {"type": "array", "items": {"type": "string", "enum": LEVELS}, "description": "Only revisions at these levels."},
                    "sections": {"type": "array", "items": {"type": "string"}, "description": "Only revisions writing these sections."},
                    "timeout_seconds": {"type": "number", "minimum": 0, "maximum": 30, "description": "Longest wait (default and most 30)."},
                }),
                &[],
            ),
            output(json!({"changed": {"type": "boolean"}, "since": {"type": "integer"},
                          "entries": {"type": "array", "items": {"type": "object"}}}), &["changed", "entries"]),
            true,
        ),
        tool(
            "handover",
            "Hand work over",
            "Write a structured handover record (from you, to an agent or anyone) into communication.handovers: what was done, what is next, open questions, the tasks concerned.",
            input(
                json!({
                    "summary": {"type": "string", "description": "Where things stand, in a few sentences."},
                    "to": {"type": "string", "description": "The agent taking over (default: anyone)."},
                    "done": {"type": "array", "items": {"type": "string"}, "description": "What was finished."},
                    "next_steps": {"type": "array", "items": {"type": "string"}, "description": "What to do next."},
                    "open_questions": {"type": "array", "items": {"type": "string"}, "description": "What is undecided."},
                    "tasks": {"type": "array", "items": {"type": "string"}, "description": "Ids of the tasks concerned."},
                    "level": level_prop(),
                }),
                &["summary"],
            ),
            output(json!({"handover": {"type": "object"}, "path": {"type": "string"}}), &["handover"]),
            false,
        ),
        tool(
            "who",
            "Who is working",
            "The agents of the context: when each was last seen, how many revisions it lags, its live claims and the critical revisions it has not seen.",
            input(json!({}), &[]),
            output(json!({"agents": {"type": "array", "items": {"type": "object"}}}), &["agents"]),
            true,
        ),
    ]
}

/// Why an input schema is not flat, if it is not: the restrictions clients enforce.
pub fn check_flat(schema: &Value) -> Result<(), String> {
    let obj = schema.as_object().ok_or("the schema is not an object")?;
    if obj.get("type") != Some(&json!("object")) {
        return Err("the top-level type is not object".into());
    }
    for key in ["oneOf", "anyOf", "allOf", "not", "$defs", "definitions"] {
        if obj.contains_key(key) {
            return Err(format!("top-level {key}"));
        }
    }
    fn walk(v: &Value, at: &str) -> Result<(), String> {
        match v {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    return Err(format!("$ref at {at}"));
                }
                if let Some(Value::Array(items)) = map.get("enum") {
                    if items.iter().any(Value::is_null) {
                        return Err(format!("null in the enum at {at}"));
                    }
                }
                if let Some(Value::Array(types)) = map.get("type") {
                    if types.iter().any(|t| t == "null") {
                        return Err(format!("a null type at {at}"));
                    }
                }
                for (k, child) in map {
                    walk(child, &format!("{at}/{k}"))?;
                }
                Ok(())
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, child)| walk(child, &format!("{at}/{i}"))),
            _ => Ok(()),
        }
    }
    walk(schema, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_schema_is_flat_and_named_as_listed() {
        let tools = tools();
        assert_eq!(tools.len(), TOOL_NAMES.len());
        assert!(tools.len() <= 12);
        for (tool, name) in tools.iter().zip(TOOL_NAMES) {
            assert_eq!(tool["name"], name);
            check_flat(&tool["inputSchema"]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(tool["outputSchema"]["type"], "object", "{name}");
        }
    }

    #[test]
    fn the_checker_refuses_what_clients_refuse() {
        assert!(check_flat(&json!({"type": "object", "anyOf": []})).is_err());
        assert!(
            check_flat(&json!({"type": "object", "properties": {"a": {"$ref": "#/x"}}})).is_err()
        );
        assert!(
            check_flat(&json!({"type": "object", "properties": {"a": {"enum": ["x", null]}}}))
                .is_err()
        );
        assert!(check_flat(&json!({"type": "string"})).is_err());
        assert!(check_flat(&json!({"type": "object", "properties": {}})).is_ok());
    }
}
