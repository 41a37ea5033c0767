//! Inputs at and past the bounds: whatever is accepted must read back, and nothing a
//! push carries may make the document (or the work) blow up before a quota is checked.

use ctxsync_core::limits::{Budget, LimitError, StrictValue, MAX_DEPTH, MAX_PATH_SEGMENTS};
use ctxsync_core::push::{evaluate_within, PushRequest, Strategy};
use ctxsync_core::{apply_edit, checksum_and_size, Change, Edit, Level, Ownership, Path};
use serde_json::{json, Value};

fn request(changes: Value) -> PushRequest {
    PushRequest {
        agent: "builder".into(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        strategy: Strategy::Merge,
        summary: String::new(),
        changes: Change::list_from_json(&changes).unwrap(),
    }
}

/// `changes` evaluated against `doc` with no ownership rules, as a store would.
fn evaluate(
    doc: &mut Value,
    changes: Value,
    ownership: &Ownership,
    budget: Budget,
) -> Result<ctxsync_core::push::Evaluation, ctxsync_core::push::InvalidPush> {
    evaluate_within(doc, &request(changes), 0, &[], ownership, budget)
}

/// `changes` against `doc` within an 8 MiB quota: the error it is refused with.
fn refused_at_quota(doc: &mut Value, changes: Value) -> ctxsync_core::push::InvalidPush {
    let (_, size) = checksum_and_size(doc);
    evaluate(
        doc,
        changes,
        &Ownership::default(),
        Budget::for_document(size, 8 * 1024 * 1024),
    )
    .unwrap_err()
}

#[test]
fn null_survives_the_op_log_round_trip() {
    let mut doc = json!({"project_state": {"current_phase": "impl"}});
    let eval = evaluate(
        &mut doc,
        json!([{"path": "project_state.current_phase", "to": null}]),
        &Ownership::default(),
        Budget::unlimited(),
    )
    .unwrap();
    assert_eq!(doc["project_state"]["current_phase"], Value::Null);
    let stored = serde_json::to_string(&eval.edits).unwrap();
    let read: Vec<Edit> = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        read, eval.edits,
        "new: null must read back as the value null"
    );
    // Replay and undo both work from what was read back.
    let mut replay = json!({"project_state": {"current_phase": "impl"}});
    for e in &read {
        apply_edit(&mut replay, e).unwrap();
    }
    assert_eq!(replay, doc);
    for e in read.iter().rev() {
        apply_edit(&mut replay, &e.inverse()).unwrap();
    }
    assert_eq!(replay, json!({"project_state": {"current_phase": "impl"}}));
}

#[test]
fn nan_and_infinity_from_yaml_are_refused_not_nulled() {
    for text in [
        "- {path: a, to: .nan}",
        "- {path: a, to: .inf}",
        "- {path: a, to: -.inf}",
    ] {
        let err = serde_norway::from_str::<Vec<Change>>(text).unwrap_err();
        assert!(
            err.to_string().contains("not a number JSON can hold"),
            "{text}: {err}"
        );
        let err = serde_norway::from_str::<StrictValue>(&text[2..]).unwrap_err();
        assert!(err.to_string().contains("JSON"), "{err}");
    }
}

#[test]
fn paths_past_the_segment_limit_are_refused_at_parse() {
    let long = vec!["a"; MAX_PATH_SEGMENTS + 1].join(".");
    assert!(Path::parse(&long).is_err());
    let pointer = "/a".repeat(10_000);
    let err = Path::parse(&pointer).unwrap_err();
    assert!(err.to_string().len() < 400, "the error is short: {err}");
    assert!(Change::from_json(0, &json!({"path": long, "to": 1})).is_err());
    let ok = vec!["a"; MAX_PATH_SEGMENTS].join(".");
    assert!(Path::parse(&ok).is_ok());
}

#[test]
fn a_write_that_would_nest_past_the_limit_is_refused_and_changes_nothing() {
    let path = vec!["a"; MAX_DEPTH - 1].join(".");
    let mut doc = json!({});
    let err = evaluate(
        &mut doc,
        json!([{"path": path, "to": {"b": {"c": 1}}}]),
        &Ownership::default(),
        Budget::unlimited(),
    )
    .unwrap_err();
    assert!(
        matches!(err.limit, Some(LimitError::TooDeep { .. })),
        "{err:?}"
    );
    assert_eq!(doc, json!({}));
    // At the limit exactly, it applies and the result reads back through serde_json.
    evaluate(
        &mut doc,
        json!([{"path": path, "to": 1}]),
        &Ownership::default(),
        Budget::unlimited(),
    )
    .unwrap();
    let text = serde_json::to_string(&doc).unwrap();
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back, doc);
}

#[test]
fn repeated_copy_from_the_root_stops_at_the_quota_before_growing() {
    let mut doc = json!({"seed": "x".repeat(1000)});
    // 40 doublings would be a terabyte.
    let changes: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
        .collect();
    let before = doc.clone();
    let err = refused_at_quota(&mut doc, Value::Array(changes));
    assert!(
        matches!(err.limit, Some(LimitError::TooLarge { .. })),
        "{err:?}"
    );
    assert_eq!(doc, before, "nothing applied");
}

#[test]
fn rewriting_a_big_value_over_and_over_is_bounded_work() {
    let mut doc = json!({"big": "x".repeat(512 * 1024), "t": 0});
    // Same size each time, so the quota never trips; the written-bytes budget does.
    let changes: Vec<Value> = (0..1000)
        .map(|_| json!({"op": "copy", "from": "/big", "path": "/t"}))
        .collect();
    let err = refused_at_quota(&mut doc, Value::Array(changes));
    assert!(
        matches!(err.limit, Some(LimitError::TooMuchWork { .. })),
        "{err:?}"
    );
    assert_eq!(doc["t"], 0);
}

#[test]
fn a_root_write_is_checked_against_every_owned_path_it_changes() {
    let ownership = Ownership::new(vec![ctxsync_core::OwnershipRule {
        path: "decisions_log.**".into(),
        owners: vec!["planner".into()],
    }])
    .unwrap();
    let mut doc = json!({"decisions_log": {"recent": [{"id": "d1"}]}, "notes": []});
    for changes in [
        json!([{"path": "", "to": {"notes": []}}]),
        json!([{"op": "replace", "path": "", "value": {}}]),
        json!([{"op": "remove", "path": "/decisions_log"}]),
        json!([{"op": "move", "from": "/decisions_log", "path": "/notes/-"}]),
    ] {
        let before = doc.clone();
        let eval = evaluate(&mut doc, changes.clone(), &ownership, Budget::unlimited()).unwrap();
        assert_eq!(eval.rejected.len(), 1, "{changes}: {eval:?}");
        assert_eq!(eval.rejected[0].reason, "not_owner");
        assert_eq!(doc, before, "{changes}");
    }
    // A root write that leaves the owned part as it is goes through.
    let eval = evaluate(
        &mut doc,
        json!([{"path": "", "to": {"decisions_log": {"recent": [{"id": "d1"}]}, "notes": [1]}}]),
        &ownership,
        Budget::unlimited(),
    )
    .unwrap();
    assert!(eval.rejected.is_empty(), "{eval:?}");
}
