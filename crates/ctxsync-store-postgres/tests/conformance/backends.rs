//! The two backends the suite runs on, each on storage of its own: a temporary SQLite
//! file, or a PostgreSQL database created for the test and dropped after it.

use ctxsync_store::{SqliteStore, Store, StoreOptions};
use ctxsync_store_postgres::PgStore;

/// A backend's storage for one test: stores opened on it share it (as processes or
/// servers do).
pub trait Backend {
    fn open(&self, options: StoreOptions) -> Box<dyn Store>;
    /// Moves a context's horizon directly (for the 410 case, independent of compaction).
    fn set_horizon(&self, context: &str, horizon: u64);
}

pub struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for Sqlite {
    fn open(&self, options: StoreOptions) -> Box<dyn Store> {
        Box::new(SqliteStore::open(self.dir.path().join("ctx.db"), options).unwrap())
    }

    fn set_horizon(&self, context: &str, horizon: u64) {
        let conn = rusqlite::Connection::open(self.dir.path().join("ctx.db")).unwrap();
        conn.execute(
            "UPDATE contexts SET horizon = ?1 WHERE name = ?2",
            rusqlite::params![horizon as i64, context],
        )
        .unwrap();
    }
}

pub struct Postgres {
    admin: String,
    name: String,
    url: String,
}

fn sql(url: &str, statement: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        client.batch_execute(statement).await.unwrap();
        drop(client);
        let _ = driver.await;
    });
}

impl Postgres {
    /// A database of its own, or `None` (said on stderr) without `CTXSYNC_TEST_PG_URL`.
    pub fn new() -> Option<Self> {
        let Ok(admin) = std::env::var("CTXSYNC_TEST_PG_URL") else {
            eprintln!("skipped: CTXSYNC_TEST_PG_URL unset (PostgreSQL tests did not run)");
            return None;
        };
        let name = format!("ctxsync_c_{}", ulid::Ulid::new().to_string().to_lowercase());
        sql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        sql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

impl Backend for Postgres {
    fn open(&self, options: StoreOptions) -> Box<dyn Store> {
        Box::new(PgStore::open(&self.url, options).unwrap())
    }

    fn set_horizon(&self, context: &str, horizon: u64) {
        sql(
            &self.url,
            &format!("UPDATE contexts SET horizon = {horizon} WHERE name = '{context}'"),
        );
    }
}
