//! Gemini CLI subagents: `.gemini/agents/<name>.md`, frontmatter `name` (lowercase
//! letters, digits, hyphens and underscores), `description`, optional `kind`, `tools`
//! (Gemini CLI tool names), `model`, `temperature`, `max_turns`, `timeout_mins`; the
//! body is the subagent's system prompt.

use super::common::markdown_agent;
use super::mapping::{Host, Table};
use super::{banner, HostTarget, RenderCtx, RenderSink};
use crate::config::{AgentsConfig, Target};
use crate::render::{self, AgentModel, Output};
use crate::yaml::{frontmatter, Field};

/// Keys Gemini CLI reads in a subagent's frontmatter.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "description",
    "kind",
    "tools",
    "model",
    "temperature",
    "max_turns",
    "timeout_mins",
];

/// Gemini CLI's rule for names: lowercase letters, digits, hyphens and underscores.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// `name` in Gemini CLI's alphabet (`.` becomes `-`).
pub fn host_name(name: &str) -> String {
    name.replace('.', "-")
}

/// The Gemini CLI subagent target.
pub struct Gemini;

impl HostTarget for Gemini {
    fn target(&self) -> Target {
        Target::Gemini
    }

    fn dir<'c>(&self, cfg: &'c AgentsConfig) -> &'c str {
        cfg.gemini_dir.trim_end_matches('/')
    }

    fn output_path(&self, cfg: &AgentsConfig, name: &str, _entry: &str) -> Option<String> {
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
                .push(format!("{path}: Gemini CLI has no handoffs: dropped"));
        }
        let name = host_name(&m.name);
        let body = render::body(ctx, agent, self.dir(ctx.cfg), sink)?;
        let (tools, model) = Table::get().map_agent(
            &m.tools,
            m.model.as_deref(),
            Host::Gemini,
            &path,
            &mut sink.notes,
        );
        let mut fields = vec![
            ("name", Field::Str(&name)),
            ("description", Field::Str(&m.description)),
            ("kind", Field::Str("local")),
        ];
        if !tools.is_empty() {
            fields.push(("tools", Field::List(&tools)));
        }
        if let Some(model) = &model {
            fields.push(("model", Field::Str(model)));
        }
        let fm = frontmatter(&fields)?;
        Ok(vec![Output {
            target: Target::Gemini,
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
                        "{}: Gemini CLI names use lowercase letters, digits, hyphens and underscores, not {name:?}",
                        out.path
                    ));
                }
            }
            if fm.get("tools").is_some_and(|t| !t.is_sequence()) {
                errs.push(format!(
                    "{}: Gemini CLI expects `tools` as a list",
                    out.path
                ));
            }
        }
        errs
    }
}
