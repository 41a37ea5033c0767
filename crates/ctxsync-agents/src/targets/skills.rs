//! Agent Skills (the agentskills specification, read by VS Code's agent host):
//! `.github/skills/<name>/SKILL.md` with frontmatter `name` (at most 64 lowercase
//! letters, digits and hyphens, no leading, trailing or doubled hyphen, equal to the
//! folder's name) and `description` (1 to 1,024 characters), optional `license`,
//! `compatibility`, `metadata` and `allowed-tools`.
//!
//! With `skills = "per-task"` (the default) each task file an agent's `@` references
//! reach (below its `tasks/` folder) becomes a skill `<agent>-<task>`, its description
//! the task's objective; an agent without task files becomes one skill, as every agent
//! does with `skills = "per-agent"`. The files a skill's text references below the
//! agent's folder are copied beside `SKILL.md` (same relative paths) and linked, since
//! hosts load a skill's companion files only when it links them.

use super::common;
use super::mapping::{Host, Table};
use super::{banner, HostTarget, RenderCtx, RenderSink};
use crate::config::{AgentsConfig, SkillsMode, Target};
use crate::parse;
use crate::paths;
use crate::render::{self, AgentModel, Output};
use crate::yaml::{frontmatter, Field};

/// Keys the specification allows in `SKILL.md`.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "description",
    "license",
    "compatibility",
    "metadata",
    "allowed-tools",
];

/// The longest skill name the specification allows.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest description the specification allows.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// The specification's rule for a skill name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// `name` made into a valid skill name (lower case, any other character a hyphen,
/// hyphens collapsed and trimmed, at most 64 characters), or `None` when nothing is left.
pub fn normalise_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_NAME_CHARS);
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// The Agent Skills target.
pub struct Skills;

impl HostTarget for Skills {
    fn target(&self) -> Target {
        Target::Skills
    }

    fn dir<'c>(&self, cfg: &'c AgentsConfig) -> &'c str {
        cfg.skills_dir.trim_end_matches('/')
    }

    fn output_path(&self, cfg: &AgentsConfig, name: &str, _entry: &str) -> Option<String> {
        // An agent name with nothing usable in it gets no skill (render says why).
        normalise_name(name).map(|n| format!("{}/{n}/SKILL.md", self.dir(cfg)))
    }

    fn render(
        &self,
        ctx: &RenderCtx<'_>,
        agent: &AgentModel,
        sink: &mut RenderSink,
    ) -> Result<Vec<Output>, String> {
        let m = &agent.meta;
        if !m.handoffs.is_empty() {
            sink.notes.push(format!(
                "{}: handoffs are not part of Agent Skills: dropped for its output",
                agent.entry
            ));
        }
        let Some(name) = normalise_name(&m.name) else {
            return Err(format!(
                "{}: agent name {:?} cannot be made into a skill name (lowercase letters, digits and hyphens)",
                agent.entry, m.name
            ));
        };
        let (tools, tool_notes) = Table::get().map_tools(&m.tools, Host::Claude);
        let allowed = tools.join(" ");
        let tasks = match ctx.cfg.skills {
            SkillsMode::PerTask => render::task_files(ctx, agent, sink)?,
            SkillsMode::PerAgent => Vec::new(),
        };
        let mut outputs = Vec::new();
        if tasks.is_empty() {
            // One skill for the agent (asked for, or an agent without task files).
            let skill_dir = format!("{}/{name}", self.dir(ctx.cfg));
            let path = format!("{skill_dir}/SKILL.md");
            if name != m.name {
                sink.notes.push(format!(
                    "{path}: name {:?} breaks the skill name rules: written as {name:?}",
                    m.name
                ));
            }
            let (body, companions) = render::relocated_body(ctx, agent, &skill_dir, sink)?;
            let description = clip(&m.description, MAX_DESCRIPTION_CHARS);
            skill(
                &name,
                &description,
                &allowed,
                &agent.entry,
                &body,
                &skill_dir,
                companions,
                &mut outputs,
            )?;
            sink.notes
                .extend(tool_notes.iter().map(|n| format!("{path}: {n}")));
            return Ok(outputs);
        }
        // One skill per task file, named `<agent>-<task>`.
        let mut names: std::collections::BTreeMap<String, &str> = Default::default();
        for (file, body) in &tasks {
            let stem = task_stem(&agent.entry, ctx, file);
            let wanted = format!("{}-{stem}", m.name);
            let Some(skill_name) = normalise_name(&wanted) else {
                return Err(format!(
                    "{file}: task of agent {:?} cannot be made into a skill name",
                    m.name
                ));
            };
            if let Some(other) = names.insert(skill_name.clone(), file) {
                return Err(format!(
                    "{file}: task skill name {skill_name:?} is also the name of {other}'s skill (names are cut at {MAX_NAME_CHARS} characters)"
                ));
            }
            let skill_dir = format!("{}/{skill_name}", self.dir(ctx.cfg));
            let path = format!("{skill_dir}/SKILL.md");
            if skill_name != wanted {
                sink.notes.push(format!(
                    "{path}: name {wanted:?} breaks the skill name rules: written as {skill_name:?}"
                ));
            }
            let text = ctx.texts.get(file)?;
            let summary = parse::task_summary(&text, MAX_DESCRIPTION_CHARS)
                .unwrap_or_else(|| stem.replace('-', " "));
            let description = clip(
                &format!("{summary} (A task of the {} agent.)", m.name),
                MAX_DESCRIPTION_CHARS,
            );
            let (body, companions) =
                render::relocated_file(ctx, agent, (file, body), &skill_dir, sink)?;
            skill(
                &skill_name,
                &description,
                &allowed,
                file,
                &body,
                &skill_dir,
                companions,
                &mut outputs,
            )?;
            sink.notes
                .extend(tool_notes.iter().map(|n| format!("{path}: {n}")));
        }
        Ok(outputs)
    }

    fn validate(&self, cfg: &AgentsConfig, out: &Output) -> Vec<String> {
        let p = &out.path;
        let below = match common::path_below(out, self.dir(cfg)) {
            Ok(b) => b,
            Err(e) => return vec![e],
        };
        let Some((folder, file)) = below.split_once('/') else {
            return vec![format!("{p}: a skill lives in its own folder")];
        };
        let text = match common::utf8(out) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        let mut errs = Vec::new();
        if file != "SKILL.md" {
            // A companion file: only what a host would trip over.
            let body = crate::parse::split_frontmatter(text).map_or(text, |(_, b)| b);
            common::no_at_refs(p, body, &mut errs);
            return errs;
        }
        let (fm, body) = match common::frontmatter(p, text) {
            Ok(x) => x,
            Err(e) => return vec![e],
        };
        common::require_strings(p, &fm, &["name", "description"], &mut errs);
        common::known_keys_only(p, &fm, KNOWN_KEYS, &mut errs);
        if let Some(name) = fm.get("name").and_then(|v| v.as_str()) {
            if !is_valid_name(name) {
                errs.push(format!(
                    "{p}: skill name {name:?} breaks the rules (at most {MAX_NAME_CHARS} lowercase letters, digits and single hyphens)"
                ));
            } else if name != folder || !paths::is_safe_name(folder) {
                errs.push(format!(
                    "{p}: skill name {name:?} does not match its folder"
                ));
            }
        }
        if let Some(d) = fm.get("description").and_then(|v| v.as_str()) {
            let n = d.chars().count();
            if n > MAX_DESCRIPTION_CHARS {
                errs.push(format!(
                    "{p}: description is {n} characters, over the limit of {MAX_DESCRIPTION_CHARS}"
                ));
            }
        }
        common::no_at_refs(p, body, &mut errs);
        errs
    }
}

/// At most `max` characters of `s`.
fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The task file's path below its agent's `tasks/` folder, without `.md`, `/` as `-`
/// (`tasks/review/deep.md` → `review-deep`).
fn task_stem(entry: &str, ctx: &RenderCtx<'_>, file: &str) -> String {
    let root = ctx.texts.lib().root_of(entry);
    let below = file
        .strip_prefix(root)
        .and_then(|r| r.strip_prefix("/tasks/"))
        .unwrap_or_else(|| paths::file_name(file));
    below.trim_end_matches(".md").replace('/', "-")
}

/// Pushes one skill (`SKILL.md` from `source`, then its companions) onto `outputs`.
#[allow(clippy::too_many_arguments)]
fn skill(
    name: &str,
    description: &str,
    allowed: &str,
    source: &str,
    body: &str,
    skill_dir: &str,
    companions: Vec<(String, String)>,
    outputs: &mut Vec<Output>,
) -> Result<(), String> {
    let mut fields = vec![
        ("name", Field::Str(name)),
        ("description", Field::Str(description)),
    ];
    if !allowed.is_empty() {
        fields.push(("allowed-tools", Field::Str(allowed)));
    }
    let fm = frontmatter(&fields)?;
    outputs.push(Output {
        target: Target::Skills,
        bytes: format!("{fm}{}{body}", banner(source)).into_bytes(),
        path: format!("{skill_dir}/SKILL.md"),
    });
    outputs.extend(companions.into_iter().map(|(path, text)| Output {
        target: Target::Skills,
        path,
        bytes: text.into_bytes(),
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_normalised() {
        assert!(is_valid_name("doc-writer"));
        assert!(!is_valid_name("Doc_Writer"));
        assert!(!is_valid_name("-a") && !is_valid_name("a--b") && !is_valid_name(""));
        assert!(!is_valid_name(&"a".repeat(65)));
        assert_eq!(
            normalise_name("Doc_Writer.v2").as_deref(),
            Some("doc-writer-v2")
        );
        assert_eq!(normalise_name("__").as_deref(), None);
        assert_eq!(normalise_name(&"ab".repeat(40)).map(|n| n.len()), Some(64));
    }
}
