//! VS Code prompt files: `.github/prompts/<name>.prompt.md` (or
//! `prompts/<group>/<name>.prompt.md` with `mirror_groups`), frontmatter `description`
//! and `agent` (the custom agent it runs with); the body is self-contained.

use super::common::markdown_agent;
use super::{banner, place, HostTarget, RenderCtx, RenderSink};
use crate::config::{AgentsConfig, Target};
use crate::refs::{self, RefKind};
use crate::render::{AgentModel, Output};
use crate::yaml::{frontmatter, Field};

/// Keys VS Code reads in a prompt file's frontmatter.
pub const KNOWN_KEYS: &[&str] = &[
    "name",
    "description",
    "argument-hint",
    "agent",
    "model",
    "tools",
    "mode",
];

/// `text` with its `@` references as code spans: a prompt file is self-contained, and a
/// description taken from the agent's first paragraph may be nothing but references.
fn without_at_refs(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut last = 0;
    for r in refs::scan(text) {
        if r.kind != RefKind::At {
            continue;
        }
        out.push_str(&text[last..r.start]);
        out.push_str(&format!("`{}`", r.display().trim_start_matches('@')));
        last = r.end;
    }
    out.push_str(&text[last..]);
    out
}

/// The prompt file target.
pub struct VscodePrompt;

impl HostTarget for VscodePrompt {
    fn target(&self) -> Target {
        Target::VscodePrompt
    }

    fn dir<'c>(&self, cfg: &'c AgentsConfig) -> &'c str {
        cfg.prompts_dir.trim_end_matches('/')
    }

    fn output_path(&self, cfg: &AgentsConfig, name: &str, entry: &str) -> Option<String> {
        Some(place(
            cfg,
            self.dir(cfg),
            entry,
            &format!("{name}.prompt.md"),
        ))
    }

    fn render(
        &self,
        ctx: &RenderCtx<'_>,
        agent: &AgentModel,
        _sink: &mut RenderSink,
    ) -> Result<Vec<Output>, String> {
        let Some(path) = self.output_path(ctx.cfg, &agent.meta.name, &agent.entry) else {
            return Ok(Vec::new());
        };
        let m = &agent.meta;
        let fm = frontmatter(&[
            ("name", Field::Str(&m.name)),
            ("description", Field::Str(&m.description)),
            ("agent", Field::Str(&m.name)),
        ])?;
        // Self-contained: no links into the library, only the agent it runs with.
        let version = m
            .version
            .as_deref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        let text = format!(
            "{fm}{banner}# {title}\n\n{desc}\n\nWork on the task below as the `{name}` custom agent{version}, following its instructions.\n\nTask: ${{input:task:What should {name} do?}}\n",
            banner = banner(&agent.entry),
            title = m.title,
            desc = without_at_refs(&m.description),
            name = m.name,
        );
        Ok(vec![Output {
            target: Target::VscodePrompt,
            path,
            bytes: text.into_bytes(),
        }])
    }

    fn validate(&self, cfg: &AgentsConfig, out: &Output) -> Vec<String> {
        markdown_agent(
            out,
            self.dir(cfg),
            ".prompt.md",
            &["name", "description", "agent"],
            KNOWN_KEYS,
            cfg.mirror_groups,
        )
        .0
    }
}
