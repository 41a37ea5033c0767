//! `ctxsync archive run|list|get|search`: archival on demand and lazy reads of what it
//! moved; and `ctxsync compact` (DESIGN §15). Embedded or remote, through the same
//! `Store` trait.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use ctxsync_core::Path;
use ctxsync_store::{ArchiveQuery, ArchiveRecord, MAX_ARCHIVE_PAGE};
use serde_json::Value;

use super::env::{open, Env};
use super::output::print_json;
use crate::{Common, InputError};

/// `ctxsync archive`.
#[derive(Args, Debug)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    pub command: ArchiveCommand,
}

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Archive now: cut every configured list ([archive] in ctxsync.toml) to its newest
    /// entries in one revision.
    Run {
        #[command(flatten)]
        common: Common,
    },
    /// List archived entries, oldest first.
    List {
        /// Only entries archived from this list, e.g. decisions_log.recent.
        #[arg(long)]
        list: Option<String>,
        /// At most this many (all when absent).
        #[arg(long)]
        limit: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Print the archived entry with this `id` (exit 1 when there is none).
    Get {
        /// The entry's `id` field.
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Archived entries whose text contains TEXT (ASCII case ignored).
    Search {
        /// What to look for.
        text: String,
        /// Only entries archived from this list.
        #[arg(long)]
        list: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

pub fn run(args: &ArchiveArgs) -> Result<ExitCode> {
    match &args.command {
        ArchiveCommand::Run { common } => archive_run(common),
        ArchiveCommand::List {
            list,
            limit,
            common,
        } => {
            if *limit == Some(0) {
                return Err(InputError("--limit must be at least 1".into()).into());
            }
            let query = ArchiveQuery {
                list: list.clone(),
                ..ArchiveQuery::default()
            };
            print_records(common, &read_all(common, query, *limit)?);
            Ok(ExitCode::SUCCESS)
        }
        ArchiveCommand::Get { id, common } => {
            let query = ArchiveQuery {
                id: Some(id.clone()),
                ..ArchiveQuery::default()
            };
            let records = read_all(common, query, None)?;
            let Some(newest) = records.last() else {
                errln!("no archived entry has id {id:?}");
                return Ok(ExitCode::from(1));
            };
            if common.json {
                print_json(newest);
            } else {
                super::output::print_value(&newest.entry);
            }
            Ok(ExitCode::SUCCESS)
        }
        ArchiveCommand::Search { text, list, common } => {
            let query = ArchiveQuery {
                list: list.clone(),
                text: Some(text.clone()),
                ..ArchiveQuery::default()
            };
            print_records(common, &read_all(common, query, None)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn archive_run(common: &Common) -> Result<ExitCode> {
    let env = open(common)?;
    let response = env.store.archive_run(&env.context)?;
    if common.json {
        print_json(&serde_json::json!({ "push": response }));
    } else {
        match response {
            Some(r) => outln!(
                "archived into revision {} ({} changes)",
                r.revision,
                r.applied.len()
            ),
            None => outln!("nothing to archive"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every page of `query` (or the first `limit` records).
fn read_all(
    common: &Common,
    query: ArchiveQuery,
    limit: Option<u64>,
) -> Result<Vec<ArchiveRecord>> {
    read_from(&open(common)?, query, limit)
}

fn read_from(env: &Env, mut query: ArchiveQuery, limit: Option<u64>) -> Result<Vec<ArchiveRecord>> {
    let mut records = Vec::new();
    loop {
        let wanted = limit.map_or(MAX_ARCHIVE_PAGE, |l| {
            l.saturating_sub(records.len() as u64).min(MAX_ARCHIVE_PAGE)
        });
        if wanted == 0 {
            break;
        }
        query.limit = Some(wanted);
        let page = env.store.archive_list(&env.context, &query)?;
        let full = page.len() as u64 == wanted;
        query.after = page.last().map(|r| r.seq).or(query.after);
        records.extend(page);
        if !full {
            break;
        }
    }
    Ok(records)
}

fn print_records(common: &Common, records: &[ArchiveRecord]) {
    if common.json {
        print_json(&serde_json::json!({ "entries": records }));
        return;
    }
    for r in records {
        let id = r.id.as_deref().unwrap_or("-");
        let text = serde_json::to_string(&r.entry).unwrap_or_default();
        let short: String = text.chars().take(100).collect();
        outln!(
            "{:>6}  {:<28} {:<24} r{:<7} {}",
            r.seq,
            r.list,
            id,
            r.revision,
            short
        );
    }
}

/// `pull --include-archive`: `document` with every archived entry put back at the front
/// of the list it left, oldest first; and how many were put back. A list that no longer
/// exists (or is no longer a list) is recreated as one holding its archived entries.
pub fn with_archive(env: &Env, mut document: Value) -> Result<(Value, usize)> {
    let records = read_from(env, ArchiveQuery::default(), None)?;
    let mut by_list: Vec<(String, Vec<Value>)> = Vec::new();
    for record in records {
        match by_list.iter_mut().find(|(list, _)| *list == record.list) {
            Some((_, entries)) => entries.push(record.entry),
            None => by_list.push((record.list, vec![record.entry])),
        }
    }
    let mut restored = 0;
    for (list, mut entries) in by_list {
        let Ok(path) = Path::parse(&list) else {
            continue;
        };
        restored += entries.len();
        if let Some(Value::Array(current)) = ctxsync_core::get(&document, &path) {
            entries.extend(current.iter().cloned());
        }
        let change = ctxsync_core::Change::set(path, Value::Array(entries));
        ctxsync_core::apply_change(&mut document, &change)
            .map_err(|e| anyhow::anyhow!("cannot put the archive of {list} back: {e}"))?;
    }
    Ok((document, restored))
}

/// `ctxsync compact`.
pub fn compact(common: &Common, revisions: Option<u64>, days: Option<u64>) -> Result<ExitCode> {
    let env = open(common)?;
    let retain = env.config.retention(revisions, days)?;
    if !retain.is_set() {
        return Err(InputError(
            "no retention: pass --retain-revisions N and/or --retain-days D, or set \
             retain_revisions / retain_days in [store]"
                .into(),
        )
        .into());
    }
    let report = env.store.compact(&env.context, &retain)?;
    if common.json {
        print_json(&report);
    } else if report.horizon == report.horizon_before {
        outln!(
            "nothing to compact: the horizon stays at revision {}",
            report.horizon
        );
    } else {
        outln!(
            "horizon {} -> {}: {} revisions and {} snapshots dropped",
            report.horizon_before,
            report.horizon,
            report.removed_revisions,
            report.removed_snapshots
        );
    }
    Ok(ExitCode::SUCCESS)
}
