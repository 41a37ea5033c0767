//! Hearing other stores' commits on real PostgreSQL (CTXSYNC_TEST_PG_URL, a database of
//! its own): a store watching commits is told of a push made through another store (the
//! NOTIFY sent in the committing transaction), and after its listening connection is
//! killed with `pg_terminate_backend` it reconnects, reports every head once, and hears
//! later commits again. Skipped, saying so, when the variable is unset.

use std::sync::mpsc;
use std::time::Duration;

use ctxsync_core::{Change, Level, PushRequest, Strategy};
use ctxsync_store::{Store, StoreOptions};
use ctxsync_store_postgres::PgStore;
use serde_json::json;

/// Generous: a hint that never comes fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(60);

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

fn push(store: &dyn Store, value: u64) -> u64 {
    store
        .push(
            "default",
            PushRequest {
                agent: "a".into(),
                level: Level::Checkpoint,
                base_revision: None,
                request_id: None,
                strategy: Strategy::Merge,
                summary: String::new(),
                changes: Change::list_from_json(&json!([{"path": "n", "to": value}])).unwrap(),
            },
        )
        .unwrap()
        .revision
}

/// The next hint for `default` at `head` (hints for other heads, such as repeats, are
/// skipped; a hint above it fails).
fn expect(hints: &mpsc::Receiver<(String, u64)>, head: u64) {
    loop {
        let (context, got) = hints.recv_timeout(WAIT).expect("no hint came");
        assert_eq!(context, "default");
        assert!(got <= head, "hint {got} before {head}");
        if got == head {
            return;
        }
    }
}

#[test]
fn a_watching_store_hears_other_stores_commits_and_reconnects() {
    let Ok(admin) = std::env::var("CTXSYNC_TEST_PG_URL") else {
        eprintln!("skipped: CTXSYNC_TEST_PG_URL unset (PostgreSQL tests did not run)");
        return;
    };
    let name = format!("ctxsync_l_{}", ulid::Ulid::new().to_string().to_lowercase());
    sql(&admin, &format!("CREATE DATABASE {name}"));
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    {
        let writer = PgStore::open(&url, StoreOptions::default()).unwrap();
        writer.create_context("default", json!({"n": 0})).unwrap();
        let watcher = PgStore::open(&url, StoreOptions::default()).unwrap();
        let (tx, hints) = mpsc::channel();
        let hook_tx = std::sync::Mutex::new(tx);
        assert!(
            watcher.watch_commits(std::sync::Arc::new(move |context: &str, head| {
                if let Ok(tx) = hook_tx.lock() {
                    let _ = tx.send((context.to_owned(), head));
                }
            }))
        );
        // On connecting it reports the head as it is; then only a NOTIFY tells of more.
        expect(&hints, 0);
        assert_eq!(push(&writer, 1), 1);
        expect(&hints, 1);
        assert_eq!(push(&writer, 2), 2);
        expect(&hints, 2);

        // Kill the listening connection: the listener reconnects and reports the head.
        sql(
            &url,
            &format!(
                "DO $$ BEGIN
                   IF (SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                       WHERE datname = '{name}' AND application_name = '{}') = 0 THEN
                     RAISE EXCEPTION 'no listening connection to kill';
                   END IF;
                 END $$",
                ctxsync_store_postgres::listen::APPLICATION_NAME
            ),
        );
        assert_eq!(push(&writer, 3), 3);
        expect(&hints, 3);
        assert_eq!(push(&writer, 4), 4);
        expect(&hints, 4);
    }
    sql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}
