//! Reading a whole SQLite store as rows ([`crate::backend::dump::Dump`]), for
//! `ctxsync migrate`, in one read transaction so the copy is of one moment.

use rusqlite::{params, Connection};

use super::SqliteStore;
use crate::backend::dump::*;
use crate::error::StoreError;

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

impl SqliteStore {
    /// Every context (with its whole op log, snapshots, idempotency keys, conflicts,
    /// sync log and presence) and every token.
    pub fn export(&self) -> Result<Dump, StoreError> {
        self.with_reader(|conn| {
            conn.execute_batch("BEGIN")?;
            let dump = export(conn);
            let _ = conn.execute_batch("COMMIT");
            dump
        })
    }
}

fn export(conn: &Connection) -> Result<Dump, StoreError> {
    let mut dump = Dump::default();
    let mut stmt = conn.prepare(
        "SELECT name, revision, checksum, size, horizon, created_ms FROM contexts ORDER BY name",
    )?;
    let heads = stmt
        .query_map([], |r| {
            Ok(ContextDump {
                name: r.get(0)?,
                revision: u(r.get(1)?),
                checksum: r.get(2)?,
                size: u(r.get(3)?),
                horizon: u(r.get(4)?),
                created_ms: u(r.get(5)?),
                ..ContextDump::default()
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for mut c in heads {
        let name = c.name.clone();
        c.oplog = conn
            .prepare(
                "SELECT revision, agent, level, ts_ms, summary, request_id, edits, checksum, sections
                 FROM oplog WHERE context = ?1 ORDER BY revision",
            )?
            .query_map(params![name], |r| {
                Ok(OplogRow {
                    revision: u(r.get(0)?),
                    agent: r.get(1)?,
                    level: r.get(2)?,
                    ts_ms: u(r.get(3)?),
                    summary: r.get(4)?,
                    request_id: r.get(5)?,
                    edits: r.get(6)?,
                    checksum: r.get(7)?,
                    sections: r.get(8)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        c.snapshots = conn
            .prepare(
                "SELECT revision, doc, checksum FROM snapshots WHERE context = ?1 ORDER BY revision",
            )?
            .query_map(params![name], |r| {
                Ok(SnapshotRow {
                    revision: u(r.get(0)?),
                    doc: r.get(1)?,
                    checksum: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        c.requests = conn
            .prepare(
                "SELECT request_id, response, ts_ms, fingerprint FROM requests WHERE context = ?1",
            )?
            .query_map(params![name], |r| {
                Ok(RequestRow {
                    request_id: r.get(0)?,
                    response: r.get(1)?,
                    ts_ms: u(r.get(2)?),
                    fingerprint: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        c.conflicts = conn
            .prepare(
                "SELECT id, revision, agent, path, detail, status, resolution, created_ms, resolved_ms
                 FROM conflicts WHERE context = ?1 ORDER BY id",
            )?
            .query_map(params![name], |r| {
                Ok(ConflictRow {
                    id: u(r.get(0)?),
                    revision: u(r.get(1)?),
                    agent: r.get(2)?,
                    path: r.get(3)?,
                    detail: r.get(4)?,
                    status: r.get(5)?,
                    resolution: r.get(6)?,
                    created_ms: u(r.get(7)?),
                    resolved_ms: r.get::<_, Option<i64>>(8)?.map(u),
                })
            })?
            .collect::<Result<_, _>>()?;
        c.sync_log = conn
            .prepare(
                "SELECT agent, level, ts_ms, duration_us, outcome, conflict_paths
                 FROM sync_log WHERE context = ?1 ORDER BY id",
            )?
            .query_map(params![name], |r| {
                Ok(SyncLogRow {
                    agent: r.get(0)?,
                    level: r.get(1)?,
                    ts_ms: u(r.get(2)?),
                    duration_us: u(r.get(3)?),
                    outcome: r.get(4)?,
                    conflict_paths: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        c.presence = conn
            .prepare(
                "SELECT agent, seen_revision, last_seen_ms, critical_shown FROM presence
                 WHERE context = ?1 ORDER BY agent",
            )?
            .query_map(params![name], |r| {
                Ok(PresenceRow {
                    agent: r.get(0)?,
                    seen_revision: u(r.get(1)?),
                    last_seen_ms: u(r.get(2)?),
                    critical_shown: u(r.get(3)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        c.archive = conn
            .prepare(
                "SELECT seq, list, entry_id, revision, ts_ms, entry FROM archive
                 WHERE context = ?1 ORDER BY seq",
            )?
            .query_map(params![name], |r| {
                Ok(ArchiveRow {
                    seq: u(r.get(0)?),
                    list: r.get(1)?,
                    entry_id: r.get(2)?,
                    revision: u(r.get(3)?),
                    ts_ms: u(r.get(4)?),
                    entry: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        dump.contexts.push(c);
    }
    dump.tokens = conn
        .prepare(
            "SELECT id, hash, agent, label, created_ms, revoked_ms, role FROM tokens ORDER BY created_ms, id",
        )?
        .query_map([], |r| {
            Ok(TokenRow {
                id: r.get(0)?,
                hash: r.get(1)?,
                agent: r.get(2)?,
                label: r.get(3)?,
                created_ms: u(r.get(4)?),
                revoked_ms: r.get::<_, Option<i64>>(5)?.map(u),
                role: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(dump)
}
