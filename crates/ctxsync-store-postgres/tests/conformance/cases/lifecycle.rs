//! The context lifecycle (DESIGN §15) on both backends: archival (automatic, on demand,
//! before a push over the quota), compaction by retention, the seed's stamps, storage use.

use ctxsync_core::{ArchiveRule, Change, Level, Path, PushRequest, Strategy};
use ctxsync_store::{Actor, ArchiveQuery, Retention, Store, StoreError, StoreOptions, Synchronous};
use serde_json::{json, Value};

use crate::backends::Backend;

fn rules(keep: usize) -> Vec<ArchiveRule> {
    ctxsync_core::archive::seed_rules(keep)
}

fn store(b: &dyn Backend, max_document_bytes: u64, keep: usize) -> Box<dyn Store> {
    b.open(StoreOptions {
        max_document_bytes,
        archive: rules(keep),
        ..StoreOptions::default()
    })
}

fn push(agent: &str, changes: Value) -> PushRequest {
    PushRequest {
        agent: agent.into(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        strategy: Strategy::Merge,
        summary: String::new(),
        changes: Change::list_from_json(&changes).unwrap(),
    }
}

fn decision(i: usize, bytes: usize) -> Value {
    json!({"path": "decisions_log.recent[-]", "to": {"id": format!("d{i}"), "text": "x".repeat(bytes)}})
}

fn seed() -> Value {
    json!({"decisions_log": {"recent": [], "archived_count": 0}, "project_state": {"completed_tasks": []}})
}

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

fn open(b: &dyn Backend, retain: Retention) -> Box<dyn Store> {
    b.open(StoreOptions {
        // Durability is not what these cases are about; 10,000 fsyncs are slow.
        synchronous: Synchronous::Normal,
        snapshot_every: SNAPSHOT_EVERY,
        retain,
        ..StoreOptions::default()
    })
}

pub fn a_push_over_the_quota_archives_first_and_lands(b: &dyn Backend) {
    // keep 10 with slack 1: automatic archival waits until a 12th entry, but 12 entries
    // of 1,700 bytes pass the quota first, so the quota path archives.
    let s = store(b, 20_000, 10);
    s.create_context("default", seed()).unwrap();
    let mut landed = 0;
    for i in 0..60 {
        let r = s
            .push("default", push("a", json!([decision(i, 1_700)])))
            .unwrap();
        assert_eq!(r.applied.len(), 1, "push {i}: {r:?}");
        landed += 1;
    }
    assert_eq!(landed, 60);
    let doc = s.read("default", None).unwrap().document;
    let kept = doc["decisions_log"]["recent"].as_array().unwrap().len();
    let archived = s.archive_list("default", &ArchiveQuery::default()).unwrap();
    assert_eq!(kept + archived.len(), 60, "nothing lost");
    assert_eq!(
        doc["decisions_log"]["archived_count"],
        archived.len() as u64
    );
    assert!(s.head("default").unwrap().size <= 20_000);
    assert!(s.verify("default").unwrap().ok);
}

pub fn a_push_that_does_not_fit_even_after_archival_is_refused_with_numbers(b: &dyn Backend) {
    let s = store(b, 5_000, 2);
    s.create_context("default", seed()).unwrap();
    for i in 0..3 {
        s.push("default", push("a", json!([decision(i, 100)])))
            .unwrap();
    }
    let before = s.head("default").unwrap();
    let e = s
        .push(
            "default",
            push("a", json!([{"path": "big", "to": "y".repeat(6_000)}])),
        )
        .unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(e, StoreError::OverQuota { limit: 5_000, .. }),
        "{e}"
    );
    assert!(
        message.contains("5000") && message.contains("decisions_log.recent"),
        "{message}"
    );
    assert_eq!(
        s.head("default").unwrap(),
        before,
        "nothing applied, not even archival"
    );
    assert!(s
        .archive_list("default", &ArchiveQuery::default())
        .unwrap()
        .is_empty());
}

pub fn an_archival_is_verified_reverted_and_rearchived_without_loss(b: &dyn Backend) {
    let s = store(b, 8 << 20, 3);
    s.create_context("default", seed()).unwrap();
    for i in 0..3 {
        s.push("default", push("a", json!([decision(i, 10)])))
            .unwrap();
    }
    let before_archival = s.head("default").unwrap().revision;
    for i in 3..8 {
        s.push("default", push("a", json!([decision(i, 10)])))
            .unwrap();
    }
    // keep 3, slack 1: archival ran on its own along the way.
    assert!(
        s.archive_list("default", &ArchiveQuery::default())
            .unwrap()
            .len()
            >= 4
    );
    s.archive_run("default").unwrap();
    let archived = s.archive_list("default", &ArchiveQuery::default()).unwrap();
    assert_eq!(archived.len(), 5);
    assert_eq!(archived[0].id.as_deref(), Some("d0"));
    assert_eq!(archived[0].list, "/decisions_log/recent");
    let by_id = ArchiveQuery {
        id: Some("d2".into()),
        ..ArchiveQuery::default()
    };
    assert_eq!(
        s.archive_list("default", &by_id).unwrap()[0].entry["id"],
        "d2"
    );
    // The archival revisions are ordinary revisions by the store's own agent.
    let history = s.history("default", &Default::default()).unwrap();
    assert!(history
        .iter()
        .any(|e| e.agent == ctxsync_store::SYSTEM_AGENT && e.summary.starts_with("archived")));
    assert!(s.verify("default").unwrap().ok);

    // Revert to before any archival: the entries are back in the list (the archive keeps
    // its copies: it is a record, never rewritten).
    let admin = Actor {
        agent: "root".into(),
        role: ctxsync_store::Role::Admin,
    };
    s.revert("default", before_archival, &admin).unwrap();
    let doc = s.read("default", None).unwrap().document;
    assert_eq!(doc["decisions_log"]["recent"].as_array().unwrap().len(), 3);
    assert_eq!(doc["decisions_log"]["archived_count"], 0);
    assert!(s.verify("default").unwrap().ok);

    // Paging: after + limit walk the archive in order.
    let page = ArchiveQuery {
        after: Some(archived[1].seq),
        limit: Some(2),
        ..ArchiveQuery::default()
    };
    let page = s.archive_list("default", &page).unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![archived[2].seq, archived[3].seq]
    );
    let bad = ArchiveQuery {
        list: Some("a[".into()),
        ..ArchiveQuery::default()
    };
    assert!(matches!(
        s.archive_list("default", &bad),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.archive_list("nope", &ArchiveQuery::default()),
        Err(StoreError::NotFound(_))
    ));
}

pub fn seed_fields_are_stamped_by_syncs_in_the_same_revision_not_by_reverts(b: &dyn Backend) {
    let s = store(b, 8 << 20, 50);
    s.create_context("default", ctxsync_core::template::seed())
        .unwrap();
    let mut critical = push(
        "a",
        json!([{"path": "project_state.current_phase", "to": "build"}]),
    );
    critical.level = Level::Critical;
    let r = s.push("default", critical).unwrap();
    assert_eq!(r.revision, 1);
    let doc = s.read("default", None).unwrap().document;
    assert_eq!(doc["sync_level"], "critical");
    let stamped = doc["last_sync"].as_str().unwrap();
    assert!(stamped.ends_with('Z') && stamped.len() == 24, "{stamped}");
    let entry = &s.log_since("default", 0).unwrap()[0];
    assert!(entry
        .edits
        .iter()
        .any(|e| e.path.to_string().contains("last_sync")));
    let admin = Actor {
        agent: "root".into(),
        role: ctxsync_store::Role::Admin,
    };
    s.revert("default", 0, &admin).unwrap();
    assert_eq!(
        s.read("default", None).unwrap().document,
        ctxsync_core::template::seed(),
        "a revert equals its target"
    );
}

pub fn ten_thousand_revisions_with_retention_1000_keep_at_most_1000_plus_k(b: &dyn Backend) {
    let retain = Retention {
        revisions: Some(1_000),
        max_age_ms: None,
    };
    let s = open(b, retain);
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

    // The rows are gone, not hidden: the store's own count of its log says so.
    let usage = s.storage().unwrap();
    assert_eq!(usage.contexts[0].log_revisions, kept);
}

pub fn compact_on_demand_moves_the_horizon_to_a_snapshot_and_never_past_the_retention(
    b: &dyn Backend,
) {
    let s = open(b, Retention::default());
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
