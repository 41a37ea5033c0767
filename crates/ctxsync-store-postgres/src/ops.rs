//! The writes that are not queued pushes: creating a context, settling a conflict, a
//! revert, a snapshot, a sync sample, the away handover, tokens. Each runs in its own
//! transaction on a pooled connection, retried from the start after a serialization
//! failure, a deadlock or a unique violation; the revisions they make take the head by
//! the same CAS as queued pushes ([`crate::write::push_in_tx`]), so they interleave with
//! the writer task and with other servers safely.

use std::time::Instant;

use ctxsync_core::{checksum_and_size, Ownership, PushResponse};
use ctxsync_store::backend::{self, Cached};
use ctxsync_store::{Actor, Head, Prefer, Role, StoreError, SyncSample, TokenInfo};
use serde_json::Value;

use crate::error::{corrupt, TxError};
use crate::pool::Conn;
use crate::read;
use crate::store::{now_ms, Shared};
use crate::write::{self, load, push_in_tx, PushRules, TxDocs, TX_ATTEMPTS};

/// Runs `$body` (an expression using `$conn: &mut Conn` and `$docs`, evaluating to
/// `Result<T, TxError>`) in a transaction on a pooled connection: committed when `Ok`,
/// rolled back otherwise, and run again from the start after a retryable error.
macro_rules! in_tx {
    ($shared:expr, |$conn:ident, $docs:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let mut pooled = $shared.pool.get().await.map_err(TxError::from)?;
            let $conn: &mut Conn = &mut pooled;
            #[allow(unused_mut)]
            let mut $docs = TxDocs::default();
            $conn.begin().await?;
            let result: Result<_, TxError> = async { $body }.await;
            match $conn.finish(result).await {
                Err(e) if e.retryable() && attempt < TX_ATTEMPTS => {
                    attempt += 1;
                    continue;
                }
                Ok(value) => break Ok::<_, TxError>((value, $docs)),
                Err(e) => break Err(e),
            }
        }
    }};
}

pub(crate) async fn create_context(
    shared: &Shared,
    name: &str,
    document: Value,
) -> Result<Head, TxError> {
    let limit = shared.options.max_document_bytes;
    let (sum, size) = checksum_and_size(&document);
    if size > limit {
        return Err(StoreError::TooLarge { size, limit }.into());
    }
    let text = serde_json::to_string(&document).map_err(corrupt)?;
    let (head, _) = in_tx!(shared, |conn, docs| {
        let inserted = conn
            .execute(
                "INSERT INTO contexts(name, revision, checksum, size, horizon, created_ms)
                 VALUES ($1, 0, $2, $3, 0, $4) ON CONFLICT (name) DO NOTHING",
                &[&name, &sum, &(size as i64), &(now_ms() as i64)],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Exists(name.to_owned()).into());
        }
        conn.execute(
            "INSERT INTO snapshots(context, revision, doc, checksum) VALUES ($1, 0, $2, $3)",
            &[&name, &text, &sum],
        )
        .await?;
        Ok(Head {
            context: name.to_owned(),
            revision: 0,
            checksum: sum.clone(),
            size,
            horizon: 0,
        })
    })?;
    Ok(head)
}

pub(crate) async fn resolve_conflict(
    shared: &Shared,
    context: &str,
    id: u64,
    prefer: Prefer,
    actor: &Actor,
) -> Result<Option<PushResponse>, TxError> {
    let agent = actor.agent.as_str();
    let (response, _) = in_tx!(shared, |conn, docs| {
        let row = conn
            .query_opt(
                "SELECT detail, agent FROM conflicts
                 WHERE id = $1 AND context = $2 AND status = 'open' FOR UPDATE",
                &[&(id as i64), &context],
            )
            .await?;
        let row = row.ok_or(StoreError::NoSuchConflict(id))?;
        let (detail, owner): (String, String) = (row.get(0), row.get(1));
        backend::check_settler(actor, &owner, id)?;
        let conflict: ctxsync_core::Conflict =
            serde_json::from_str(&detail).map_err(|e| corrupt(format!("conflict {id}: {e}")))?;
        let response = match prefer {
            Prefer::Theirs => None,
            Prefer::Mine => {
                let request = backend::resolve_request(agent, id, &conflict);
                let open = Ownership::default();
                let rules = PushRules {
                    ownership: backend::ownership_for(actor, &shared.options.ownership, &open),
                    enforce_claims: true,
                    stage_recent: false,
                    stamp_seed_fields: false,
                };
                let r = push_in_tx(
                    conn,
                    &mut docs,
                    shared,
                    context,
                    request,
                    Instant::now(),
                    rules,
                )
                .await?;
                backend::check_settled(agent, &r)?;
                Some(r)
            }
        };
        let resolution = match prefer {
            Prefer::Mine => "mine",
            Prefer::Theirs => "theirs",
        };
        conn.execute(
            "UPDATE conflicts SET status = 'resolved', resolution = $1, resolved_ms = $2 WHERE id = $3",
            &[&resolution, &(now_ms() as i64), &(id as i64)],
        )
        .await?;
        if response.is_some() {
            write::notify_head(conn, &docs, context).await?;
        }
        Ok(response)
    })?;
    Ok(response)
}

pub(crate) async fn revert(
    shared: &Shared,
    context: &str,
    to: u64,
    actor: &Actor,
) -> Result<PushResponse, TxError> {
    let agent = actor.agent.as_str();
    let (response, _) = in_tx!(shared, |conn, docs| {
        let head = read::head(conn, context).await?;
        backend::check_revert(actor, to, &head)?;
        let current = load(conn, &mut docs, context).await?.doc.clone();
        let target = read::doc_at(conn, context, to).await?;
        let request = backend::revert_request(agent, to, &current, &target);
        let open = Ownership::default();
        let rules = PushRules {
            ownership: backend::ownership_for(actor, &shared.options.ownership, &open),
            // An admin's revert is the way out of any state, claims included.
            enforce_claims: actor.role != Role::Admin,
            stage_recent: false,
            stamp_seed_fields: false,
        };
        let r = push_in_tx(
            conn,
            &mut docs,
            shared,
            context,
            request,
            Instant::now(),
            rules,
        )
        .await?;
        if !r.applied.is_empty() {
            write::notify_head(conn, &docs, context).await?;
        }
        Ok(r)
    })?;
    Ok(response)
}

pub(crate) async fn record_sync(
    shared: &Shared,
    context: &str,
    sample: &SyncSample,
) -> Result<(), TxError> {
    in_tx!(shared, |conn, docs| {
        read::head(conn, context).await?;
        write::insert_sample(conn, context, sample).await
    })?;
    Ok(())
}

pub(crate) async fn snapshot_now(shared: &Shared, context: &str) -> Result<Head, TxError> {
    let ttl = shared.options.idempotency_ttl_ms;
    let (head, _) = in_tx!(shared, |conn, docs| {
        let cached = load(conn, &mut docs, context).await?;
        let head = cached.head.clone();
        let cached = Cached::new(head.clone(), cached.doc.clone());
        write::write_snapshot(conn, context, &cached, ttl).await?;
        Ok(head)
    })?;
    Ok(head)
}

/// Releases the expired claims of each agent in `away` with one handover stub each, in
/// one revision by [`backend::SYSTEM_AGENT`] (idempotent: once released, nothing is left).
pub(crate) async fn hand_over_away(
    shared: &Shared,
    context: &str,
    away: &[String],
) -> Result<Option<u64>, TxError> {
    let (revision, _) = in_tx!(shared, |conn, docs| {
        let cached = load(conn, &mut docs, context).await?;
        let base = cached.head.revision;
        let request = backend::handover_request(context, &cached.doc, base, away, now_ms())?;
        let Some(request) = request else {
            return Ok(None);
        };
        // The store's own maintenance: not subject to agents' ownership rules.
        let open = Ownership::default();
        let rules = PushRules {
            ownership: &open,
            enforce_claims: false,
            stage_recent: false,
            stamp_seed_fields: false,
        };
        let r = push_in_tx(
            conn,
            &mut docs,
            shared,
            context,
            request,
            Instant::now(),
            rules,
        )
        .await?;
        if r.applied.is_empty() {
            return Ok(None);
        }
        write::notify_head(conn, &docs, context).await?;
        Ok(Some(r.revision))
    })?;
    Ok(revision)
}

fn token_of(row: &tokio_postgres::Row) -> TokenInfo {
    TokenInfo {
        id: row.get(0),
        agent: row.get(1),
        label: row.get(2),
        created_ms: row.get::<_, i64>(3).max(0) as u64,
        revoked_ms: row.get::<_, Option<i64>>(4).map(|v| v.max(0) as u64),
        // An unknown role (a newer ctxsync's) reads as the least powerful one.
        role: row.get::<_, String>(5).parse().unwrap_or(Role::Viewer),
    }
}

pub(crate) async fn create_token(
    conn: &mut Conn,
    agent: &str,
    secret: &str,
    label: &str,
    role: Role,
) -> Result<TokenInfo, TxError> {
    let hash = backend::hash_secret(secret);
    let id = backend::token_id(&hash);
    let created_ms = now_ms();
    conn.execute(
        "INSERT INTO tokens(id, hash, agent, label, created_ms, role) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&id, &hash, &agent, &label, &(created_ms as i64), &role.as_str()],
    )
    .await?;
    Ok(TokenInfo {
        id,
        agent: agent.to_owned(),
        label: label.to_owned(),
        created_ms,
        revoked_ms: None,
        role,
    })
}

pub(crate) async fn list_tokens(conn: &mut Conn) -> Result<Vec<TokenInfo>, TxError> {
    let rows = conn
        .query(
            "SELECT id, agent, label, created_ms, revoked_ms, role FROM tokens ORDER BY created_ms, id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(token_of).collect())
}

pub(crate) async fn revoke_token(conn: &mut Conn, id: &str) -> Result<TokenInfo, TxError> {
    conn.execute(
        "UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
        &[&id, &(now_ms() as i64)],
    )
    .await?;
    let row = conn
        .query_opt(
            "SELECT id, agent, label, created_ms, revoked_ms, role FROM tokens WHERE id = $1",
            &[&id],
        )
        .await?;
    match row.map(|r| token_of(&r)) {
        Some(info) if info.revoked_ms.is_some() => Ok(info),
        _ => Err(StoreError::NoSuchToken(id.to_owned()).into()),
    }
}

/// The live token whose secret is `secret`: read from the database on every call, so a
/// revocation through any server is refused by every other at its next request.
pub(crate) async fn authenticate(
    conn: &mut Conn,
    secret: &str,
) -> Result<Option<TokenInfo>, TxError> {
    let hash = backend::hash_secret(secret);
    let row = conn
        .query_opt(
            "SELECT id, agent, label, created_ms, revoked_ms, role FROM tokens
             WHERE hash = $1 AND revoked_ms IS NULL",
            &[&hash],
        )
        .await?;
    Ok(row.map(|r| token_of(&r)))
}

/// `archive run`: archival now, every rule's list cut to its newest `keep`.
pub(crate) async fn archive_run(
    shared: &Shared,
    context: &str,
) -> Result<Option<PushResponse>, TxError> {
    let (response, _) = in_tx!(shared, |conn, docs| {
        read::head(conn, context).await?;
        let r = crate::lifecycle::archive_in_tx(conn, &mut docs, shared, context, Some(0)).await?;
        if r.is_some() {
            write::notify_head(conn, &docs, context).await?;
        }
        Ok(r)
    })?;
    Ok(response)
}

/// `compact`: the op log below `retain` dropped, the horizon moved.
pub(crate) async fn compact(
    shared: &Shared,
    context: &str,
    retain: &ctxsync_store::Retention,
) -> Result<ctxsync_store::CompactReport, TxError> {
    let (report, _) = in_tx!(shared, |conn, docs| {
        let head = read::head(conn, context).await?;
        crate::lifecycle::compact_in_tx(conn, context, &head, retain).await
    })?;
    Ok(report)
}
