//! The PostgreSQL schema as numbered migrations, embedded in the binary. Documents, edits
//! and answers are stored as TEXT, not `jsonb`: `jsonb` reorders keys, and what was
//! written must read back byte for byte (checksums, list order).

use tokio_postgres::Client;

use crate::PgError;

/// The newest schema this build knows.
pub const SCHEMA_VERSION: i64 = 2;

/// `(version, SQL)`, applied in order, each once.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "
CREATE TABLE contexts(
    name       TEXT PRIMARY KEY,
    revision   BIGINT NOT NULL,
    checksum   TEXT NOT NULL,
    size       BIGINT NOT NULL,
    horizon    BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);
CREATE TABLE oplog(
    context    TEXT NOT NULL REFERENCES contexts(name),
    revision   BIGINT NOT NULL,
    agent      TEXT NOT NULL,
    level      TEXT NOT NULL,
    ts_ms      BIGINT NOT NULL,
    summary    TEXT NOT NULL,
    request_id TEXT,
    edits      TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    sections   TEXT,
    PRIMARY KEY(context, revision)
);
CREATE INDEX oplog_critical ON oplog(context, revision) WHERE level = 'critical';
CREATE TABLE presence(
    context        TEXT NOT NULL,
    agent          TEXT NOT NULL,
    seen_revision  BIGINT NOT NULL,
    last_seen_ms   BIGINT NOT NULL,
    critical_shown BIGINT NOT NULL,
    PRIMARY KEY(context, agent)
);
CREATE TABLE snapshots(
    context  TEXT NOT NULL REFERENCES contexts(name),
    revision BIGINT NOT NULL,
    doc      TEXT NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY(context, revision)
);
CREATE TABLE requests(
    context     TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    response    TEXT NOT NULL,
    ts_ms       BIGINT NOT NULL,
    fingerprint TEXT,
    PRIMARY KEY(context, request_id)
);
CREATE INDEX requests_by_time ON requests(ts_ms);
CREATE TABLE conflicts(
    id          BIGSERIAL PRIMARY KEY,
    context     TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    agent       TEXT NOT NULL,
    path        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open',
    resolution  TEXT,
    created_ms  BIGINT NOT NULL,
    resolved_ms BIGINT
);
CREATE INDEX conflicts_open ON conflicts(context, status);
CREATE TABLE sync_log(
    id             BIGSERIAL PRIMARY KEY,
    context        TEXT NOT NULL,
    agent          TEXT NOT NULL,
    level          TEXT NOT NULL,
    ts_ms          BIGINT NOT NULL,
    duration_us    BIGINT NOT NULL,
    outcome        TEXT NOT NULL,
    conflict_paths TEXT
);
CREATE INDEX sync_log_by_time ON sync_log(context, ts_ms);
CREATE TABLE tokens(
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    agent      TEXT NOT NULL,
    label      TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    role       TEXT NOT NULL DEFAULT 'agent'
);
",
    ),
    (
        2,
        "
-- What archival moved out of a context's lists (DESIGN §15), never deleted; `seq`
-- numbers a context's archive in archival order, `revision` is the archival revision.
CREATE TABLE archive(
    context  TEXT NOT NULL REFERENCES contexts(name),
    seq      BIGINT NOT NULL,
    list     TEXT NOT NULL,
    entry_id TEXT,
    revision BIGINT NOT NULL,
    ts_ms    BIGINT NOT NULL,
    entry    TEXT NOT NULL,
    PRIMARY KEY(context, seq)
);
CREATE INDEX archive_by_id ON archive(context, entry_id);
",
    ),
];

/// Any fixed number: the advisory lock that serializes migrations across servers
/// starting at once on one database.
const MIGRATION_LOCK: i64 = 0x0063_7478_7379_6e63; // "ctxsync"

/// Brings the database to [`SCHEMA_VERSION`] in one transaction (all steps or none),
/// under a transaction-scoped advisory lock so servers starting together do not race;
/// refuses a database whose version is newer than this build's. Returns the version the
/// database had before.
pub async fn migrate(client: &mut Client) -> Result<i64, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ctxsync_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )
    .await?;
    let found: i64 = match tx
        .query_opt(
            "SELECT value FROM ctxsync_meta WHERE key = 'schema_version'",
            &[],
        )
        .await?
    {
        // A value that is not a number is not ours to read.
        Some(row) => row.get::<_, String>(0).parse().unwrap_or(i64::MAX),
        None => 0,
    };
    if found > SCHEMA_VERSION {
        return Err(PgError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    tx.execute(
        "INSERT INTO ctxsync_meta(key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&SCHEMA_VERSION.to_string()],
    )
    .await?;
    tx.commit().await?;
    Ok(found)
}
