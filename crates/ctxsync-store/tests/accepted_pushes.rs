//! Property: whatever push the store accepts can be read back (the same document, through
//! a reopened store), replayed by `verify`, and reverted to the revision before it.
//! Changes are drawn from every op kind, both spellings, edge values (`null`, empty
//! containers, deep nesting near the limit, lists with and without ids) and paths that may
//! or may not exist, so many pushes are refused: the property is about the accepted ones,
//! and about refusals changing nothing.

use ctxsync_core::{Change, Level, PushRequest, Strategy as PushStrategy};
use ctxsync_store::{Actor, SqliteStore, Store, StoreOptions, Synchronous};
use proptest::prelude::*;
use serde_json::{json, Value};

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-z ]{0,8}".prop_map(Value::String),
        Just(json!({})),
        Just(json!([])),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]", inner.clone(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ("t-[0-9]", inner).prop_map(|(id, v)| json!({"id": id, "v": v})),
        ]
    })
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("a.b".to_owned()),
        Just("list[-]".to_owned()),
        Just("list[0]".to_owned()),
        Just("list[id=t-1]".to_owned()),
        Just("list[id=t-1].v".to_owned()),
        Just("/list/0".to_owned()),
        Just("/a/b".to_owned()),
        Just("".to_owned()),
        Just("deep.d.d.d.d.d.d.d.d".to_owned()),
    ]
}

fn change() -> impl Strategy<Value = Value> {
    prop_oneof![
        (path(), value()).prop_map(|(p, v)| json!({"path": p, "to": v})),
        (path(), value(), value()).prop_map(|(p, f, v)| json!({"path": p, "from": f, "to": v})),
        path().prop_map(|p| json!({"path": p, "remove": true})),
        (path(), value()).prop_map(|(p, v)| json!({"op": "add", "path": p, "value": v})),
        (path(), value()).prop_map(|(p, v)| json!({"op": "replace", "path": p, "value": v})),
        path().prop_map(|p| json!({"op": "remove", "path": p})),
        (path(), path()).prop_map(|(p, f)| json!({"op": "move", "from": f, "path": p})),
        (path(), path()).prop_map(|(p, f)| json!({"op": "copy", "from": f, "path": p})),
    ]
}

fn strategy() -> impl Strategy<Value = PushStrategy> {
    prop_oneof![
        Just(PushStrategy::Merge),
        Just(PushStrategy::Atomic),
        Just(PushStrategy::Force),
        Just(PushStrategy::Defer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn accepted_pushes_read_back_verify_and_revert(
        pushes in prop::collection::vec((prop::collection::vec(change(), 1..4), strategy()), 1..6)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = || StoreOptions {
            synchronous: Synchronous::Normal,
            snapshot_every: 3,
            ..StoreOptions::default()
        };
        let store = SqliteStore::open(dir.path().join("ctx.db"), options()).unwrap();
        store
            .create_context("default", json!({"a": {"b": 1}, "list": [{"id": "t-1", "v": 0}, 7]}))
            .unwrap();
        for (changes, strategy) in pushes {
            let Ok(changes) = Change::list_from_json(&Value::Array(changes)) else {
                continue;
            };
            let before = store.read("default", None).unwrap();
            let request = PushRequest {
                agent: "prop".into(),
                level: Level::Checkpoint,
                base_revision: Some(before.revision),
                request_id: None,
                strategy,
                summary: String::new(),
                changes,
            };
            match store.push("default", request) {
                Ok(r) if r.revision > before.revision => {
                    let after = store.read("default", None).unwrap();
                    prop_assert_eq!(&after.checksum, &r.checksum);
                    let report = store.verify("default").unwrap();
                    prop_assert!(report.ok, "{:?}", report);
                    // Revert to before, check, and put the pushed state back.
                    store.revert("default", before.revision, &Actor::agent("prop")).unwrap();
                    prop_assert_eq!(&store.read("default", None).unwrap().document, &before.document);
                    store.revert("default", r.revision, &Actor::agent("prop")).unwrap();
                    prop_assert_eq!(&store.read("default", None).unwrap().document, &after.document);
                }
                _ => {
                    // Refused or nothing applied: nothing changed.
                    let now = store.read("default", None).unwrap();
                    prop_assert_eq!(now.revision, before.revision);
                    prop_assert_eq!(now.document, before.document);
                }
            }
        }
        let head = store.head("default").unwrap();
        let doc = store.read("default", None).unwrap().document;
        drop(store);
        // Read back through a fresh open: the cache is gone, snapshots and log are all.
        let reopened = SqliteStore::open(dir.path().join("ctx.db"), options()).unwrap();
        prop_assert_eq!(reopened.head("default").unwrap(), head);
        prop_assert_eq!(reopened.read("default", None).unwrap().document, doc);
        prop_assert!(reopened.verify("default").unwrap().ok);
    }
}
