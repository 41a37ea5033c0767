//! `ctxsync setup CLIENT`: registers ctxsync's MCP server in a client's project
//! configuration (and, for Claude Code, installs the hooks that bring critical revisions
//! into the agent's next step); `ctxsync setup --check` tells what is configured.
//!
//! Every file is merged, never regenerated: other servers, other keys and comments stay,
//! and a property that already holds the wanted value is not rewritten, so a second run
//! changes no byte and says so. All files of a client are read and edited in memory
//! before any is written, so a malformed one (an input error naming it and the line)
//! leaves every file as it was. Writes are atomic (temp file, fsync, rename) and refuse
//! to replace a file that changed while setup ran. Nothing secret is written: in remote
//! mode the server reads CTXSYNC_SERVER and CTXSYNC_TOKEN from its environment, and
//! clients that filter the environment are told those variables' names only.

mod clients;
mod json;
mod toml;
mod write;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::config::Config;
use crate::InputError;
pub use clients::Client;
use clients::{Format, HookSpec, Launch, CLAUDE_SETTINGS, REMOTE_VARS};
use json::JsonFile;
use toml::TomlFile;

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// The client to configure: claude, vscode, codex, cursor or gemini.
    #[arg(required_unless_present = "check")]
    pub client: Option<Client>,
    /// Show what would change as a unified diff, and write nothing.
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,
    /// Tell, for each client (or the one named), whether ctxsync is configured, stale
    /// (another binary or arguments) or absent; exit 1 unless it is configured.
    #[arg(long)]
    pub check: bool,
    /// The agent the MCP server and hooks act for (`--agent NAME` in what is written),
    /// for clients that run one server per agent; remote mode takes it from the token.
    #[arg(long)]
    pub agent: Option<String>,
    /// Project root (default: the folder holding ctxsync.toml, found by walking up, else
    /// the working directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub root: Option<PathBuf>,
}

pub fn run(args: &SetupArgs) -> Result<ExitCode> {
    if let Some(root) = args.root.as_deref().filter(|r| !r.is_dir()) {
        return Err(InputError(format!("{} is not a folder", root.display())).into());
    }
    let config = Config::load(args.root.as_deref())?;
    if let Some(agent) = &args.agent {
        ctxsync_store::validate_agent_name(agent)?;
    }
    let launch = launch(&config, args.agent.clone())?;
    if args.check {
        return check(&config.root, &launch, args.client, args.agent.is_none());
    }
    let Some(client) = args.client else {
        return Err(
            InputError("name a client: claude, vscode, codex, cursor or gemini".into()).into(),
        );
    };
    // Everything is planned before anything is written.
    let mut planned = vec![plan_server(client, &config.root, &launch)?];
    if client == Client::Claude {
        planned.push(plan_claude_hooks(&config.root, &launch)?);
    }
    let mut changed = 0;
    for p in &planned {
        if p.old.as_deref() == Some(p.new.as_str()) {
            outln!("{}: unchanged", p.rel);
            continue;
        }
        changed += 1;
        if args.dry_run {
            out!("{}", write::unified_diff(&p.rel, p.old.as_deref(), &p.new));
        } else {
            write::replace(&p.path, p.old.as_deref(), &p.new)?;
            outln!(
                "{}: {}",
                p.rel,
                if p.old.is_some() {
                    "updated"
                } else {
                    "created"
                }
            );
        }
    }
    let what = format!(
        "`{}`{}",
        launch.shell_command(&["mcp"]),
        if client == Client::Claude {
            " and its hooks"
        } else {
            ""
        }
    );
    if changed == 0 {
        outln!(
            "{}: already configured ({what}); nothing changed",
            client.name()
        );
    } else if args.dry_run {
        outln!("{}: dry run, nothing written", client.name());
    } else {
        outln!(
            "{}: configured server {} {what}; restart the client or reload its MCP servers",
            client.name(),
            clients::SERVER
        );
    }
    warn_about_identity(&config, &launch, client);
    Ok(ExitCode::SUCCESS)
}

/// The binary, agent and mode the clients are told about.
fn launch(config: &Config, agent: Option<String>) -> Result<Launch> {
    let remote = crate::context::env::server_url(config)?.is_some();
    let remote_vars = if remote {
        REMOTE_VARS
            .into_iter()
            .filter(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Launch {
        command: binary()?,
        agent,
        remote_vars,
        remote,
    })
}

/// `ctxsync` when that is what PATH finds (so the committed file works on every machine
/// that has it installed), else the absolute path of the running binary.
fn binary() -> Result<String> {
    let exe = std::env::current_exe().context("cannot tell where the ctxsync binary is")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(if cfg!(windows) {
                "ctxsync.exe"
            } else {
                "ctxsync"
            });
            if candidate.is_file() && std::fs::canonicalize(&candidate).is_ok_and(|c| c == exe) {
                return Ok("ctxsync".into());
            }
            if candidate.is_file() {
                // The first `ctxsync` on PATH is another one: only the full path is sure.
                break;
            }
        }
    }
    exe.to_str().map(str::to_owned).ok_or_else(|| {
        InputError(format!(
            "the ctxsync binary's path {} is not UTF-8; install it under a UTF-8 path",
            exe.display()
        ))
        .into()
    })
}

/// Says on stderr what the configuration still needs to work, without failing.
fn warn_about_identity(config: &Config, launch: &Launch, client: Client) {
    if launch.remote {
        if launch.remote_vars.is_empty() && client == Client::Codex {
            errln!("note: remote mode without CTXSYNC_SERVER/CTXSYNC_TOKEN in the environment: the server reads ctxsync.toml and .ctxsync/token");
        }
        // Remote mode needs no name: the server, the hooks and writes act as the
        // token's agent (`GET /v1/whoami`).
        return;
    }
    if let Ok(location) = crate::location::Location::resolve(None, config) {
        if !location.exists() {
            errln!(
                "note: no ctxsync store at {location} yet: run `ctxsync init` before the client starts the server"
            );
        }
    }
    if launch.agent.is_none() && config.file.agent.is_none() {
        errln!(
            "note: no agent named: writes through the server{} need one; run again with --agent NAME, or set CTXSYNC_AGENT or `agent` in ctxsync.toml",
            if client == Client::Claude { " and the hooks" } else { "" }
        );
    }
}

/// One file's planned content.
struct Planned {
    /// Relative to the project root, as printed.
    rel: String,
    path: PathBuf,
    old: Option<String>,
    new: String,
}

/// The file's text, `None` when it does not exist.
fn read_existing(path: &Path, rel: &str) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(ctxsync_client::decode_text(bytes, rel)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

/// A new file ends with a newline, as editors write them.
fn finish(old: Option<&str>, mut new: String) -> String {
    if old.is_none() && !new.ends_with('\n') {
        new.push('\n');
    }
    new
}

/// The client's MCP configuration with ctxsync's server entry set.
fn plan_server(client: Client, root: &Path, launch: &Launch) -> Result<Planned> {
    let rel = client.config_file();
    let path = root.join(rel);
    let old = read_existing(&path, rel)?;
    let text = old.as_deref().unwrap_or("");
    let [outer, name] = client.server_path();
    let new = match client.format() {
        Format::Json(dialect) => {
            let file = JsonFile::parse(text, dialect, rel)?;
            let entry = file.object(&[outer, name], rel)?;
            json::set_fields(&entry, &clients::server_fields(client, launch));
            // Gemini CLI keeps secret-looking variables from the servers it starts unless
            // the entry names them; `$VAR` is expanded by Gemini, so no value is written.
            if client == Client::Gemini && !launch.remote_vars.is_empty() {
                let env = file.object(&[outer, name, "env"], rel)?;
                let refs: Vec<(&str, Value)> = launch
                    .remote_vars
                    .iter()
                    .map(|v| (*v, json!(format!("${v}"))))
                    .collect();
                json::set_fields(&env, &refs);
            }
            file.text()
        }
        Format::Toml => {
            let mut file = TomlFile::parse(text, rel)?;
            let mut fields = clients::server_fields(client, launch);
            // Codex hands servers only a short list of variables; `env_vars` adds ours by
            // name (their values stay in the environment).
            if launch.remote {
                let mut names: Vec<Value> = file
                    .table_value(&[outer, name])
                    .and_then(|t| t.get("env_vars").and_then(Value::as_array).cloned())
                    .unwrap_or_default();
                for var in REMOTE_VARS {
                    if !names.iter().any(|n| n == var) {
                        names.push(json!(var));
                    }
                }
                fields.push(("env_vars", Value::Array(names)));
            }
            file.set_fields(&[outer, name], &fields, rel)?;
            file.text()
        }
    };
    Ok(Planned {
        rel: rel.to_owned(),
        new: finish(old.as_deref(), new),
        path,
        old,
    })
}

/// `.claude/settings.json` with ctxsync's three hooks: an existing ctxsync hook of the
/// same kind is updated in place (another binary path or agent), others are kept.
fn plan_claude_hooks(root: &Path, launch: &Launch) -> Result<Planned> {
    let rel = CLAUDE_SETTINGS;
    let path = root.join(rel);
    let old = read_existing(&path, rel)?;
    let file = JsonFile::parse(old.as_deref().unwrap_or(""), json::Dialect::Json, rel)?;
    let hooks = file.object(&["hooks"], rel)?;
    for spec in clients::claude_hooks(launch) {
        let groups = file.array(&hooks, spec.event, &format!("hooks.{}", spec.event), rel)?;
        let mut found = false;
        for group in groups.elements() {
            let Some(list) = group.as_object().and_then(|g| g.array_value("hooks")) else {
                continue;
            };
            for hook in list.elements() {
                let Some(command) = json::field(&hook, "command") else {
                    continue;
                };
                let (Some(command), Some(obj)) = (command.as_str(), hook.as_object()) else {
                    continue;
                };
                if spec.is_ours(command, launch) {
                    found = true;
                    json::set_fields(
                        &obj,
                        &[("type", json!("command")), ("command", json!(spec.command))],
                    );
                }
            }
        }
        if !found {
            groups.append(json::input(&spec.group()));
        }
    }
    Ok(Planned {
        rel: rel.to_owned(),
        new: finish(old.as_deref(), file.text()),
        path,
        old,
    })
}

/// What `--check` found for one client.
enum State {
    Configured(String),
    Stale(String),
    Absent(String),
    Invalid(String),
}

fn check(root: &Path, launch: &Launch, only: Option<Client>, any_agent: bool) -> Result<ExitCode> {
    let targets: Vec<Client> = only.map_or(Client::ALL.to_vec(), |c| vec![c]);
    let mut configured = 0;
    let mut bad = 0;
    for client in targets {
        let state = check_client(client, root, launch, any_agent);
        let (word, detail) = match &state {
            State::Configured(d) => {
                configured += 1;
                ("configured", d)
            }
            State::Stale(d) => {
                bad += 1;
                ("stale", d)
            }
            State::Absent(d) => {
                if only.is_some() {
                    bad += 1;
                }
                ("absent", d)
            }
            State::Invalid(d) => {
                bad += 1;
                ("invalid", d)
            }
        };
        outln!("{:<7} {word:<10} {detail}", client.name());
    }
    let ok = bad == 0 && configured > 0;
    if !ok && bad > 0 {
        outln!("run `ctxsync setup CLIENT` to fix what is stale or absent");
    }
    Ok(ExitCode::from(if ok { 0 } else { 1 }))
}

/// The parsed content of a client's file, `None` when it does not exist.
fn read_value(client: Client, rel: &str, path: &Path) -> Result<Option<Value>, String> {
    let text = match read_existing(path, rel) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("{e:#}")),
    };
    let format = if rel == CLAUDE_SETTINGS {
        Format::Json(json::Dialect::Json)
    } else {
        client.format()
    };
    match format {
        Format::Json(d) => JsonFile::parse(&text, d, rel)
            .map(|f| Some(f.value()))
            .map_err(|e| e.0),
        Format::Toml => TomlFile::parse(&text, rel)
            .map(|f| f.table_value(&[]))
            .map_err(|e| e.0),
    }
}

fn check_client(client: Client, root: &Path, launch: &Launch, any_agent: bool) -> State {
    let rel = client.config_file();
    let [outer, name] = client.server_path();
    let server = match read_value(client, rel, &root.join(rel)) {
        Err(e) => return State::Invalid(e),
        Ok(None) => Err(format!("no {rel}")),
        Ok(Some(v)) => match v.get(outer).and_then(|s| s.get(name)) {
            None => Err(format!("{rel} has no `{outer}.{name}`")),
            Some(entry) => match clients::compare_entry(client, entry, launch, any_agent) {
                Ok(()) => Ok(describe(rel, entry)),
                Err(why) => return State::Stale(format!("{rel}: {why}")),
            },
        },
    };
    if client != Client::Claude {
        return match server {
            Ok(d) => State::Configured(d),
            Err(d) => State::Absent(d),
        };
    }
    let hooks = match read_value(client, CLAUDE_SETTINGS, &root.join(CLAUDE_SETTINGS)) {
        Err(e) => return State::Invalid(e),
        Ok(v) => check_hooks(v.as_ref(), launch, any_agent),
    };
    match (server, hooks) {
        (Ok(d), Ok(())) => State::Configured(format!("{d}; hooks in {CLAUDE_SETTINGS}")),
        (Err(d), Err(h)) if h.missing_all => State::Absent(format!("{d}; no ctxsync hooks")),
        (Ok(_), Err(h)) => State::Stale(h.message),
        (Err(d), Err(h)) => State::Stale(format!("{d}; {}", h.message)),
        (Err(d), Ok(())) => State::Stale(format!("{d} (the hooks are installed)")),
    }
}

/// What is wrong with the hooks.
struct HookProblem {
    message: String,
    /// No ctxsync hook at all (the client is absent rather than stale).
    missing_all: bool,
}

fn check_hooks(
    settings: Option<&Value>,
    launch: &Launch,
    any_agent: bool,
) -> Result<(), HookProblem> {
    let specs = clients::claude_hooks(launch);
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for spec in &specs {
        let commands: Vec<&str> = settings
            .and_then(|s| s.pointer(&format!("/hooks/{}", spec.event)))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| g.get("hooks").and_then(Value::as_array))
            .flatten()
            .filter_map(|h| h.get("command").and_then(Value::as_str))
            .filter(|c| spec.is_ours(c, launch))
            .collect();
        if commands.is_empty() {
            missing.push(spec.event);
        } else if !commands.iter().any(|c| hook_matches(c, spec, any_agent)) {
            stale.push(format!("{} runs `{}`", spec.event, commands[0]));
        }
    }
    if missing.is_empty() && stale.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("no ctxsync hook for {}", missing.join(", ")));
    }
    if !stale.is_empty() {
        parts.push(format!(
            "{} (setup would write `{}`)",
            stale.join(", "),
            launch.shell_command(&["hook"])
        ));
    }
    Err(HookProblem {
        message: format!("{CLAUDE_SETTINGS}: {}", parts.join("; ")),
        missing_all: missing.len() == specs.len(),
    })
}

fn hook_matches(command: &str, spec: &HookSpec, any_agent: bool) -> bool {
    if !any_agent {
        return command == spec.command;
    }
    clients::without_agent(&clients::shell_words(command))
        == clients::without_agent(&clients::shell_words(&spec.command))
}

/// `.mcp.json: /usr/bin/ctxsync mcp --agent builder (agent builder)`
fn describe(rel: &str, entry: &Value) -> String {
    let command = entry.get("command").and_then(Value::as_str).unwrap_or("?");
    let words: Vec<String> = entry
        .get("args")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let quoted: Vec<String> = words.iter().map(|w| clients::shell_quote(w)).collect();
    let agent = clients::agent_in(&words)
        .map(|a| format!(" (agent {a})"))
        .unwrap_or_default();
    format!(
        "{rel}: {} {}{agent}",
        clients::shell_quote(command),
        quoted.join(" ")
    )
}
