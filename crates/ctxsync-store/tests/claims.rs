//! Claims, presence, the stale-view notice and unseen critical revisions on the SQLite
//! store, on real files: one winner among racing threads and racing stores (separate
//! connections and writers, as separate processes have), enforcement on pushes, expiry,
//! release, the away handover, and the v3 → v4 migration.

use std::sync::{Arc, Barrier};

use ctxsync_core::{Change, Level, OwnershipRule, PushRequest, Strategy};
use ctxsync_store::{
    ClaimOutcome, ReleaseOutcome, SqliteStore, Store, StoreError, StoreOptions, SYSTEM_AGENT,
};
use serde_json::{json, Value};

const TASK: &str = "project_state.active_tasks[id=task-7]";

fn open(dir: &tempfile::TempDir, options: StoreOptions) -> SqliteStore {
    SqliteStore::open(dir.path().join("ctx.db"), options).unwrap()
}

fn seeded(dir: &tempfile::TempDir, options: StoreOptions) -> SqliteStore {
    let store = open(dir, options);
    store
        .create_context(
            "default",
            json!({"project_state": {"active_tasks": [
                {"id": "task-7", "status": "todo"},
                {"id": "task-8", "status": "todo"}
            ]}, "decisions_log": {"recent": []}, "communication": {}}),
        )
        .unwrap();
    store
}

fn push(
    store: &dyn Store,
    agent: &str,
    level: Level,
    strategy: Strategy,
    changes: Value,
) -> ctxsync_core::PushResponse {
    store
        .push(
            "default",
            PushRequest {
                agent: agent.into(),
                level,
                base_revision: None,
                request_id: None,
                strategy,
                summary: String::new(),
                changes: Change::list_from_json(&changes).unwrap(),
            },
        )
        .unwrap()
}

#[test]
fn separate_stores_on_one_file_grant_once_per_round() {
    // Each store has its own connections and writer thread, like separate processes.
    let dir = tempfile::tempdir().unwrap();
    drop(seeded(&dir, StoreOptions::default()));
    let stores: Vec<Arc<SqliteStore>> = (0..4)
        .map(|_| Arc::new(open(&dir, StoreOptions::default())))
        .collect();
    for round in 0..10 {
        let path = format!("project_state.round{round}");
        let barrier = Arc::new(Barrier::new(stores.len()));
        let granted: usize = stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (s, barrier, path) = (Arc::clone(s), Arc::clone(&barrier), path.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    s.claim("default", &format!("a{i}"), &path, 60_000).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|o| o.granted())
            .count();
        assert_eq!(granted, 1, "round {round}");
    }
}

#[test]
fn renewal_release_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir, StoreOptions::default());
    let first = store.claim("default", "builder", TASK, 60_000).unwrap();
    let ClaimOutcome::Granted {
        renewed: false,
        claim,
        ..
    } = &first
    else {
        panic!("{first:?}")
    };
    let renewed = store.claim("default", "builder", TASK, 120_000).unwrap();
    match &renewed {
        ClaimOutcome::Granted {
            renewed: true,
            claim: again,
            ..
        } => {
            assert_eq!(again.claimed_at_ms, claim.claimed_at_ms);
            assert!(again.expires_at_ms > claim.expires_at_ms);
        }
        other => panic!("{other:?}"),
    }
    // Positions name the same element canonically.
    match store
        .claim("default", "reviewer", "project_state.active_tasks[0]", 1000)
        .unwrap()
    {
        ClaimOutcome::Held { claim } => {
            assert_eq!(claim.holder, "builder");
            assert_eq!(claim.path, TASK);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.release("default", "reviewer", TASK).unwrap(),
        ReleaseOutcome::HeldByOther { .. }
    ));
    assert!(matches!(
        store.release("default", "builder", TASK).unwrap(),
        ReleaseOutcome::Released { .. }
    ));
    assert_eq!(
        store.release("default", "builder", TASK).unwrap(),
        ReleaseOutcome::NotHeld
    );
    // A 1 ms lease is over by the time anyone asks: no process needed to end it.
    assert!(store
        .claim("default", "builder", TASK, 1)
        .unwrap()
        .granted());
    std::thread::sleep(std::time::Duration::from_millis(5));
    let taken = store.claim("default", "reviewer", TASK, 60_000).unwrap();
    assert!(taken.granted(), "{taken:?}");
    assert_eq!(taken.claim().holder, "reviewer");
    // Bad input is an input error and writes nothing.
    let before = store.head("default").unwrap().revision;
    for bad in ["", "project_state.active_tasks[-]", "claims.x", "a..b"] {
        assert!(matches!(
            store.claim("default", "x", bad, 1000),
            Err(StoreError::Invalid(_))
        ));
    }
    assert!(matches!(
        store.claim("default", "x", TASK, 0),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.claim("nope", "x", TASK, 10),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.head("default").unwrap().revision, before);
}

#[test]
fn others_writes_to_a_claimed_element_are_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir, StoreOptions::default());
    assert!(store
        .claim("default", "builder", TASK, 60_000)
        .unwrap()
        .granted());
    for path in [
        "project_state.active_tasks[id=task-7].status",
        "project_state.active_tasks[0]",
        "project_state",
        "claims",
    ] {
        let r = push(
            &store,
            "reviewer",
            Level::Checkpoint,
            Strategy::Merge,
            json!([{"path": path, "to": "x"}]),
        );
        assert!(r.applied.is_empty(), "{path}: {r:?}");
        assert_eq!(r.rejected[0].reason, "claimed", "{path}");
        assert_eq!(r.rejected[0].owners, vec!["builder".to_string()]);
        assert_eq!(r.rejected[0].rule, TASK);
    }
    // The claim entry itself.
    let r = push(
        &store,
        "reviewer",
        Level::Checkpoint,
        Strategy::Merge,
        json!([{"op": "remove", "path": format!("/claims/{}", TASK)}]),
    );
    assert_eq!(r.rejected[0].reason, "claimed");
    // Next to it, and appends to its list, are fine; so is the holder.
    let r = push(
        &store,
        "reviewer",
        Level::Checkpoint,
        Strategy::Merge,
        json!([
            {"path": "project_state.active_tasks[id=task-8].status", "to": "done"},
            {"path": "project_state.active_tasks[-]", "to": {"id": "task-9"}},
        ]),
    );
    assert_eq!(r.applied.len(), 2, "{r:?}");
    let r = push(
        &store,
        "builder",
        Level::Checkpoint,
        Strategy::Merge,
        json!([{"path": "project_state.active_tasks[id=task-7].status", "to": "doing"}]),
    );
    assert_eq!(r.applied.len(), 1, "{r:?}");
    // Force overrides.
    let r = push(
        &store,
        "reviewer",
        Level::Checkpoint,
        Strategy::Force,
        json!([{"path": "project_state.active_tasks[id=task-7].status", "to": "stolen"}]),
    );
    assert_eq!(r.applied.len(), 1, "{r:?}");
}

#[test]
fn claiming_needs_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let ownership = ctxsync_core::Ownership::new(vec![OwnershipRule {
        path: "project_state.**".into(),
        owners: vec!["planner".into()],
    }])
    .unwrap();
    let store = seeded(
        &dir,
        StoreOptions {
            ownership,
            ..StoreOptions::default()
        },
    );
    assert!(matches!(
        store.claim("default", "builder", TASK, 1000),
        Err(StoreError::Forbidden(_))
    ));
    assert!(store
        .claim("default", "planner", TASK, 1000)
        .unwrap()
        .granted());
}

#[test]
fn stale_view_counts_others_revisions_and_names_sections() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir, StoreOptions::default());
    let head = store.head("default").unwrap().revision;
    let first = store.observe("default", "b", head).unwrap();
    assert_eq!(first.behind, 0);
    push(
        &store,
        "a",
        Level::Checkpoint,
        Strategy::Merge,
        json!([{"path": "project_state.active_tasks[id=task-7].status", "to": "doing"}]),
    );
    push(
        &store,
        "a",
        Level::Checkpoint,
        Strategy::Merge,
        json!([{"path": "decisions_log.recent[-]", "to": {"id": "d1"}}]),
    );
    let own = push(
        &store,
        "b",
        Level::Checkpoint,
        Strategy::Merge,
        json!([{"path": "communication.note", "to": "mine"}]),
    );
    let last = push(
        &store,
        "a",
        Level::Checkpoint,
        Strategy::Merge,
        json!([{"path": "project_state.phase", "to": "build"}]),
    );
    assert_eq!(own.revision, 3);
    let view = store.observe("default", "b", last.revision).unwrap();
    assert_eq!(view.behind, 3, "{view:?}");
    assert_eq!(view.since_revision, head);
    assert_eq!(
        view.changed_sections,
        vec![
            "decisions_log.recent".to_string(),
            "project_state.active_tasks".into(),
            "project_state.phase".into()
        ]
    );
    // Told once: the next answer is up to date.
    let again = store.observe("default", "b", last.revision).unwrap();
    assert_eq!(again.behind, 0);
    assert_eq!(again.since_revision, last.revision);
    // Another process (another store on the file) sees what this one recorded.
    drop(store);
    let other = open(&dir, StoreOptions::default());
    assert_eq!(
        other.observe("default", "b", last.revision).unwrap().behind,
        0
    );
}

#[test]
fn stale_count_is_exact_past_the_scan_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir, StoreOptions::default());
    store.observe("default", "b", 0).unwrap();
    store.observe("default", "c", 0).unwrap();
    let mut last = 0;
    for i in 0..(ctxsync_core::records::STALE_SCAN_LIMIT + 10) {
        last = push(
            &store,
            "a",
            Level::Periodic,
            Strategy::Merge,
            json!([{"path": format!("project_state.k{}", i % 3), "to": i}]),
        )
        .revision;
    }
    let view = store.observe("default", "b", last).unwrap();
    assert_eq!(
        view.behind,
        (ctxsync_core::records::STALE_SCAN_LIMIT + 10) as u64
    );
    assert_eq!(view.changed_sections.len(), 3);
    // This process answered from the revisions it committed; another process (a second
    // store on the file, which committed none of them) answers from the op log: the same.
    drop(store);
    let other = open(&dir, StoreOptions::default());
    let from_log = other.observe("default", "c", last).unwrap();
    assert_eq!(from_log, view);
}

#[test]
fn unseen_critical_and_who() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(&dir, StoreOptions::default());
    store.observe("default", "builder", 0).unwrap();
    store.observe("default", "planner", 0).unwrap();
    let blocked = push(
        &store,
        "planner",
        Level::Critical,
        Strategy::Merge,
        json!([{"path": "project_state.blocked_tasks", "to": ["task-7"]}]),
    );
    push(
        &store,
        "planner",
        Level::Checkpoint,
        Strategy::Merge,
        json!([{"path": "project_state.phase", "to": "x"}]),
    );
    // The planner's own critical revision is no news to it.
    assert!(store
        .unseen_critical("default", "planner", false)
        .unwrap()
        .is_empty());
    let notices = store.unseen_critical("default", "builder", false).unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].revision, blocked.revision);
    assert_eq!(notices[0].agent, "planner");
    assert_eq!(
        notices[0].paths,
        vec!["project_state.blocked_tasks".to_string()]
    );
    assert!(store
        .claim("default", "builder", TASK, 60_000)
        .unwrap()
        .granted());
    let now = store.now_ms();
    let who = store.agents("default", now).unwrap();
    let builder = who.iter().find(|p| p.agent == "builder").unwrap();
    assert_eq!(builder.unseen_critical, vec![blocked.revision]);
    assert_eq!(builder.claims.len(), 1);
    assert_eq!(builder.seen_revision, 0);
    assert_eq!(builder.lag, 3);
    assert!(!builder.away);
    let planner = who.iter().find(|p| p.agent == "planner").unwrap();
    assert!(planner.unseen_critical.is_empty());
    assert!(planner.claims.is_empty());
    // Shown once with mark_seen, then no more.
    assert_eq!(
        store
            .unseen_critical("default", "builder", true)
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .unseen_critical("default", "builder", false)
        .unwrap()
        .is_empty());
    let who = store.agents("default", now).unwrap();
    assert!(who
        .iter()
        .find(|p| p.agent == "builder")
        .unwrap()
        .unseen_critical
        .is_empty());
}

#[test]
fn away_agents_expired_claims_are_handed_over_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(
        &dir,
        StoreOptions {
            away_after_ms: 1,
            ..StoreOptions::default()
        },
    );
    store.observe("default", "builder", 0).unwrap();
    assert!(store
        .claim("default", "builder", TASK, 1)
        .unwrap()
        .granted());
    assert!(store
        .claim(
            "default",
            "builder",
            "project_state.active_tasks[id=task-8]",
            3_600_000
        )
        .unwrap()
        .granted());
    std::thread::sleep(std::time::Duration::from_millis(10));
    let before = store.head("default").unwrap().revision;
    let who = store.agents("default", store.now_ms()).unwrap();
    let builder = who.iter().find(|p| p.agent == "builder").unwrap();
    assert!(builder.away);
    assert_eq!(builder.claims.len(), 1, "the live claim stays");
    let doc = store.read("default", None).unwrap();
    assert_eq!(doc.revision, before + 1, "one handover revision");
    assert!(
        doc.document["claims"].get(TASK).is_none(),
        "expired claim released"
    );
    let stubs = doc.document["communication"]["handovers"]
        .as_array()
        .unwrap();
    assert_eq!(stubs.len(), 1);
    assert_eq!(stubs[0]["from"], "builder");
    assert_eq!(stubs[0]["to"], Value::Null);
    assert_eq!(stubs[0]["reason"], "away");
    assert_eq!(stubs[0]["claims"], json!([TASK]));
    let log = store.log_since("default", before).unwrap();
    assert_eq!(log[0].agent, SYSTEM_AGENT);
    // Idempotent.
    store.agents("default", store.now_ms()).unwrap();
    store.agents("default", store.now_ms()).unwrap();
    assert_eq!(store.head("default").unwrap().revision, before + 1);
}

#[test]
fn a_version_3_store_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE oplog(context TEXT NOT NULL, revision INTEGER NOT NULL, agent TEXT NOT NULL,
                level TEXT NOT NULL, ts_ms INTEGER NOT NULL, summary TEXT NOT NULL, request_id TEXT,
                edits TEXT NOT NULL, checksum TEXT NOT NULL, PRIMARY KEY(context, revision)) WITHOUT ROWID;
             PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    store.create_context("default", json!({"a": {}})).unwrap();
    push(
        &store,
        "a",
        Level::Checkpoint,
        Strategy::Merge,
        json!([{"path": "a.b", "to": 1}]),
    );
    assert_eq!(
        store.observe("default", "b", 1).unwrap().changed_sections,
        vec!["a.b".to_string()]
    );
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
}

#[test]
fn away_handover_without_a_communication_object_still_releases() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreOptions {
            away_after_ms: 1,
            ..StoreOptions::default()
        },
    );
    store
        .create_context(
            "default",
            json!({"project_state": {"active_tasks": [{"id": "task-7"}]}, "communication": "none"}),
        )
        .unwrap();
    assert!(store
        .claim("default", "builder", TASK, 1)
        .unwrap()
        .granted());
    std::thread::sleep(std::time::Duration::from_millis(10));
    store.agents("default", store.now_ms()).unwrap();
    let doc = store.read("default", None).unwrap().document;
    assert!(doc["claims"].get(TASK).is_none());
    assert_eq!(doc["communication"], "none");
}
