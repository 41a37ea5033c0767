//! Bearer tokens of the server: each acts as one agent. Only a BLAKE3 hash of the secret
//! is stored, so a copy of the database does not hand out working tokens.

use rusqlite::{params, Connection, OptionalExtension};

use super::now_ms;
use crate::error::StoreError;
use crate::types::TokenInfo;

/// The file whose identity changes with every token change: `<db>-tokens`. Replaced (new
/// inode) on each change, so a `stat` tells a reader whether its cache is stale.
fn epoch_file(db: &std::path::Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-tokens");
    std::path::PathBuf::from(name)
}

/// Marks a token change for every process sharing the store. Called after the change
/// committed; if this fails, servers fall back to checking every request (see `epoch`).
pub(crate) fn bump_epoch(db: &std::path::Path) {
    let file = epoch_file(db);
    let Some(dir) = file.parent() else {
        return;
    };
    let result = tempfile::Builder::new()
        .prefix(".ctxsync-tokens-")
        .tempfile_in(dir)
        .and_then(|tmp| {
            std::io::Write::write_all(&mut tmp.as_file(), now_ms().to_string().as_bytes())?;
            tmp.persist(&file).map_err(|e| e.error)?;
            Ok(())
        });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot mark the token change; servers re-check every token");
        let _ = std::fs::remove_file(&file);
    }
}

/// The identity (inode, size, mtime) of the epoch file; `None` when it does not exist,
/// which callers must treat as "cannot cache".
pub(crate) fn epoch(db: &std::path::Path) -> Option<u128> {
    let m = std::fs::metadata(epoch_file(db)).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m) as u128;
    #[cfg(not(unix))]
    let ino = 0u128;
    Some(mtime ^ (ino << 64) ^ m.len() as u128)
}

use crate::backend::hash_secret;

fn row_to_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.get(0)?,
        agent: row.get(1)?,
        label: row.get(2)?,
        created_ms: row.get::<_, i64>(3)? as u64,
        revoked_ms: row.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        // An unknown role (a newer ctxsync's) reads as the least powerful one.
        role: row
            .get::<_, String>(5)?
            .parse()
            .unwrap_or(ctxsync_core::records::Role::Viewer),
    })
}

const COLUMNS: &str = "id, agent, label, created_ms, revoked_ms, role";

pub(crate) fn create(
    conn: &Connection,
    agent: &str,
    secret: &str,
    label: &str,
    role: ctxsync_core::records::Role,
) -> Result<TokenInfo, StoreError> {
    let hash = hash_secret(secret);
    // The public id is a prefix of the hash: enough to name a token in `token revoke`,
    // useless for authenticating.
    let id = crate::backend::token_id(&hash);
    let created_ms = now_ms();
    conn.execute(
        "INSERT INTO tokens(id, hash, agent, label, created_ms, role)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, hash, agent, label, created_ms as i64, role.as_str()],
    )?;
    Ok(TokenInfo {
        id,
        agent: agent.to_owned(),
        label: label.to_owned(),
        created_ms,
        revoked_ms: None,
        role,
    })
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<TokenInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tokens ORDER BY created_ms, id"
    ))?;
    let rows = stmt.query_map([], row_to_info)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn revoke(conn: &Connection, id: &str) -> Result<TokenInfo, StoreError> {
    let changed = conn.execute(
        "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
        params![id, now_ms() as i64],
    )?;
    let info = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"),
            [id],
            row_to_info,
        )
        .optional()?;
    match info {
        Some(info) if changed == 1 || info.revoked_ms.is_some() => Ok(info),
        _ => Err(StoreError::NoSuchToken(id.to_owned())),
    }
}

/// The live token whose secret is `secret`, if any.
pub(crate) fn authenticate(
    conn: &Connection,
    secret: &str,
) -> Result<Option<TokenInfo>, StoreError> {
    let hash = hash_secret(secret);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_ms IS NULL"
    ))?;
    Ok(stmt.query_row([hash], row_to_info).optional()?)
}
