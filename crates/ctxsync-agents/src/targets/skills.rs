//! Agent Skills (the agentskills specification, read by VS Code's agent host):
//! `.github/skills/<name>/SKILL.md` with frontmatter `name` (at most 64 lowercase
//! letters, digits and hyphens, no leading, trailing or doubled hyphen, equal to the
//! folder's name) and `description` (1 to 1,024 characters), optional `license`,
//! `compatibility`, `metadata` and `allowed-tools`.
//!
//! One skill per agent. The files its `@` references reach below the agent's folder are
//! copied beside `SKILL.md` (same relative paths) and linked, since hosts load a
//! skill's companion files only when it links them.

use super::common;
use super::mapping::{Host, Table};
use super::{banner, HostTarget, RenderCtx, RenderSink};
use crate::config::{AgentsConfig, Target};
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
        let skill_dir = format!("{}/{name}", self.dir(ctx.cfg));
        let path = format!("{skill_dir}/SKILL.md");
        if name != m.name {
            sink.notes.push(format!(
                "{path}: name {:?} breaks the skill name rules: written as {name:?}",
                m.name
            ));
        }
        let (body, companions) = render::relocated_body(ctx, agent, &skill_dir, sink)?;
        let (tools, notes) = Table::get().map_tools(&m.tools, Host::Claude);
        sink.notes
            .extend(notes.into_iter().map(|n| format!("{path}: {n}")));
        let allowed = tools.join(" ");
        let description: String = m.description.chars().take(MAX_DESCRIPTION_CHARS).collect();
        let mut fields = vec![
            ("name", Field::Str(&name)),
            ("description", Field::Str(&description)),
        ];
        if !allowed.is_empty() {
            fields.push(("allowed-tools", Field::Str(&allowed)));
        }
        let fm = frontmatter(&fields)?;
        let mut outputs = vec![Output {
            target: Target::Skills,
            bytes: format!("{fm}{}{body}", banner(&agent.entry)).into_bytes(),
            path,
        }];
        outputs.extend(companions.into_iter().map(|(path, text)| Output {
            target: Target::Skills,
            path,
            bytes: text.into_bytes(),
        }));
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
