//! `ctxsync agents ...`: the agent-sync subcommands (sync, watch, check, status, log,
//! rollback, fix-refs). Thin: argument parsing, root/config lookup, printing; the work
//! is in `ctxsync-agents`.
//!
//! Exit codes: 0 ok, 1 check failed / out of date / conflicts, 2 usage or input error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use anyhow::Context;
use clap::{Args, Subcommand};
use ctxsync_agents::sync::{SyncOptions, SyncReport};
use ctxsync_agents::{check, config, events, fixrefs, rollback, sync, synth, watch, AgentsConfig};

use crate::out::count;

/// Arguments of `ctxsync agents`.
#[derive(Args)]
pub struct AgentsArgs {
    /// Repository root (default: the nearest folder above the working directory holding
    /// ctxsync.toml, else the working directory). `-C DIR` as for the context commands.
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AgentsCommand,
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Render the agent library into VS Code custom agents and prompt files.
    Sync(SyncArgs),
    /// Keep outputs in sync as library files change.
    Watch(WatchArgs),
    /// Report broken references and anchors, unreferenced modules and cycles.
    Check,
    /// Show the agents the registry knows and anything pending.
    Status,
    /// Show the audit log.
    Log {
        /// Only the last N events.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
    /// Restore the outputs of an earlier generation, byte for byte.
    Rollback {
        /// Generation to restore (default: the previous one).
        #[arg(long, value_name = "GEN")]
        to: Option<u64>,
        /// Also overwrite outputs edited by hand since.
        #[arg(long)]
        force: bool,
        /// Confirm `--to 0`, which removes every output ctxsync ever wrote.
        #[arg(long)]
        yes: bool,
    },
    /// Propose (and with --apply, make) rewrites of broken or renamed references.
    FixRefs {
        /// Rewrite the source files.
        #[arg(long)]
        apply: bool,
    },
    /// Generate a synthetic agent library (for benchmarks).
    #[command(hide = true)]
    GenBenchLibrary {
        /// Number of agents.
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        /// Folder to create the library in (gets an `agents/` folder).
        dir: PathBuf,
    },
}

#[derive(Args)]
struct SyncArgs {
    /// Only this agent.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Re-render every agent, not only changed ones.
    #[arg(long)]
    full: bool,
    /// Write nothing; exit 1 when anything is out of date (for CI).
    #[arg(long)]
    check: bool,
    /// Show what would be written, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Render and validate only.
    #[arg(long)]
    validate_only: bool,
    /// Overwrite outputs edited by hand (a backup is kept).
    #[arg(long, conflicts_with = "merge")]
    force: bool,
    /// Three-way merge outputs edited by hand.
    #[arg(long)]
    merge: bool,
}

#[derive(Args)]
struct WatchArgs {
    /// Overwrite outputs edited by hand (a backup is kept).
    #[arg(long, conflicts_with = "merge")]
    force: bool,
    /// Three-way merge outputs edited by hand.
    #[arg(long)]
    merge: bool,
}

/// Runs `ctxsync agents ...` and returns the exit code.
pub fn run(args: AgentsArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CTXSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes are noise in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match dispatch(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("error: {e:#}");
            // As for the context commands: 2 for what the user gave us, 3 when the file
            // system (or the watcher) failed.
            let failed = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<ctxsync_agents::error::Error>(),
                    Some(ctxsync_agents::error::Error::Io { .. })
                        | Some(ctxsync_agents::error::Error::Watch(_))
                )
            });
            ExitCode::from(if failed { 3 } else { 2 })
        }
    }
}

fn resolve_root(root: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let r = match root {
        Some(r) => r,
        None => config::find_root(&std::env::current_dir().context("working directory")?),
    };
    if !r.is_dir() {
        anyhow::bail!("root {} is not a folder", r.display());
    }
    Ok(r)
}

fn dispatch(args: AgentsArgs) -> anyhow::Result<u8> {
    let json = args.json;
    if let AgentsCommand::GenBenchLibrary { agents, dir } = &args.command {
        synth::generate(dir, *agents)?;
        outln!(
            "generated {} in {}",
            count(*agents, "agent", "agents"),
            dir.display()
        );
        return Ok(0);
    }
    let root = resolve_root(args.root)?;
    let cfg = AgentsConfig::load(&root)?;
    match args.command {
        AgentsCommand::Sync(s) => {
            let opts = SyncOptions {
                agent: s.agent,
                full: s.full,
                check: s.check,
                dry_run: s.dry_run,
                validate_only: s.validate_only,
                force: s.force,
                merge: s.merge,
            };
            let bar = ProgressOnTty::new(json);
            let mut report = sync::run(&root, &cfg, &opts, &|d, t| bar.tick(d, t))?;
            bar.finish();
            if report.agents == 0 {
                report.warnings.push(no_library_message(&root, &cfg));
            }
            if !opts.dry_run && !opts.validate_only {
                crate::context::record_agent_run(&root, &report);
            }
            print_sync(&report, &opts, json)?;
            Ok(report.exit_code(&opts))
        }
        AgentsCommand::Watch(w) => {
            let opts = SyncOptions {
                force: w.force,
                merge: w.merge,
                ..Default::default()
            };
            let stop = AtomicBool::new(false);
            if !json {
                errln!(
                    "watching {} (debounce {} ms); Ctrl-C to stop",
                    root.display(),
                    cfg.debounce_ms
                );
            }
            watch::watch(&root, &opts, &stop, &mut |o: &watch::RunOutcome| {
                let _ = print_watch_run(o, &opts, json);
                if let Ok(report) = &o.result {
                    crate::context::record_agent_run(&root, report);
                }
            })?;
            Ok(0)
        }
        AgentsCommand::Check => {
            let r = check::check(&root, &cfg)?;
            print_check(&r, json)?;
            Ok(u8::from(r.is_broken()))
        }
        AgentsCommand::Status => status(&root, &cfg, json),
        AgentsCommand::Log { last } => {
            let evs =
                events::read_last(&ctxsync_agents::state::StateDir::new(&root).events(), last)?;
            let mut out = crate::out::stdout();
            if json {
                // One JSON document, like every other `--json`.
                writeln!(out, "{}", serde_json::to_string_pretty(&evs)?)?;
            }
            for e in evs.iter().filter(|_| !json) {
                writeln!(
                    out,
                    "{}  {:<17} {:<24} {:<10} {:>8.1} ms  {}{}",
                    format_ts(e.ts_ms),
                    serde_json::to_value(e.kind)?.as_str().unwrap_or("?"),
                    e.agent.as_deref().unwrap_or("-"),
                    e.result,
                    e.duration_ms,
                    e.files.join(", "),
                    if e.message.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", e.message.replace('\n', "; "))
                    }
                )?;
            }
            Ok(0)
        }
        AgentsCommand::Rollback { to, force, yes } => {
            if to == Some(0) && !yes {
                anyhow::bail!(
                    "rollback --to 0 removes every output ctxsync wrote (generation 0 is before the first sync); add --yes to confirm"
                );
            }
            let r = rollback::rollback(&root, &cfg, to, force)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for w in &r.warnings {
                    errln!("warning: {w}");
                }
                outln!(
                    "restored generation {} (was {}): {} written back, {} removed{}",
                    r.to_generation,
                    r.from_generation,
                    count(r.restored.len(), "file", "files"),
                    r.removed.len(),
                    r.generation
                        .map(|g| format!(", recorded as generation {g}"))
                        .unwrap_or_default()
                );
                for c in &r.conflicts {
                    outln!("conflict: {c} was edited by hand since; left alone (use --force)");
                }
            }
            Ok(u8::from(!r.conflicts.is_empty()))
        }
        AgentsCommand::FixRefs { apply } => {
            let r = fixrefs::fix_refs(&root, &cfg, apply)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for p in &r.proposals {
                    outln!(
                        "{}:{}: {} -> {} ({})",
                        p.file,
                        p.line,
                        p.old,
                        p.new,
                        p.reason
                    );
                }
                outln!(
                    "{} {}; {} without a unique candidate",
                    count(r.proposals.len(), "rewrite", "rewrites"),
                    if apply {
                        format!(
                            "applied to {}",
                            count(r.applied_files.len(), "file", "files")
                        )
                    } else {
                        "proposed (use --apply)".into()
                    },
                    count(r.unresolved, "broken reference", "broken references")
                );
            }
            Ok(0)
        }
        AgentsCommand::GenBenchLibrary { .. } => Ok(0),
    }
}

fn status(root: &Path, cfg: &AgentsConfig, json: bool) -> anyhow::Result<u8> {
    let reg = ctxsync_agents::registry::Registry::load(
        &ctxsync_agents::state::StateDir::new(root).registry(),
    )?;
    let opts = SyncOptions {
        dry_run: true,
        ..Default::default()
    };
    let pending = sync::run(root, cfg, &opts, &|_, _| {})?;
    // VS Code lists `.claude/agents` itself; copies would show every such agent twice.
    let not_copied = if cfg.targets.contains(&ctxsync_agents::Target::VscodeAgent)
        && !cfg.duplicate_claude_agents
    {
        reg.agents
            .values()
            .filter(|a| ctxsync_agents::targets::is_claude_source(cfg, &a.entry))
            .count()
    } else {
        0
    };
    let targets: Vec<&str> = cfg.targets.iter().map(|t| t.as_str()).collect();
    if json {
        let agents: Vec<_> = reg
            .agents
            .iter()
            .map(|(n, a)| {
                serde_json::json!({
                    "name": n, "entry": a.entry, "version": a.version, "priority": a.priority,
                    "generation": a.generation, "outputs": a.outputs.keys().collect::<Vec<_>>(),
                    "sources": a.sources.len(),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "generation": reg.generation,
                "generations_kept": reg.generations.iter().map(|g| g.generation).collect::<Vec<_>>(),
                "agents": agents,
                "targets": targets,
                "claude_agents_not_copied_to_vscode": not_copied,
                "pending": pending,
            }))?
        );
    } else {
        outln!(
            "generation {} ({} kept); {} registered, {} in the library",
            reg.generation,
            reg.generations.len(),
            count(reg.agents.len(), "agent", "agents"),
            pending.agents
        );
        outln!("targets: {}", targets.join(", "));
        if not_copied > 0 {
            outln!(
                "{} from .claude/agents not copied to {}: VS Code lists them itself (duplicate_claude_agents = true writes copies)",
                count(not_copied, "agent", "agents"),
                cfg.agents_dir
            );
        }
        for (n, a) in &reg.agents {
            outln!(
                "  {n:<28} {:<9} v{:<8} gen {:<4} {:<10} {}",
                serde_json::to_value(a.priority)?.as_str().unwrap_or("?"),
                a.version.as_deref().unwrap_or("-"),
                a.generation,
                count(a.outputs.len(), "output", "outputs"),
                a.entry
            );
        }
        if pending.written.is_empty() && pending.deleted.is_empty() && pending.conflicts.is_empty()
        {
            outln!("everything is up to date");
        }
        for p in &pending.written {
            outln!("  pending write:  {p}");
        }
        for p in &pending.deleted {
            outln!("  pending remove: {p}");
        }
        for c in &pending.conflicts {
            outln!("  conflict: {} ({}): {}", c.path, c.agent, c.reason);
        }
        for e in &pending.validation_errors {
            outln!("  invalid: {e}");
        }
    }
    Ok(0)
}

/// Where a run that found no agent looked, so an empty result is not a mystery.
fn no_library_message(root: &Path, cfg: &AgentsConfig) -> String {
    let looked: Vec<String> = cfg
        .sources
        .iter()
        .map(|s| {
            let exists = root.join(s).is_dir();
            format!(
                "{}/{}",
                s.trim_end_matches('/'),
                if exists { "" } else { " (missing)" }
            )
        })
        .collect();
    format!(
        "no agents found under {}: looked in {} (set `sources` in the [agents] table of ctxsync.toml)",
        root.display(),
        looked.join(", ")
    )
}

fn print_sync(r: &SyncReport, opts: &SyncOptions, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    for w in &r.warnings {
        errln!("warning: {w}");
    }
    if !r.validation_errors.is_empty() {
        for e in &r.validation_errors {
            errln!("invalid: {e}");
        }
        errln!("validation failed: nothing was written");
        return Ok(());
    }
    let mut out = crate::out::stdout();
    let verb = if opts.check || opts.dry_run {
        "would write"
    } else {
        "wrote"
    };
    if opts.check || opts.dry_run {
        for p in &r.written {
            writeln!(out, "out of date: {p}")?;
        }
        for p in &r.deleted {
            writeln!(out, "orphan (would be removed): {p}")?;
        }
    }
    for (a, b) in &r.renames {
        writeln!(out, "renamed: {a} -> {b}")?;
    }
    for c in &r.conflicts {
        let what = match c.resolution.as_str() {
            "left_alone" => "left alone (use --force to overwrite or --merge)",
            "forced" => "overwritten (backup kept)",
            "merged" => "merged",
            other => other,
        };
        writeln!(
            out,
            "conflict: {} ({}): {}; {what}",
            c.path, c.agent, c.reason
        )?;
    }
    if opts.validate_only {
        writeln!(
            out,
            "{} rendered and valid",
            count(r.rendered.len(), "agent", "agents")
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "{} ({} rendered): {} added, {} updated, {} removed; {verb} {}, removed {}{} in {:.1} ms",
        count(r.agents, "agent", "agents"),
        r.rendered.len(),
        r.added.len(),
        r.updated.len(),
        r.removed.len(),
        count(r.written.len(), "file", "files"),
        r.deleted.len(),
        r.generation
            .map(|g| format!(" (generation {g})"))
            .unwrap_or_default(),
        r.duration_ms
    )?;
    if !r.new_broken_refs.is_empty() {
        let agents: std::collections::BTreeSet<&str> = r
            .new_broken_refs
            .iter()
            .filter_map(|b| b.split(": ").next())
            .collect();
        writeln!(
            out,
            "{} new in this run, in {} (details: ctxsync agents check)",
            count(
                r.new_broken_refs.len(),
                "broken reference",
                "broken references"
            ),
            count(agents.len(), "agent", "agents"),
        )?;
    }
    if !r.notes.is_empty() {
        writeln!(
            out,
            "{} dropped or mapped for a host (see --json)",
            count(r.notes.len(), "name or key", "names or keys")
        )?;
    }
    Ok(())
}

fn print_watch_run(o: &watch::RunOutcome, opts: &SyncOptions, json: bool) -> anyhow::Result<()> {
    let mut out = crate::out::stdout();
    match &o.result {
        Ok(r) if json => writeln!(
            out,
            "{}",
            serde_json::to_string(
                &serde_json::json!({"run": o.run, "trigger": o.trigger, "report": r})
            )?
        )?,
        Ok(r) => {
            writeln!(
                out,
                "run {} ({}):",
                o.run,
                count(o.trigger.len(), "changed path", "changed paths")
            )?;
            drop(out);
            print_sync(r, opts, false)?;
            out = crate::out::stdout();
        }
        Err(e) if json => writeln!(
            out,
            "{}",
            serde_json::json!({"run": o.run, "trigger": o.trigger, "error": e.to_string()})
        )?,
        Err(e) => writeln!(out, "run {}: error: {e}", o.run)?,
    }
    out.flush()?;
    Ok(())
}

fn print_check(r: &check::CheckReport, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let mut out = crate::out::stdout();
    for w in &r.warnings {
        writeln!(out, "warning: {w}")?;
    }
    for f in &r.broken_files {
        writeln!(
            out,
            "{}:{}: broken reference {}: {}",
            f.file, f.line, f.reference, f.message
        )?;
    }
    for f in &r.broken_anchors {
        writeln!(
            out,
            "{}:{}: broken anchor {}: {}",
            f.file, f.line, f.reference, f.message
        )?;
    }
    for f in &r.via_rename {
        writeln!(
            out,
            "{}:{}: renamed reference {}: {} (run fix-refs)",
            f.file, f.line, f.reference, f.message
        )?;
    }
    for u in &r.unreferenced {
        writeln!(out, "{u}: unreferenced module file")?;
    }
    for c in &r.cycles {
        writeln!(out, "cycle: {} -> {}", c.join(" -> "), c[0])?;
    }
    writeln!(
        out,
        "{}, {}: {}, {}, {} via renames, {}, {}",
        count(r.files_checked, "file", "files"),
        count(r.references, "reference", "references"),
        count(
            r.broken_files.len(),
            "broken reference",
            "broken references"
        ),
        count(r.broken_anchors.len(), "broken anchor", "broken anchors"),
        r.via_rename.len(),
        count(
            r.unreferenced.len(),
            "unreferenced file",
            "unreferenced files"
        ),
        count(r.cycles.len(), "cycle", "cycles")
    )?;
    Ok(())
}

/// A progress bar shown only when stdout is a terminal and the run is long.
struct ProgressOnTty {
    enabled: bool,
    bar: OnceLock<indicatif::ProgressBar>,
}

impl ProgressOnTty {
    fn new(json: bool) -> Self {
        ProgressOnTty {
            enabled: !json && std::io::stdout().is_terminal(),
            bar: OnceLock::new(),
        }
    }
    fn tick(&self, done: usize, total: usize) {
        if !self.enabled || total < 200 {
            return;
        }
        let bar = self.bar.get_or_init(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(s) =
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} agents rendered")
            {
                b.set_style(s);
            }
            b
        });
        bar.set_position(done as u64);
    }
    fn finish(&self) {
        if let Some(b) = self.bar.get() {
            b.finish_and_clear();
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from epoch milliseconds.
pub(crate) fn format_ts(ms: u64) -> String {
    ctxsync_core::timefmt::rfc3339_millis(ms)
}
