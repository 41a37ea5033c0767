//! History, metrics, tokens, the horizon, several stores on one storage, claims and
//! presence.

use std::sync::{Arc, Barrier};

use ctxsync_core::{Level, Strategy};
use ctxsync_store::{
    Actor, ClaimOutcome, HistoryFilter, Role, Store, StoreError, StoreOptions, SyncOutcome,
    SyncSample, SYSTEM_AGENT,
};
use serde_json::json;

use super::*;
use crate::backends::Backend;

pub fn history_is_newest_first_and_filtered(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({})).unwrap();
    set(
        &*s,
        "planner",
        Level::Checkpoint,
        json!([{"path": "a", "to": 1}]),
    );
    set(
        &*s,
        "builder",
        Level::Critical,
        json!([{"path": "b", "to": 1}]),
    );
    set(
        &*s,
        "planner",
        Level::Periodic,
        json!([{"path": "c", "to": 1}]),
    );
    let all = s.history("default", &HistoryFilter::default()).unwrap();
    assert_eq!(
        all.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(all[2].edits[0].path.to_string(), "a");
    assert_eq!(all[0].summary, "1 change by planner");
    let planner = s
        .history(
            "default",
            &HistoryFilter {
                agent: Some("planner".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        planner.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![3, 1]
    );
    let critical = s
        .history(
            "default",
            &HistoryFilter {
                level: Some(Level::Critical),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0].agent, "builder");
    let last = s
        .history(
            "default",
            &HistoryFilter {
                last: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(last.len(), 2);
    assert!(matches!(
        s.history("nope", &HistoryFilter::default()),
        Err(StoreError::NotFound(_))
    ));
    let since = s.log_since("default", 1).unwrap();
    assert_eq!(
        since.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

pub fn metrics_count_syncs_by_level_and_conflicts(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({"a": 1})).unwrap();
    set(&*s, "x", Level::Checkpoint, json!([{"path": "a", "to": 2}]));
    set(&*s, "x", Level::Critical, json!([{"path": "a", "to": 3}]));
    let r = set(
        &*s,
        "y",
        Level::Checkpoint,
        json!([{"path": "a", "from": 1, "to": 4}]),
    );
    assert_eq!(r.conflicts.len(), 1);
    let now = s.now_ms();
    s.record_sync(
        "default",
        &SyncSample {
            agent: "x".into(),
            level: Level::Periodic,
            timestamp_ms: now,
            duration_us: 10,
            outcome: SyncOutcome::Deferred,
            conflict_paths: Vec::new(),
        },
    )
    .unwrap();
    let m = s.metrics("default", s.now_ms()).unwrap();
    assert_eq!(m.revision, 2);
    assert_eq!(m.total_syncs_today, 4);
    assert_eq!(m.deferred, 1);
    assert_eq!(m.by_level["checkpoint"], 2);
    assert_eq!(m.by_level["critical"], 1);
    assert_eq!(m.by_level["periodic"], 1);
    assert_eq!(m.conflicts_last_hour, 1);
    assert_eq!(m.hottest_conflict_paths, vec![("a".to_string(), 1)]);
    assert_eq!(m.context_size_bytes, s.head("default").unwrap().size);
    assert!(matches!(
        s.metrics("nope", now),
        Err(StoreError::NotFound(_))
    ));
}

pub fn tokens_are_hashed_listed_revoked_and_authenticated(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    let secret = "ctxs_0123456789abcdef0123";
    let info = s
        .create_token("builder", secret, "laptop", Role::Agent)
        .unwrap();
    let admin = s
        .create_token("ops", "ctxs_fedcba9876543210fedc", "", Role::Admin)
        .unwrap();
    assert_eq!(info.id.len(), 12);
    assert!(
        !secret.contains(&info.id),
        "the id is not part of the secret"
    );
    assert!(matches!(
        s.create_token("builder", "short", "", Role::Agent),
        Err(StoreError::Invalid(_))
    ));
    let listed = s.list_tokens().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|t| t.id == admin.id && t.role == Role::Admin));
    let found = s.authenticate(secret).unwrap().unwrap();
    assert_eq!((found.agent.as_str(), found.role), ("builder", Role::Agent));
    assert!(s.authenticate("ctxs_not-a-token-at-all").unwrap().is_none());
    // A revocation through one store is seen by another on the same storage at once.
    let other = b.open(StoreOptions::default());
    assert!(other.authenticate(secret).unwrap().is_some());
    let revoked = s.revoke_token(&info.id).unwrap();
    assert!(revoked.revoked_ms.is_some());
    assert!(
        s.revoke_token(&info.id).is_ok(),
        "revoking twice is not an error"
    );
    assert!(other.authenticate(secret).unwrap().is_none());
    assert!(s.authenticate(secret).unwrap().is_none());
    assert!(matches!(
        s.revoke_token("nope"),
        Err(StoreError::NoSuchToken(_))
    ));
}

pub fn reads_below_the_horizon_are_gone(b: &dyn Backend) {
    let s = b.open(StoreOptions {
        snapshot_every: 2,
        ..StoreOptions::default()
    });
    s.create_context("default", json!({"n": 0})).unwrap();
    for i in 1..=6 {
        set(&*s, "x", Level::Checkpoint, json!([{"path": "n", "to": i}]));
    }
    s.snapshot("default").unwrap();
    b.set_horizon("default", 4);
    let s = b.open(StoreOptions::default());
    assert!(matches!(
        s.read("default", Some(3)),
        Err(StoreError::Gone {
            requested: 3,
            horizon: 4
        })
    ));
    assert!(matches!(
        s.log_since("default", 2),
        Err(StoreError::Gone { .. })
    ));
    let r = s
        .push(
            "default",
            request(
                "x",
                Some(1),
                Strategy::Merge,
                json!([{"path": "n", "to": 9}]),
            ),
        )
        .unwrap_err();
    assert!(matches!(r, StoreError::Gone { .. }), "{r}");
    assert_eq!(s.read("default", Some(4)).unwrap().document["n"], 4);
    assert_eq!(s.log_since("default", 4).unwrap().len(), 2);
    assert!(matches!(
        s.revert("default", 2, &Actor::agent("a")),
        Err(StoreError::Gone { .. })
    ));
}

/// The lost-update test on one storage shared by two stores (two processes, or two
/// servers on one database): increments with a `from` test, retried on conflict, end at
/// exactly the number made, with gap-free revisions.
pub fn two_stores_on_one_database_lose_no_update(b: &dyn Backend) {
    let first: Arc<dyn Store> = Arc::from(b.open(StoreOptions::default()));
    first.create_context("default", json!({"n": 0})).unwrap();
    let stores = [first, Arc::from(b.open(StoreOptions::default()))];
    const PER_THREAD: u64 = 25;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&stores[t % 2]);
            std::thread::spawn(move || {
                let mut revisions = Vec::new();
                for _ in 0..PER_THREAD {
                    loop {
                        let snap = store.read("default", None).unwrap();
                        let n = snap.document["n"].as_u64().unwrap();
                        let r = store
                            .push(
                                "default",
                                request(
                                    &format!("w{t}"),
                                    Some(snap.revision),
                                    Strategy::Merge,
                                    json!([{"path": "n", "from": n, "to": n + 1}]),
                                ),
                            )
                            .unwrap();
                        if !r.applied.is_empty() {
                            revisions.push(r.revision);
                            break;
                        }
                    }
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
    let total = 4 * PER_THREAD;
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    for store in &stores {
        assert_eq!(store.read("default", None).unwrap().document["n"], total);
        let report = store.verify("default").unwrap();
        assert!(report.ok, "{:?}", report.problems);
    }
}

pub fn one_of_many_claimants_wins(b: &dyn Backend) {
    let store: Arc<dyn Store> = Arc::from(seeded(b, StoreOptions::default()));
    let other: Arc<dyn Store> = Arc::from(b.open(StoreOptions::default()));
    let barrier = Arc::new(Barrier::new(8));
    let outcomes: Vec<ClaimOutcome> = (0..8)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &store } else { &other });
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .claim("default", &format!("agent-{i}"), TASK, 60_000)
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let winners: Vec<&ClaimOutcome> = outcomes.iter().filter(|o| o.granted()).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let holder = winners[0].claim().holder.clone();
    for o in &outcomes {
        assert_eq!(o.claim().holder, holder, "everyone sees the winner");
    }
    let doc = store.read("default", None).unwrap().document;
    assert_eq!(doc["claims"][TASK]["holder"], json!(holder));
    assert_eq!(store.head("default").unwrap().revision, 1, "one revision");
    // Others' writes to the claimed element are refused; the holder releases it.
    let r = set(
        &*store,
        if holder == "agent-0" {
            "agent-1"
        } else {
            "agent-0"
        },
        Level::Checkpoint,
        json!([{"path": format!("{TASK}.status"), "to": "mine"}]),
    );
    assert!(r.applied.is_empty(), "{r:?}");
    assert!(matches!(
        store.release("default", &holder, TASK).unwrap(),
        ctxsync_store::ReleaseOutcome::Released { .. }
    ));
}

pub fn stale_view_and_unseen_critical(b: &dyn Backend) {
    let store = seeded(
        b,
        StoreOptions {
            away_after_ms: 1,
            ..StoreOptions::default()
        },
    );
    assert_eq!(store.observe("default", "b", 0).unwrap().behind, 0);
    store.observe("default", "builder", 0).unwrap();
    let blocked = set(
        &*store,
        "planner",
        Level::Critical,
        json!([{"path": "project_state.blocked_tasks", "to": ["task-7"]}]),
    );
    set(
        &*store,
        "a",
        Level::Checkpoint,
        json!([{"path": "decisions_log.recent[-]", "to": {"id": "d1"}}]),
    );
    let own = set(
        &*store,
        "b",
        Level::Checkpoint,
        json!([{"path": "communication.note", "to": "mine"}]),
    );
    assert_eq!(own.revision, 3);
    let view = store.observe("default", "b", own.revision).unwrap();
    assert_eq!(view.behind, 2, "{view:?}");
    assert_eq!(
        view.changed_sections,
        vec![
            "decisions_log.recent".to_string(),
            "project_state.blocked_tasks".into()
        ]
    );
    assert_eq!(
        store.observe("default", "b", own.revision).unwrap().behind,
        0,
        "told once"
    );
    assert!(store
        .unseen_critical("default", "planner", false)
        .unwrap()
        .is_empty());
    let notices = store.unseen_critical("default", "builder", false).unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].revision, blocked.revision);
    assert_eq!(
        notices[0].paths,
        vec!["project_state.blocked_tasks".to_string()]
    );
    // A claim that expires, held by an agent that went away, is handed over once.
    assert!(store
        .claim("default", "builder", TASK, 1)
        .unwrap()
        .granted());
    std::thread::sleep(std::time::Duration::from_millis(10));
    let who = store.agents("default", store.now_ms()).unwrap();
    let builder = who.iter().find(|p| p.agent == "builder").unwrap();
    assert_eq!(builder.unseen_critical, vec![blocked.revision]);
    assert!(builder.away);
    let head = store.head("default").unwrap().revision;
    let log = store.log_since("default", head - 1).unwrap();
    assert_eq!(log[0].agent, SYSTEM_AGENT);
    store.agents("default", store.now_ms()).unwrap();
    assert_eq!(store.head("default").unwrap().revision, head, "idempotent");
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
    // Another store (process, server) sees what this one recorded (the embedded store
    // commits presence with its next batch, or when closed).
    drop(store);
    let other = b.open(StoreOptions::default());
    assert_eq!(
        other.observe("default", "b", own.revision).unwrap().behind,
        0
    );
    assert!(other
        .unseen_critical("default", "builder", false)
        .unwrap()
        .is_empty());
}
