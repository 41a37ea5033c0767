//! The `[agents]` table of `ctxsync.toml`, with a default for every key, and the search
//! for the repository root (the nearest folder holding `ctxsync.toml`, like `.git`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths;

/// The name of the config file looked for when walking up from the working directory.
pub const CONFIG_FILE: &str = "ctxsync.toml";

/// Where generated files go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// `.github/agents/<name>.agent.md` (VS Code / GitHub Copilot custom agent).
    VscodeAgent,
    /// `.github/prompts/<name>.prompt.md` (VS Code prompt file).
    VscodePrompt,
    /// `.github/skills/<name>/SKILL.md` (Agent Skills, read by VS Code's agent host).
    Skills,
    /// `.claude/agents/<name>.md` (Claude Code subagent).
    Claude,
    /// `.codex/agents/<name>.toml` (Codex agent).
    Codex,
    /// `.gemini/agents/<name>.md` (Gemini CLI subagent).
    Gemini,
}

impl Target {
    /// The name used in config, JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::VscodeAgent => "vscode-agent",
            Target::VscodePrompt => "vscode-prompt",
            Target::Skills => "skills",
            Target::Claude => "claude",
            Target::Codex => "codex",
            Target::Gemini => "gemini",
        }
    }

    /// Every target, in config order.
    pub const ALL: [Target; 6] = [
        Target::VscodeAgent,
        Target::VscodePrompt,
        Target::Skills,
        Target::Claude,
        Target::Codex,
        Target::Gemini,
    ];
}

/// How `@modules/...` references appear in outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RefMode {
    /// A relative Markdown link to the referenced file.
    #[default]
    Link,
    /// The referenced text is inlined (appended once per file) and linked by anchor.
    Inline,
}

/// What becomes an Agent Skill (`skills = ...` in `[agents]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SkillsMode {
    /// Each task file an agent references (`@tasks/...`) becomes a skill
    /// `<agent>-<task>`; an agent with no task file becomes one skill.
    #[default]
    PerTask,
    /// One skill per agent, its body the agent's.
    PerAgent,
}

/// Settings of the `[agents]` table. Every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Library folders, relative to the root.
    pub sources: Vec<String>,
    /// Globs of files and folders to ignore.
    pub excludes: Vec<String>,
    /// Which outputs to generate.
    pub targets: Vec<Target>,
    /// `link` or `inline`.
    pub references: RefMode,
    /// `per-task` (each task file a skill) or `per-agent` (one skill per agent).
    pub skills: SkillsMode,
    /// Quiet time before `agents watch` starts a run.
    pub debounce_ms: u64,
    /// How long replaced and removed outputs are kept for rollback.
    pub retention_days: u64,
    /// Output folder of VS Code custom agents.
    pub agents_dir: String,
    /// Output folder of VS Code prompt files.
    pub prompts_dir: String,
    /// Output folder of Claude Code subagents.
    pub claude_dir: String,
    /// Output folder of Agent Skills (one folder per skill).
    pub skills_dir: String,
    /// Output folder of Codex agents.
    pub codex_dir: String,
    /// Output folder of Gemini CLI subagents.
    pub gemini_dir: String,
    /// Prompt files mirror the library's group folders (`prompts/<group>/<name>.prompt.md`).
    pub mirror_groups: bool,
    /// Write `.github/agents` copies of `.claude/agents` subagents even though VS Code
    /// already lists those itself (it would show each twice).
    pub duplicate_claude_agents: bool,
    /// Files bigger than this are refused.
    pub max_file_bytes: u64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            sources: vec!["agents".into(), ".claude/agents".into()],
            excludes: vec!["*backup*".into(), "*.tmp".into(), "*.bak".into()],
            targets: vec![Target::VscodeAgent, Target::VscodePrompt, Target::Skills],
            references: RefMode::Link,
            skills: SkillsMode::PerTask,
            debounce_ms: 50,
            retention_days: 7,
            agents_dir: ".github/agents".into(),
            prompts_dir: ".github/prompts".into(),
            claude_dir: ".claude/agents".into(),
            skills_dir: ".github/skills".into(),
            codex_dir: ".codex/agents".into(),
            gemini_dir: ".gemini/agents".into(),
            mirror_groups: false,
            duplicate_claude_agents: false,
            max_file_bytes: 1024 * 1024,
        }
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    // Other tables belong to other parts of ctxsync and are ignored here.
    agents: Option<AgentsConfig>,
}

impl AgentsConfig {
    /// Reads `[agents]` from `<root>/ctxsync.toml`; defaults when the file or table is absent.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        Self::parse(&text, &path)
    }

    /// Parses the text of a config file (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let cfg = file.agents.unwrap_or_default();
        cfg.validate().map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        for s in &self.sources {
            if !paths::is_safe_rel(s.trim_end_matches('/')) {
                return Err(format!(
                    "agents.sources: {s:?} must be a relative path inside the repository"
                ));
            }
        }
        for (key, d) in [
            ("agents_dir", &self.agents_dir),
            ("prompts_dir", &self.prompts_dir),
            ("claude_dir", &self.claude_dir),
            ("skills_dir", &self.skills_dir),
            ("codex_dir", &self.codex_dir),
            ("gemini_dir", &self.gemini_dir),
        ] {
            if !paths::is_safe_rel(d.trim_end_matches('/')) {
                return Err(format!(
                    "agents.{key}: {d:?} must be a relative path inside the repository"
                ));
            }
            if d.trim_end_matches('/') == ".ctxsync" || d.starts_with(".ctxsync/") {
                return Err(format!("agents.{key}: {d:?} is ctxsync's own state folder"));
            }
        }
        if self.targets.is_empty() {
            return Err("agents.targets: at least one target is needed".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(t) = self.targets.iter().find(|t| !seen.insert(**t)) {
            return Err(format!("agents.targets: {:?} is listed twice", t.as_str()));
        }
        if self.max_file_bytes == 0 {
            return Err("agents.max_file_bytes must be positive".into());
        }
        Ok(())
    }

    /// The output folder of a target, repository-relative.
    pub fn target_dir(&self, t: Target) -> &str {
        crate::targets::host(t).dir(self)
    }

    /// The main output path of agent `name` (entry file `entry`) for target `t`,
    /// repository-relative; `None` when the agent gets no output there.
    pub fn output_path(&self, t: Target, name: &str, entry: &str) -> Option<String> {
        crate::targets::host(t).output_path(self, name, entry)
    }

    /// A fingerprint of the settings that change rendered bytes; a change forces a full run.
    pub fn render_fingerprint(&self) -> String {
        let key = format!(
            "v2|{:?}|{:?}|{:?}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{:?}",
            self.targets,
            self.references,
            self.skills,
            self.agents_dir,
            self.prompts_dir,
            self.claude_dir,
            self.skills_dir,
            self.codex_dir,
            self.gemini_dir,
            self.mirror_groups,
            self.duplicate_claude_agents,
            self.sources,
            self.excludes
        );
        blake3::hash(key.as_bytes()).to_hex()[..16].to_string()
    }
}

/// Finds the repository root: the nearest ancestor of `start` holding `ctxsync.toml`,
/// or `start` itself when there is none.
pub fn find_root(start: &Path) -> PathBuf {
    let mut cur = Some(start);
    while let Some(dir) = cur {
        if dir.join(CONFIG_FILE).is_file() {
            return dir.to_path_buf();
        }
        cur = dir.parent();
    }
    start.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_table() {
        let c = AgentsConfig::parse("[server]\nport = 1\n", Path::new("x")).unwrap();
        assert_eq!(c.debounce_ms, 50);
        assert_eq!(
            c.targets,
            vec![Target::VscodeAgent, Target::VscodePrompt, Target::Skills]
        );
        assert_eq!(c.skills, SkillsMode::PerTask);
    }

    #[test]
    fn parses_table_and_refuses_escape() {
        let c = AgentsConfig::parse(
            "[agents]\nreferences = \"inline\"\ntargets = [\"vscode-agent\", \"claude\"]\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.references, RefMode::Inline);
        assert!(c.targets.contains(&Target::Claude));
        let c = AgentsConfig::parse("[agents]\nskills = \"per-agent\"\n", Path::new("x")).unwrap();
        assert_eq!(c.skills, SkillsMode::PerAgent);
        assert!(AgentsConfig::parse("[agents]\nskills = \"per-file\"\n", Path::new("x")).is_err());
        assert!(AgentsConfig::parse("[agents]\nagents_dir = \"../x\"\n", Path::new("x")).is_err());
        assert!(AgentsConfig::parse("[agents]\nbogus = 1\n", Path::new("x")).is_err());
    }
}
