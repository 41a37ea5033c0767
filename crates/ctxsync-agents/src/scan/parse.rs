//! Parsing one agent file: optional YAML frontmatter (Claude Code subagents and any
//! agent that declares `name`, `description`, `tools`, `model`, `version`, `priority`),
//! and the OpenAgentBuilder conventions: `# Title`, the `> **Priority**:` status block,
//! the "Agent Identity" block (`**Version:**`) and the "Purpose Statement" section.

use serde::Serialize;

use crate::paths;
use crate::refs::{atx_heading, FenceState};

/// Scheduling priority of an agent; `Critical` agents are rendered and deployed first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Rendered first.
    Critical,
    /// High.
    High,
    /// Medium / unspecified.
    #[default]
    Medium,
    /// Low.
    Low,
}

impl Priority {
    fn parse(s: &str) -> Option<Self> {
        let w = s
            .trim()
            .trim_matches(|c: char| !c.is_alphanumeric())
            .split(|c: char| !c.is_alphanumeric())
            .next()?
            .to_ascii_lowercase();
        match w.as_str() {
            "critical" | "p0" => Some(Priority::Critical),
            "high" | "p1" => Some(Priority::High),
            "medium" | "normal" | "p2" => Some(Priority::Medium),
            "low" | "p3" => Some(Priority::Low),
            _ => None,
        }
    }
}

/// Metadata of one agent, whichever layout it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentMeta {
    /// Output name (safe file stem).
    pub name: String,
    /// Human title (first `#` heading, or the name).
    pub title: String,
    /// One-line description.
    pub description: String,
    /// Declared version.
    pub version: Option<String>,
    /// Scheduling priority.
    pub priority: Priority,
    /// Tools (frontmatter only).
    pub tools: Vec<String>,
    /// Model (frontmatter only).
    pub model: Option<String>,
    /// Handoffs to other agents (frontmatter `handoffs`, VS Code's form or plain names).
    pub handoffs: Vec<Handoff>,
}

/// A handoff: a button that passes the conversation to another agent (VS Code).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handoff {
    /// The button's text.
    pub label: String,
    /// The agent handed to.
    pub agent: String,
    /// The prompt sent with it.
    pub prompt: Option<String>,
    /// Whether the prompt is sent at once.
    pub send: Option<bool>,
}

/// `handoffs:` as a list of agent names or of mappings with `agent` (and `label`,
/// `prompt`, `send`); entries without an agent are an error naming the file.
fn parse_handoffs(rel_path: &str, v: Option<&serde_norway::Value>) -> Result<Vec<Handoff>, String> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Some(items) = v.as_sequence() else {
        return Err(format!("{rel_path}: `handoffs` must be a list"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = |k: &str| item.get(k).and_then(|x| x.as_str()).map(str::trim);
        let agent = match item.as_str() {
            Some(name) => name.trim(),
            None => text("agent").unwrap_or(""),
        };
        if agent.is_empty() {
            return Err(format!(
                "{rel_path}: every entry of `handoffs` needs an `agent`"
            ));
        }
        out.push(Handoff {
            label: text("label")
                .filter(|l| !l.is_empty())
                .map_or_else(|| format!("Hand off to {agent}"), str::to_string),
            agent: agent.to_string(),
            prompt: text("prompt").map(str::to_string),
            send: item.get("send").and_then(|x| x.as_bool()),
        });
    }
    Ok(out)
}

/// A parsed agent file.
#[derive(Debug, Clone)]
pub struct ParsedAgent {
    /// Metadata.
    pub meta: AgentMeta,
    /// The text after the frontmatter.
    pub body: String,
    /// Whether the file had frontmatter.
    pub has_frontmatter: bool,
}

/// `text` without a leading UTF-8 byte order mark (editors on Windows write one; YAML
/// and Markdown headings after it would not be recognised).
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Splits `---\n yaml \n---\n body`; returns `(yaml, body)` or `None` without frontmatter.
/// A leading byte order mark is skipped.
pub fn split_frontmatter(text: &str) -> Option<(&str, &str)> {
    let rest = strip_bom(text)
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let mut pos = 0;
    for line in rest.split_inclusive('\n') {
        let t = line.trim_end_matches(['\n', '\r']);
        if t == "---" || t == "..." {
            return Some((&rest[..pos], &rest[pos + line.len()..]));
        }
        pos += line.len();
    }
    None
}

/// Frontmatter larger than this is refused before it reaches the YAML parser.
pub const MAX_FRONTMATTER_BYTES: usize = 64 * 1024;

/// Frontmatter nesting deeper than this (`[` and `{`, see [`flow_nesting_exceeds`]) is
/// refused before it reaches the YAML parser: libyaml's scanner spends time quadratic
/// in the nesting (measured: 20,000 `[` take 3 s, 60,000 take 16 s), block nesting
/// is cheap and stopped by serde_norway's recursion limit.
pub const MAX_FRONTMATTER_NESTING: usize = 64;

/// Whether the flow nesting (`[`, `{`) libyaml could reach on `yaml` may exceed
/// `limit`, found without parsing: every `[` and `{` opens a level, and a `]` or `}`
/// closes the innermost one only when no quote, `#` or `!` came since it opened. A pair
/// without those can only be a real pair or text inside a scalar that hides its opener
/// too, so the count never falls below libyaml's level, however quotes are placed; a
/// pair holding a quote counts as open to the end (a conservative bound: frontmatter
/// needs dozens of quoted lists to meet it).
pub fn flow_nesting_exceeds(yaml: &str, limit: usize) -> bool {
    flow_nesting_bound(yaml, limit) > limit
}

/// The bound [`flow_nesting_exceeds`] compares, or the first value over `stop_above`.
fn flow_nesting_bound(yaml: &str, stop_above: usize) -> usize {
    // Levels open now; of those, the lowest `dirty` saw a quote, `#` or `!`; levels
    // closed after seeing one, still counted.
    let (mut open, mut dirty, mut kept) = (0usize, 0usize, 0usize);
    let mut max = 0;
    for b in yaml.bytes() {
        match b {
            b'[' | b'{' => {
                open += 1;
                max = max.max(kept + open);
                if max > stop_above {
                    return max;
                }
            }
            b']' | b'}' if open > 0 => {
                if open <= dirty {
                    kept += 1;
                }
                open -= 1;
                dirty = dirty.min(open);
            }
            b'\'' | b'"' | b'#' | b'!' => dirty = open,
            _ => {}
        }
    }
    max
}

/// Refuses frontmatter too large or too deeply nested to hand to the YAML parser.
fn check_frontmatter_bounds(rel_path: &str, yaml: &str) -> Result<(), String> {
    if yaml.len() > MAX_FRONTMATTER_BYTES {
        return Err(format!(
            "{rel_path}: frontmatter is {} bytes, more than the {MAX_FRONTMATTER_BYTES} allowed",
            yaml.len()
        ));
    }
    if flow_nesting_exceeds(yaml, MAX_FRONTMATTER_NESTING) {
        return Err(format!(
            "{rel_path}: frontmatter nests '[' or '{{' more than {MAX_FRONTMATTER_NESTING} levels deep"
        ));
    }
    Ok(())
}

/// Parses the frontmatter text of `rel_path` (between the `---` lines) into a YAML
/// mapping (or null when empty), refusing what is too large or too deeply nested
/// before any YAML parsing. Errors are messages meant for the user (they name the file).
pub fn parse_frontmatter(rel_path: &str, yaml: &str) -> Result<serde_norway::Value, String> {
    check_frontmatter_bounds(rel_path, yaml)?;
    let v: serde_norway::Value = if yaml.trim().is_empty() {
        serde_norway::Value::Null
    } else {
        match serde_norway::from_str(yaml) {
            Ok(v) => v,
            // Claude Code accepts `description: Reviews diffs: be strict.`; strict
            // YAML does not. Retry once with such plain values quoted.
            Err(e) => lenient_yaml(yaml)
                .filter(|y| check_frontmatter_bounds(rel_path, y).is_ok())
                .and_then(|y| serde_norway::from_str(&y).ok())
                .ok_or_else(|| format!("{rel_path}: frontmatter is not valid YAML: {e}"))?,
        }
    };
    if !(v.is_mapping() || v.is_null()) {
        return Err(format!("{rel_path}: frontmatter must be a YAML mapping"));
    }
    Ok(v)
}

/// Parses `text` (the content of `rel_path`) into an agent.
/// Errors are messages meant for the user (they name the file).
pub fn parse_agent(rel_path: &str, text: &str) -> Result<ParsedAgent, String> {
    let stem = paths::file_name(rel_path)
        .trim_end_matches(".md")
        .trim_end_matches(".agent");
    let text = strip_bom(text);
    let (fm, body, has_fm) = match split_frontmatter(text) {
        Some((yaml, body)) => (parse_frontmatter(rel_path, yaml)?, body, true),
        None => (serde_norway::Value::Null, text, false),
    };
    let fm_str = |k: &str| -> Option<String> {
        match fm.get(k)? {
            serde_norway::Value::String(s) => Some(s.trim().to_string()),
            serde_norway::Value::Number(n) => Some(n.to_string()),
            serde_norway::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
        .filter(|s| !s.is_empty())
    };

    let name = match fm_str("name") {
        Some(n) => {
            if !paths::is_safe_name(&n) {
                return Err(format!(
                    "{rel_path}: agent name {n:?} is refused: a name may only use a-z, 0-9, '.', '_' and '-' (at most 64 characters, no '..')"
                ));
            }
            n
        }
        None => {
            let n = paths::name_from_stem(stem);
            if !paths::is_safe_name(&n) {
                return Err(format!("{rel_path}: no usable agent name in the file name"));
            }
            n
        }
    };

    let title = first_h1(body).unwrap_or_else(|| name.clone());
    let description = fm_str("description")
        .or_else(|| section_paragraph(body, "purpose statement"))
        .or_else(|| first_paragraph(body))
        .unwrap_or_else(|| title.clone());
    let description = one_line(&description, 1024);
    let version = fm_str("version")
        .or_else(|| label_value(body, "agent version"))
        .or_else(|| label_value(body, "version"));
    let priority = fm_str("priority")
        .or_else(|| label_value(body, "priority"))
        .and_then(|p| Priority::parse(&p))
        .unwrap_or_default();
    let tools = match fm.get("tools") {
        Some(serde_norway::Value::Sequence(s)) => s
            .iter()
            .filter_map(|v| v.as_str().map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .collect(),
        Some(serde_norway::Value::String(s)) => s
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    let model = fm_str("model");
    let handoffs = parse_handoffs(rel_path, fm.get("handoffs"))?;
    Ok(ParsedAgent {
        meta: AgentMeta {
            name,
            title,
            description,
            version,
            priority,
            tools,
            model,
            handoffs,
        },
        body: body.to_string(),
        has_frontmatter: has_fm,
    })
}

/// Quotes top-level plain values that contain `": "` or `" #"` (which strict YAML reads
/// as a nested mapping or a comment). `None` when no line needed quoting.
fn lenient_yaml(yaml: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let eol = &line[body.len()..];
        let key_ok = |k: &str| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match body.split_once(": ") {
            Some((k, v))
                if key_ok(k)
                    && (v.contains(": ") || v.contains(" #"))
                    && !v
                        .trim_start()
                        .starts_with(['"', '\'', '[', '{', '|', '>', '&', '*', '!']) =>
            {
                out.push_str(k);
                out.push_str(": '");
                out.push_str(&v.trim().replace('\'', "''"));
                out.push('\'');
                out.push_str(eol);
                changed = true;
            }
            _ => out.push_str(line),
        }
    }
    changed.then_some(out)
}

/// What a task file is for, in one line of at most `max` characters: frontmatter
/// `description`, else its `**Objective**`, else the first paragraph of its
/// `## Task Overview` or `## Purpose` section, else its first paragraph, else its title.
/// `None` for a file with no text at all.
pub fn task_summary(text: &str, max: usize) -> Option<String> {
    let text = strip_bom(text);
    let (fm, body) = match split_frontmatter(text) {
        // Bounded like an agent's frontmatter; one that does not parse says nothing.
        Some((yaml, body)) => (parse_frontmatter("", yaml).ok(), body),
        None => (None, text),
    };
    let from_fm = fm
        .as_ref()
        .and_then(|v| v.get("description"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty());
    let s = from_fm
        .or_else(|| label_value(body, "objective"))
        .or_else(|| section_paragraph(body, "task overview"))
        .or_else(|| section_paragraph(body, "purpose"))
        .or_else(|| first_paragraph(body))
        .or_else(|| first_h1(body))?;
    // A description is plain text: hosts do not read `@` references there either.
    let s = one_line(&without_at_refs(&s), max);
    (!s.is_empty()).then_some(s)
}

/// `s` with each `@` reference written as its path (`@tasks/x.md` → `tasks/x.md`).
fn without_at_refs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for r in crate::refs::scan(s) {
        if r.kind == crate::refs::RefKind::At {
            out.push_str(&s[last..r.start]);
            out.push_str(r.display().trim_start_matches('@'));
            last = r.end;
        }
    }
    out.push_str(&s[last..]);
    out
}

fn one_line(s: &str, max: usize) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let cleaned = joined.replace("**", "");
    if cleaned.chars().count() <= max {
        cleaned
    } else {
        let mut t: String = cleaned.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Iterates `(line, in_code)` pairs.
fn lines_with_code(body: &str) -> impl Iterator<Item = (&str, bool)> {
    let mut fence = FenceState::default();
    body.lines().map(move |l| {
        let c = fence.in_code(l);
        (l, c)
    })
}

fn first_h1(body: &str) -> Option<String> {
    lines_with_code(body)
        .filter(|(_, c)| !c)
        .find_map(|(l, _)| match atx_heading(l) {
            Some((1, t)) if !t.is_empty() => Some(t.to_string()),
            _ => None,
        })
}

fn paragraph_after<'a>(mut it: impl Iterator<Item = (&'a str, bool)>) -> Option<String> {
    let mut para: Vec<&str> = Vec::new();
    for (l, code) in it.by_ref() {
        let t = l.trim();
        if code || atx_heading(l).is_some() {
            if para.is_empty() && !code {
                return None;
            }
            break;
        }
        if t.is_empty() {
            if para.is_empty() {
                continue;
            }
            break;
        }
        if t.starts_with('>') || t.starts_with("---") {
            if para.is_empty() {
                continue;
            }
            break;
        }
        para.push(t);
    }
    (!para.is_empty()).then(|| para.join(" "))
}

fn section_paragraph(body: &str, heading: &str) -> Option<String> {
    let mut it = lines_with_code(body);
    while let Some((l, code)) = it.next() {
        if code {
            continue;
        }
        if let Some((_, t)) = atx_heading(l) {
            if t.trim().eq_ignore_ascii_case(heading) {
                return paragraph_after(it);
            }
        }
    }
    None
}

fn first_paragraph(body: &str) -> Option<String> {
    let mut it = lines_with_code(body).skip_while(|(l, _)| {
        let t = l.trim();
        t.is_empty() || matches!(atx_heading(l), Some((1, _)))
    });
    // Skip the status blockquote OpenAgentBuilder puts under the title.
    let first = it.next()?;
    let chained = std::iter::once(first).chain(it);
    paragraph_after(chained)
}

/// Finds `**Label**: value` or `**Label:** value` (in lists and blockquotes too).
fn label_value(body: &str, label: &str) -> Option<String> {
    for (l, code) in lines_with_code(body) {
        if code {
            continue;
        }
        let t = l.trim_start_matches(|c: char| c == '>' || c == '-' || c.is_whitespace());
        let Some(rest) = t.strip_prefix("**") else {
            continue;
        };
        let Some(end) = rest.find("**") else {
            continue;
        };
        let (lab, after) = (&rest[..end], &rest[end + 2..]);
        let lab_clean = lab.trim().trim_end_matches(':').trim();
        if !lab_clean.eq_ignore_ascii_case(label) {
            continue;
        }
        let value = after.trim_start().trim_start_matches(':').trim();
        if !value.is_empty() {
            return Some(value.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_summaries() {
        let fm = "---\ndescription: From the frontmatter.\n---\n# T\n\n**Objective**: no\n";
        assert_eq!(
            task_summary(fm, 100).as_deref(),
            Some("From the frontmatter.")
        );
        let oab = "# Create\n\n## Task Overview\n**Objective**: Create **docs** for a feature\n**Type**: Content\n";
        assert_eq!(
            task_summary(oab, 100).as_deref(),
            Some("Create docs for a feature")
        );
        let plain = "# Plan\n\nUse @modules/shared.md#a for context.\n";
        assert_eq!(
            task_summary(plain, 100).as_deref(),
            Some("Use modules/shared.md#a for context.")
        );
        assert_eq!(
            task_summary("# Only a title\n", 100).as_deref(),
            Some("Only a title")
        );
        assert_eq!(task_summary("", 100), None);
        assert_eq!(
            task_summary(&"word ".repeat(500), 1024).map(|s| s.chars().count()),
            Some(1024)
        );
    }

    const OAB: &str = "# Orchestrator Agent\n\n> **Status**: Active\n> **Priority**: Critical (Phase 1)  \n> **Agent Version**: 0.1.0  \n\n## Agent Identity\n**Role:** Coordinator  \n**Version:** 0.1.0  \n\n## Purpose Statement\nI am the **Orchestrator**.\nI coordinate.\n\n## Next\n";

    #[test]
    fn openagentbuilder_metadata() {
        let p = parse_agent("agents/core/orchestrator/orchestrator.md", OAB).unwrap();
        assert_eq!(p.meta.name, "orchestrator");
        assert_eq!(p.meta.title, "Orchestrator Agent");
        assert_eq!(p.meta.description, "I am the Orchestrator. I coordinate.");
        assert_eq!(p.meta.version.as_deref(), Some("0.1.0"));
        assert_eq!(p.meta.priority, Priority::Critical);
        assert!(!p.has_frontmatter);
    }

    #[test]
    fn identity_list_style() {
        let t = "# X\n\n## Agent Identity\n- **Version**: 1.0  \n> **Priority**: High (Dev)\n";
        let p = parse_agent("agents/dev/x.md", t).unwrap();
        assert_eq!(p.meta.version.as_deref(), Some("1.0"));
        assert_eq!(p.meta.priority, Priority::High);
        assert_eq!(p.meta.description, "X");
    }

    #[test]
    fn claude_frontmatter() {
        let t = "---\nname: code-reviewer\ndescription: Reviews code.\ntools: Read, Grep\nmodel: sonnet\n---\nYou review.\n";
        let p = parse_agent(".claude/agents/r.md", t).unwrap();
        assert_eq!(p.meta.name, "code-reviewer");
        assert_eq!(p.meta.tools, ["Read", "Grep"]);
        assert_eq!(p.meta.model.as_deref(), Some("sonnet"));
        assert_eq!(p.body, "You review.\n");
    }

    #[test]
    fn refuses_bad_names_and_yaml() {
        let e = parse_agent("a.md", "---\nname: ../../x\n---\n").unwrap_err();
        assert!(e.contains("refused"), "{e}");
        assert!(parse_agent("a.md", "---\nname: [\n---\n").is_err());
        assert!(parse_agent("a.md", "---\n- a\n---\n").is_err());
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let t = "\u{feff}---\nname: bom-agent\ndescription: Has a BOM.\n---\n# Title\n";
        let p = parse_agent("agents/x.md", t).unwrap();
        assert!(p.has_frontmatter);
        assert_eq!(p.meta.name, "bom-agent");
        assert_eq!(p.meta.description, "Has a BOM.");
        assert_eq!(p.meta.title, "Title");
        assert_eq!(p.body, "# Title\n");
        let p = parse_agent("agents/plain.md", "\u{feff}# Plain Agent\n\nDoes things.\n").unwrap();
        assert_eq!(p.meta.title, "Plain Agent");
        assert_eq!(p.meta.description, "Does things.");
    }

    /// Issue 10, item 5: tens of thousands of `[` or `{` once kept the YAML scanner busy
    /// for seconds; they are refused before it, by name, as is oversized frontmatter.
    #[test]
    fn deep_or_large_frontmatter_is_refused_before_parsing() {
        for open in ["[", "{", "[a, ", "{a: "] {
            let t = format!("---\nname: a\nx: {}\n---\nbody\n", open.repeat(15_000));
            let e = parse_agent("agents/bomb.md", &t).unwrap_err();
            assert!(e.starts_with("agents/bomb.md: "), "{e}");
            assert!(e.contains("more than 64 levels"), "{e}");
        }
        // Quotes between a bracket and its closer cannot hide nesting.
        let sneaky = format!("x: {}\n", "[[\"]\" , ".repeat(40));
        assert!(flow_nesting_exceeds(&sneaky, MAX_FRONTMATTER_NESTING));
        let big = format!("---\nname: a\ndescription: {}\n---\n", "d".repeat(70_000));
        let e = parse_agent("agents/big.md", &big).unwrap_err();
        assert!(e.contains("more than the 65536 allowed"), "{e}");
        // Ordinary frontmatter, lists and links in quotes included, passes.
        let ok = "name: r\ntools: [\"Read\", \"Grep\"]\nhooks: {a: [{b: \"c\"}]}\ndescription: \"See [docs](x) and [more](y)\"\n";
        assert!(!flow_nesting_exceeds(ok, MAX_FRONTMATTER_NESTING));
        let v = parse_frontmatter("r.md", ok).unwrap();
        assert_eq!(v["tools"][1].as_str(), Some("Grep"));
        assert!(!flow_nesting_exceeds(&"k: [[a], {b: c}]\n".repeat(200), 2));
        // Single-pair mappings in flow sequences nest without brackets of their own:
        // 64 `[` may parse 129 levels deep, which must still be an error, not a crash.
        let pairs = format!("k: {}x{}\n", "[a: ".repeat(64), "]".repeat(64));
        assert!(!flow_nesting_exceeds(&pairs, MAX_FRONTMATTER_NESTING));
        let _ = parse_frontmatter("p.md", &pairs);
    }

    /// The depth of nested collections in `v` (a scalar is 0).
    fn depth(v: &serde_norway::Value) -> usize {
        match v {
            serde_norway::Value::Sequence(s) => 1 + s.iter().map(depth).max().unwrap_or(0),
            serde_norway::Value::Mapping(m) => {
                1 + m
                    .iter()
                    .map(|(k, v)| depth(k).max(depth(v)))
                    .max()
                    .unwrap_or(0)
            }
            serde_norway::Value::Tagged(t) => depth(&t.value),
            _ => 0,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The bound never falls below the flow nesting serde_norway really parsed,
        /// however quotes, comments and tags are mixed in. A single-pair mapping inside
        /// a flow sequence (`[a: b]`) opens a level without a bracket, at most one per
        /// `[`, so a value nests at most twice the bracket levels, plus the top mapping.
        #[test]
        fn the_nesting_bound_is_never_below_what_yaml_parses(
            flow in "[\\[\\]{}a,:'\" #!\n]{0,40}",
        ) {
            let yaml = format!("k: {flow}\n");
            if let Ok(v) = serde_norway::from_str::<serde_norway::Value>(&yaml) {
                proptest::prop_assert!(
                    2 * flow_nesting_bound(&yaml, usize::MAX) + 1 >= depth(&v),
                    "{yaml:?} parsed {v:?}"
                );
            }
        }
    }

    #[test]
    fn lenient_claude_description_with_colon() {
        let t = "---\nname: r\ndescription: Reviews diffs: be strict.\n---\nx\n";
        let p = parse_agent("r.md", t).unwrap();
        assert_eq!(p.meta.description, "Reviews diffs: be strict.");
        assert!(parse_agent("a.md", "---\nname: [\ndescription: a: b\n---\n").is_err());
    }
}
