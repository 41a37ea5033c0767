//! `ctxsync hook`: run by Claude Code on each prompt (`UserPromptSubmit`) and after each
//! tool call (`PostToolUse`), it prints the critical revisions by other agents that this
//! agent has not been shown yet, and marks them shown, so a blocked task or a breaking
//! change reaches the agent in its next step instead of at the end of its turn.
//!
//! It must never get in the agent's way: nothing at all on stdout when there is nothing
//! to tell, and on any failure (no store, no agent, a server that does not answer) a
//! short line on stderr, nothing on stdout, and exit 0. It is also cheap: one small
//! read on the store (no document read, no tokenizer; a write only when there is
//! something to mark shown), with a deadline after which it gives up rather than keep
//! the agent waiting.
//!
//! Input and output follow Claude Code's hook protocol: a JSON object on stdin
//! (`session_id`, `cwd`, `hook_event_name`, ...). For `UserPromptSubmit` (and
//! `SessionStart`) plain stdout is added to the agent's context; for `PostToolUse` only
//! `hookSpecificOutput.additionalContext` reaches the model, so that form is printed.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use ctxsync_store::{CriticalNotice, Store};
use serde::Deserialize;

use crate::config::Config;
use crate::remote::RemoteStore;

#[derive(Args, Debug)]
pub struct HookArgs {
    /// The agent whose unseen critical revisions to print (default: CTXSYNC_AGENT,
    /// `agent` in ctxsync.toml).
    #[arg(long, env = "CTXSYNC_AGENT")]
    pub agent: Option<String>,
    /// Context to look at (default: `context` in ctxsync.toml, else `default`).
    #[arg(long, env = "CTXSYNC_CONTEXT")]
    pub context: Option<String>,
    /// Project root (default: found from the hook input's `cwd`, else the working
    /// directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Give up (silently, exit 0) when the store has not answered after this long.
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// The part of Claude Code's hook input this command uses; the rest is ignored.
#[derive(Debug, Default, Deserialize)]
struct HookInput {
    hook_event_name: Option<String>,
    cwd: Option<PathBuf>,
}

/// Hook input past this size is not parsed (a tool's whole output can come along with
/// `PostToolUse`); the event is then taken to be unknown and plain text is printed.
const MAX_INPUT: u64 = 8 << 20;

pub fn run(args: &HookArgs) -> ExitCode {
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    let input = read_input(deadline);
    let event = input.hook_event_name.clone().unwrap_or_default();
    match notices(args, &input, deadline) {
        Ok(list) if list.is_empty() => {}
        Ok(list) => print(&event, &list),
        Err(e) => errln!("ctxsync hook: {e:#}"),
    }
    ExitCode::SUCCESS
}

/// Standard input as hook input; a terminal (someone running the command by hand), an
/// empty, unreadable or unfinished input (a writer that never closes it: read on a
/// thread, given up at the deadline) is no input.
fn read_input(deadline: Instant) -> HookInput {
    if std::io::stdin().is_terminal() {
        return HookInput::default();
    }
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("ctxsync-hook-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut bytes = Vec::new();
            let read = stdin.lock().take(MAX_INPUT).read_to_end(&mut bytes);
            let input = match read {
                Ok(_) => serde_json::from_slice(&bytes).unwrap_or_default(),
                Err(_) => HookInput::default(),
            };
            let _ = tx.send(input);
            // Drain the rest so the writer never sees a broken pipe.
            let _ = std::io::copy(&mut stdin.lock(), &mut std::io::sink());
        });
    if reader.is_err() {
        return HookInput::default();
    }
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_default()
}

/// The unseen critical revisions, marked seen; an error when the store cannot be asked
/// or did not answer within the deadline.
fn notices(args: &HookArgs, input: &HookInput, deadline: Instant) -> Result<Vec<CriticalNotice>> {
    let root = args
        .root
        .clone()
        .or_else(|| input.cwd.as_deref().and_then(crate::config::find_root));
    let config = Config::load(root.as_deref())?;
    let context = config.context(args.context.as_deref());
    ctxsync_store::validate_context_name(&context)?;
    let agent = args.agent.clone().or(config.file.agent.clone());
    let (tx, rx) = mpsc::channel();
    // The store is asked on another thread so a locked database or a slow server costs
    // the agent at most the deadline; the process ends (and with it that thread) then.
    std::thread::Builder::new()
        .name("ctxsync-hook".into())
        .spawn(move || {
            let _ = tx.send(ask(&config, &context, agent.as_deref()));
        })?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(answer) => answer,
        Err(_) => anyhow::bail!(
            "the store did not answer within {} ms; skipped",
            args.timeout_ms
        ),
    }
}

fn ask(config: &Config, context: &str, agent: Option<&str>) -> Result<Vec<CriticalNotice>> {
    if let Some(url) = crate::context::env::server_url(config)? {
        // `GET /v1/contexts/{ctx}/agents/{agent}/critical?mark_seen=true`: one request
        // (two when the token has to name the agent), no outbox flush (that is for
        // commands that push).
        let store = RemoteStore::new(&url, crate::context::env::server_token(config)?);
        let agent = match agent {
            Some(agent) => agent.to_owned(),
            None => store
                .client
                .whoami()
                .map_err(|e| anyhow::anyhow!("cannot learn the token's agent: {e}"))?,
        };
        return shown(&store, context, &agent);
    }
    let Some(agent) = agent else {
        anyhow::bail!(
            "no agent named: pass --agent NAME (or set CTXSYNC_AGENT or `agent` in ctxsync.toml)"
        );
    };
    let location = crate::location::Location::resolve(None, config)?;
    if !location.exists() {
        anyhow::bail!("no ctxsync store at {location} (run `ctxsync init`)");
    }
    // One connection and one writer thread: no background checkpointer for one query.
    let options = ctxsync_store::StoreOptions {
        background_checkpoint: false,
        ..config.store_options()?
    };
    let store = location.open(options)?;
    shown(&*store, context, agent)
}

/// The unseen critical revisions, marked shown. A read first, and the marking (a durable
/// write: several fsyncs, tens of milliseconds on a busy disk) only when there is
/// something to show, so the usual call, with nothing new, writes nothing. What is
/// printed is what the marking call returned: a revision landing in between is shown
/// and marked together with the others.
fn shown(store: &dyn Store, context: &str, agent: &str) -> Result<Vec<CriticalNotice>> {
    if store.unseen_critical(context, agent, false)?.is_empty() {
        return Ok(Vec::new());
    }
    Ok(store.unseen_critical(context, agent, true)?)
}

/// The notices as the event wants them.
fn print(event: &str, list: &[CriticalNotice]) {
    let text = render(list);
    if event == "PostToolUse" {
        let answer = serde_json::json!({
            "hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": text}
        });
        outln!("{answer}");
    } else {
        out!("{text}");
    }
}

/// At most this many revisions are listed one by one; the rest are counted.
const LISTED: usize = 10;

fn render(list: &[CriticalNotice]) -> String {
    let mut text = format!(
        "ctxsync: {} by other agents since you last looked (pull before you act on them):\n",
        crate::out::count(list.len(), "critical update", "critical updates")
    );
    for n in list.iter().take(LISTED) {
        let summary = if n.summary.is_empty() {
            "(no summary)".to_owned()
        } else {
            n.summary.clone()
        };
        let mut paths = n
            .paths
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if n.paths.len() > 5 {
            paths.push_str(&format!(" and {} more", n.paths.len() - 5));
        }
        text.push_str(&format!(
            "- revision {} by {}: {}{}\n",
            n.revision,
            n.agent,
            summary,
            if paths.is_empty() {
                String::new()
            } else {
                format!(" [{paths}]")
            }
        ));
    }
    if list.len() > LISTED {
        text.push_str(&format!("- and {} more\n", list.len() - LISTED));
    }
    text
}
