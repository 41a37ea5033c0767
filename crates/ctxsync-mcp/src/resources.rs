//! Resources: `ctxsync://{context}` (the whole document, JSON) and
//! `ctxsync://{context}/{section}` (one section, a dotted path), and
//! `resources/subscribe`: a subscribed URI gets `notifications/resources/updated` when a
//! new revision writes what it shows.
//!
//! One watcher task per session looks at the heads of the subscribed contexts every
//! poll interval and ends when the session's peer goes away.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ctxsync_core::{get as get_value, Path};
use ctxsync_store::StoreError;
use rmcp::model::{
    ErrorData, ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult,
};
use rmcp::{Peer, RoleServer};
use serde_json::{json, Value};

use crate::CtxsyncMcp;

const SCHEME: &str = "ctxsync://";

/// The URIs one session subscribed to.
#[derive(Default)]
pub struct Subscriptions {
    uris: Mutex<BTreeSet<String>>,
    watching: AtomicBool,
}

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        match self.uris.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    pub fn add(&self, uri: &str) {
        self.lock().insert(uri.to_owned());
    }
    pub fn remove(&self, uri: &str) {
        self.lock().remove(uri);
    }
    pub fn all(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
}

/// A parsed resource URI: the context and the section (root for the whole document).
pub fn parse_uri(uri: &str) -> Result<(String, Path), ErrorData> {
    let rest = uri.strip_prefix(SCHEME).ok_or_else(|| {
        ErrorData::invalid_params(format!("{uri:?} is not a ctxsync:// URI"), None)
    })?;
    let (context, section) = match rest.split_once('/') {
        Some((c, s)) => (c, s),
        None => (rest, ""),
    };
    ctxsync_store::validate_context_name(context)
        .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
    let path = if section.is_empty() {
        Path::root()
    } else {
        Path::parse(section)
            .map_err(|e| ErrorData::invalid_params(format!("bad section {section:?}: {e}"), None))?
    };
    Ok((context.to_owned(), path))
}

fn store_error(e: StoreError) -> ErrorData {
    match e {
        StoreError::NotFound(_) => ErrorData::resource_not_found(e.to_string(), None),
        e if e.is_client_error() => ErrorData::invalid_params(e.to_string(), None),
        e => ErrorData::internal_error(e.to_string(), None),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ErrorData> {
    serde_json::from_value(value).map_err(|e| ErrorData::internal_error(e.to_string(), None))
}

pub async fn list(server: &CtxsyncMcp) -> Result<ListResourcesResult, ErrorData> {
    let store = Arc::clone(server.store());
    let heads = tokio::task::spawn_blocking(move || store.list_contexts())
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
        .map_err(store_error)?;
    let resources: Vec<Value> = heads
        .iter()
        .map(|h| {
            json!({
                "uri": format!("{SCHEME}{}", h.context),
                "name": h.context,
                "title": format!("ctxsync context {}", h.context),
                "description": format!("The shared context {:?} at its newest revision (now {}).", h.context, h.revision),
                "mimeType": "application/json",
                "size": h.size,
            })
        })
        .collect();
    from_json(json!({"resultType": "complete", "resources": resources}))
}

pub fn templates() -> ListResourceTemplatesResult {
    let value = json!({"resultType": "complete", "resourceTemplates": [{
        "uriTemplate": "ctxsync://{context}/{section}",
        "name": "section",
        "title": "A section of a ctxsync context",
        "description": "One section (a dotted path such as project_state.active_tasks) of a context.",
        "mimeType": "application/json",
    }]});
    serde_json::from_value(value)
        .unwrap_or_else(|_| ListResourceTemplatesResult::with_all_items(vec![]))
}

pub async fn read(server: &CtxsyncMcp, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let (context, section) = parse_uri(uri)?;
    let store = Arc::clone(server.store());
    let snap = tokio::task::spawn_blocking(move || store.read(&context, None))
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
        .map_err(store_error)?;
    let value = get_value(&snap.document, &section).ok_or_else(|| {
        ErrorData::resource_not_found(
            format!("{section} does not exist at revision {}", snap.revision),
            None,
        )
    })?;
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    from_json(json!({"resultType": "complete", "contents": [{
        "uri": uri, "mimeType": "application/json", "text": text,
        "_meta": {"revision": snap.revision, "checksum": snap.checksum},
    }]}))
}

pub async fn subscribe(
    server: &CtxsyncMcp,
    uri: &str,
    peer: Peer<RoleServer>,
) -> Result<(), ErrorData> {
    let (context, _) = parse_uri(uri)?;
    let store = Arc::clone(server.store());
    let head = tokio::task::spawn_blocking(move || store.head(&context))
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
        .map_err(store_error)?;
    server.subscriptions.add(uri);
    if !server.subscriptions.watching.swap(true, Ordering::SeqCst) {
        let server = server.clone();
        let first = (head.context.clone(), head.revision);
        tokio::spawn(async move { watch(server, peer, first).await });
    }
    Ok(())
}

/// Notifies the subscribed URIs whose content a new revision wrote, until the peer is
/// gone (2025-11-25 `resources/subscribe`).
async fn watch(server: CtxsyncMcp, peer: Peer<RoleServer>, first: (String, u64)) {
    let subscriptions = Arc::clone(&server.subscriptions);
    let closed = peer.clone();
    follow(
        &server,
        Some(first),
        move || subscriptions.all(),
        move || closed.is_transport_closed(),
        |uri| {
            let peer = peer.clone();
            async move {
                peer.notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                    uri,
                ))
                .await
                .is_ok()
            }
        },
    )
    .await;
}

/// The URIs of a 2026-07-28 `subscriptions/listen` filter this server can follow.
pub fn accepted(requested: &[String]) -> Vec<String> {
    requested
        .iter()
        .filter(|uri| parse_uri(uri).is_ok())
        .cloned()
        .collect()
}

/// Runs one 2026-07-28 subscription until the client cancels it.
pub async fn listen(server: &CtxsyncMcp, context: rmcp::service::SubscriptionContext) {
    let uris = context
        .accepted()
        .resource_subscriptions
        .clone()
        .unwrap_or_default();
    if uris.is_empty() {
        context.cancelled().await;
        return;
    }
    let sink = context.sink().clone();
    let following = follow(
        server,
        None,
        move || uris.clone(),
        || false,
        |uri| {
            let sink = sink.clone();
            async move { sink.notify_resource_updated(uri).await.is_ok() }
        },
    );
    tokio::select! {
        _ = following => {}
        _ = context.cancelled() => {}
    }
}

/// Every poll interval, looks at the heads of the contexts of `uris()` and calls
/// `notify` for each URI whose content a new revision wrote; ends when `closed()` or a
/// notification cannot be sent. `first`: a head already read.
async fn follow<U, C, N, F>(
    server: &CtxsyncMcp,
    first: Option<(String, u64)>,
    uris: U,
    closed: C,
    notify: N,
) where
    U: Fn() -> Vec<String>,
    C: Fn() -> bool,
    N: Fn(String) -> F,
    F: std::future::Future<Output = bool>,
{
    let mut last: HashMap<String, u64> = HashMap::new();
    if let Some((ctx, revision)) = first {
        last.insert(ctx, revision);
    }
    let interval = server
        .options()
        .poll_interval
        .max(std::time::Duration::from_millis(50));
    let mut started = false;
    loop {
        if started {
            tokio::time::sleep(interval).await;
        }
        started = true;
        if closed() {
            return;
        }
        let mut by_context: HashMap<String, Vec<(String, Path)>> = HashMap::new();
        for uri in uris() {
            if let Ok((ctx, path)) = parse_uri(&uri) {
                by_context.entry(ctx).or_default().push((uri, path));
            }
        }
        for (ctx, subs) in by_context {
            let store = Arc::clone(server.store());
            let since = last.get(&ctx).copied();
            let ctx2 = ctx.clone();
            let found = tokio::task::spawn_blocking(
                move || -> Result<(u64, Vec<ctxsync_store::LogEntry>), StoreError> {
                    let head = store.head(&ctx2)?;
                    match since {
                        Some(s) if head.revision > s => {
                            Ok((head.revision, store.log_since(&ctx2, s)?))
                        }
                        _ => Ok((head.revision, Vec::new())),
                    }
                },
            )
            .await;
            let Ok(Ok((revision, entries))) = found else {
                continue;
            };
            last.insert(ctx.clone(), revision);
            for (uri, path) in subs {
                let touched = path.is_root()
                    || entries
                        .iter()
                        .any(|e| e.edits.iter().any(|x| x.path.overlaps(&path)));
                if touched && !notify(uri).await {
                    return;
                }
            }
        }
    }
}
