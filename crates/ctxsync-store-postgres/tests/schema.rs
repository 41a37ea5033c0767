//! The embedded migrations on a real PostgreSQL (CTXSYNC_TEST_PG_URL): each test creates
//! its own database and drops it, so tests run in parallel. Skipped, saying so, when the
//! variable is unset.

use ctxsync_store_postgres::{migrate_url, PgError, SCHEMA_VERSION};

/// A database of its own for one test, dropped at the end.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sql(url: &str, statement: &str) -> Vec<String> {
    runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        let rows = client.simple_query(statement).await.unwrap();
        drop(client);
        let _ = driver.await;
        rows.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect()
    })
}

impl TestDb {
    fn new() -> Option<Self> {
        let Ok(admin) = std::env::var("CTXSYNC_TEST_PG_URL") else {
            eprintln!("SKIPPED: CTXSYNC_TEST_PG_URL is not set (PostgreSQL tests did not run)");
            return None;
        };
        let name = format!("ctxsync_t_{}", ulid::Ulid::new().to_string().to_lowercase());
        sql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        sql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

#[test]
fn migrations_run_once_and_record_the_version() {
    let Some(db) = TestDb::new() else { return };
    assert_eq!(
        migrate_url(&db.url).unwrap(),
        0,
        "a new database starts at 0"
    );
    let tables = sql(
        &db.url,
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
         WHERE table_schema = 'public'",
    );
    assert_eq!(
        tables,
        vec![
            "archive,conflicts,contexts,ctxsync_meta,oplog,presence,requests,snapshots,sync_log,tokens"
                .to_string()
        ]
    );
    // Opening again changes nothing and says it was current.
    assert_eq!(migrate_url(&db.url).unwrap(), SCHEMA_VERSION);
    assert_eq!(
        sql(
            &db.url,
            "SELECT value FROM ctxsync_meta WHERE key = 'schema_version'"
        ),
        vec![SCHEMA_VERSION.to_string()]
    );
}

#[test]
fn servers_starting_together_migrate_once() {
    let Some(db) = TestDb::new() else { return };
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            std::thread::spawn(move || migrate_url(&url).unwrap())
        })
        .collect();
    let mut before: Vec<i64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    before.sort_unstable();
    assert_eq!(
        before,
        vec![0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]
    );
}

#[test]
fn a_database_of_a_newer_ctxsync_is_refused_and_left_alone() {
    let Some(db) = TestDb::new() else { return };
    migrate_url(&db.url).unwrap();
    let newer = SCHEMA_VERSION + 1;
    sql(
        &db.url,
        &format!("UPDATE ctxsync_meta SET value = '{newer}' WHERE key = 'schema_version'"),
    );
    let e = migrate_url(&db.url).unwrap_err();
    assert!(
        matches!(e, PgError::TooNew { found, .. } if found == newer),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade ctxsync"), "{e}");
    assert_eq!(
        sql(
            &db.url,
            "SELECT value FROM ctxsync_meta WHERE key = 'schema_version'"
        ),
        vec![newer.to_string()]
    );
}

#[test]
fn an_unreachable_database_is_an_error_not_a_panic() {
    // Port 1 on loopback: nothing listens there.
    let e = migrate_url("postgres://postgres@127.0.0.1:1/none").unwrap_err();
    assert!(matches!(e, PgError::Db(_)), "{e}");
}
