//! One function per context command. Each returns the exit code; errors are classified
//! by [`super::exit_code_of`].

use std::path::Path as FsPath;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ctxsync_client::{local_changes, parse_document, pull_into, SyncOptions, WorkingCopy};
use ctxsync_core::{
    get as get_value, template, Change, Expect, Level, Path, PushRequest, PushResponse, Strategy,
};
use ctxsync_store::{Actor, HistoryFilter, Role, Store};
use serde_json::{json, Value};

use super::env::{choose_agent, server_token, server_url, working_copy_names, Chosen, Remote};
pub(crate) use super::env::{open, Env};
use super::output::{self, print_json};
use super::{now_ms, SyncArgs};
use crate::config::{Config, CONFIG_FILE};
use crate::location::Location;
use crate::remote::RemoteStore;
use crate::{Acting, Common, InputError};

const CONFLICT: u8 = 1;

fn parse_yaml_arg(text: &str, what: &str) -> Result<Value> {
    Ok(parse_document(text, what)?)
}

fn parse_path(text: &str) -> Result<Path> {
    Path::parse(text).map_err(|e| InputError(e.to_string()).into())
}

fn exit(code: u8) -> Result<ExitCode> {
    Ok(ExitCode::from(code))
}

pub fn init(common: &Common, template_name: &str) -> Result<ExitCode> {
    let config = Config::load(common.root.as_deref())?;
    std::fs::create_dir_all(config.state_dir())
        .with_context(|| format!("cannot create {}", config.state_dir().display()))?;
    if !config.found {
        let text = "# ctxsync configuration; every setting has a default.\n\
                    # context = \"default\"\n# agent = \"builder\"\n\n\
                    # [periodic]\n# interval_secs = 1800\n# tasks = 5\n# size_bytes = 16384\n\n\
                    # [[ownership]]\n# path = \"project_state.**\"\n# owners = [\"planner\"]\n";
        ctxsync_client::atomic_write(&config.root.join(CONFIG_FILE), text.as_bytes())?;
    }
    let context = config.context(common.context.as_deref());
    ctxsync_store::validate_context_name(&context)?;
    let document = template::by_name(template_name).ok_or_else(|| {
        InputError(format!(
            "unknown template {template_name:?}: use seed or empty"
        ))
    })?;
    let (head, location) = match server_url(&config)? {
        Some(url) => {
            let remote = RemoteStore::new(&url, server_token(&config)?);
            (remote.create_context(&context, document)?, url)
        }
        None => {
            let location = Location::resolve(common.db.as_deref(), &config)?;
            let store = location.open(config.store_options()?)?;
            (
                store.create_context(&context, document)?,
                location.to_string(),
            )
        }
    };
    if common.json {
        print_json(&head);
    } else {
        outln!(
            "created context {:?} at revision {} in {location}",
            head.context,
            head.revision,
        );
    }
    exit(0)
}

pub fn get(common: &Common, path: &str, revision: Option<u64>) -> Result<ExitCode> {
    let path = parse_path(path)?;
    let env = open(common)?;
    let snap = env.store.read(&env.context, revision)?;
    match get_value(&snap.document, &path) {
        Some(value) => {
            if common.json {
                print_json(value);
            } else {
                output::print_value(value);
            }
            exit(0)
        }
        None => {
            errln!("{path} does not exist at revision {}", snap.revision);
            exit(1)
        }
    }
}

pub fn set(
    common: &Common,
    acting: &Acting,
    path: &str,
    value: &str,
    from: Option<&str>,
    absent: bool,
) -> Result<ExitCode> {
    let path = parse_path(path)?;
    let value = parse_yaml_arg(value, "VALUE")?;
    let expect = match (from, absent) {
        (Some(f), _) => Some(Expect::Value(parse_yaml_arg(f, "--from")?)),
        (None, true) => Some(Expect::Absent),
        (None, false) => None,
    };
    let mut change = Change::set(path, value);
    change.expect = expect;
    let env = open(common)?;
    let request = PushRequest {
        agent: env.writer(acting.agent.as_deref())?,
        level: acting.level,
        base_revision: None,
        request_id: Some(ulid::Ulid::new().to_string()),
        strategy: acting.strategy.unwrap_or_default(),
        summary: String::new(),
        changes: vec![change],
    };
    report_push(&env, request, common.json)
}

fn report_push(env: &Env, request: PushRequest, json: bool) -> Result<ExitCode> {
    let agent = request.agent.clone();
    let mut response = match &env.remote {
        None => env.store.push(&env.context, request)?,
        Some(remote) => match push_or_queue(env, remote, request, json)? {
            Some(response) => response,
            None => return exit(0),
        },
    };
    // Embedded: presence, and what this agent had not seen (a server does both itself
    // and puts the notice in its answer).
    if response.stale.is_none() {
        response.stale = super::claims::stale_view(env, &agent, response.revision);
    }
    if json {
        print_json(&response);
    } else {
        output::print_push(&response);
    }
    exit(if response.is_partial() { CONFLICT } else { 0 })
}

pub fn push(
    common: &Common,
    acting: &Acting,
    file: &FsPath,
    base: Option<u64>,
    request_id: Option<String>,
    summary: Option<String>,
) -> Result<ExitCode> {
    let (bytes, what) = if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .context("cannot read standard input")?;
        (bytes, "standard input".to_owned())
    } else {
        let bytes = std::fs::read(file)
            .map_err(|e| InputError(format!("cannot read {}: {e}", file.display())))?;
        (bytes, file.display().to_string())
    };
    let doc = parse_yaml_arg(&ctxsync_client::decode_text(bytes, &what)?, &what)?;
    let changes = Change::list_from_json(&doc).map_err(|e| InputError(e.to_string()))?;
    // A file may carry the request's own fields (the seed's `sync_update` shape);
    // flags win over them.
    let body = doc.get("sync_update").unwrap_or(&doc);
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let env = open(common)?;
    let strategy = match (acting.strategy, field("strategy")) {
        (Some(s), _) => s,
        (None, Some(s)) => s.parse::<Strategy>().map_err(InputError)?,
        (None, None) => Strategy::default(),
    };
    let request = PushRequest {
        agent: env.writer(acting.agent.as_deref().or(field("agent").as_deref()))?,
        level: acting.level,
        base_revision: base.or_else(|| body.get("base_revision").and_then(Value::as_u64)),
        request_id: request_id
            .or_else(|| field("request_id"))
            .or_else(|| Some(ulid::Ulid::new().to_string())),
        strategy,
        summary: summary.or_else(|| field("summary")).unwrap_or_default(),
        changes,
    };
    report_push(&env, request, common.json)
}

/// Remote push: behind anything already queued (order matters), else with a few quick
/// retries; a server that stays unreachable gets the push queued in the outbox. `None`
/// means queued (already reported).
fn push_or_queue(
    env: &Env,
    remote: &Remote,
    request: PushRequest,
    json: bool,
) -> Result<Option<PushResponse>> {
    let queued_before = remote.outbox.status()?.pending;
    let error = if queued_before > 0 {
        format!(
            "{} still queued",
            output::count(queued_before, "earlier push", "earlier pushes")
        )
    } else {
        let attempt = ctxsync_client::outbox::with_backoff(3, Duration::from_millis(200), || {
            remote.client.push(&env.context, &request)
        });
        match attempt {
            Ok(response) => return Ok(Some(response)),
            Err(e) if e.is_unavailable() => e.to_string(),
            Err(e) => return Err(crate::remote::store_error(&env.context, e).into()),
        }
    };
    let item = remote
        .outbox
        .enqueue(&env.context, request, &error, now_ms())?;
    let pending = remote.outbox.status()?.pending;
    errln!(
        "queued: {error}; the push (request {}) waits in {} ({pending} queued) and is sent on the next command",
        item.request.request_id.as_deref().unwrap_or("-"),
        remote.outbox.dir().display()
    );
    if json {
        print_json(
            &json!({"queued": true, "seq": item.seq, "request_id": item.request.request_id, "outbox_pending": pending}),
        );
    } else {
        outln!("queued ({pending} in the outbox)");
    }
    Ok(None)
}

/// The requested sections of `doc`, nested as in the document; `Err` names the first
/// section that does not exist.
fn select_sections<'a>(doc: &Value, sections: &'a [Path]) -> Result<Value, &'a Path> {
    if sections.is_empty() {
        return Ok(doc.clone());
    }
    let mut out = json!({});
    for section in sections {
        let value = get_value(doc, section).ok_or(section)?;
        // Cannot fail: setting a key path on an object creates the parents.
        let _ = ctxsync_core::apply_change(&mut out, &Change::set(section.clone(), value.clone()));
    }
    Ok(out)
}

/// Says that `section` does not exist (as `get` of a missing path does): exit 1.
fn no_section(section: &Path, revision: u64) -> Result<ExitCode> {
    errln!("no section {section}: it does not exist at revision {revision}");
    exit(1)
}

pub fn pull(
    common: &Common,
    sections: &[String],
    since: Option<String>,
    format: Option<&str>,
    agent: Option<&str>,
    force: bool,
    include_archive: bool,
) -> Result<ExitCode> {
    let sections: Vec<Path> = sections
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| parse_path(s))
        .collect::<Result<_>>()?;
    let env = open(common)?;
    let as_json = common.json || format == Some("json");
    if let Some(agent) = agent {
        let wc = WorkingCopy::new(&env.config.state_dir(), agent)?;
        let mut periodic = None;
        if wc.exists() {
            periodic = wc.load_base().ok().and_then(|b| b.last_periodic_flush);
            // A deleted file has no edits left to protect; --force discards them anyway
            // (even from a file that no longer parses).
            if !force && wc.file().exists() {
                let (_, _, changes) = local_changes(&wc)?;
                if !changes.is_empty() {
                    return Err(InputError(format!(
                        "the working copy of {agent:?} has {}; run `ctxsync sync --agent {agent}` first, or pull --force to discard them",
                        output::count(changes.len(), "unsynced change", "unsynced changes")
                    ))
                    .into());
                }
            }
        }
        let before = super::claims::stale_before(&env, agent, as_json);
        let base = pull_into(&wc, &env.backend(), &env.context, periodic)?;
        let stale = before.or_else(|| super::claims::stale_view(&env, agent, base.revision));
        if as_json {
            print_json(&super::claims::with_stale(
                json!({"agent": agent, "revision": base.revision, "checksum": base.checksum, "file": wc.file()}),
                stale.as_ref(),
            ));
        } else {
            outln!(
                "wrote {} at revision {}",
                wc.file().display(),
                base.revision
            );
        }
        return exit(0);
    }
    // A named agent (CTXSYNC_AGENT or ctxsync.toml) gets the stale-view notice.
    let named = std::env::var("CTXSYNC_AGENT")
        .ok()
        .filter(|a| !a.is_empty())
        .or(env.config.file.agent.clone());
    let before = named
        .as_deref()
        .and_then(|agent| super::claims::stale_before(&env, agent, as_json));
    let since = match since {
        Some(text) => Some(since_revision(&env, &text)?),
        None => None,
    };
    let current = env.store.read(&env.context, None)?;
    let stale = before.or_else(|| {
        named
            .as_deref()
            .and_then(|agent| super::claims::stale_view(&env, agent, current.revision))
    });
    if let Some(since) = since {
        let old = env.store.read(&env.context, Some(since))?;
        // A section removed since `since` is a change worth showing; one that exists at
        // neither end is a typo.
        let missing = sections.iter().find(|s| {
            get_value(&current.document, s).is_none() && get_value(&old.document, s).is_none()
        });
        if let Some(section) = missing {
            return no_section(section, current.revision);
        }
        let changes: Vec<Value> = ctxsync_core::diff(&old.document, &current.document)
            .into_iter()
            .filter(|c| sections.is_empty() || sections.iter().any(|s| c.path.overlaps(s)))
            .map(|c| c.to_json())
            .collect();
        let delta = json!({
            "since": since,
            "revision": current.revision,
            "checksum": current.checksum,
            "changes": changes,
        });
        if as_json {
            print_json(&super::claims::with_stale(delta, stale.as_ref()));
        } else {
            out!("{}", ctxsync_client::to_yaml(&delta));
        }
        return exit(0);
    }
    let (whole, restored) = if include_archive {
        let (document, n) = super::archive::with_archive(&env, current.document)?;
        (document, Some(n))
    } else {
        (current.document, None)
    };
    let document = match select_sections(&whole, &sections) {
        Ok(document) => document,
        Err(section) => return no_section(section, current.revision),
    };
    if as_json {
        let mut answer = json!({"revision": current.revision, "checksum": current.checksum, "document": document});
        if let Some(n) = restored {
            // The checksum is the stored document's, without the archive.
            answer["archived_entries_included"] = json!(n);
        }
        print_json(&super::claims::with_stale(answer, stale.as_ref()));
    } else {
        outln!(
            "# context {} revision {} checksum {}{}",
            env.context,
            current.revision,
            current.checksum,
            restored.map_or(String::new(), |n| format!(
                " (plus {n} archived entries, not in the checksum)"
            ))
        );
        out!("{}", ctxsync_client::to_yaml(&document));
    }
    exit(0)
}

/// `--since`: a revision, or an RFC 3339 time meaning "after the newest revision made at
/// or before it" (a time before the horizon's revisions is below the horizon: 410).
fn since_revision(env: &Env, text: &str) -> Result<u64> {
    if let Ok(revision) = text.parse::<u64>() {
        return Ok(revision);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
        InputError(format!(
            "--since {text:?}: not a revision number or an RFC 3339 time ({e})"
        ))
    })?;
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let head = env.store.head(&env.context)?;
    let entries = env.store.history(&env.context, &HistoryFilter::default())?;
    // Newest first: the first entry at or before the time is where the delta starts.
    match entries.iter().find(|e| e.timestamp_ms <= ms) {
        Some(entry) => Ok(entry.revision),
        // Older than everything in the log: from the horizon when history starts there
        // (revision 0), else the time is below the horizon.
        None if head.horizon == 0 => Ok(0),
        None => Err(ctxsync_store::StoreError::Gone {
            requested: head.horizon.saturating_sub(1),
            horizon: head.horizon,
        }
        .into()),
    }
}

pub fn sync(args: &SyncArgs) -> Result<ExitCode> {
    if args.status {
        return status(&args.common);
    }
    if args.history {
        return history(&args.common, args.last, None, None);
    }
    let env = open(&args.common)?;
    // Conflicts are settled for a named agent only (else all of them); the working copy
    // synced is the named one or the only one.
    let (agent, explicit) = match choose_agent(&env, args.agent.as_deref())? {
        Chosen::Named(agent) => (Some(agent), true),
        Chosen::Only(agent) => (Some(agent), false),
        Chosen::Nobody | Chosen::Several(_) if args.resolve_conflicts => (None, false),
        Chosen::Nobody => {
            return Err(InputError(format!(
                "context {:?} has no working copy to sync: create one with `ctxsync pull --agent NAME` (or `ctxsync session start --agent NAME`)",
                env.context
            ))
            .into())
        }
        several => return Err(several.ambiguous(&env.context)),
    };
    let wc = agent
        .as_deref()
        .map(|a| WorkingCopy::new(&env.config.state_dir(), a))
        .transpose()?;
    let wc = wc.as_ref().filter(|wc| wc.exists());
    let backend = env.backend();
    let mut code = 0;
    let mut reports = Vec::new();
    let options = |level: Level| SyncOptions {
        context: env.context.clone(),
        level,
        strategy: args.strategy,
        periodic: env.config.file.periodic,
        now_unix: now_ms() / 1000,
        // Derived from the edits and their base: a retried sync is a replay.
        request_id: String::new(),
        summary: String::new(),
    };
    // --full flushes whatever the level would hold back.
    let level = if args.full && args.level == Level::Periodic {
        Level::Checkpoint
    } else {
        args.level
    };
    if let Some(wc) = wc {
        let report = ctxsync_client::sync(wc, &backend, &options(level))?;
        if report.pushed.as_ref().is_some_and(|p| p.is_partial()) {
            code = CONFLICT;
        }
        reports.push(report);
    } else if let (Some(agent), false) = (&agent, args.resolve_conflicts) {
        return Err(InputError(format!(
            "agent {agent:?} has no working copy yet: run `ctxsync pull --agent {agent}` first"
        ))
        .into());
    }
    let named = |who: &str| !explicit || agent.as_deref() == Some(who);
    let mut resolved = Vec::new();
    if args.resolve_conflicts {
        for open in env.store.open_conflicts(&env.context)? {
            if !named(&open.agent) {
                continue;
            }
            let pushed = env.store.resolve_conflict(
                &env.context,
                open.id,
                args.prefer,
                &Actor::agent(&open.agent),
            )?;
            resolved.push(json!({"id": open.id, "path": open.conflict.path, "prefer": args.prefer, "revision": pushed.map(|p| p.revision)}));
        }
        if let (false, Some(wc)) = (resolved.is_empty(), wc) {
            reports.push(ctxsync_client::sync(wc, &backend, &options(level))?);
        }
        if env
            .store
            .open_conflicts(&env.context)?
            .iter()
            .any(|c| named(&c.agent))
        {
            code = CONFLICT;
        } else if code == CONFLICT && !resolved.is_empty() {
            code = 0;
        }
    }
    if let (true, Some(wc)) = (args.full, wc) {
        let (base, _, changes) = local_changes(wc)?;
        if changes.is_empty() {
            let fresh = pull_into(wc, &backend, &env.context, base.last_periodic_flush)?;
            if ctxsync_core::checksum(&fresh.document) != fresh.checksum {
                return Err(anyhow::anyhow!(
                    "checksum mismatch after a full pull of {}: the store may be corrupt (run `ctxsync verify`)",
                    env.context
                ));
            }
        }
    }
    if args.common.json {
        print_json(&json!({"syncs": reports, "resolved": resolved}));
    } else {
        for report in &reports {
            output::print_sync(report);
        }
        for r in &resolved {
            outln!(
                "resolved conflict {} at {} ({})",
                r["id"],
                r["path"].as_str().unwrap_or(""),
                args.prefer_str()
            );
        }
        if reports.is_empty() && resolved.is_empty() {
            outln!("nothing to sync");
        }
    }
    exit(code)
}

impl SyncArgs {
    fn prefer_str(&self) -> &'static str {
        match self.prefer {
            ctxsync_core::Prefer::Mine => "kept mine",
            ctxsync_core::Prefer::Theirs => "kept theirs",
        }
    }
}

pub fn conflicts(common: &Common) -> Result<ExitCode> {
    let env = open(common)?;
    let open = env.store.open_conflicts(&env.context)?;
    if common.json {
        print_json(&open);
    } else if open.is_empty() {
        outln!("no open conflicts");
    } else {
        for c in &open {
            outln!("#{} by {} at revision {}:", c.id, c.agent, c.revision);
            output::print_conflict(&c.conflict);
        }
    }
    exit(if open.is_empty() { 0 } else { CONFLICT })
}

pub fn status(common: &Common) -> Result<ExitCode> {
    let env = open(common)?;
    let head = match (env.store.head(&env.context), &env.remote) {
        (Ok(head), _) => head,
        // The server is down: what is waiting locally is exactly what matters now.
        (Err(e @ ctxsync_store::StoreError::Unavailable(_)), Some(remote)) => {
            let outbox = remote.outbox.status()?;
            if common.json {
                print_json(
                    &json!({"server": remote.client.base_url(), "reachable": false,
                    "error": e.to_string(), "outbox": outbox}),
                );
            } else {
                outln!("server: {} (unreachable: {e})", remote.client.base_url());
                output::print_outbox(&outbox);
            }
            return exit(3);
        }
        (Err(e), _) => return Err(e.into()),
    };
    let metrics = env.store.metrics(&env.context, now_ms())?;
    let mut agents = Vec::new();
    for name in working_copy_names(&env.config.state_dir()) {
        let Ok(wc) = WorkingCopy::new(&env.config.state_dir(), &name) else {
            continue;
        };
        match local_changes(&wc) {
            Ok((base, _, changes)) if base.context == env.context => agents.push(json!({
                "agent": name, "base_revision": base.revision, "pending_changes": changes.len(),
            })),
            Ok(_) => {}
            Err(e) => agents.push(json!({"agent": name, "error": e.to_string()})),
        }
    }
    let (server, outbox) = match &env.remote {
        Some(remote) => (
            Some(remote.client.base_url().to_owned()),
            Some(remote.outbox.status()?),
        ),
        None => (None, None),
    };
    // Storage use, when the store tells it (an older server may not).
    let storage = env.store.storage().ok().map(|usage| {
        let warnings = env.config.storage_thresholds().warnings(&usage);
        let mine = usage
            .contexts
            .iter()
            .find(|c| c.context == env.context)
            .cloned();
        json!({"database_bytes": usage.database_bytes, "context": mine, "warnings": warnings})
    });
    if common.json {
        print_json(
            &json!({"head": head, "metrics": metrics, "working_copies": agents,
            "server": server, "outbox": outbox, "storage": storage}),
        );
    } else {
        output::print_status(&head, &metrics, &agents);
        if let Some(storage) = &storage {
            output::print_storage(storage);
        }
        if let Some(server) = &server {
            outln!("server: {server}");
        }
        if let Some(outbox) = &outbox {
            output::print_outbox(outbox);
        }
    }
    exit(0)
}

pub fn history(
    common: &Common,
    last: usize,
    agent: Option<String>,
    level: Option<Level>,
) -> Result<ExitCode> {
    let env = open(common)?;
    let entries = env.store.history(
        &env.context,
        &HistoryFilter {
            last: Some(last),
            agent,
            level,
        },
    )?;
    if common.json {
        print_json(&output::history_json(&entries));
    } else {
        output::print_history(&entries);
    }
    exit(0)
}

pub fn verify(common: &Common) -> Result<ExitCode> {
    let env = open(common)?;
    let report = env.store.verify(&env.context)?;
    if common.json {
        print_json(&report);
    } else if report.ok {
        outln!(
            "ok: {} replayed, head {} matches its checksum",
            output::count(report.checked as usize, "revision", "revisions"),
            report.revision
        );
    } else {
        outln!("verify FAILED for {}:", report.context);
        for p in &report.problems {
            outln!("  {p}");
        }
    }
    exit(if report.ok { 0 } else { CONFLICT })
}

pub fn revert(common: &Common, to: u64, agent: Option<&str>, admin: bool) -> Result<ExitCode> {
    let env = open(common)?;
    if admin && env.remote.is_some() {
        return Err(InputError(
            "--admin is for the embedded store; a server takes the role from its token \
             (`ctxsync token create --role admin`)"
                .into(),
        )
        .into());
    }
    let agent = env.writer(agent)?;
    let actor = Actor {
        agent,
        role: if admin { Role::Admin } else { Role::Agent },
    };
    let response = env.store.revert(&env.context, to, &actor)?;
    if common.json {
        print_json(&response);
    } else if response.is_partial() {
        // A revert is all or nothing: refused, nothing changed.
        outln!("revert to revision {to} refused; nothing changed:");
        output::print_push(&response);
    } else {
        outln!(
            "reverted to revision {to}: new revision {} (checksum {})",
            response.revision,
            output::short(&response.checksum)
        );
    }
    exit(if response.is_partial() { CONFLICT } else { 0 })
}
