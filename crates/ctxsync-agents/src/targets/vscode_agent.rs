//! VS Code / GitHub Copilot custom agents: `.github/agents/<name>.agent.md` with
//! frontmatter `name`, `description` and optional `tools` (Copilot's aliases), `model`
//! and `handoffs`; the body is the agent's instructions, at most 30,000 characters.
//!
//! VS Code lists `.claude/agents` itself, so a Claude Code subagent gets no copy here
//! unless `duplicate_claude_agents = true` (it would show twice).

use super::common::{self, markdown_agent};
use super::mapping::{Host, Table};
use super::{banner, is_claude_source, HostTarget, RenderCtx, RenderSink};
use crate::config::{AgentsConfig, Target};
use crate::render::{self, AgentModel, Output};
use crate::yaml::{frontmatter, Field};

/// Keys VS Code reads in a custom agent's frontmatter.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "description",
    "argument-hint",
    "tools",
    "model",
    "target",
    "handoffs",
    "mcp-servers",
    "infer",
];

/// The VS Code custom agent target.
pub struct VscodeAgent;

impl HostTarget for VscodeAgent {
    fn target(&self) -> Target {
        Target::VscodeAgent
    }

    fn dir<'c>(&self, cfg: &'c AgentsConfig) -> &'c str {
        cfg.agents_dir.trim_end_matches('/')
    }

    fn output_path(&self, cfg: &AgentsConfig, name: &str, entry: &str) -> Option<String> {
        if is_claude_source(cfg, entry) && !cfg.duplicate_claude_agents {
            return None;
        }
        Some(format!("{}/{name}.agent.md", self.dir(cfg)))
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
        let body = render::body(ctx, agent, self.dir(ctx.cfg), sink)?;
        let (tools, model) = Table::get().map_agent(
            &m.tools,
            m.model.as_deref(),
            Host::Vscode,
            &path,
            &mut sink.notes,
        );
        let mut fields = vec![
            ("name", Field::Str(&m.name)),
            ("description", Field::Str(&m.description)),
        ];
        if !tools.is_empty() {
            fields.push(("tools", Field::List(&tools)));
        }
        if let Some(model) = &model {
            fields.push(("model", Field::Str(model)));
        }
        if !m.handoffs.is_empty() {
            fields.push(("handoffs", Field::Handoffs(&m.handoffs)));
        }
        let fm = frontmatter(&fields)?;
        Ok(vec![Output {
            target: Target::VscodeAgent,
            bytes: format!("{fm}{}{body}", banner(&agent.entry)).into_bytes(),
            path,
        }])
    }

    fn validate(&self, cfg: &AgentsConfig, out: &Output) -> Vec<String> {
        let (mut errs, parsed) = markdown_agent(
            out,
            self.dir(cfg),
            ".agent.md",
            &["name", "description"],
            KNOWN_KEYS,
            false,
        );
        if let Some((fm, body)) = parsed {
            if fm.get("tools").is_some_and(|t| !t.is_sequence()) {
                errs.push(format!("{}: VS Code expects `tools` as a list", out.path));
            }
            common::body_within_limit(&out.path, &body, &mut errs);
        }
        errs
    }
}
