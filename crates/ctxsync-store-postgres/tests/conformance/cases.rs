//! The cases of the conformance suite, each written once against [`Backend`]: push
//! semantics, conflicts, idempotency, ownership, verify, revert, history, metrics, tokens,
//! 410 below the horizon, several stores on one storage, claims and presence. (Moved here
//! from the SQLite store's own tests, so neither backend has a copy.)

use std::sync::{Arc, Barrier};

use ctxsync_core::{Change, Level, OwnershipRule, PushRequest, Strategy};
use ctxsync_store::{
    Actor, ClaimOutcome, HistoryFilter, Prefer, Role, Store, StoreError, StoreOptions, SyncOutcome,
    SyncSample, SYSTEM_AGENT,
};
use serde_json::{json, Value};

use super::backends::Backend;

const TASK: &str = "project_state.active_tasks[id=task-7]";

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

fn push(agent: &str, strategy: Strategy, changes: Value) -> PushRequest {
    request(agent, None, strategy, changes)
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

fn seeded(b: &dyn Backend, options: StoreOptions) -> Box<dyn Store> {
    let store = b.open(options);
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

fn set(store: &dyn Store, agent: &str, level: Level, changes: Value) -> ctxsync_core::PushResponse {
    let mut r = push(agent, Strategy::Merge, changes);
    r.level = level;
    store.push("default", r).unwrap()
}

pub fn concurrent_pushes_get_gap_free_revisions_and_verify(b: &dyn Backend) {
    let store: Arc<dyn Store> = Arc::from(b.open(StoreOptions {
        snapshot_every: 7,
        ..StoreOptions::default()
    }));
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
                            push(
                                &format!("agent-{t}"),
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

pub fn reopening_keeps_everything(b: &dyn Backend) {
    {
        let s = b.open(StoreOptions::default());
        s.create_context("default", json!({})).unwrap();
        s.push(
            "default",
            push("a", Strategy::Merge, json!([{"path": "x", "to": 1}])),
        )
        .unwrap();
    }
    let s = b.open(StoreOptions::default());
    let snap = s.read("default", None).unwrap();
    assert_eq!(snap.revision, 1);
    assert_eq!(snap.document, json!({"x": 1}));
    assert_eq!(s.list_contexts().unwrap().len(), 1);
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

pub fn request_id_replays_the_stored_answer(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({"n": 0})).unwrap();
    let mut r = push("a", Strategy::Merge, json!([{"path": "n", "to": 1}]));
    r.request_id = Some("01JD0000000000000000000000".into());
    let first = s.push("default", r.clone()).unwrap();
    let second = s.push("default", r.clone()).unwrap();
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(first.revision, second.revision);
    assert_eq!(s.head("default").unwrap().revision, 1);
    // Another store (process, server) on the same storage replays it too.
    let other = b.open(StoreOptions::default());
    assert!(other.push("default", r).unwrap().replayed);
    assert_eq!(other.head("default").unwrap().revision, 1);
}

pub fn a_request_id_reused_for_other_changes_is_refused(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({})).unwrap();
    let mut first = push("builder", Strategy::Merge, json!([{"path": "a", "to": 1}]));
    first.request_id = Some("01JD0000000000000000000000".into());
    s.push("default", first.clone()).unwrap();
    assert!(s.push("default", first.clone()).unwrap().replayed);
    let mut other = push("builder", Strategy::Merge, json!([{"path": "a", "to": 2}]));
    other.request_id = first.request_id.clone();
    let e = s.push("default", other).unwrap_err();
    assert!(matches!(e, StoreError::RequestIdReused(_)), "{e}");
    assert_eq!(s.read("default", None).unwrap().document, json!({"a": 1}));
    assert_eq!(s.head("default").unwrap().revision, 1);
}

pub fn deferred_conflicts_are_stored_and_resolved(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
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
    assert_eq!(Some(open[0].id), r.conflicts[0].id);
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
    assert!(s.verify("default").unwrap().ok);
}

pub fn only_its_agent_or_an_admin_settles_a_deferred_conflict(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({"phase": "a"})).unwrap();
    let r = s
        .push(
            "default",
            push(
                "builder",
                Strategy::Defer,
                json!([{"path": "phase", "from": "x", "to": "b"}]),
            ),
        )
        .unwrap();
    let id = r.conflicts[0].id.unwrap();
    for prefer in [Prefer::Mine, Prefer::Theirs] {
        let e = s
            .resolve_conflict("default", id, prefer, &Actor::agent("reviewer"))
            .unwrap_err();
        assert!(matches!(e, StoreError::Forbidden(_)), "{e}");
    }
    assert_eq!(s.open_conflicts("default").unwrap().len(), 1);
    assert_eq!(s.read("default", None).unwrap().document["phase"], "a");
    s.resolve_conflict("default", id, Prefer::Mine, &Actor::agent("builder"))
        .unwrap();
    assert_eq!(s.read("default", None).unwrap().document["phase"], "b");
}

pub fn a_push_based_behind_conflicts_on_overlapping_writes(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({"a": {"x": 1}, "b": 1, "list": []}))
        .unwrap();
    s.push(
        "default",
        push(
            "planner",
            Strategy::Merge,
            json!([{"path": "a.x", "to": 2}]),
        ),
    )
    .unwrap();
    // Based on 0, without `from`: `a` overlaps the planner's write of `a.x`; `b` does not;
    // an append never conflicts.
    let r = s
        .push(
            "default",
            request(
                "builder",
                Some(0),
                Strategy::Merge,
                json!([{"path": "a", "to": {}}, {"path": "b", "to": 2},
                       {"path": "list[-]", "to": {"id": "t1"}}]),
            ),
        )
        .unwrap();
    assert_eq!(r.applied.len(), 2, "{r:?}");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    let c = &r.conflicts[0];
    assert_eq!(c.path, "a");
    assert_eq!(c.modified_by.as_deref(), Some("planner"));
    assert_eq!(c.modified_at_revision, Some(1));
    assert_eq!(r.revision, 2);
    let doc = s.read("default", None).unwrap().document;
    assert_eq!(doc, json!({"a": {"x": 2}, "b": 2, "list": [{"id": "t1"}]}));
    // A `from` test that fails is a conflict whatever the base.
    let r = s
        .push(
            "default",
            push(
                "builder",
                Strategy::Merge,
                json!([{"path": "b", "from": 7, "to": 3}]),
            ),
        )
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(s.head("default").unwrap().revision, 2);
}

pub fn atomic_is_all_or_nothing_and_force_keeps_the_old_value(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({"a": 1, "b": 1}))
        .unwrap();
    let r = s
        .push(
            "default",
            push(
                "x",
                Strategy::Atomic,
                json!([{"path": "a", "to": 2}, {"path": "b", "from": 9, "to": 2}]),
            ),
        )
        .unwrap();
    assert!(r.applied.is_empty() && r.conflicts.len() == 1, "{r:?}");
    assert_eq!(s.head("default").unwrap().revision, 0);
    let r = s
        .push(
            "default",
            push(
                "x",
                Strategy::Force,
                json!([{"path": "b", "from": 9, "to": 3}]),
            ),
        )
        .unwrap();
    assert_eq!(r.revision, 1);
    let log = s.log_since("default", 0).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].edits[0].old,
        Some(json!(1)),
        "the overwritten value is in the op log"
    );
    assert_eq!(log[0].edits[0].new, Some(json!(3)));
}

pub fn invalid_and_oversized_pushes_change_nothing(b: &dyn Backend) {
    let s = b.open(StoreOptions {
        max_document_bytes: 1000,
        ..StoreOptions::default()
    });
    s.create_context("default", json!({"a": 1})).unwrap();
    let before = s.head("default").unwrap();
    let e = s
        .push(
            "default",
            push(
                "x",
                Strategy::Merge,
                json!([{"path": "a", "to": 2}, {"path": "b", "from": 1, "to": 2}]),
            ),
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    let e = s
        .push(
            "default",
            push(
                "x",
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
        push("x", Strategy::Merge, json!([{"path": "a", "to": 3}])),
    )
    .unwrap();
    assert!(s.verify("default").unwrap().ok);
}

pub fn agent_names_that_are_not_names_are_refused(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({})).unwrap();
    for agent in ["../../x", "a b", "x\ny", &"a".repeat(65)] {
        let e = s
            .push(
                "default",
                push(agent, Strategy::Merge, json!([{"path": "a", "to": 1}])),
            )
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{agent:?}: {e}");
    }
    assert_eq!(s.head("default").unwrap().revision, 0);
}

pub fn root_writes_and_reverts_do_not_bypass_ownership(b: &dyn Backend) {
    let s = b.open(owned());
    s.create_context(
        "default",
        json!({"decisions_log": {"recent": []}, "notes": []}),
    )
    .unwrap();
    s.push(
        "default",
        push(
            "planner",
            Strategy::Merge,
            json!([{"path": "decisions_log.recent[-]", "to": {"id": "d1", "what": "use sqlite"}}]),
        ),
    )
    .unwrap();
    let before = s.read("default", None).unwrap().document;
    for changes in [
        json!([{"path": "", "to": {}}]),
        json!([{"op": "replace", "path": "", "value": {"notes": []}}]),
        json!([{"path": "decisions_log.recent[id=d1].what", "to": "no"}]),
    ] {
        let r = s
            .push("default", push("builder", Strategy::Force, changes))
            .unwrap();
        assert_eq!(r.rejected.len(), 1, "{r:?}");
        assert_eq!(r.rejected[0].reason, "not_owner");
        assert_eq!(r.status(), 403);
    }
    // A revert to before the planner's decision is a write to decisions_log.
    let r = s.revert("default", 0, &Actor::agent("builder")).unwrap();
    assert!(r.applied.is_empty() && !r.rejected.is_empty(), "{r:?}");
    assert_eq!(s.read("default", None).unwrap().document, before);
    assert_eq!(s.head("default").unwrap().revision, 1);
    // The owner, or an admin, may.
    let admin = Actor {
        agent: "ops".into(),
        role: Role::Admin,
    };
    let r = s.revert("default", 0, &admin).unwrap();
    assert_eq!(r.revision, 2);
    assert_eq!(
        s.read("default", None).unwrap().document["decisions_log"]["recent"],
        json!([])
    );
    let viewer = Actor {
        agent: "eyes".into(),
        role: Role::Viewer,
    };
    assert!(matches!(
        s.revert("default", 1, &viewer),
        Err(StoreError::Forbidden(_))
    ));
}

pub fn revert_makes_a_new_revision_equal_to_an_old_one(b: &dyn Backend) {
    let s = b.open(StoreOptions::default());
    s.create_context("default", json!({"list": [{"id": "a"}], "x": 1}))
        .unwrap();
    s.push(
        "default",
        push(
            "p",
            Strategy::Merge,
            json!([{"path": "list[-]", "to": {"id": "b"}}, {"path": "y", "to": 2}]),
        ),
    )
    .unwrap();
    s.push(
        "default",
        push(
            "p",
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
    assert!(matches!(
        s.revert("default", 9, &Actor::agent("admin")),
        Err(StoreError::Future { .. })
    ));
    // A push after the revert goes on from it.
    let r = s
        .push(
            "default",
            push("p", Strategy::Merge, json!([{"path": "x", "to": 5}])),
        )
        .unwrap();
    assert_eq!(r.revision, 4);
    assert!(s.verify("default").unwrap().ok);
}

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
