//! The SQLite store on real files: group commit, gap-free revisions, replay, idempotency,
//! deferred conflicts, revert, verify and reopening.

use std::sync::Arc;

use ctxsync_core::{Change, Level, PushRequest, Strategy};
use ctxsync_store::{Actor, HistoryFilter, Prefer, SqliteStore, Store, StoreError, StoreOptions};
use serde_json::{json, Value};

fn store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("ctx.db"), StoreOptions::default()).unwrap()
}

fn request(agent: &str, base: Option<u64>, strategy: Strategy, changes: Value) -> PushRequest {
    PushRequest {
        agent: agent.into(),
        level: Level::Checkpoint,
        base_revision: base,
        request_id: None,
        strategy,
        summary: String::new(),
        changes: Change::list_from_json(&changes).unwrap(),
    }
}

#[test]
fn concurrent_pushes_get_gap_free_revisions_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(
            dir.path().join("ctx.db"),
            StoreOptions {
                snapshot_every: 7,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    store
        .create_context("default", json!({"counters": {}}))
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut revisions = Vec::new();
                for i in 0..50 {
                    let r = store
                        .push(
                            "default",
                            request(
                                &format!("agent-{t}"),
                                None,
                                Strategy::Merge,
                                json!([{"path": format!("counters.t{t}"), "to": i}]),
                            ),
                        )
                        .unwrap();
                    assert_eq!(r.applied.len(), 1);
                    revisions.push(r.revision);
                }
                revisions
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=400).collect::<Vec<_>>(),
        "every push its own revision, no gaps"
    );
    let report = store.verify("default").unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.checked, 400);
    let doc = store.read("default", None).unwrap().document;
    for t in 0..8 {
        assert_eq!(doc["counters"][format!("t{t}")], 49);
    }
    // Any old revision reads back exactly (snapshot + replay).
    let at_10 = store.read("default", Some(10)).unwrap();
    let counted: usize = at_10.document["counters"].as_object().unwrap().len();
    assert!((1..=8).contains(&counted));
    assert_eq!(
        at_10.checksum,
        store
            .history("default", &HistoryFilter::default())
            .unwrap()
            .iter()
            .find(|e| e.revision == 10)
            .unwrap()
            .checksum
    );
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = store(&dir);
        s.create_context("default", json!({})).unwrap();
        s.push(
            "default",
            request("a", None, Strategy::Merge, json!([{"path": "x", "to": 1}])),
        )
        .unwrap();
    }
    let s = store(&dir);
    let snap = s.read("default", None).unwrap();
    assert_eq!(snap.revision, 1);
    assert_eq!(snap.document, json!({"x": 1}));
    assert!(matches!(
        s.create_context("default", json!({})),
        Err(StoreError::Exists(_))
    ));
    assert!(matches!(s.read("nope", None), Err(StoreError::NotFound(_))));
    assert!(matches!(
        s.read("default", Some(9)),
        Err(StoreError::Future { .. })
    ));
    assert!(matches!(
        s.create_context("Bad Name", json!({})),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_context("ok", json!([1])),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn request_id_replays_the_stored_answer() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.create_context("default", json!({"n": 0})).unwrap();
    let mut r = request("a", None, Strategy::Merge, json!([{"path": "n", "to": 1}]));
    r.request_id = Some("01JD0000000000000000000000".into());
    let first = s.push("default", r.clone()).unwrap();
    let second = s.push("default", r).unwrap();
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(first.revision, second.revision);
    assert_eq!(s.head("default").unwrap().revision, 1);
}

#[test]
fn deferred_conflicts_are_stored_and_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.create_context("default", json!({"phase": "design"}))
        .unwrap();
    s.push(
        "default",
        request(
            "planner",
            Some(0),
            Strategy::Merge,
            json!([{"path": "phase", "to": "build"}]),
        ),
    )
    .unwrap();
    let r = s
        .push(
            "default",
            request(
                "builder",
                Some(0),
                Strategy::Defer,
                json!([{"path": "phase", "to": "test"}]),
            ),
        )
        .unwrap();
    assert_eq!(r.applied.len(), 0);
    assert_eq!(r.conflicts.len(), 1);
    let open = s.open_conflicts("default").unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].conflict.yours, Some(json!("test")));
    assert_eq!(open[0].conflict.current, Some(json!("build")));
    let pushed = s
        .resolve_conflict(
            "default",
            open[0].id,
            Prefer::Mine,
            &Actor::agent("builder"),
        )
        .unwrap();
    assert_eq!(pushed.unwrap().revision, 2);
    assert_eq!(s.read("default", None).unwrap().document["phase"], "test");
    assert!(s.open_conflicts("default").unwrap().is_empty());
    assert!(matches!(
        s.resolve_conflict(
            "default",
            open[0].id,
            Prefer::Theirs,
            &Actor::agent("builder")
        ),
        Err(StoreError::NoSuchConflict(_))
    ));
}

#[test]
fn invalid_and_oversized_pushes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(
        dir.path().join("ctx.db"),
        StoreOptions {
            max_document_bytes: 1000,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    s.create_context("default", json!({"a": 1})).unwrap();
    let before = s.head("default").unwrap();
    let e = s
        .push(
            "default",
            request(
                "x",
                None,
                Strategy::Merge,
                json!([{"path": "a", "to": 2}, {"path": "b", "from": 1, "to": 2}]),
            ),
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    let e = s
        .push(
            "default",
            request(
                "x",
                None,
                Strategy::Merge,
                json!([{"path": "big", "to": "x".repeat(2000)}]),
            ),
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    assert_eq!(s.head("default").unwrap(), before);
    assert_eq!(s.read("default", None).unwrap().document, json!({"a": 1}));
    // The store still works after refusals.
    s.push(
        "default",
        request("x", None, Strategy::Merge, json!([{"path": "a", "to": 3}])),
    )
    .unwrap();
    assert!(s.verify("default").unwrap().ok);
}

#[test]
fn revert_makes_a_new_revision_equal_to_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.create_context("default", json!({"list": [{"id": "a"}], "x": 1}))
        .unwrap();
    s.push(
        "default",
        request(
            "p",
            None,
            Strategy::Merge,
            json!([{"path": "list[-]", "to": {"id": "b"}}, {"path": "y", "to": 2}]),
        ),
    )
    .unwrap();
    s.push(
        "default",
        request(
            "p",
            None,
            Strategy::Merge,
            json!([{"op": "remove", "path": "/x"}]),
        ),
    )
    .unwrap();
    let r = s.revert("default", 0, &Actor::agent("admin")).unwrap();
    assert_eq!(r.revision, 3);
    assert_eq!(r.checksum, s.read("default", Some(0)).unwrap().checksum);
    assert_eq!(
        s.read("default", None).unwrap().document,
        json!({"list": [{"id": "a"}], "x": 1})
    );
    assert!(s.verify("default").unwrap().ok);
    let history = s
        .history(
            "default",
            &HistoryFilter {
                last: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(history[0].summary, "revert to revision 0");
}
