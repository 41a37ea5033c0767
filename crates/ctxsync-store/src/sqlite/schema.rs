//! The SQLite schema and the connection settings every connection gets.

use rusqlite::Connection;

use super::Synchronous;

pub(crate) const SCHEMA_VERSION: i64 = 6;

/// The first schema whose checksums are structural (`b3m1`, DESIGN §7).
const STRUCTURAL_CHECKSUMS: i64 = 5;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS contexts(
    name       TEXT PRIMARY KEY,
    revision   INTEGER NOT NULL,
    checksum   TEXT NOT NULL,
    size       INTEGER NOT NULL,
    horizon    INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per revision; `edits` holds the canonical edits with old and new values.
CREATE TABLE IF NOT EXISTS oplog(
    context    TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    agent      TEXT NOT NULL,
    level      TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    summary    TEXT NOT NULL,
    request_id TEXT,
    edits      TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    -- the sections the revision wrote, a JSON array (schema 4): the stale-view notice
    -- reads these instead of the edits
    sections   TEXT,
    PRIMARY KEY(context, revision)
) WITHOUT ROWID;
-- Critical revisions, for the unseen-critical notices an agent's hook asks for on every
-- prompt (schema 4).
CREATE INDEX IF NOT EXISTS oplog_critical ON oplog(context, revision) WHERE level = 'critical';

-- Presence (schema 4): per agent of a context, the newest revision it has seen, when it
-- was last seen, the newest revision up to which it was shown critical revisions, and
-- when it was last handed over as away.
CREATE TABLE IF NOT EXISTS presence(
    context        TEXT NOT NULL,
    agent          TEXT NOT NULL,
    seen_revision  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL,
    critical_shown INTEGER NOT NULL,
    PRIMARY KEY(context, agent)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS snapshots(
    context  TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc      TEXT NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY(context, revision)
) WITHOUT ROWID;

-- Idempotency keys: a replayed request_id gets the stored answer.
CREATE TABLE IF NOT EXISTS requests(
    context    TEXT NOT NULL,
    request_id TEXT NOT NULL,
    response   TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    -- checksum of the request without its key (schema 3): a reused key with other
    -- changes is refused instead of answered with the first request's result
    fingerprint TEXT,
    PRIMARY KEY(context, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_by_time ON requests(ts_ms);

CREATE TABLE IF NOT EXISTS conflicts(
    id          INTEGER PRIMARY KEY,
    context     TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    path        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open',
    resolution  TEXT,
    created_ms  INTEGER NOT NULL,
    resolved_ms INTEGER
);
CREATE INDEX IF NOT EXISTS conflicts_open ON conflicts(context, status);

CREATE TABLE IF NOT EXISTS sync_log(
    id             INTEGER PRIMARY KEY,
    context        TEXT NOT NULL,
    agent          TEXT NOT NULL,
    level          TEXT NOT NULL,
    ts_ms          INTEGER NOT NULL,
    duration_us    INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    conflict_paths TEXT
);
CREATE INDEX IF NOT EXISTS sync_log_by_time ON sync_log(context, ts_ms);

-- Archived list entries (schema 6): what archival moved out of a list, never deleted.
-- `seq` numbers a context's archive in archival order; `revision` is the archival
-- revision, whose op-log row holds the same entries as removals.
CREATE TABLE IF NOT EXISTS archive(
    context  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    list     TEXT NOT NULL,
    entry_id TEXT,
    revision INTEGER NOT NULL,
    ts_ms    INTEGER NOT NULL,
    entry    TEXT NOT NULL,
    PRIMARY KEY(context, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS archive_by_id ON archive(context, entry_id);

-- Server bearer tokens (schema 2): only the BLAKE3 hash of a secret is kept.
CREATE TABLE IF NOT EXISTS tokens(
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    agent      TEXT NOT NULL,
    label      TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    -- agent | admin | viewer (schema 3)
    role       TEXT NOT NULL DEFAULT 'agent'
);
";

/// Columns added after a table was first created: (table, column, definition).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("requests", "fingerprint", "TEXT"),
    ("tokens", "role", "TEXT NOT NULL DEFAULT 'agent'"),
    ("oplog", "sections", "TEXT"),
];

/// Settings for every connection: WAL so readers never block the writer, a generous busy
/// timeout so several processes on one file wait for each other instead of failing.
pub(crate) fn configure(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Creates the tables (idempotent) and records the schema version.
/// Skipped (no write lock taken) when the file is already at this version, so opening a
/// store is cheap for the many short CLI processes that share it.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            format!(
                "this store has schema version {version}, written by a newer ctxsync \
                 (this one reads up to {SCHEMA_VERSION}); upgrade ctxsync"
            )
            .into(),
        ));
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    for (table, column, definition) in ADDED_COLUMNS {
        let present: bool = tx
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !present {
            tx.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    if version < STRUCTURAL_CHECKSUMS {
        convert_head_checksums(&tx)?;
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?1)",
        [SCHEMA_VERSION.to_string()],
    )?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Moves each context's head checksum to the structural format, so what pulls answer is
/// what clients compute. Op-log rows and snapshots keep the checksums they were written
/// with (`verify` and reads accept both formats), so history is not rewritten. A context
/// whose newest document cannot be rebuilt keeps its old checksum for `verify` to report.
fn convert_head_checksums(tx: &Connection) -> rusqlite::Result<()> {
    let heads: Vec<(String, i64)> = tx
        .prepare("SELECT name, revision FROM contexts")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut converted = 0;
    for (name, revision) in &heads {
        match super::read::doc_at(tx, name, *revision as u64) {
            Ok(doc) => {
                tx.execute(
                    "UPDATE contexts SET checksum = ?1 WHERE name = ?2",
                    rusqlite::params![ctxsync_core::checksum(&doc), name],
                )?;
                converted += 1;
            }
            Err(e) => tracing::warn!(
                context = %name,
                error = %e,
                "head checksum left in the older format: the document cannot be rebuilt (run `ctxsync verify`)"
            ),
        }
    }
    if converted > 0 {
        // Said once, where the CLI shows it (warnings are on by default).
        tracing::warn!(
            "store upgraded: the head checksums of {converted} context(s) are now structural (b3m1); \
             older op-log rows and snapshots keep theirs, which verify accepts"
        );
    }
    Ok(())
}
