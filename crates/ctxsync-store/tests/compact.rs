//! Compaction (DESIGN §15) on a real SQLite file: after 10,000 revisions with a retention
//! of 1,000 the op log holds at most 1,000 + one snapshot interval, the horizon's
//! document is exact, below it is `Gone`, and `verify` replays what is left clean.

use ctxsync_core::{Change, Level, Path, PushRequest, Strategy};
use ctxsync_store::{Retention, SqliteStore, Store, StoreError, StoreOptions, Synchronous};
use serde_json::json;

const SNAPSHOT_EVERY: u64 = 100;

fn set_n(n: u64) -> PushRequest {
    PushRequest {
        agent: "a".into(),
        level: Level::Periodic,
        base_revision: None,
        request_id: None,
        strategy: Strategy::Merge,
        summary: String::new(),
        changes: vec![Change::set(Path::parse("n").unwrap(), json!(n))],
    }
}

fn open(dir: &tempfile::TempDir, retain: Retention) -> SqliteStore {
    SqliteStore::open(
        &dir.path().join("ctx.db"),
        StoreOptions {
            // Durability is not what this test is about; 10,000 fsyncs are slow.
            synchronous: Synchronous::Normal,
            snapshot_every: SNAPSHOT_EVERY,
            retain,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn ten_thousand_revisions_with_retention_1000_keep_at_most_1000_plus_k() {
    let dir = tempfile::tempdir().unwrap();
    let retain = Retention {
        revisions: Some(1_000),
        max_age_ms: None,
    };
    let s = open(&dir, retain);
    s.create_context("default", json!({"n": 0})).unwrap();
    for n in 1..=10_000 {
        s.push("default", set_n(n)).unwrap();
    }
    let head = s.head("default").unwrap();
    assert_eq!(head.revision, 10_000);
    let kept = head.revision - head.horizon;
    assert!(kept >= 1_000, "the retention keeps 1,000: {head:?}");
    assert!(
        kept <= 1_000 + SNAPSHOT_EVERY,
        "at most 1,000 + K: {head:?}"
    );
    let log = s.log_since("default", head.horizon).unwrap();
    assert_eq!(log.len() as u64, kept);

    // At the horizon: exact. Below: gone, for reads, deltas and pushes alike.
    let at = s.read("default", Some(head.horizon)).unwrap();
    assert_eq!(at.document, json!({"n": head.horizon}));
    let below = head.horizon - 1;
    assert!(matches!(
        s.read("default", Some(below)),
        Err(StoreError::Gone { .. })
    ));
    assert!(matches!(
        s.log_since("default", below),
        Err(StoreError::Gone { .. })
    ));
    let mut stale = set_n(1);
    stale.base_revision = Some(below);
    assert!(matches!(
        s.push("default", stale),
        Err(StoreError::Gone { .. })
    ));
    let report = s.verify("default").unwrap();
    assert!(report.ok, "{report:?}");

    // The file stops growing with history: the rows are gone, not hidden.
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join("ctx.db")).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM oplog", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as u64, kept);
    let snapshots: i64 = conn
        .query_row("SELECT COUNT(*) FROM snapshots", [], |r| r.get(0))
        .unwrap();
    assert!(snapshots as u64 <= kept / SNAPSHOT_EVERY + 2, "{snapshots}");
}

#[test]
fn compact_on_demand_moves_the_horizon_to_a_snapshot_and_never_past_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, Retention::default());
    s.create_context("default", json!({"n": 0})).unwrap();
    for n in 1..=450 {
        s.push("default", set_n(n)).unwrap();
    }
    assert_eq!(
        s.head("default").unwrap().horizon,
        0,
        "no retention: history kept"
    );
    let keep_100 = Retention {
        revisions: Some(100),
        max_age_ms: None,
    };
    let report = s.compact("default", &keep_100).unwrap();
    // 450 - 100 = 350: the newest snapshot at or below it is 300.
    assert_eq!(
        (report.horizon_before, report.horizon),
        (0, 300),
        "{report:?}"
    );
    assert_eq!(report.removed_revisions, 300);
    assert_eq!(
        s.read("default", Some(300)).unwrap().document,
        json!({"n": 300})
    );
    assert_eq!(
        s.read("default", Some(377)).unwrap().document,
        json!({"n": 377})
    );
    assert!(s.verify("default").unwrap().ok);
    // Again: nothing more to do. A retention by age that keeps everything: nothing.
    assert_eq!(s.compact("default", &keep_100).unwrap().horizon, 300);
    let a_day = Retention {
        revisions: None,
        max_age_ms: Some(24 * 3600 * 1000),
    };
    assert_eq!(s.compact("default", &a_day).unwrap().horizon, 300);
    // Both limits: the one that keeps more wins (age keeps everything here).
    let both = Retention {
        revisions: Some(10),
        max_age_ms: Some(24 * 3600 * 1000),
    };
    assert_eq!(s.compact("default", &both).unwrap().horizon, 300);
    // Age 0 lets everything older than now go; the newest snapshot is 400.
    let now = Retention {
        revisions: None,
        max_age_ms: Some(0),
    };
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(s.compact("default", &now).unwrap().horizon, 400);
    assert!(s.verify("default").unwrap().ok);
    // Writes go on above the horizon.
    s.push("default", set_n(451)).unwrap();
    assert_eq!(s.read("default", None).unwrap().document, json!({"n": 451}));
}
