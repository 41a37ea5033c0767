//! Tool and model names between agent hosts, from the table in `mapping.toml`.
//!
//! A source agent may name its tools in any host's words (Claude Code's `Read, Grep,
//! Bash`, Copilot's `read, search, execute`, Gemini CLI's `read_file`); each target
//! writes its own host's names. A name the table does not know is dropped and reported:
//! copying it through would give the host a tool list it rejects or, worse, misreads.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde::Deserialize;

/// The table, compiled into the binary.
pub const MAPPING_TOML: &str = include_str!("mapping.toml");

/// A host whose names the table lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Claude Code.
    Claude,
    /// VS Code / GitHub Copilot.
    Vscode,
    /// Gemini CLI.
    Gemini,
    /// OpenAI Codex.
    Codex,
}

impl Host {
    fn label(self) -> &'static str {
        match self {
            Host::Claude => "Claude Code",
            Host::Vscode => "VS Code",
            Host::Gemini => "Gemini CLI",
            Host::Codex => "Codex",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ToolRow {
    vscode: String,
    #[serde(default)]
    claude: Vec<String>,
    #[serde(default)]
    gemini: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ModelRow {
    #[serde(default)]
    claude: String,
    #[serde(default)]
    vscode: String,
    #[serde(default)]
    gemini: String,
    #[serde(default)]
    codex: String,
}

/// The parsed table.
#[derive(Debug, Default, Deserialize)]
pub struct Table {
    #[serde(default)]
    tool: Vec<ToolRow>,
    #[serde(default)]
    model: Vec<ModelRow>,
}

impl Table {
    /// The table of `mapping.toml` (a unit test holds that it parses).
    pub fn get() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(|| Table::parse(MAPPING_TOML).unwrap_or_default())
    }

    /// Parses a table in the format of `mapping.toml`.
    pub fn parse(text: &str) -> Result<Table, String> {
        toml::from_str(text).map_err(|e| format!("mapping table: {e}"))
    }

    fn tool_row(&self, name: &str) -> Option<usize> {
        self.tool.iter().position(|r| {
            r.vscode.eq_ignore_ascii_case(name)
                || r.claude.iter().any(|c| c == name)
                || r.gemini.iter().any(|g| g == name)
        })
    }

    /// An agent's tools and model in `host`'s names, for the output at `path`; what has
    /// no mapping is noted in `notes` and left out. Claude's `inherit` model stays.
    pub fn map_agent(
        &self,
        tools: &[String],
        model: Option<&str>,
        host: Host,
        path: &str,
        notes: &mut Vec<String>,
    ) -> (Vec<String>, Option<String>) {
        let (tools, tool_notes) = self.map_tools(tools, host);
        notes.extend(tool_notes.into_iter().map(|n| format!("{path}: {n}")));
        let model = model.and_then(|model| {
            if host == Host::Claude && model == "inherit" {
                return Some("inherit".to_string());
            }
            let (id, note) = self.map_model(model, host);
            if let Some(n) = note {
                notes.push(format!("{path}: {n}"));
            }
            id
        });
        (tools, model)
    }

    /// `tools` in `host`'s names, in table order without repeats, and the notes for
    /// names that are unknown or have no equivalent there.
    pub fn map_tools(&self, tools: &[String], host: Host) -> (Vec<String>, Vec<String>) {
        let mut rows = BTreeSet::new();
        let mut notes = Vec::new();
        for t in tools {
            match self.tool_row(t) {
                Some(i) => {
                    rows.insert(i);
                }
                None => notes.push(format!(
                    "tool {t:?} is not in the mapping table: dropped for {}",
                    host.label()
                )),
            }
        }
        let mut out: Vec<String> = Vec::new();
        for i in rows {
            let Some(row) = self.tool.get(i) else {
                continue;
            };
            let names: Vec<String> = match host {
                Host::Vscode => vec![row.vscode.clone()],
                Host::Claude => row.claude.clone(),
                Host::Gemini => row.gemini.clone(),
                Host::Codex => Vec::new(),
            };
            if names.is_empty() {
                notes.push(format!(
                    "tool {:?} has no {} equivalent: dropped",
                    row.vscode,
                    host.label()
                ));
            }
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        (out, notes)
    }

    /// `model` in `host`'s ids, or `None` with a note when the host has no equivalent.
    /// Claude Code's `inherit` (the caller's model) is every host's default: no key.
    pub fn map_model(&self, model: &str, host: Host) -> (Option<String>, Option<String>) {
        if model.eq_ignore_ascii_case("inherit") {
            return (None, None);
        }
        let row = self.model.iter().find(|r| {
            [&r.claude, &r.vscode, &r.gemini, &r.codex]
                .iter()
                .any(|v| !v.is_empty() && v.eq_ignore_ascii_case(model))
        });
        let Some(row) = row else {
            return (
                None,
                Some(format!(
                    "model {model:?} is not in the mapping table: dropped for {}",
                    host.label()
                )),
            );
        };
        let id = match host {
            Host::Claude => &row.claude,
            Host::Vscode => &row.vscode,
            Host::Gemini => &row.gemini,
            Host::Codex => &row.codex,
        };
        if id.is_empty() {
            (
                None,
                Some(format!(
                    "model {model:?} has no {} equivalent: dropped (the host's default is used)",
                    host.label()
                )),
            )
        } else {
            (Some(id.clone()), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn table_parses_and_maps_both_ways() {
        let t = Table::parse(MAPPING_TOML).unwrap();
        assert!(t.tool.len() >= 6 && t.model.len() >= 3);
        let (vs, notes) = t.map_tools(&s(&["Read", "Grep", "Edit", "Bash"]), Host::Vscode);
        assert_eq!(vs, s(&["read", "search", "edit", "execute"]));
        assert!(notes.is_empty());
        let (back, _) = t.map_tools(&vs, Host::Claude);
        assert!(back.contains(&"Read".to_string()) && back.contains(&"Bash".to_string()));
        let (again, _) = t.map_tools(&back, Host::Vscode);
        assert_eq!(again, vs);
        let (_, notes) = t.map_tools(&s(&["Read", "Teleport"]), Host::Vscode);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("Teleport"));
        assert_eq!(
            t.map_model("sonnet", Host::Vscode).0.as_deref(),
            Some("Claude Sonnet 4.5 (copilot)")
        );
        assert_eq!(
            t.map_model("Claude Sonnet 4.5 (copilot)", Host::Claude)
                .0
                .as_deref(),
            Some("sonnet")
        );
        assert!(t.map_model("sonnet", Host::Codex).1.is_some());
        assert_eq!(t.map_model("inherit", Host::Vscode), (None, None));
    }
}
