//! `ctxsync token create|list|revoke`: the server's bearer tokens, kept (hashed) in the
//! same store file the server reads, so a change takes effect at the next request.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use ctxsync_store::Role;
use serde_json::json;

/// Which store the token commands act on.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// A SQLite file path, `sqlite://PATH` or `postgres://…` (default: the config's
    /// store).
    #[arg(long, env = "CTXSYNC_DB", value_name = "PATH|URL")]
    pub db: Option<String>,
    /// Repository root holding ctxsync.toml and .ctxsync/ (default: found by walking up).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token acting as AGENT; prints the secret once.
    Create {
        /// The agent this token acts as (1-64 of A-Z a-z 0-9 . _ -); a push naming
        /// another agent is refused.
        #[arg(long)]
        agent: String,
        /// What the token may do: `agent` reads and writes as its agent under the
        /// ownership rules; `admin` may also revert and settle conflicts whatever the
        /// rules say; `viewer` only reads.
        #[arg(long, default_value = "agent", value_parser = ["agent", "admin", "viewer"])]
        role: String,
        /// A note to tell tokens apart in `token list`.
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by its id (from `token list`); takes effect at once.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// 32 random bytes from the OS, as hex.
fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn print_json_value(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(e) => errln!("error: cannot encode output: {e}"),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM` (UTC).
fn when(ms: u64) -> String {
    crate::agents_cli::format_ts(ms)[..16].replace('T', " ")
}

pub fn run(args: &TokenArgs) -> Result<ExitCode> {
    match &args.command {
        TokenCommand::Create {
            agent,
            role,
            label,
            store,
        } => {
            let role: Role = role.parse().map_err(crate::InputError)?;
            let db = crate::serve::open_store(store.db.as_deref(), store.root.as_deref())?;
            let secret = new_secret()?;
            let info = db
                .create_token(agent, &secret, label, role)
                .context("cannot create the token")?;
            if store.json {
                print_json_value(&json!({"secret": secret, "token": info}));
            } else {
                outln!("{secret}");
                errln!(
                    "token {} acts as {} ({}); the secret above is shown only once",
                    info.id,
                    info.agent,
                    info.role.as_str()
                );
            }
        }
        TokenCommand::List { store } => {
            let db = crate::serve::open_store(store.db.as_deref(), store.root.as_deref())?;
            let tokens = db.list_tokens()?;
            if store.json {
                print_json_value(&json!({"tokens": tokens}));
            } else if tokens.is_empty() {
                outln!("no tokens (create one with `ctxsync token create --agent NAME`)");
            } else {
                let agent_width = tokens
                    .iter()
                    .map(|t| t.agent.len())
                    .max()
                    .unwrap_or(5)
                    .max(5);
                outln!(
                    "{:<12}  {:<agent_width$}  {:<6}  {:<7}  {:<16}  {:<16}  LABEL",
                    "ID",
                    "AGENT",
                    "ROLE",
                    "STATE",
                    "CREATED",
                    "REVOKED"
                );
                for t in &tokens {
                    let (state, revoked) = match t.revoked_ms {
                        Some(ms) => ("revoked", when(ms)),
                        None => ("active", "-".to_owned()),
                    };
                    outln!(
                        "{:<12}  {:<agent_width$}  {:<6}  {:<7}  {:<16}  {:<16}  {}",
                        t.id,
                        t.agent,
                        t.role.as_str(),
                        state,
                        when(t.created_ms),
                        revoked,
                        t.label
                    );
                }
            }
        }
        TokenCommand::Revoke { id, store } => {
            let db = crate::serve::open_store(store.db.as_deref(), store.root.as_deref())?;
            let info = db.revoke_token(id)?;
            if store.json {
                print_json_value(&json!({"token": info}));
            } else {
                outln!("revoked {} ({})", info.id, info.agent);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
