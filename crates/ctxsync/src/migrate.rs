//! `ctxsync migrate --to postgres://… [--from PATH] [--force]`: copies a SQLite store
//! (every context with its whole op log, snapshots, idempotency keys, conflicts, sync
//! samples and presence, and every token) into a PostgreSQL database in one transaction,
//! then verifies every context on the target and compares its head with the source's.
//! A target that already holds contexts or tokens is refused without `--force`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Args;
use ctxsync_store::{SqliteStore, Store};
use ctxsync_store_postgres::PgStore;
use serde_json::json;

use crate::config::Config;
use crate::location::Location;
use crate::InputError;

/// Options of `ctxsync migrate`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The PostgreSQL database to copy into (`postgres://…`; it must exist).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The SQLite store to copy (default: `[store] path` in ctxsync.toml, else
    /// .ctxsync/ctxsync.db).
    #[arg(long, value_name = "PATH")]
    pub from: Option<String>,
    /// Replace what a non-empty target holds.
    #[arg(long)]
    pub force: bool,
    /// Repository root holding ctxsync.toml and .ctxsync/ (default: found by walking up).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &MigrateArgs) -> Result<ExitCode> {
    let config = Config::load(args.root.as_deref())?;
    let target = Location::resolve(Some(&args.to), &config)?;
    let Location::Postgres(url) = &target else {
        return Err(InputError(format!("--to {} is not a postgres:// URL", args.to)).into());
    };
    let source = match &args.from {
        Some(from) => Location::resolve(Some(from), &config)?,
        None => Location::Sqlite(config.db_path()),
    };
    let Location::Sqlite(path) = &source else {
        return Err(InputError("--from names a SQLite store (a path)".into()).into());
    };
    if !path.exists() {
        return Err(InputError(format!("no ctxsync store at {}", path.display())).into());
    }
    let options = config.store_options()?;
    let started = Instant::now();
    let from = SqliteStore::open(path, options.clone())
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    let dump = from.export()?;
    let revisions = dump.revisions();
    let (contexts, tokens) = (dump.contexts.len(), dump.tokens.len());
    let to = PgStore::open(url, options).with_context(|| format!("cannot open {target}"))?;
    to.import(dump, args.force)?;
    let copied = started.elapsed();
    // Verified on the target, and the same heads as the source.
    let mut problems = Vec::new();
    for head in from.list_contexts()? {
        let report = to.verify(&head.context)?;
        problems.extend(
            report
                .problems
                .iter()
                .map(|p| format!("{}: {p}", head.context)),
        );
        let there = to.head(&head.context)?;
        if there != head {
            problems.push(format!(
                "{}: the target's head is revision {} ({}), the source's {} ({})",
                head.context, there.revision, there.checksum, head.revision, head.checksum
            ));
        }
    }
    let rate = revisions as f64 / copied.as_secs_f64().max(1e-9);
    if args.json {
        let answer = json!({
            "from": source.to_string(), "to": target.to_string(), "contexts": contexts,
            "revisions": revisions, "tokens": tokens, "seconds": copied.as_secs_f64(),
            "ok": problems.is_empty(), "problems": problems,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        outln!(
            "copied {contexts} contexts ({revisions} revisions, {rate:.0}/s) and {tokens} tokens \
             from {source} to {target}"
        );
        for p in &problems {
            outln!("problem: {p}");
        }
        if problems.is_empty() {
            outln!("verified: every context replays and matches the source's head");
        }
    }
    Ok(ExitCode::from(if problems.is_empty() { 0 } else { 1 }))
}
