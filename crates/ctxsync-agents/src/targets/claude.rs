//! Claude Code subagents: `.claude/agents/<name>.md`, frontmatter `name` (lowercase
//! letters, digits and hyphens), `description`, optional `tools` (a comma-separated
//! string of Claude Code tool names) and `model` (`sonnet`, `opus`, `haiku`, `inherit`).
//! A source that already is a Claude Code subagent is not written back over itself.

use super::common::markdown_agent;
use super::mapping::{Host, Table};
use super::{banner, is_claude_source, HostTarget, RenderCtx, RenderSink};
use crate::config::{AgentsConfig, Target};
use crate::render::{self, AgentModel, Output};
use crate::yaml::{frontmatter, Field};

/// Keys Claude Code reads in a subagent's frontmatter.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "description",
    "tools",
    "disallowedTools",
    "model",
    "permissionMode",
    "skills",
    "color",
];

/// Claude Code's rule for names: lowercase letters, digits and hyphens.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// `name` in Claude Code's alphabet (`_` and `.` become `-`).
pub fn host_name(name: &str) -> String {
    name.replace(['_', '.'], "-")
}

/// The Claude Code subagent target.
pub struct Claude;

impl HostTarget for Claude {
    fn target(&self) -> Target {
        Target::Claude
    }

    fn dir<'c>(&self, cfg: &'c AgentsConfig) -> &'c str {
        cfg.claude_dir.trim_end_matches('/')
    }

    fn output_path(&self, cfg: &AgentsConfig, name: &str, entry: &str) -> Option<String> {
        if is_claude_source(cfg, entry) {
            return None;
        }
        Some(format!("{}/{}.md", self.dir(cfg), host_name(name)))
    }

    fn render(
        &self,
        ctx: &RenderCtx<'_>,
        agent: &AgentModel,
        sink: &mut RenderSink,
    ) -> Result<Vec<Output>, String> {
        let Some(path) = self.output_path(ctx.cfg, &agent.meta.name, &agent.entry) else {
            return Ok(Vec::new());
        };
        let m = &agent.meta;
        if !m.handoffs.is_empty() {
            sink.notes
                .push(format!("{path}: Claude Code has no handoffs: dropped"));
        }
        let name = host_name(&m.name);
        if name != m.name {
            sink.notes.push(format!(
                "{path}: name {:?} written as {name:?} for Claude Code",
                m.name
            ));
        }
        let body = render::body(ctx, agent, self.dir(ctx.cfg), sink)?;
        let (tools, model) = Table::get().map_agent(
            &m.tools,
            m.model.as_deref(),
            Host::Claude,
            &path,
            &mut sink.notes,
        );
        let tools = tools.join(", ");
        let mut fields = vec![
            ("name", Field::Str(&name)),
            ("description", Field::Str(&m.description)),
        ];
        if !tools.is_empty() {
            fields.push(("tools", Field::Str(&tools)));
        }
        if let Some(model) = &model {
            fields.push(("model", Field::Str(model)));
        }
        let fm = frontmatter(&fields)?;
        Ok(vec![Output {
            target: Target::Claude,
            bytes: format!("{fm}{}{body}", banner(&agent.entry)).into_bytes(),
            path,
        }])
    }

    fn validate(&self, cfg: &AgentsConfig, out: &Output) -> Vec<String> {
        let (mut errs, parsed) = markdown_agent(
            out,
            self.dir(cfg),
            ".md",
            &["name", "description"],
            KNOWN_KEYS,
            false,
        );
        if let Some((fm, _)) = parsed {
            if let Some(name) = fm.get("name").and_then(|v| v.as_str()) {
                if !is_valid_name(name) {
                    errs.push(format!(
                        "{}: Claude Code names use lowercase letters, digits and hyphens, not {name:?}",
                        out.path
                    ));
                }
            }
            if fm.get("tools").is_some_and(|t| !t.is_string()) {
                errs.push(format!(
                    "{}: Claude Code expects `tools` as a comma-separated string",
                    out.path
                ));
            }
        }
        errs
    }
}
