//! What a context command works on: the store (embedded, or a server in remote mode,
//! with its outbox), the context, and whose working copy.

use std::path::Path as FsPath;

use anyhow::Result;
use ctxsync_client::{Outbox, RemoteClient, WorkingCopy};
use ctxsync_store::Store;

use super::backend::StoreBackend;
use super::output;
use crate::config::Config;
use crate::remote::RemoteStore;
use crate::{Common, InputError};

pub(crate) struct Env {
    pub config: Config,
    pub store: Box<dyn Store>,
    pub context: String,
    /// Set in remote mode.
    pub remote: Option<Remote>,
}

/// The server side of remote mode.
pub(crate) struct Remote {
    pub client: RemoteClient,
    pub outbox: Outbox,
}

impl Remote {
    /// The agent the server says our token acts as.
    pub fn token_agent(&self) -> Result<String> {
        self.client.whoami().map_err(|e| {
            let message = format!(
                "cannot learn which agent the token acts as from {}: {e}",
                self.client.base_url()
            );
            if e.is_unavailable() {
                anyhow::Error::new(crate::remote::store_error("", e)).context(message)
            } else {
                InputError(format!("{message} ({NAME_THE_AGENT})")).into()
            }
        })
    }
}

impl Env {
    /// The agent a write acts as: the one named (`--agent`, CTXSYNC_AGENT, `agent` in
    /// ctxsync.toml), else in remote mode the token's. There is no silent default: an
    /// embedded write that names nobody is an input error saying how to name one, so
    /// the op log never credits a change to a made-up agent.
    pub fn writer(&self, flag: Option<&str>) -> Result<String> {
        if let Some(agent) = self.config.agent(flag) {
            ctxsync_store::validate_agent_name(&agent)?;
            return Ok(agent);
        }
        match &self.remote {
            Some(remote) => remote.token_agent(),
            None => Err(InputError(format!("a write needs an agent: {NAME_THE_AGENT}")).into()),
        }
    }

    /// The working-copy backend: deltas and checksum checks in remote mode.
    pub fn backend(&self) -> StoreBackend<'_> {
        StoreBackend {
            store: self.store.as_ref(),
            remote: self.remote.as_ref().map(|r| &r.client),
        }
    }
}

/// `CTXSYNC_SERVER`, else `server` in ctxsync.toml. A value that is not an http(s) URL
/// is an input error, not an unreachable server (pushes must not queue for it).
pub(crate) fn server_url(config: &Config) -> Result<Option<String>> {
    let url = std::env::var("CTXSYNC_SERVER")
        .ok()
        .filter(|s| !s.is_empty())
        .or(config.file.server.clone());
    match url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(InputError(
            format!("server {u:?} is not a URL: use http://HOST:PORT or https://HOST"),
        )
        .into()),
        other => Ok(other),
    }
}

/// `CTXSYNC_TOKEN`, else `.ctxsync/token` (kept out of the committed config).
pub(crate) fn server_token(config: &Config) -> Result<Option<String>> {
    if let Ok(token) = std::env::var("CTXSYNC_TOKEN") {
        if !token.is_empty() {
            return Ok(Some(token));
        }
    }
    let path = config.state_dir().join("token");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = ctxsync_client::decode_text(bytes, &path.display().to_string())?;
            let token = ctxsync_core::limits::strip_bom(&text).trim();
            Ok(Some(token.to_owned()).filter(|t| !t.is_empty()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

pub(crate) fn open(common: &Common) -> Result<Env> {
    let config = Config::load(common.root.as_deref())?;
    let context = config.context(common.context.as_deref());
    ctxsync_store::validate_context_name(&context)?;
    if let Some(url) = server_url(&config)? {
        let remote = RemoteStore::new(&url, server_token(&config)?);
        let client = remote.client.clone();
        let outbox = Outbox::new(config.state_dir().join("outbox"));
        // Every command first tries to deliver what earlier ones could not.
        flush_outbox(&client, &outbox)?;
        return Ok(Env {
            config,
            store: Box::new(remote),
            context,
            remote: Some(Remote { client, outbox }),
        });
    }
    let location = crate::location::Location::resolve(common.db.as_deref(), &config)?;
    if !location.exists() {
        return Err(InputError(format!(
            "no ctxsync store at {location}: run `ctxsync init` first"
        ))
        .into());
    }
    let store = location.open(config.store_options()?)?;
    Ok(Env {
        config,
        store,
        context,
        remote: None,
    })
}

/// Sends the outbox in order; reports on stderr what was delivered or refused.
pub(crate) fn flush_outbox(
    client: &RemoteClient,
    outbox: &Outbox,
) -> Result<ctxsync_client::outbox::FlushReport> {
    let report = outbox.flush(|item| client.push(&item.context, &item.request))?;
    for (item, answer) in &report.delivered {
        let what = if answer.replayed {
            "already applied"
        } else {
            "applied"
        };
        errln!(
            "outbox: delivered queued push #{} ({}) to {}: {what}, revision {}{}",
            item.seq,
            item.request.request_id.as_deref().unwrap_or("-"),
            item.context,
            answer.revision,
            if answer.conflicts.is_empty() {
                String::new()
            } else {
                format!(
                    ", {}",
                    output::count(answer.conflicts.len(), "conflict", "conflicts")
                )
            }
        );
    }
    for (item, why) in &report.failed {
        errln!(
            "outbox: the server refused queued push #{} for good ({why}); kept in {}",
            item.seq,
            outbox.dir().join("failed").display()
        );
    }
    if report.remaining > 0 {
        tracing::debug!(
            remaining = report.remaining,
            "outbox still waiting for the server"
        );
    }
    Ok(report)
}

/// How to name the agent of a working-copy command.
const NAME_THE_AGENT: &str =
    "name it with --agent NAME, CTXSYNC_AGENT=NAME or `agent = \"NAME\"` in ctxsync.toml";

/// Whose working copy a command means.
pub(crate) enum Chosen {
    /// Named by `--agent`, CTXSYNC_AGENT or `agent` in ctxsync.toml.
    Named(String),
    /// Not named, but the only working copy of the context.
    Only(String),
    /// Not named, and the context has no working copy.
    Nobody,
    /// Not named, and the context has these working copies.
    Several(Vec<String>),
}

impl Chosen {
    /// The input error of a command that needs one agent and was given none.
    pub fn ambiguous(&self, context: &str) -> anyhow::Error {
        let message = match self {
            Chosen::Several(copies) => format!(
                "{} working copies of context {context:?} ({}) and no agent named: {NAME_THE_AGENT}",
                copies.len(),
                copies.join(", ")
            ),
            _ => format!(
                "no agent named and no working copy of context {context:?} to pick: {NAME_THE_AGENT}"
            ),
        };
        InputError(message).into()
    }
}

/// The folders under `.ctxsync/agents` that hold a working copy, sorted.
pub(crate) fn working_copy_names(state_dir: &FsPath) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(state_dir.join("agents")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("base.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The agent a working-copy command (`sync`, `watch`, `session`) acts for: the one named,
/// in remote mode the token's agent, else the only working copy of the context.
pub(crate) fn choose_agent(env: &Env, flag: Option<&str>) -> Result<Chosen> {
    if let Some(agent) = env.config.agent(flag) {
        return Ok(Chosen::Named(agent));
    }
    // Remote mode: the token names the agent. Offline, fall back to the working copies
    // (a sync must still queue its push).
    if let Some(remote) = &env.remote {
        match remote.client.whoami() {
            Ok(agent) => return Ok(Chosen::Named(agent)),
            Err(e) if e.is_unavailable() => {}
            Err(e) => {
                return Err(InputError(format!(
                    "cannot learn which agent the token acts as: {e} ({NAME_THE_AGENT})"
                ))
                .into())
            }
        }
    }
    let state_dir = env.config.state_dir();
    let mut copies: Vec<String> = working_copy_names(&state_dir)
        .into_iter()
        .filter(|name| {
            WorkingCopy::new(&state_dir, name)
                .and_then(|wc| wc.load_base())
                .is_ok_and(|base| base.context == env.context)
        })
        .collect();
    Ok(match copies.len() {
        0 => Chosen::Nobody,
        1 => Chosen::Only(copies.remove(0)),
        _ => Chosen::Several(copies),
    })
}

/// [`choose_agent`] for a command that needs an agent.
pub(crate) fn require_agent(env: &Env, flag: Option<&str>) -> Result<String> {
    match choose_agent(env, flag)? {
        Chosen::Named(agent) | Chosen::Only(agent) => Ok(agent),
        other => Err(other.ambiguous(&env.context)),
    }
}
