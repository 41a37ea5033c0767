//! Inputs that once lost data, crashed the writer or slipped past ownership, each held
//! to the right error and to "nothing changed" on a real SQLite file.

use ctxsync_core::limits::MAX_DEPTH;
use ctxsync_core::{Change, Level, Op, OwnershipRule, Path, PushRequest, Segment, Strategy};
use ctxsync_store::{Actor, HistoryFilter, Role, SqliteStore, Store, StoreError, StoreOptions};
use serde_json::{json, Value};

fn open(dir: &tempfile::TempDir, options: StoreOptions) -> SqliteStore {
    SqliteStore::open(dir.path().join("ctx.db"), options).unwrap()
}

fn push(agent: &str, strategy: Strategy, changes: Value) -> PushRequest {
    PushRequest {
        agent: agent.into(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        strategy,
        summary: String::new(),
        changes: Change::list_from_json(&changes).unwrap(),
    }
}

/// `path` set to `value` in `context` by the builder, which must apply.
fn set(s: &SqliteStore, context: &str, path: &str, value: Value) {
    let r = s
        .push(
            context,
            push(
                "builder",
                Strategy::Merge,
                json!([{"path": path, "to": value}]),
            ),
        )
        .unwrap();
    assert_eq!(r.applied.len(), 1, "{r:?}");
}

fn owned() -> StoreOptions {
    StoreOptions {
        ownership: ctxsync_core::Ownership::new(vec![OwnershipRule {
            path: "decisions_log.**".into(),
            owners: vec!["planner".into()],
        }])
        .unwrap(),
        ..StoreOptions::default()
    }
}

#[test]
fn a_null_value_reads_back_verifies_reverts_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir, StoreOptions::default());
        s.create_context(
            "default",
            json!({"project_state": {"current_phase": "impl"}}),
        )
        .unwrap();
        let r = s
            .push(
                "default",
                push(
                    "builder",
                    Strategy::Merge,
                    json!([{"path": "project_state.current_phase", "to": null}]),
                ),
            )
            .unwrap();
        assert_eq!(r.revision, 1);
    }
    let s = open(&dir, StoreOptions::default());
    let doc = s.read("default", None).unwrap().document;
    assert_eq!(doc["project_state"]["current_phase"], Value::Null);
    assert!(s.verify("default").unwrap().ok);
    let history = s.history("default", &HistoryFilter::default()).unwrap();
    assert_eq!(history[0].edits[0].new, Some(Value::Null));
    let r = s.revert("default", 0, &Actor::agent("builder")).unwrap();
    assert_eq!(r.revision, 2);
    assert_eq!(
        s.read("default", None).unwrap().document["project_state"]["current_phase"],
        "impl"
    );
    assert!(s.verify("default").unwrap().ok);
}

#[test]
fn deep_paths_are_refused_without_overflowing_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, StoreOptions::default());
    s.create_context("default", json!({})).unwrap();
    for depth in [MAX_DEPTH + 1, 130, 5_000] {
        // Built segment by segment: what a library caller (not the parser) could send.
        let path = Path::from_segments(vec![Segment::Key("a".into()); depth]);
        let request = PushRequest {
            changes: vec![Change::set(path, json!(1))],
            ..push("builder", Strategy::Merge, json!([]))
        };
        let e = s.push("default", request).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{depth}: {e}");
    }
    assert_eq!(s.head("default").unwrap().revision, 0);
    assert_eq!(s.read("default", None).unwrap().document, json!({}));
    // The writer is still alive.
    set(&s, "default", "ok", json!(1));
}

#[test]
fn copy_amplification_is_refused_before_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, StoreOptions::default());
    s.create_context("default", json!({"seed": "x".repeat(4096)}))
        .unwrap();
    let changes: Vec<Value> = (0..60)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
        .collect();
    let e = s
        .push(
            "default",
            push("builder", Strategy::Merge, Value::Array(changes)),
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    assert_eq!(s.head("default").unwrap().revision, 0);
}

fn sql(dir: &tempfile::TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.path().join("ctx.db")).unwrap()
}

#[test]
fn a_tampered_snapshot_fails_verify_and_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let options = || StoreOptions {
        snapshot_every: 5,
        ..StoreOptions::default()
    };
    {
        let s = open(&dir, options());
        s.create_context("default", json!({"n": 0})).unwrap();
        for i in 1..=7 {
            set(&s, "default", "n", json!(i));
        }
    }
    // Rewrite the snapshot at revision 5, keeping its checksum column.
    sql(&dir)
        .execute(
            "UPDATE snapshots SET doc = '{\"n\":666,\"evil\":true}' WHERE revision = 5",
            [],
        )
        .unwrap();
    let s = open(&dir, options());
    let report = s.verify("default").unwrap();
    assert!(!report.ok);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("snapshot at revision 5")),
        "{report:?}"
    );
    assert_eq!(s.read("default", None).unwrap().document, json!({"n": 7}));
    assert_eq!(
        s.read("default", Some(5)).unwrap().document,
        json!({"n": 5})
    );
}

#[test]
fn one_unreadable_op_log_row_does_not_hide_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir, StoreOptions::default());
        s.create_context("default", json!({"n": 0})).unwrap();
        s.create_context("other", json!({"m": 0})).unwrap();
        for i in 1..=3 {
            set(&s, "default", "n", json!(i));
        }
    }
    sql(&dir)
        .execute(
            "UPDATE oplog SET edits = 'not json' WHERE context = 'default' AND revision = 2",
            [],
        )
        .unwrap();
    let s = open(&dir, StoreOptions::default());
    let history = s.history("default", &HistoryFilter::default()).unwrap();
    assert_eq!(history.len(), 3);
    assert!(
        history[1].summary.contains("unreadable"),
        "{:?}",
        history[1]
    );
    let report = s.verify("default").unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("revision 2: unreadable")),
        "{report:?}"
    );
    // Other contexts are untouched by it.
    assert_eq!(s.read("other", None).unwrap().document, json!({"m": 0}));
    set(&s, "other", "m", json!(1));
    // Revisions before the bad row still read; the newest document does not, and says how
    // to get it back: an admin's revert to a readable revision.
    assert_eq!(
        s.read("default", Some(1)).unwrap().document,
        json!({"n": 1})
    );
    let e = s.read("default", None).unwrap_err();
    assert!(e.to_string().contains("revision 2"), "{e}");
    let e = s
        .revert("default", 1, &Actor::agent("builder"))
        .unwrap_err();
    assert!(e.to_string().contains("admin"), "{e}");
    let admin = Actor {
        agent: "ops".into(),
        role: Role::Admin,
    };
    let r = s.revert("default", 1, &admin).unwrap();
    assert_eq!(r.revision, 4);
    assert_eq!(s.read("default", None).unwrap().document, json!({"n": 1}));
    set(&s, "default", "n", json!(5));
    drop(s);
    let s = open(&dir, StoreOptions::default());
    assert_eq!(s.read("default", None).unwrap().document, json!({"n": 5}));
    let report = s.verify("default").unwrap();
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.contains("revision 2") || p.contains("revision 3")),
        "only the bad row and what replayed after it: {report:?}"
    );
}

#[test]
fn a_deleted_wal_stops_writes_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("ctx.db-wal");
    {
        let s = open(&dir, StoreOptions::default());
        s.create_context("default", json!({"n": 0})).unwrap();
        set(&s, "default", "n", json!(1));
        assert!(s.writable().is_ok());
        std::fs::remove_file(&wal).unwrap();
        assert!(matches!(s.writable(), Err(StoreError::ReadOnly(_))));
        let e = s
            .push(
                "default",
                push("builder", Strategy::Merge, json!([{"path": "n", "to": 2}])),
            )
            .unwrap_err();
        assert!(matches!(e, StoreError::ReadOnly(_)), "{e}");
        // Reads go on.
        assert_eq!(s.read("default", None).unwrap().document, json!({"n": 1}));
        // Simulate the crash: the process ends without closing the store cleanly.
        std::mem::forget(s);
    }
    // What was acknowledged before the WAL vanished is in the database file itself.
    let s = open(&dir, StoreOptions::default());
    assert_eq!(s.read("default", None).unwrap().document, json!({"n": 1}));
    assert!(s.verify("default").unwrap().ok);
    assert!(s.writable().is_ok());
}

#[test]
fn a_truncated_wal_stops_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, StoreOptions::default());
    s.create_context("default", json!({"n": 0})).unwrap();
    set(&s, "default", "n", json!(1));
    let wal = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("ctx.db-wal"))
        .unwrap();
    wal.set_len(0).unwrap();
    let e = s.writable().unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = s
        .push(
            "default",
            push("builder", Strategy::Merge, json!([{"path": "n", "to": 2}])),
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::ReadOnly(_)), "{e}");
}

#[cfg(unix)]
#[test]
fn the_store_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, StoreOptions::default());
    s.create_context("default", json!({})).unwrap();
    for name in ["ctx.db", "ctx.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is {mode:o}");
    }
}

#[test]
fn a_move_of_an_owned_subtree_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, owned());
    s.create_context(
        "default",
        json!({"decisions_log": {"recent": [1]}, "notes": []}),
    )
    .unwrap();
    let r = s
        .push(
            "default",
            push(
                "builder",
                Strategy::Merge,
                json!([{"op": "move", "from": "/decisions_log/recent", "path": "/notes/-"}]),
            ),
        )
        .unwrap();
    assert_eq!(r.rejected.len(), 1);
    assert!(matches!(&r.rejected[0].reason[..], "not_owner"));
    assert_eq!(s.head("default").unwrap().revision, 0);
    // The unused op kind keeps this test honest about what it pushed.
    assert!(matches!(
        Change::list_from_json(&json!([{"op": "move", "from": "/a", "path": "/b"}])).unwrap()[0].op,
        Op::Move { .. }
    ));
}

#[test]
fn floats_read_back_exactly_so_checksums_hold() {
    // Found by the accepted-pushes property: without exact float parsing, this value
    // read back one ULP off and `verify` reported a checksum mismatch.
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir, StoreOptions::default());
        s.create_context("default", json!({"list": []})).unwrap();
        s.push(
            "default",
            push(
                "builder",
                Strategy::Merge,
                json!([{"path": "list[-]", "to": {"id": "t-0", "v": -987715.9401014323_f64}}]),
            ),
        )
        .unwrap();
    }
    let s = open(&dir, StoreOptions::default());
    assert!(s.verify("default").unwrap().ok);
    assert_eq!(
        s.read("default", None).unwrap().document["list"][0]["v"],
        json!(-987715.9401014323_f64)
    );
}
