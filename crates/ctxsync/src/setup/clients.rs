//! The five clients: where each keeps its project-level MCP configuration, in which
//! format, and what ctxsync's entry there looks like (each as its own documentation
//! describes it), plus Claude Code's hooks in `.claude/settings.json`.

use serde_json::{json, Value};

use super::json::Dialect;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// Claude Code: `.mcp.json` (`mcpServers`) and hooks in `.claude/settings.json`.
    Claude,
    /// VS Code (Copilot agent mode): `.vscode/mcp.json` (`servers`, JSON with comments).
    Vscode,
    /// Codex: `.codex/config.toml` (`[mcp_servers.ctxsync]`).
    Codex,
    /// Cursor: `.cursor/mcp.json` (`mcpServers`).
    Cursor,
    /// Gemini CLI: `.gemini/settings.json` (`mcpServers`, JSON with comments).
    Gemini,
}

/// The server's name in every client's configuration.
pub const SERVER: &str = "ctxsync";

/// Claude Code's project settings, where hooks live.
pub const CLAUDE_SETTINGS: &str = ".claude/settings.json";

/// Variables remote mode reads; passed through by name to clients that do not hand the
/// whole environment to the servers they start, never written out with their values.
pub const REMOTE_VARS: [&str; 2] = ["CTXSYNC_SERVER", "CTXSYNC_TOKEN"];

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json(Dialect),
    Toml,
}

impl Client {
    pub const ALL: [Client; 5] = [
        Client::Claude,
        Client::Vscode,
        Client::Codex,
        Client::Cursor,
        Client::Gemini,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Client::Claude => "claude",
            Client::Vscode => "vscode",
            Client::Codex => "codex",
            Client::Cursor => "cursor",
            Client::Gemini => "gemini",
        }
    }

    /// The MCP configuration file, relative to the project root.
    pub fn config_file(self) -> &'static str {
        match self {
            Client::Claude => ".mcp.json",
            Client::Vscode => ".vscode/mcp.json",
            Client::Codex => ".codex/config.toml",
            Client::Cursor => ".cursor/mcp.json",
            Client::Gemini => ".gemini/settings.json",
        }
    }

    pub fn format(self) -> Format {
        match self {
            Client::Claude | Client::Cursor => Format::Json(Dialect::Json),
            Client::Vscode | Client::Gemini => Format::Json(Dialect::Jsonc),
            Client::Codex => Format::Toml,
        }
    }

    /// Where the server table sits: `servers.ctxsync`, `mcp_servers.ctxsync`, ...
    pub fn server_path(self) -> [&'static str; 2] {
        match self {
            Client::Vscode => ["servers", SERVER],
            Client::Codex => ["mcp_servers", SERVER],
            _ => ["mcpServers", SERVER],
        }
    }
}

/// What the clients are told to start: the same binary and arguments for all.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `ctxsync` when that is what PATH finds, else the running binary's absolute path.
    pub command: String,
    /// The agent the server and hooks act for, when one was named.
    pub agent: Option<String>,
    /// Remote mode: the variables of [`REMOTE_VARS`] that are set now.
    pub remote_vars: Vec<&'static str>,
    /// Whether remote mode is configured (environment or ctxsync.toml).
    pub remote: bool,
}

impl Launch {
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["mcp".to_owned()];
        if let Some(agent) = &self.agent {
            args.extend(["--agent".to_owned(), agent.clone()]);
        }
        args
    }

    /// A shell command line running `ctxsync` with `words` (hooks are run by a shell).
    pub fn shell_command(&self, words: &[&str]) -> String {
        let mut line = shell_quote(&self.command);
        for word in words {
            line.push(' ');
            line.push_str(&shell_quote(word));
        }
        if let Some(agent) = &self.agent {
            line.push_str(" --agent ");
            line.push_str(&shell_quote(agent));
        }
        line
    }
}

/// The fields of ctxsync's server entry that ctxsync owns (others in the entry are the
/// user's and are kept). The first two or three decide whether an entry is current.
pub fn server_fields(client: Client, launch: &Launch) -> Vec<(&'static str, Value)> {
    let mut fields = Vec::new();
    // Claude Code's own `claude mcp add --scope project` writes the type; VS Code
    // requires it.
    if matches!(client, Client::Claude | Client::Vscode) {
        fields.push(("type", json!("stdio")));
    }
    fields.push(("command", json!(launch.command)));
    fields.push(("args", json!(launch.args())));
    fields
}

/// The names of the fields [`is_current`] compares.
pub fn identity_fields(client: Client) -> &'static [&'static str] {
    match client {
        Client::Claude | Client::Vscode => &["type", "command", "args"],
        _ => &["command", "args"],
    }
}

/// Whether an existing entry starts the same binary with the same arguments; when not,
/// what differs, in words. With `any_agent`, an entry for any agent (or none) counts as
/// current (`setup --check` without `--agent`).
pub fn compare_entry(
    client: Client,
    entry: &Value,
    launch: &Launch,
    any_agent: bool,
) -> Result<(), String> {
    let wanted = server_fields(client, launch);
    let mut differences = Vec::new();
    for (key, value) in &wanted {
        if !identity_fields(client).contains(key) {
            continue;
        }
        let have = entry.get(*key).unwrap_or(&Value::Null);
        let same = if *key == "args" && any_agent {
            let words: Option<Vec<String>> = have.as_array().map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(str::to_owned))
                    .collect()
            });
            words.is_some_and(|w| without_agent(&w) == ["mcp"])
        } else {
            have == value
        };
        if !same {
            differences.push(format!("{key} is {have}, setup would write {value}"));
        }
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(differences.join("; "))
    }
}

/// `words` without a `--agent NAME` (or `--agent=NAME`) pair.
pub fn without_agent(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for w in words {
        if skip {
            skip = false;
        } else if w == "--agent" {
            skip = true;
        } else if !w.starts_with("--agent=") {
            out.push(w.clone());
        }
    }
    out
}

/// The agent named in `words` (`--agent NAME` or `--agent=NAME`), if any.
pub fn agent_in(words: &[String]) -> Option<String> {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "--agent" {
            return it.next().cloned();
        }
        if let Some(a) = w.strip_prefix("--agent=") {
            return Some(a.to_owned());
        }
    }
    None
}

/// Which ctxsync command a Claude Code hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    SessionStart,
    Notice,
}

/// One hook ctxsync installs in `.claude/settings.json`.
#[derive(Debug, Clone)]
pub struct HookSpec {
    pub event: &'static str,
    /// Tool-name pattern for tool events (`*`: every tool); other events take none.
    pub matcher: Option<&'static str>,
    pub command: String,
    /// Seconds before Claude Code gives up on the command.
    pub timeout: Option<u64>,
    pub kind: HookKind,
}

/// The three hooks: session start re-pulls the agent's working copy with a checksum
/// check; each prompt and each tool call print the critical revisions not yet seen.
pub fn claude_hooks(launch: &Launch) -> Vec<HookSpec> {
    let notice = launch.shell_command(&["hook"]);
    vec![
        HookSpec {
            event: "SessionStart",
            matcher: None,
            command: launch.shell_command(&["session", "start"]),
            timeout: Some(60),
            kind: HookKind::SessionStart,
        },
        HookSpec {
            event: "UserPromptSubmit",
            matcher: None,
            command: notice.clone(),
            timeout: Some(10),
            kind: HookKind::Notice,
        },
        HookSpec {
            event: "PostToolUse",
            matcher: Some("*"),
            command: notice,
            timeout: Some(10),
            kind: HookKind::Notice,
        },
    ]
}

impl HookSpec {
    /// The matcher group appended to the event's list when ctxsync has no hook there.
    pub fn group(&self) -> Value {
        let mut hook = json!({"type": "command", "command": self.command});
        if let Some(t) = self.timeout {
            hook["timeout"] = json!(t);
        }
        let mut group = serde_json::Map::new();
        if let Some(m) = self.matcher {
            group.insert("matcher".into(), json!(m));
        }
        group.insert("hooks".into(), json!([hook]));
        Value::Object(group)
    }

    /// Whether `command` is a ctxsync hook of this kind (any binary path, any agent):
    /// the one setup replaces rather than adding a second.
    pub fn is_ours(&self, command: &str, launch: &Launch) -> bool {
        let words = shell_words(command);
        let Some(program) = words.first() else {
            return false;
        };
        let named_ctxsync = program == &launch.command
            || std::path::Path::new(program)
                .file_name()
                .is_some_and(|n| n == "ctxsync" || n == "ctxsync.exe");
        if !named_ctxsync {
            return false;
        }
        match self.kind {
            HookKind::SessionStart => {
                words.get(1).map(String::as_str) == Some("session")
                    && words.get(2).map(String::as_str) == Some("start")
            }
            HookKind::Notice => words.get(1).map(String::as_str) == Some("hook"),
        }
    }
}

/// `word` as one shell word: unchanged when it holds nothing a shell would act on, else
/// in single quotes.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Splits a command line into words the way a POSIX shell would for the simple forms
/// (spaces, single and double quotes, backslashes); enough to recognise our own hooks.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                        }
                        _ => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(command: &str, agent: Option<&str>) -> Launch {
        Launch {
            command: command.into(),
            agent: agent.map(Into::into),
            remote_vars: Vec::new(),
            remote: false,
        }
    }

    #[test]
    fn quoting_round_trips_through_the_word_splitter() {
        for word in ["/usr/bin/ctxsync", "/a b/ctx'sync", "", "x\"y"] {
            let line = format!("{} hook", shell_quote(word));
            assert_eq!(shell_words(&line), vec![word.to_owned(), "hook".into()]);
        }
    }

    #[test]
    fn our_hooks_are_recognised_whatever_the_path_or_agent() {
        let l = launch("/new/ctxsync", Some("builder"));
        let hooks = claude_hooks(&l);
        let notice = &hooks[1];
        assert!(notice.is_ours("/old/ctxsync hook --agent planner", &l));
        assert!(notice.is_ours("ctxsync hook", &l));
        assert!(!notice.is_ours("ctxsync session start", &l));
        assert!(!notice.is_ours("echo ctxsync hook", &l));
        assert!(hooks[0].is_ours("'/a b/ctxsync' session start --agent x", &l));
        assert_eq!(notice.command, "/new/ctxsync hook --agent builder");
    }

    #[test]
    fn an_entry_with_another_binary_is_stale() {
        let l = launch("/new/ctxsync", None);
        let entry = json!({"type": "stdio", "command": "/old/ctxsync", "args": ["mcp"], "env": {}});
        let why = compare_entry(Client::Claude, &entry, &l, false).unwrap_err();
        assert!(why.contains("/old/ctxsync"), "{why}");
        let entry = json!({"command": "/new/ctxsync", "args": ["mcp"], "trust": true});
        assert!(compare_entry(Client::Gemini, &entry, &l, false).is_ok());
        let entry = json!({"command": "/new/ctxsync", "args": ["mcp", "--agent", "b"]});
        assert!(compare_entry(Client::Cursor, &entry, &l, false).is_err());
        assert!(compare_entry(Client::Cursor, &entry, &l, true).is_ok());
    }
}
