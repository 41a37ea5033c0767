//! Readers' copy of the newest document is kept current from the writer's edits (not by a
//! copy per commit): reads interleaved with concurrent pushes always return a document
//! that matches the checksum and revision they report, never go back in time, and equal
//! what SQLite rebuilds from snapshots and the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ctxsync_core::{checksum, Change, Level, PushRequest, Strategy};
use ctxsync_store::{SqliteStore, Store, StoreOptions};
use serde_json::json;

fn push(store: &SqliteStore, agent: &str, changes: serde_json::Value) -> u64 {
    store
        .push(
            "default",
            PushRequest {
                agent: agent.into(),
                level: Level::Checkpoint,
                base_revision: None,
                request_id: None,
                strategy: Strategy::Merge,
                summary: String::new(),
                changes: Change::list_from_json(&changes).unwrap(),
            },
        )
        .unwrap()
        .revision
}

#[test]
fn reads_during_pushes_see_consistent_documents() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(
            dir.path().join("ctx.db"),
            StoreOptions {
                snapshot_every: 25,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    store
        .create_context("default", json!({"tasks": [], "counters": {}}))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..60 {
                    let agent = format!("agent-{w}");
                    match i % 4 {
                        0 => push(&store, &agent, json!([{"path": "tasks[-]", "to": {"id": format!("t{w}-{i}"), "n": i}}])),
                        1 => push(&store, &agent, json!([{"path": format!("counters.w{w}"), "to": i}])),
                        // An insert at the front moves every element after it.
                        2 => push(&store, &agent, json!([{"op": "add", "path": "/tasks/0", "value": {"id": format!("f{w}-{i}")}}])),
                        _ => push(&store, &agent, json!([{"op": "remove", "path": "/tasks/0"}])),
                    };
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut last = 0;
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads < 5 {
                    let snap = store.read("default", None).unwrap();
                    assert!(
                        snap.revision >= last,
                        "went back from {last} to {}",
                        snap.revision
                    );
                    assert_eq!(
                        checksum(&snap.document),
                        snap.checksum,
                        "at {}",
                        snap.revision
                    );
                    last = snap.revision;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 5);
    }
    let head = store.head("default").unwrap();
    assert_eq!(head.revision, 240);
    let newest = store.read("default", None).unwrap();
    assert_eq!(newest.checksum, head.checksum);
    // Reopened, the document comes from SQLite alone: the same.
    drop(store);
    let store = SqliteStore::open(dir.path().join("ctx.db"), StoreOptions::default()).unwrap();
    let rebuilt = store.read("default", None).unwrap();
    assert_eq!(rebuilt.document, newest.document);
    assert_eq!(rebuilt.checksum, checksum(&newest.document));
    assert!(store.verify("default").unwrap().ok);
}
