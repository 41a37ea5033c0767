//! What each tool does, as blocking calls on the [`Store`]: parse the arguments (strictly:
//! unknown fields and wrong types are refused before anything is touched), act, and
//! build the answer. Waiting (`wait`) is async and lives in [`crate::wait`].
//!
//! An answer is a JSON object; [`ToolError`] is everything that makes a tool result with
//! `isError: true` — bad input, a missing identity, a refused or conflicting push (with
//! its conflict records), a store error.

use ctxsync_core::{
    budget, get as get_value, Change, Level, Path, PushRequest, PushResponse, Strategy,
};
use ctxsync_store::{Actor, HistoryFilter, LogEntry, Prefer, Store, StoreError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Why a tool call is an error result.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments are wrong; nothing was done.
    #[error("{0}")]
    Input(String),
    /// A write without an agent to act as.
    #[error("{0}")]
    NoAgent(String),
    /// The store refused or failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The tool ran and what was asked did not (fully) happen: a push with conflicts or
    /// refusals, a claim held by another agent. `detail` is the whole answer.
    #[error("{message}")]
    Refused { message: String, detail: Value },
}

impl ToolError {
    /// A short machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Input(_) => "invalid_input",
            Self::NoAgent(_) => "no_agent",
            Self::Store(e) if e.is_client_error() => "refused",
            Self::Store(StoreError::Unavailable(_)) => "unavailable",
            Self::Store(_) => "store_failed",
            Self::Refused { .. } => "conflict",
        }
    }
}

pub type ToolResult = Result<Value, ToolError>;

/// Who calls and on what: resolved once per call.
pub struct Call<'a> {
    pub store: &'a dyn Store,
    pub context: String,
    /// `None` in embedded mode without `--agent`/`CTXSYNC_AGENT`/config: reads work,
    /// writes are refused.
    pub agent: Option<String>,
    pub actor_role: ctxsync_store::Role,
    /// How to name the agent, for the error of a write without one.
    pub agent_hint: &'a str,
}

impl Call<'_> {
    pub fn agent(&self) -> Result<&str, ToolError> {
        self.agent.as_deref().ok_or_else(|| {
            ToolError::NoAgent(format!(
                "this tool writes, and no agent is named: {}",
                self.agent_hint
            ))
        })
    }
}

/// Reads a tool's arguments into `T` (unknown fields and wrong types refused).
pub fn args<T: DeserializeOwned>(arguments: &Map<String, Value>) -> Result<T, ToolError> {
    T::deserialize(Value::Object(arguments.clone()))
        .map_err(|e| ToolError::Input(format!("bad arguments: {e}")))
}

/// Tells `"from": null` (present, null) apart from a missing `from`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

pub(crate) fn parse_path(text: &str) -> Result<Path, ToolError> {
    Path::parse(text).map_err(|e| ToolError::Input(format!("bad path {text:?}: {e}")))
}

/// The context named by the arguments, checked, else the server's.
pub fn context_of(arguments: &Map<String, Value>, default: &str) -> Result<String, ToolError> {
    match arguments.get("context") {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(name)) => {
            ctxsync_store::validate_context_name(name)
                .map_err(|e| ToolError::Input(e.to_string()))?;
            Ok(name.clone())
        }
        Some(other) => Err(ToolError::Input(format!(
            "bad arguments: `context` must be a string, not {other}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullArgs {
    #[serde(default)]
    #[allow(dead_code)]
    context: Option<String>,
    #[serde(default)]
    sections: Vec<String>,
    since: Option<u64>,
    budget_tokens: Option<usize>,
}

/// Parses section paths; empty strings are ignored.
fn sections_of(list: &[String]) -> Result<Vec<Path>, ToolError> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_path(s.trim()))
        .collect()
}

pub fn pull(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let a: PullArgs = args(arguments)?;
    let sections = sections_of(&a.sections)?;
    if a.since.is_some() && a.budget_tokens.is_some() {
        return Err(ToolError::Input(
            "`since` (a delta) cannot be combined with `budget_tokens`".into(),
        ));
    }
    if let Some(since) = a.since {
        let entries = call.store.log_since(&call.context, since)?;
        let (revision, checksum) = match entries.last() {
            Some(last) => (last.revision, last.checksum.clone()),
            None => {
                let head = call.store.head(&call.context)?;
                if since > head.revision {
                    return Err(StoreError::Future {
                        requested: since,
                        current: head.revision,
                    }
                    .into());
                }
                (head.revision, head.checksum)
            }
        };
        let edits: Vec<Value> = entries
            .iter()
            .flat_map(|e| edits_of(e, &sections))
            .collect();
        return Ok(json!({
            "revision": revision, "since": since, "checksum": checksum, "edits": edits,
        }));
    }
    let snap = call.store.read(&call.context, None)?;
    let mut missing = Vec::new();
    let mut document = if sections.is_empty() {
        snap.document
    } else {
        let mut out = json!({});
        for section in &sections {
            match get_value(&snap.document, section) {
                Some(value) => {
                    // Setting a key path on an object creates its parents; a path with
                    // selectors that cannot be rebuilt is named missing.
                    if ctxsync_core::apply_change(
                        &mut out,
                        &Change::set(section.clone(), value.clone()),
                    )
                    .is_err()
                    {
                        missing.push(section.to_string());
                    }
                }
                None => missing.push(section.to_string()),
            }
        }
        out
    };
    let mut answer = json!({"revision": snap.revision, "checksum": snap.checksum});
    if let Some(budget_tokens) = a.budget_tokens {
        let trimmed = budget::trim(&document, budget_tokens);
        document = trimmed.document;
        answer["omitted"] = json!(trimmed.omitted);
        answer["tokens"] = json!(trimmed.tokens);
    }
    answer["document"] = document;
    if !missing.is_empty() {
        answer["missing_sections"] = json!(missing);
    }
    Ok(answer)
}

/// The edits of one op log entry that touch `sections` (all when empty), flattened with
/// the entry's revision, agent and level.
pub fn edits_of(entry: &LogEntry, sections: &[Path]) -> Vec<Value> {
    entry
        .edits
        .iter()
        .filter(|e| sections.is_empty() || sections.iter().any(|s| s.overlaps(&e.path)))
        .map(|e| {
            let mut v = json!({
                "revision": entry.revision, "agent": entry.agent, "level": entry.level,
                "op": e.op, "path": e.path.to_string(),
            });
            if let Some(new) = &e.new {
                v["value"] = new.clone();
            }
            if let Some(old) = &e.old {
                v["old"] = old.clone();
            }
            v
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    path: String,
    revision: Option<u64>,
}

pub fn get(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let a: GetArgs = args(arguments)?;
    let path = parse_path(&a.path)?;
    let snap = call.store.read(&call.context, a.revision)?;
    let mut answer = json!({"revision": snap.revision, "path": path.to_string()});
    match get_value(&snap.document, &path) {
        Some(value) => {
            answer["exists"] = json!(true);
            answer["value"] = value.clone();
        }
        None => answer["exists"] = json!(false),
    }
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    path: String,
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    from: Option<Value>,
    #[serde(default)]
    absent: bool,
    #[serde(default)]
    level: Level,
    #[serde(default)]
    strategy: Strategy,
    #[serde(default)]
    summary: String,
}

pub fn set(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let a: SetArgs = args(arguments)?;
    let value = a
        .value
        .ok_or_else(|| ToolError::Input("bad arguments: missing field `value`".into()))?;
    let mut wire = json!({"path": a.path, "to": value});
    match (a.from, a.absent) {
        (Some(_), true) => {
            return Err(ToolError::Input(
                "give `from` or `absent: true`, not both".into(),
            ))
        }
        (Some(from), false) => wire["from"] = from,
        (None, true) => wire["absent"] = json!(true),
        (None, false) => {}
    }
    let change = Change::from_json(0, &wire).map_err(|e| ToolError::Input(e.to_string()))?;
    let agent = call.agent()?.to_owned();
    push_changes(
        call,
        PushRequest {
            agent,
            level: a.level,
            base_revision: None,
            request_id: Some(ulid::Ulid::new().to_string()),
            strategy: a.strategy,
            summary: a.summary,
            changes: vec![change],
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    changes: Vec<Value>,
    base_revision: Option<u64>,
    #[serde(default)]
    strategy: Strategy,
    #[serde(default)]
    level: Level,
    #[serde(default)]
    summary: String,
    request_id: Option<String>,
}

pub fn push(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let a: PushArgs = args(arguments)?;
    if a.changes.is_empty() {
        return Err(ToolError::Input(
            "`changes` is empty: nothing to push".into(),
        ));
    }
    let changes = a
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| Change::from_json(i, c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ToolError::Input(e.to_string()))?;
    let agent = call.agent()?.to_owned();
    push_changes(
        call,
        PushRequest {
            agent,
            level: a.level,
            base_revision: a.base_revision,
            request_id: Some(
                a.request_id
                    .unwrap_or_else(|| ulid::Ulid::new().to_string()),
            ),
            strategy: a.strategy,
            summary: a.summary,
            changes,
        },
    )
}

/// Pushes and turns the answer into a tool answer: one with conflicts or refusals is a
/// [`ToolError::Refused`] carrying the whole answer.
fn push_changes(call: &Call, request: PushRequest) -> ToolResult {
    let response = call.store.push(&call.context, request)?;
    push_answer(&response)
}

pub fn push_answer(response: &PushResponse) -> ToolResult {
    let conflicts: Vec<Value> = response.conflicts.iter().map(conflict_record).collect();
    let answer = json!({
        "revision": response.revision,
        "applied": response.applied,
        "conflicts": conflicts,
        "rejected": response.rejected,
        "checksum": response.checksum,
        "replayed": response.replayed,
    });
    if response.is_partial() {
        let mut parts = Vec::new();
        if !response.conflicts.is_empty() {
            parts.push(format!("{} conflicting", response.conflicts.len()));
        }
        if !response.rejected.is_empty() {
            parts.push(format!("{} refused", response.rejected.len()));
        }
        let first = response
            .conflicts
            .first()
            .map(|c| {
                format!(
                    "; {} ({}): yours {}, current {}{}",
                    c.path,
                    c.reason.as_str(),
                    show(c.yours.as_ref()),
                    show(c.current.as_ref()),
                    c.modified_by
                        .as_ref()
                        .map(|by| format!(
                            ", written by {by} at revision {}",
                            c.modified_at_revision.unwrap_or(0)
                        ))
                        .unwrap_or_default()
                )
            })
            .or_else(|| {
                response
                    .rejected
                    .first()
                    .map(|r| format!("; {} ({}, rule {})", r.path, r.reason, r.rule))
            })
            .unwrap_or_default();
        return Err(ToolError::Refused {
            message: format!(
                "push not fully applied: {} applied, {}{first}",
                response.applied.len(),
                parts.join(", ")
            ),
            detail: answer,
        });
    }
    Ok(answer)
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => {
            let text = v.to_string();
            if text.len() > 200 {
                format!("{}…", text.chars().take(200).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// A conflict as an agent needs it: path, reason, both values, who wrote it and when.
fn conflict_record(c: &ctxsync_core::Conflict) -> Value {
    let mut v = json!({
        "index": c.index,
        "path": c.path,
        "reason": c.reason.as_str(),
        "modified_by": c.modified_by,
        "modified_at_revision": c.modified_at_revision,
        "yours": c.yours,
        "current": c.current,
    });
    if let Some(id) = c.id {
        v["id"] = json!(id);
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContextOnly {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
}

pub fn conflicts(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let _: ContextOnly = args(arguments)?;
    let head = call.store.head(&call.context)?;
    let list: Vec<Value> = call
        .store
        .open_conflicts(&call.context)?
        .into_iter()
        .map(|sc| {
            let mut v = conflict_record(&sc.conflict);
            v["id"] = json!(sc.id);
            v["agent"] = json!(sc.agent);
            v["recorded_at_revision"] = json!(sc.revision);
            v["created_ms"] = json!(sc.created_ms);
            v
        })
        .collect();
    Ok(json!({"revision": head.revision, "conflicts": list}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    id: u64,
    prefer: String,
}

pub fn resolve(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let a: ResolveArgs = args(arguments)?;
    let prefer = match a.prefer.as_str() {
        "mine" => Prefer::Mine,
        "theirs" => Prefer::Theirs,
        other => {
            return Err(ToolError::Input(format!(
                "bad arguments: prefer is mine or theirs, not {other:?}"
            )))
        }
    };
    let actor = Actor {
        agent: call.agent()?.to_owned(),
        role: call.actor_role,
    };
    let pushed = call
        .store
        .resolve_conflict(&call.context, a.id, prefer, &actor)?;
    let revision = match &pushed {
        Some(p) => p.revision,
        None => call.store.head(&call.context)?.revision,
    };
    let mut answer = json!({"revision": revision, "id": a.id, "prefer": a.prefer});
    if let Some(p) = pushed {
        answer["push"] = serde_json::to_value(&p).unwrap_or(Value::Null);
    }
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    last: Option<usize>,
    agent: Option<String>,
    level: Option<Level>,
}

pub fn history(call: &Call, arguments: &Map<String, Value>) -> ToolResult {
    let a: HistoryArgs = args(arguments)?;
    let last = a.last.unwrap_or(20).clamp(1, 1000);
    let head = call.store.head(&call.context)?;
    let entries = call.store.history(
        &call.context,
        &HistoryFilter {
            last: Some(last),
            agent: a.agent,
            level: a.level,
        },
    )?;
    let entries: Vec<Value> = entries.iter().map(entry_summary).collect();
    Ok(json!({"revision": head.revision, "entries": entries}))
}

/// An op log entry without the values: who, when, what for, which paths.
pub fn entry_summary(e: &LogEntry) -> Value {
    let paths: Vec<String> = e.edits.iter().map(|x| x.path.to_string()).collect();
    json!({
        "revision": e.revision, "agent": e.agent, "level": e.level,
        "timestamp_ms": e.timestamp_ms, "summary": e.summary, "paths": paths,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoverArgs {
    #[allow(dead_code)]
    #[serde(default)]
    context: Option<String>,
    summary: String,
    to: Option<String>,
    #[serde(default)]
    done: Vec<String>,
    #[serde(default)]
    next_steps: Vec<String>,
    #[serde(default)]
    open_questions: Vec<String>,
    #[serde(default)]
    tasks: Vec<String>,
    #[serde(default)]
    level: Level,
}

/// Where handovers go.
pub const HANDOVERS: &str = "communication.handovers";

pub fn handover(call: &Call, arguments: &Map<String, Value>, now_ms: u64) -> ToolResult {
    let a: HandoverArgs = args(arguments)?;
    if a.summary.trim().is_empty() {
        return Err(ToolError::Input("`summary` is empty".into()));
    }
    let agent = call.agent()?.to_owned();
    let head = call.store.head(&call.context)?;
    let record = json!({
        "id": format!("handover-{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
        "from": agent,
        "to": a.to.clone().unwrap_or_else(|| "anyone".into()),
        "summary": a.summary,
        "done": a.done,
        "next_steps": a.next_steps,
        "open_questions": a.open_questions,
        "tasks": a.tasks,
        "created_at_ms": now_ms,
        "seen_revision": head.revision,
    });
    let list = parse_path(HANDOVERS)?;
    let doc = call.store.read(&call.context, None)?.document;
    // Append to the list; the first handover creates it (guarded, so two first
    // handovers at once do not overwrite each other: the loser appends).
    let mut attempts = 0;
    let mut exists = get_value(&doc, &list).is_some();
    loop {
        attempts += 1;
        let wire = if exists {
            json!({"path": format!("{HANDOVERS}[-]"), "to": record})
        } else {
            json!({"path": HANDOVERS, "absent": true, "to": [record]})
        };
        let change = Change::from_json(0, &wire).map_err(|e| ToolError::Input(e.to_string()))?;
        let response = call.store.push(
            &call.context,
            PushRequest {
                agent: agent.clone(),
                level: a.level,
                base_revision: None,
                request_id: Some(ulid::Ulid::new().to_string()),
                strategy: Strategy::Atomic,
                summary: format!(
                    "handover from {agent} to {}",
                    a.to.as_deref().unwrap_or("anyone")
                ),
                changes: vec![change],
            },
        )?;
        if !exists && response.applied.is_empty() && !response.conflicts.is_empty() && attempts < 3
        {
            exists = true;
            continue;
        }
        let mut answer = push_answer(&response)?;
        answer["handover"] = record;
        answer["path"] = json!(HANDOVERS);
        return Ok(answer);
    }
}
