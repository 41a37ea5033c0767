//! `ctxsync serve`: the HTTP server over the embedded store, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Args;
use ctxsync_server::agent_sync::AgentSyncFeed;
use ctxsync_server::{AppState, ServerConfig};
use ctxsync_store::Store;

use crate::config::Config;
use crate::location::Location;
use crate::InputError;

/// Options of `ctxsync serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one). Anything but loopback needs
    /// --allow-remote.
    #[arg(long, default_value = "127.0.0.1:7711")]
    pub bind: SocketAddr,
    /// Allow a --bind address other machines can reach. The server speaks plain HTTP:
    /// tokens and contexts cross the network unencrypted unless a TLS proxy fronts it.
    #[arg(long)]
    pub allow_remote: bool,
    /// Most connections open at once; more wait until one closes. Lowered to what the
    /// process's open-file limit allows.
    #[arg(long, default_value_t = ServerConfig::default().max_connections,
          value_parser = parse_max_connections)]
    pub max_connections: usize,
    /// Store to serve: a SQLite file path, `sqlite://PATH` or `postgres://…` (default:
    /// `[store] url` or `[store] path` in ctxsync.toml, else .ctxsync/ctxsync.db). Several
    /// servers may serve one PostgreSQL database.
    #[arg(long, env = "CTXSYNC_DB", value_name = "PATH|URL")]
    pub db: Option<String>,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Repository root holding ctxsync.toml and .ctxsync/ (default: found by walking up).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Also keep the repository's agent outputs in sync with its agent library while
    /// serving, as `ctxsync agents watch` does; each run that writes is recorded in the
    /// shared context.
    #[arg(long)]
    pub watch_agents: bool,
}

/// Opens the store named by `--db` (or `CTXSYNC_DB`) or the config, creating a SQLite
/// file's directory.
pub fn open_store(db: Option<&str>, root: Option<&std::path::Path>) -> Result<Box<dyn Store>> {
    let config = Config::load(root)?;
    Location::resolve(db, &config)?.open(config.store_options()?)
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of connections (1 or more)"
        )),
    }
}

/// Refuses a non-loopback `bind` without `allow_remote`; with it, the warning to print.
fn check_bind(bind: SocketAddr, allow_remote: bool) -> Result<Option<String>, InputError> {
    // Canonical: an IPv4-mapped loopback address (::ffff:127.0.0.1) is loopback too.
    if bind.ip().to_canonical().is_loopback() {
        return Ok(None);
    }
    if !allow_remote {
        return Err(InputError(format!(
            "--bind {bind} is reachable from other machines; pass --allow-remote to serve there \
             (the server has no TLS: tokens and contexts would cross the network in clear text)"
        )));
    }
    Ok(Some(format!(
        "warning: serving on {bind}, reachable from other machines, without TLS: bearer \
         tokens and contexts are not encrypted; put a TLS-terminating proxy in front or keep \
         to a trusted network"
    )))
}

/// Raises the open-file limit as far as allowed and says so when it still caps the
/// connections below `wanted`.
fn fit_connections(wanted: usize) {
    let limit = match ctxsync_server::limits::raise_fd_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            ctxsync_server::limits::fd_limit()
        }
    };
    let cap = ctxsync_server::limits::connection_cap(wanted, limit);
    if cap < wanted {
        errln!(
            "warning: the open-file limit ({}) allows {cap} connections, not {wanted}",
            limit.soft.unwrap_or(0)
        );
    }
}

pub fn run(args: &ServeArgs) -> Result<ExitCode> {
    let remote_warning = check_bind(args.bind, args.allow_remote)?;
    let store = open_store(args.db.as_deref(), args.root.as_deref())?;
    // The feed exists before the watcher starts, so its initial run is recorded too.
    let (agents, feed) = if args.watch_agents {
        let (watch, feed) = start_agents_watch(args.root.as_deref())?;
        (Some(watch), Some(feed))
    } else {
        (None, None)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    fit_connections(args.max_connections);
    let config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        max_connections: args.max_connections,
        storage_warnings: Config::load(args.root.as_deref())?.storage_thresholds(),
        ..ServerConfig::default()
    };
    let state = AppState::new(Arc::from(store), config);
    if let Some(feed) = feed {
        // A fresh state has no feed yet: this cannot be refused.
        let _ = state.attach_agent_sync(feed);
    }
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("cannot listen on {}", args.bind))?;
        let addr = listener.local_addr().context("no local address")?;
        if let Some(warning) = &remote_warning {
            errln!("{warning}");
        }
        errln!("listening on {addr}");
        tracing::info!(%addr, "ctxsync server started");
        ctxsync_server::serve(listener, state, shutdown_signal())
            .await
            .context("the server failed")
    })?;
    if let Some(agents) = agents {
        agents.stop();
    }
    errln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The agent watcher running beside the server.
struct AgentsWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl AgentsWatch {
    /// Asks the watcher to stop and waits for the run in flight, if any, to finish.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Starts `agents watch` on its own thread for the repository at `root`, reporting
/// each run (and the reference check after it) to the returned feed, which the server
/// serves at `/v1/agent-sync`. Bad `[agents]` settings are refused here, before
/// serving, rather than found later in a log.
fn start_agents_watch(root: Option<&Path>) -> Result<(AgentsWatch, Arc<AgentSyncFeed>)> {
    let root = Config::load(root)?.root;
    ctxsync_agents::config::AgentsConfig::load(&root).map_err(|e| InputError(e.to_string()))?;
    let feed = Arc::new(AgentSyncFeed::new(
        root.display().to_string(),
        crate::agents_feed::now_ms(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new()
        .name("agents-watch".into())
        .spawn({
            let stop = stop.clone();
            let feed = Arc::clone(&feed);
            move || {
                let opts = ctxsync_agents::sync::SyncOptions::default();
                let watched = ctxsync_agents::watch::watch(&root, &opts, &stop, &mut |o| {
                    match &o.result {
                        Ok(r) => {
                            if r.generation.is_some()
                                || !r.conflicts.is_empty()
                                || !r.validation_errors.is_empty()
                            {
                                errln!(
                                    "agents: run {}: {} written, {} deleted, {} conflicts, {} validation errors",
                                    o.run,
                                    r.written.len(),
                                    r.deleted.len(),
                                    r.conflicts.len(),
                                    r.validation_errors.len()
                                );
                            }
                        }
                        Err(e) => errln!("agents: run {}: error: {e}", o.run),
                    }
                    crate::agents_feed::report_run(&feed, &root, o);
                    if let Ok(r) = &o.result {
                        crate::context::record_agent_run(&root, r);
                    }
                });
                if let Err(e) = watched {
                    errln!("agents watch stopped: {e}");
                }
            }
        })
        .context("cannot start the agents watcher")?;
    errln!("watching the agent library");
    Ok((AgentsWatch { stop, thread }, feed))
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_binds_without_allow_remote() {
        for loopback in [
            "127.0.0.1:7711",
            "127.0.0.2:0",
            "[::1]:7711",
            "[::ffff:127.0.0.1]:1",
        ] {
            let addr: SocketAddr = loopback.parse().unwrap();
            assert!(matches!(check_bind(addr, false), Ok(None)), "{loopback}");
            assert!(matches!(check_bind(addr, true), Ok(None)), "{loopback}");
        }
        for remote in [
            "0.0.0.0:7711",
            "[::]:7711",
            "192.168.1.5:80",
            "[::ffff:10.0.0.1]:1",
        ] {
            let addr: SocketAddr = remote.parse().unwrap();
            let refused = check_bind(addr, false).unwrap_err().0;
            assert!(refused.contains("--allow-remote"), "{refused}");
            let warning = check_bind(addr, true).unwrap().unwrap();
            assert!(warning.contains("without TLS"), "{warning}");
        }
    }

    #[test]
    fn max_connections_is_a_positive_number() {
        assert_eq!(parse_max_connections("4096"), Ok(4096));
        assert_eq!(parse_max_connections("1"), Ok(1));
        for bad in ["0", "-1", "many", ""] {
            assert!(parse_max_connections(bad).is_err(), "{bad:?}");
        }
    }
}
