//! The `ctxsync` binary: parses arguments and wires the library crates together.
//!
//! Exit codes: 0 ok, 1 conflicts or a failed check, 2 usage or input error, 3 the store
//! or the file system failed.
#![forbid(unsafe_code)]
// Output goes through `out` (a closed pipe is a quiet exit, not a panic).
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod out;

mod agents_cli;
mod agents_feed;
mod config;
mod context;
mod hook;
mod location;
mod mcp_cli;
mod migrate;
mod remote;
mod serve;
mod setup;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ctxsync_core::{Level, Strategy};

/// A scan or a cold sync of a large agent library makes hundreds of thousands of small
/// allocations on several threads at once; with glibc's malloc the threads contend for
/// its arenas (`agents sync --full --dry-run` of 10,000 agents: same CPU time, 1.09 s
/// wall with glibc, 0.93 s with jemalloc, at the same peak RSS).
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An error in what the user gave us (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

#[derive(Parser)]
#[command(
    name = "ctxsync",
    version,
    about = "Keep a team of AI agents and their editor integrations in sync."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every context command takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Context to act on (default: `context` in ctxsync.toml, else `default`).
    #[arg(long, env = "CTXSYNC_CONTEXT")]
    pub context: Option<String>,
    /// Repository root holding ctxsync.toml and .ctxsync/ (default: found by walking up).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// Store to open in embedded mode: a SQLite file path, `sqlite://PATH` or
    /// `postgres://…` (default: `[store] url` or `[store] path` in ctxsync.toml, else
    /// .ctxsync/ctxsync.db).
    #[arg(long, env = "CTXSYNC_DB", value_name = "PATH|URL")]
    pub db: Option<String>,
}

/// Who acts and how urgently.
#[derive(Args, Clone, Debug)]
pub struct Acting {
    /// Agent to act as (default: CTXSYNC_AGENT, `agent` in ctxsync.toml; in remote mode the
    /// token's agent). A write names one: there is no default agent.
    #[arg(long, env = "CTXSYNC_AGENT")]
    pub agent: Option<String>,
    /// Sync level: critical, checkpoint, periodic or session.
    #[arg(long, default_value = "checkpoint")]
    pub level: Level,
    /// What to do with conflicting changes: merge (apply the rest, report conflicts),
    /// atomic (all or nothing), force (last writer wins) or defer (store conflicts for
    /// `sync --resolve-conflicts`); `push` also reads a `strategy` field of the file
    /// [default: merge]
    #[arg(long)]
    pub strategy: Option<Strategy>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a context (and ctxsync.toml if there is none).
    Init {
        #[command(flatten)]
        common: Common,
        /// Starting document: the seed's shared_context template, or an empty object.
        #[arg(long, default_value = "seed", value_parser = ["seed", "empty"])]
        template: String,
    },
    /// Print the value at a path (dotted or JSON Pointer).
    Get {
        /// Dotted path (`project_state.active_tasks[id=task-1].status`, `list[0]`) or
        /// JSON Pointer (`/project_state/current_phase`).
        path: String,
        #[command(flatten)]
        common: Common,
        /// Read at this revision instead of the newest.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Set a path to a value (YAML) in one push.
    // `set counter -1`: a negative number is a value, not an unknown flag.
    #[command(allow_negative_numbers = true)]
    Set {
        /// Where to write: a dotted path or JSON Pointer; `list[-]` appends to a list,
        /// `list[id=x]` addresses the element whose `id` is x.
        path: String,
        /// The new value, as YAML (`42`, `done`, `{a: 1}`, `[x, y]`).
        value: String,
        /// Only if the current value equals this (YAML).
        #[arg(long, conflicts_with = "absent")]
        from: Option<String>,
        /// Only if the path does not exist yet.
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        acting: Acting,
        #[command(flatten)]
        common: Common,
    },
    /// Push a list of changes from a YAML/JSON file (`-` for standard input).
    Push {
        /// YAML or JSON file of changes, `-` for standard input: a list of seed-form
        /// `{path, from, to}` (or `{path, from, remove: true}`) or RFC 6902 ops, or a
        /// mapping with `changes:` (and optionally agent, strategy, base_revision,
        /// request_id, summary; flags win).
        #[arg(long, short)]
        file: PathBuf,
        /// The revision the changes were made against (enables concurrent-write checks).
        #[arg(long)]
        base: Option<u64>,
        /// Idempotency key; a repeated key returns the stored answer.
        #[arg(long)]
        request_id: Option<String>,
        /// What the push is for, kept with the revision in the op log.
        #[arg(long)]
        summary: Option<String>,
        #[command(flatten)]
        acting: Acting,
        #[command(flatten)]
        common: Common,
    },
    /// Print the context, some sections, or the delta since a revision; with --agent,
    /// write that agent's working copy instead.
    Pull {
        /// Comma-separated sections (paths), e.g. project_state,decisions_log.recent; a
        /// section that does not exist is exit 1, as for `get`.
        #[arg(long, value_delimiter = ',')]
        sections: Vec<String>,
        /// Print only what changed after this revision, or after this time (RFC 3339,
        /// e.g. 2026-12-01T09:30:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Output format (json is the same as --json) [default: yaml]
        #[arg(long, value_parser = ["yaml", "json"])]
        format: Option<String>,
        /// Write the whole context into this agent's working copy
        /// (.ctxsync/agents/NAME/context.yaml) instead of printing it. Only this flag
        /// does that, CTXSYNC_AGENT and ctxsync.toml do not.
        #[arg(long, conflicts_with_all = ["sections", "since"])]
        agent: Option<String>,
        /// Overwrite a working copy that has unsynced edits.
        #[arg(long)]
        force: bool,
        /// Put the archived entries back into their lists (the rare full read; the
        /// checksum printed stays the stored document's).
        #[arg(long, conflicts_with_all = ["agent", "since"])]
        include_archive: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Sync an agent's working copy; also `--status`, `--history`, `--resolve-conflicts`.
    Sync(context::SyncArgs),
    /// List open (deferred) conflicts.
    Conflicts {
        #[command(flatten)]
        common: Common,
    },
    /// Revision, checksum, size and sync metrics.
    Status {
        #[command(flatten)]
        common: Common,
    },
    /// The op log, newest first.
    History {
        /// How many entries, newest first.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// Only the revisions of this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only the revisions pushed at this level.
        #[arg(long)]
        level: Option<Level>,
        #[command(flatten)]
        common: Common,
    },
    /// Replay the op log and check every stored checksum (exit 1 on a mismatch).
    Verify {
        #[command(flatten)]
        common: Common,
    },
    /// Make a new revision equal to an older one.
    Revert {
        /// The revision whose document the new revision gets.
        #[arg(long)]
        to: u64,
        /// Agent to act as (default: CTXSYNC_AGENT, `agent` in ctxsync.toml; in remote
        /// mode the token's agent). A write names one: there is no default agent.
        #[arg(long, env = "CTXSYNC_AGENT")]
        agent: Option<String>,
        /// Embedded mode: revert as an admin, whatever the ownership rules say (also the
        /// way back for a context whose newest revision cannot be read). In remote mode
        /// the token's role decides and this is refused.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Drop the op log below the retention (`[store] retain_revisions` / `retain_days`,
    /// or the flags) and move the horizon; older revisions are then unreadable (410).
    Compact {
        /// Keep at least this many newest revisions.
        #[arg(long)]
        retain_revisions: Option<u64>,
        /// Keep at least this many days of revisions.
        #[arg(long)]
        retain_days: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Archive old list entries now, and read the archive (list, get, search).
    Archive(context::archive::ArchiveArgs),
    /// Start or end an agent's work session (full pull + checksum; flush + snapshot).
    Session(context::live::SessionArgs),
    /// Keep an agent's working copy in sync while it edits (Ctrl-C to stop).
    Watch(context::live::WatchArgs),
    /// Agent library -> VS Code custom agents and prompt files.
    Agents(agents_cli::AgentsArgs),
    /// Run the HTTP server (REST + Server-Sent Events) over the store (SQLite or PostgreSQL).
    Serve(serve::ServeArgs),
    /// Create, list and revoke the server's bearer tokens.
    Token(token::TokenArgs),
    /// Copy a SQLite store into a PostgreSQL database (everything, verified).
    Migrate(migrate::MigrateArgs),
    /// Register ctxsync's MCP server with a client (claude, vscode, codex, cursor,
    /// gemini), plus Claude Code's hooks; `--check` tells what is configured.
    Setup(setup::SetupArgs),
    /// Claude Code hook: print the critical revisions by other agents not yet seen
    /// (nothing when there are none); never fails (exit 0).
    Hook(hook::HookArgs),
    /// Take (or renew) a lease on a list element or field; exit 1 if another agent holds it.
    Claim(context::claims::ClaimArgs),
    /// Give up a claim (exit 1 if this agent holds none there).
    Release(context::claims::ReleaseArgs),
    /// The agents of a context: last seen, lag, live claims, unseen critical revisions.
    Who(context::claims::WhoArgs),
    /// Serve the shared context to an AI agent over MCP on stdin/stdout (tools pull, get,
    /// set, push, conflicts, resolve, history, claim, release, wait, handover, who).
    Mcp(mcp_cli::McpArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Exit 2 from a hook blocks Claude Code's prompt: not even a bad command line may.
        Err(e) if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("hook") => {
            errln!(
                "ctxsync hook: {}",
                e.to_string().lines().next().unwrap_or_default()
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    // `mcp` talks to a program on stdout; its stderr goes to that program's log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && !matches!(cli.command, Command::Mcp(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CTXSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes are noise in a log file or a pipe.
        .with_ansi(ansi)
        .init();
    use context::commands as c;
    let result = match cli.command {
        Command::Agents(args) => return agents_cli::run(args),
        Command::Init { common, template } => c::init(&common, &template),
        Command::Get {
            path,
            common,
            revision,
        } => c::get(&common, &path, revision),
        Command::Set {
            path,
            value,
            from,
            absent,
            acting,
            common,
        } => c::set(&common, &acting, &path, &value, from.as_deref(), absent),
        Command::Push {
            file,
            base,
            request_id,
            summary,
            acting,
            common,
        } => c::push(&common, &acting, &file, base, request_id, summary),
        Command::Pull {
            sections,
            since,
            format,
            agent,
            force,
            include_archive,
            common,
        } => c::pull(
            &common,
            &sections,
            since,
            format.as_deref(),
            agent.as_deref(),
            force,
            include_archive,
        ),
        Command::Sync(args) => c::sync(&args),
        Command::Conflicts { common } => c::conflicts(&common),
        Command::Status { common } => c::status(&common),
        Command::History {
            last,
            agent,
            level,
            common,
        } => c::history(&common, last, agent, level),
        Command::Verify { common } => c::verify(&common),
        Command::Revert {
            to,
            agent,
            admin,
            common,
        } => c::revert(&common, to, agent.as_deref(), admin),
        Command::Archive(args) => context::archive::run(&args),
        Command::Compact {
            retain_revisions,
            retain_days,
            common,
        } => context::archive::compact(&common, retain_revisions, retain_days),
        Command::Session(args) => context::live::session(&args),
        Command::Watch(args) => context::live::watch(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Token(args) => token::run(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::Setup(args) => setup::run(&args),
        Command::Hook(args) => return hook::run(&args),
        Command::Claim(args) => context::claims::claim(&args),
        Command::Release(args) => context::claims::release(&args),
        Command::Who(args) => context::claims::who(&args),
        Command::Mcp(args) => mcp_cli::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            errln!("error: {err:#}");
            ExitCode::from(context::exit_code_of(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command says what it is for (`token` is checked by its
    /// own module's owner).
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if !sub.is_hide_set() && sub.get_name() != "help" {
                    walk(sub, &format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "ctxsync", &mut missing);
        missing.retain(|m| !m.starts_with("ctxsync token "));
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
