//! Writing a whole store ([`Dump`]) into the database, for `ctxsync migrate`: one
//! transaction (all or nothing), refused when the database already holds contexts or
//! tokens unless asked to replace them. The op log and the sync log go in as one
//! `INSERT … SELECT FROM unnest(…)` per context (arrays, one round trip), the rest row by
//! row; conflict ids are kept, and their sequence moved past them.

use std::sync::Arc;

use ctxsync_store::backend::dump::Dump;
use ctxsync_store::StoreError;

use crate::error::TxError;
use crate::pool::Conn;
use crate::store::PgStore;

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl PgStore {
    /// Writes `dump` into the database. `replace`: empty a non-empty database first
    /// (otherwise it is refused, `Invalid`, nothing written).
    pub fn import(&self, dump: Dump, replace: bool) -> Result<(), StoreError> {
        let shared = Arc::clone(self.shared());
        self.run_async(async move {
            let mut conn = shared.pool.get().await?;
            conn.begin().await?;
            let result = import(&mut conn, &dump, replace).await;
            conn.finish(result).await
        })?;
        self.forget_cached();
        Ok(())
    }
}

async fn import(conn: &mut Conn, dump: &Dump, replace: bool) -> Result<(), TxError> {
    let row = conn
        .query_opt(
            "SELECT (SELECT count(*) FROM contexts), (SELECT count(*) FROM tokens)",
            &[],
        )
        .await?;
    let (contexts, tokens): (i64, i64) = row.map_or((0, 0), |r| (r.get(0), r.get(1)));
    if contexts + tokens > 0 {
        if !replace {
            return Err(StoreError::Invalid(format!(
                "the target database is not empty ({contexts} contexts, {tokens} tokens); \
                 pass --force to replace what it holds"
            ))
            .into());
        }
        conn.client
            .batch_execute(
                "TRUNCATE oplog, snapshots, presence, requests, conflicts, sync_log, archive, tokens, contexts",
            )
            .await?;
    }
    for c in &dump.contexts {
        let name = c.name.as_str();
        conn.execute(
            "INSERT INTO contexts(name, revision, checksum, size, horizon, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &name,
                &i(c.revision),
                &c.checksum,
                &i(c.size),
                &i(c.horizon),
                &i(c.created_ms),
            ],
        )
        .await?;
        let o = &c.oplog;
        conn.execute(
            "INSERT INTO oplog(context, revision, agent, level, ts_ms, summary, request_id, edits,
                               checksum, sections)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[],
                                      $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])",
            &[
                &name,
                &o.iter().map(|r| i(r.revision)).collect::<Vec<_>>(),
                &o.iter().map(|r| r.agent.as_str()).collect::<Vec<_>>(),
                &o.iter().map(|r| r.level.as_str()).collect::<Vec<_>>(),
                &o.iter().map(|r| i(r.ts_ms)).collect::<Vec<_>>(),
                &o.iter().map(|r| r.summary.as_str()).collect::<Vec<_>>(),
                &o.iter()
                    .map(|r| r.request_id.as_deref())
                    .collect::<Vec<_>>(),
                &o.iter().map(|r| r.edits.as_str()).collect::<Vec<_>>(),
                &o.iter().map(|r| r.checksum.as_str()).collect::<Vec<_>>(),
                &o.iter().map(|r| r.sections.as_deref()).collect::<Vec<_>>(),
            ],
        )
        .await?;
        let s = &c.sync_log;
        conn.execute(
            "INSERT INTO sync_log(context, agent, level, ts_ms, duration_us, outcome, conflict_paths)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                      $6::text[], $7::text[])",
            &[
                &name,
                &s.iter().map(|r| r.agent.as_str()).collect::<Vec<_>>(),
                &s.iter().map(|r| r.level.as_str()).collect::<Vec<_>>(),
                &s.iter().map(|r| i(r.ts_ms)).collect::<Vec<_>>(),
                &s.iter().map(|r| i(r.duration_us)).collect::<Vec<_>>(),
                &s.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(),
                &s.iter().map(|r| r.conflict_paths.as_deref()).collect::<Vec<_>>(),
            ],
        )
        .await?;
        for snap in &c.snapshots {
            conn.execute(
                "INSERT INTO snapshots(context, revision, doc, checksum) VALUES ($1, $2, $3, $4)",
                &[&name, &i(snap.revision), &snap.doc, &snap.checksum],
            )
            .await?;
        }
        for r in &c.requests {
            conn.execute(
                "INSERT INTO requests(context, request_id, response, ts_ms, fingerprint)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &name,
                    &r.request_id,
                    &r.response,
                    &i(r.ts_ms),
                    &r.fingerprint,
                ],
            )
            .await?;
        }
        for k in &c.conflicts {
            conn.execute(
                "INSERT INTO conflicts(id, context, revision, agent, path, detail, status,
                                       resolution, created_ms, resolved_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &i(k.id),
                    &name,
                    &i(k.revision),
                    &k.agent,
                    &k.path,
                    &k.detail,
                    &k.status,
                    &k.resolution,
                    &i(k.created_ms),
                    &k.resolved_ms.map(i),
                ],
            )
            .await?;
        }
        for p in &c.presence {
            conn.execute(
                "INSERT INTO presence(context, agent, seen_revision, last_seen_ms, critical_shown)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &name,
                    &p.agent,
                    &i(p.seen_revision),
                    &i(p.last_seen_ms),
                    &i(p.critical_shown),
                ],
            )
            .await?;
        }
    }
    for c in &dump.contexts {
        let name = c.name.as_str();
        for a in &c.archive {
            conn.execute(
                "INSERT INTO archive(context, seq, list, entry_id, revision, ts_ms, entry)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &name,
                    &i(a.seq),
                    &a.list,
                    &a.entry_id,
                    &i(a.revision),
                    &i(a.ts_ms),
                    &a.entry,
                ],
            )
            .await?;
        }
    }
    for t in &dump.tokens {
        conn.execute(
            "INSERT INTO tokens(id, hash, agent, label, created_ms, revoked_ms, role)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &t.id,
                &t.hash,
                &t.agent,
                &t.label,
                &i(t.created_ms),
                &t.revoked_ms.map(i),
                &t.role,
            ],
        )
        .await?;
    }
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('conflicts', 'id'),
                       GREATEST((SELECT max(id) FROM conflicts), 1))",
        &[],
    )
    .await?;
    Ok(())
}
