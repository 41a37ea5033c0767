//! A store written by ctxsync before the structural checksum (schema 4, checksums over
//! the canonical JSON; `tests/fixtures/v4-store.db`, written by that release's CLI: 132
//! revisions, snapshots at 0 and 100) opens, verifies, and goes on with structural
//! checksums.

use ctxsync_core::{checksum, legacy_checksum, Change, Level, PushRequest, Strategy};
use ctxsync_store::{SqliteStore, Store, StoreOptions};
use serde_json::json;

fn old_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctxsync.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v4-store.db"),
        &path,
    )
    .unwrap();
    (dir, path)
}

#[test]
fn a_store_with_the_older_checksums_verifies_and_continues() {
    let (_dir, path) = old_store();
    // What the fixture holds: a head checksum in the older format.
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = raw
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4);
    }
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let report = store.verify("default").unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.revision, 132);
    assert_eq!(report.checked, 132);

    // The head was converted: a pull's checksum is what a client computes.
    let snap = store.read("default", None).unwrap();
    assert_eq!(snap.revision, 132);
    assert_eq!(snap.checksum, checksum(&snap.document));
    assert_ne!(snap.checksum, legacy_checksum(&snap.document));
    // Older revisions read exactly, with the structural checksum of what they were.
    let old = store.read("default", Some(120)).unwrap();
    assert_eq!(old.checksum, checksum(&old.document));
    // Their log rows keep the checksum they were written with.
    let entries = store.log_since("default", 131).unwrap();
    assert_eq!(
        entries[0].checksum,
        legacy_checksum(&store.read("default", Some(132)).unwrap().document)
    );

    // New revisions carry structural checksums; the whole history still verifies.
    let r = store
        .push(
            "default",
            PushRequest {
                agent: "builder".into(),
                level: Level::Checkpoint,
                base_revision: Some(132),
                request_id: None,
                strategy: Strategy::Merge,
                summary: "after the upgrade".into(),
                changes: Change::list_from_json(
                    &json!([{"path": "project_state.active_tasks[id=task-9].status", "to": "done"}]),
                )
                .unwrap(),
            },
        )
        .unwrap();
    assert_eq!(r.revision, 133);
    let snap = store.read("default", None).unwrap();
    assert_eq!(r.checksum, checksum(&snap.document));
    assert_eq!(
        snap.document["project_state"]["active_tasks"][8]["status"],
        "done"
    );
    let report = store.verify("default").unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.checked, 133);
    drop(store);

    // Reopened: the schema is current, nothing is converted twice.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    assert!(store.verify("default").unwrap().ok);
}

#[test]
fn a_damaged_old_row_is_still_found() {
    let (_dir, path) = old_store();
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute(
            "UPDATE oplog SET checksum = ?1 WHERE context = 'default' AND revision = 50",
            [legacy_checksum(&json!({"not": "it"}))],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let report = store.verify("default").unwrap();
    assert!(!report.ok);
    assert_eq!(
        report.problems,
        vec!["revision 50: checksum mismatch".to_owned()]
    );
}
