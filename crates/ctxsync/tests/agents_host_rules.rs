//! Validators of each agent host's file format, written from the hosts' documentation
//! (not from ctxsync's renderer), for the agent-sync tests (included with `#[path]`).
//!
//! * VS Code custom agents and prompt files: code.visualstudio.com/docs/copilot/
//!   customization (custom-agents, prompt-files) and GitHub's "custom agents
//!   configuration" reference (tool aliases, the 30,000-character prompt limit).
//! * Agent Skills: agentskills.io/specification.
//! * Claude Code subagents: docs.claude.com/en/docs/claude-code/sub-agents.
//! * Codex agents: `.codex/agents/<name>.toml` with `name`, `description`,
//!   `developer_instructions`.
//! * Gemini CLI subagents: geminicli.com/docs/core/subagents and the built-in tools list.
#![allow(dead_code)]

use std::path::Path;

/// Splits `---\n<yaml>\n---\n<body>`; the YAML must parse into a mapping.
pub fn split(text: &str) -> Result<(serde_norway::Mapping, String), String> {
    let rest = text
        .strip_prefix("---\n")
        .ok_or("no frontmatter at the top")?;
    let end = rest.find("\n---\n").ok_or("frontmatter not closed")?;
    let v: serde_norway::Value =
        serde_norway::from_str(&rest[..end + 1]).map_err(|e| format!("YAML: {e}"))?;
    let map = v
        .as_mapping()
        .ok_or("frontmatter is not a mapping")?
        .clone();
    Ok((map, rest[end + 5..].to_string()))
}

fn str_key<'a>(m: &'a serde_norway::Mapping, k: &str) -> Option<&'a str> {
    m.get(k).and_then(|v| v.as_str())
}

fn keys_within(m: &serde_norway::Mapping, allowed: &[&str]) -> Result<(), String> {
    for k in m.keys() {
        let k = k.as_str().unwrap_or("<not a string>");
        if !allowed.contains(&k) {
            return Err(format!("key {k:?} is not documented"));
        }
    }
    Ok(())
}

fn required(m: &serde_norway::Mapping, k: &str) -> Result<String, String> {
    match str_key(m, k) {
        Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
        _ => Err(format!("required key {k:?} missing or empty")),
    }
}

/// No `@modules/...`, `@tasks/...` or `@checklists/...` reference (the library's
/// reference forms) is left outside code: hosts do not read them.
pub fn no_at_references(body: &str) -> Result<(), String> {
    let mut in_fence = false;
    for line in body.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        for (i, _) in line.match_indices('@') {
            let before = line[..i].chars().last();
            let word: String = line[i + 1..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ')' && *c != '`')
                .collect();
            let in_code = line[..i].matches('`').count() % 2 == 1;
            let starts_word = before.is_none_or(|c| c.is_whitespace() || c == '(');
            let library_ref = ["modules/", "tasks/", "checklists/"]
                .iter()
                .any(|p| word.starts_with(p));
            if starts_word && !in_code && library_ref && word.contains(".md") {
                return Err(format!("unresolved reference @{word}"));
            }
        }
    }
    Ok(())
}

/// GitHub's documented aliases for custom agent tools.
pub const VSCODE_TOOL_ALIASES: &[&str] =
    &["execute", "read", "edit", "search", "agent", "web", "todo"];

/// `.github/agents/<name>.agent.md`.
pub fn vscode_agent(path: &str, text: &str) -> Result<(), String> {
    let (fm, body) = split(text)?;
    keys_within(
        &fm,
        &[
            "name",
            "description",
            "argument-hint",
            "tools",
            "model",
            "target",
            "handoffs",
            "mcp-servers",
            "infer",
        ],
    )?;
    let description = required(&fm, "description")?;
    let _ = description;
    if let Some(name) = str_key(&fm, "name") {
        if !path.ends_with(&format!("/{name}.agent.md")) {
            return Err(format!("name {name:?} does not match the file"));
        }
    }
    if let Some(tools) = fm.get("tools") {
        let list = tools.as_sequence().ok_or("tools must be a list")?;
        for t in list {
            let t = t.as_str().ok_or("tool names are strings")?;
            if !VSCODE_TOOL_ALIASES.contains(&t) {
                return Err(format!("tool {t:?} is not a documented alias"));
            }
        }
    }
    if body.chars().count() > 30_000 {
        return Err("prompt over 30,000 characters".into());
    }
    no_at_references(&body)
}

/// `.github/prompts/**/<name>.prompt.md`.
pub fn vscode_prompt(_path: &str, text: &str) -> Result<(), String> {
    let (fm, body) = split(text)?;
    keys_within(
        &fm,
        &[
            "name",
            "description",
            "argument-hint",
            "agent",
            "model",
            "tools",
        ],
    )?;
    required(&fm, "description")?;
    no_at_references(&body)
}

/// The specification's name rule.
pub fn skill_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// `<skills>/<name>/SKILL.md`; every relative link into the skill's folder must exist
/// (companion files are loaded only through links).
pub fn skill(root: &Path, path: &str, text: &str) -> Result<(), String> {
    let (fm, body) = split(text)?;
    keys_within(
        &fm,
        &[
            "name",
            "description",
            "license",
            "compatibility",
            "metadata",
            "allowed-tools",
        ],
    )?;
    let name = required(&fm, "name")?;
    let description = required(&fm, "description")?;
    if !skill_name_ok(&name) {
        return Err(format!("name {name:?} breaks the specification"));
    }
    let folder = Path::new(path)
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|f| f.to_str())
        .unwrap_or("");
    if folder != name || !path.ends_with("/SKILL.md") {
        return Err(format!("name {name:?} does not match folder {folder:?}"));
    }
    if description.chars().count() > 1024 {
        return Err("description over 1,024 characters".into());
    }
    if let Some(c) = str_key(&fm, "compatibility") {
        if c.chars().count() > 500 {
            return Err("compatibility over 500 characters".into());
        }
    }
    if let Some(m) = fm.get("metadata") {
        // "A map from string keys to string values."
        let m = m.as_mapping().ok_or("metadata is a mapping")?;
        for (k, v) in m {
            if k.as_str().is_none() || v.as_str().is_none() {
                return Err("metadata maps strings to strings".into());
            }
        }
    }
    if let Some(t) = fm.get("allowed-tools") {
        let t = t
            .as_str()
            .ok_or("allowed-tools is a space-delimited string")?;
        if t.contains(',') {
            return Err("allowed-tools is space-delimited, not comma-separated".into());
        }
    }
    let dir = root.join(path).parent().unwrap().to_path_buf();
    for target in markdown_links(&body) {
        if target.starts_with("..") || target.contains("://") || target.starts_with('#') {
            continue;
        }
        let file = target.split('#').next().unwrap_or("");
        if !dir.join(file).is_file() {
            return Err(format!("link {target:?} into the skill does not resolve"));
        }
    }
    no_at_references(&body)
}

/// Targets of inline Markdown links `[text](target)`.
pub fn markdown_links(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        if let Some(j) = after.find(')') {
            out.push(after[..j].to_string());
        }
        rest = after;
    }
    out
}

/// Claude Code's tool names.
pub const CLAUDE_TOOLS: &[&str] = &[
    "Bash",
    "Edit",
    "Glob",
    "Grep",
    "LS",
    "MultiEdit",
    "NotebookEdit",
    "NotebookRead",
    "Read",
    "Task",
    "TodoWrite",
    "WebFetch",
    "WebSearch",
    "Write",
];

/// `.claude/agents/<name>.md`.
pub fn claude(path: &str, text: &str) -> Result<(), String> {
    let (fm, body) = split(text)?;
    keys_within(
        &fm,
        &[
            "name",
            "description",
            "tools",
            "disallowedTools",
            "model",
            "permissionMode",
            "skills",
            "color",
        ],
    )?;
    let name = required(&fm, "name")?;
    required(&fm, "description")?;
    // The documentation says "lowercase letters and hyphens"; Claude Code also takes
    // digits (its own examples use them in plugin agents).
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("name {name:?} breaks Claude Code's rule"));
    }
    if !path.ends_with(&format!("/{name}.md")) {
        return Err(format!("name {name:?} does not match the file"));
    }
    if let Some(tools) = fm.get("tools") {
        let tools = tools.as_str().ok_or("tools is a comma-separated string")?;
        for t in tools.split(',').map(str::trim) {
            if !CLAUDE_TOOLS.contains(&t) {
                return Err(format!("tool {t:?} is not a Claude Code tool"));
            }
        }
    }
    if let Some(m) = str_key(&fm, "model") {
        if !["sonnet", "opus", "haiku", "inherit"].contains(&m) && !m.starts_with("claude-") {
            return Err(format!("model {m:?} is not a Claude Code model"));
        }
    }
    no_at_references(&body)
}

/// `.codex/agents/<name>.toml`.
pub fn codex(path: &str, text: &str) -> Result<(), String> {
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("TOML: {e}"))?;
    for (k, _) in doc.iter() {
        if ![
            "name",
            "description",
            "developer_instructions",
            "model",
            "model_reasoning_effort",
            "sandbox_mode",
        ]
        .contains(&k)
        {
            return Err(format!("key {k:?} is not a Codex agent key"));
        }
    }
    let get = |k: &str| -> Result<String, String> {
        match doc.get(k).and_then(|v| v.as_str()) {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            _ => Err(format!("required key {k:?} missing or empty")),
        }
    };
    let name = get("name")?;
    get("description")?;
    let instructions = get("developer_instructions")?;
    if !path.ends_with(&format!("/{name}.toml")) {
        return Err(format!("name {name:?} does not match the file"));
    }
    no_at_references(&instructions)
}

/// Gemini CLI's built-in tool names.
pub const GEMINI_TOOLS: &[&str] = &[
    "glob",
    "google_web_search",
    "list_directory",
    "read_file",
    "read_many_files",
    "replace",
    "run_shell_command",
    "save_memory",
    "search_file_content",
    "web_fetch",
    "write_file",
    "write_todos",
];

/// `.gemini/agents/<name>.md`.
pub fn gemini(path: &str, text: &str) -> Result<(), String> {
    let (fm, body) = split(text)?;
    keys_within(
        &fm,
        &[
            "name",
            "description",
            "kind",
            "tools",
            "model",
            "temperature",
            "max_turns",
            "timeout_mins",
        ],
    )?;
    let name = required(&fm, "name")?;
    required(&fm, "description")?;
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!("name {name:?} is not a slug"));
    }
    if !path.ends_with(&format!("/{name}.md")) {
        return Err(format!("name {name:?} does not match the file"));
    }
    if let Some(k) = str_key(&fm, "kind") {
        if k != "local" && k != "remote" {
            return Err(format!("kind {k:?}"));
        }
    }
    if let Some(tools) = fm.get("tools") {
        for t in tools.as_sequence().ok_or("tools must be a list")? {
            let t = t.as_str().ok_or("tool names are strings")?;
            if !GEMINI_TOOLS.contains(&t) {
                return Err(format!("tool {t:?} is not a Gemini CLI tool"));
            }
        }
    }
    no_at_references(&body)
}

/// Validates every file below the target folders of a repository synced with all
/// targets at their default folders; returns how many files of each kind were checked.
pub fn validate_tree(root: &Path) -> [usize; 6] {
    let mut counts = [0; 6];
    for (i, dir) in [
        ".github/agents",
        ".github/prompts",
        ".github/skills",
        ".claude/agents",
        ".codex/agents",
        ".gemini/agents",
    ]
    .iter()
    .enumerate()
    {
        for file in files_below(&root.join(dir)) {
            let rel = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&file).unwrap();
            // `.claude/agents` also holds Claude Code sources: only outputs are checked.
            if i == 3 && !text.contains("Generated by ctxsync") {
                continue;
            }
            let result = match i {
                0 => vscode_agent(&rel, &text),
                1 => vscode_prompt(&rel, &text),
                2 if rel.ends_with("/SKILL.md") => skill(root, &rel, &text),
                2 => no_at_references(&text),
                3 => claude(&rel, &text),
                4 => codex(&rel, &text),
                _ => gemini(&rel, &text),
            };
            if let Err(e) = result {
                panic!("{rel}: {e}\n{text}");
            }
            if i != 2 || rel.ends_with("/SKILL.md") {
                counts[i] += 1;
            }
        }
    }
    counts
}

/// Every file below `dir`, sorted.
pub fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files_below(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}
