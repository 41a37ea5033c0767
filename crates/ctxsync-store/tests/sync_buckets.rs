//! `Store::sync_buckets` on a real SQLite file: counts by level, agent and outcome in the
//! right bucket, nearest-rank quantiles, samples written through a second handle on the
//! same file (another process's view), and the span checks.

use ctxsync_core::Level;
use ctxsync_store::{
    BucketSpan, SqliteStore, Store, StoreError, StoreOptions, SyncOutcome, SyncSample,
    MAX_SYNC_BUCKETS,
};
use serde_json::json;

fn sample(agent: &str, level: Level, ts: u64, us: u64, outcome: SyncOutcome) -> SyncSample {
    SyncSample {
        agent: agent.into(),
        level,
        timestamp_ms: ts,
        duration_us: us,
        outcome,
        conflict_paths: Vec::new(),
    }
}

#[test]
fn buckets_count_and_time_the_sync_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.db");
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    store.create_context("c", json!({})).unwrap();
    store.create_context("other", json!({})).unwrap();
    // Written by a second handle on the same file, as another process would.
    let writer = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let base = 1_000_000;
    for (i, us) in [10, 20, 30, 40].into_iter().enumerate() {
        let s = sample("a", Level::Periodic, base + i as u64, us, SyncOutcome::Ok);
        writer.record_sync("c", &s).unwrap();
    }
    let conflict = sample("b", Level::Critical, base + 5, 1_000, SyncOutcome::Conflict);
    writer.record_sync("c", &conflict).unwrap();
    let failed = sample(
        "b",
        Level::Critical,
        base + 1_500,
        9_999,
        SyncOutcome::Failed,
    );
    writer.record_sync("c", &failed).unwrap();
    // Outside the span, and another context: not counted.
    let early = sample("a", Level::Periodic, base - 1, 1, SyncOutcome::Ok);
    writer.record_sync("c", &early).unwrap();
    let late = sample("a", Level::Periodic, base + 3_000, 1, SyncOutcome::Ok);
    writer.record_sync("c", &late).unwrap();
    let elsewhere = sample("a", Level::Periodic, base, 1, SyncOutcome::Ok);
    writer.record_sync("other", &elsewhere).unwrap();
    drop(writer);

    let span = BucketSpan {
        from_ms: base,
        bucket_ms: 1_000,
        buckets: 3,
    };
    let buckets = store.sync_buckets("c", &span).unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(
        buckets.iter().map(|b| b.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let first = &buckets[0];
    let total: u64 = first.counts.iter().map(|c| c.count).sum();
    assert_eq!(total, 5);
    let ok = first
        .counts
        .iter()
        .find(|c| c.agent == "a" && c.outcome == SyncOutcome::Ok)
        .unwrap();
    assert_eq!((ok.level, ok.count), (Level::Periodic, 4));
    let conflicts = first
        .counts
        .iter()
        .find(|c| c.outcome == SyncOutcome::Conflict)
        .unwrap();
    assert_eq!((conflicts.agent.as_str(), conflicts.count), ("b", 1));
    // Durations 10, 20, 30, 40, 1000 (the conflict is timed, the failure is not).
    assert_eq!(first.p50_us, Some(30));
    assert_eq!(first.p95_us, Some(1_000));
    let second = &buckets[1];
    assert_eq!(second.counts.len(), 1);
    assert_eq!(second.counts[0].outcome, SyncOutcome::Failed);
    assert_eq!(second.p50_us, None);
    assert!(buckets[2].counts.is_empty());

    // Pushes go into the sync log too.
    let now = store.now_ms();
    let pushed = ctxsync_core::PushRequest {
        agent: "pusher".into(),
        level: Level::Session,
        base_revision: None,
        request_id: None,
        strategy: ctxsync_core::Strategy::Merge,
        summary: String::new(),
        changes: ctxsync_core::Change::list_from_json(&json!([{"path": "x", "to": 1}])).unwrap(),
    };
    store.push("c", pushed).unwrap();
    let span = BucketSpan {
        from_ms: now - 60_000,
        bucket_ms: 60_000,
        buckets: 2,
    };
    let buckets = store.sync_buckets("c", &span).unwrap();
    let pusher: Vec<_> = buckets
        .iter()
        .flat_map(|b| &b.counts)
        .filter(|c| c.agent == "pusher")
        .collect();
    assert_eq!(pusher.len(), 1);
    assert_eq!(pusher[0].level, Level::Session);
}

#[test]
fn bad_spans_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ctx.db"), StoreOptions::default()).unwrap();
    store.create_context("c", json!({})).unwrap();
    let span = |from_ms, bucket_ms, buckets| BucketSpan {
        from_ms,
        bucket_ms,
        buckets,
    };
    for bad in [
        span(0, 0, 10),
        span(0, 1, 0),
        span(0, 1, MAX_SYNC_BUCKETS + 1),
        span(u64::MAX, 1, 1),
        span(0, u64::MAX / 2, 3),
    ] {
        let e = store.sync_buckets("c", &bad).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{bad:?}: {e}");
    }
    let e = store.sync_buckets("nope", &span(0, 1, 1)).unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
}
