//! Archival in the SQLite store (DESIGN §15): a push over the quota archives first and
//! lands; one that still does not fit is refused with the numbers, nothing applied; an
//! archival is a revision like any other (verified, reverted, replayed).

use ctxsync_core::{ArchiveRule, Change, Level, PushRequest, Strategy};
use ctxsync_store::{Actor, ArchiveQuery, SqliteStore, Store, StoreError, StoreOptions};
use serde_json::{json, Value};

fn rules(keep: usize) -> Vec<ArchiveRule> {
    ctxsync_core::archive::seed_rules(keep)
}

fn store(dir: &tempfile::TempDir, max_document_bytes: u64, keep: usize) -> SqliteStore {
    SqliteStore::open(
        &dir.path().join("ctx.db"),
        StoreOptions {
            max_document_bytes,
            archive: rules(keep),
            ..StoreOptions::default()
        },
    )
    .unwrap()
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

#[test]
fn a_push_over_the_quota_archives_first_and_lands() {
    let dir = tempfile::tempdir().unwrap();
    // keep 10 with slack 1: automatic archival waits until a 12th entry, but 12 entries
    // of 1,700 bytes pass the quota first, so the quota path archives.
    let s = store(&dir, 20_000, 10);
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

#[test]
fn a_push_that_does_not_fit_even_after_archival_is_refused_with_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir, 5_000, 2);
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

#[test]
fn an_archival_is_verified_reverted_and_rearchived_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir, 8 << 20, 3);
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

#[test]
fn seed_fields_are_stamped_by_syncs_in_the_same_revision_not_by_reverts() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir, 8 << 20, 50);
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
