//! Push semantics, idempotency, conflicts, ownership, limits, revert.

use std::sync::Arc;

use ctxsync_core::Strategy;
use ctxsync_store::{Actor, HistoryFilter, Prefer, Role, Store, StoreError, StoreOptions};
use serde_json::json;

use super::*;
use crate::backends::Backend;

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
