//! A document and a push, as JSON `{"doc": {...}, "changes": [...], "strategy": "..."}`:
//! the changes parse (both spellings) and apply within a budget without panicking, and
//! what applies is exact: the edits read back from their stored JSON form, replay onto
//! the original to the same result, undo to the original, and the result stays within
//! the depth limit and the quota.
#![no_main]

use ctxsync_core::apply::{apply_edit, undo, Edit};
use ctxsync_core::limits::{self, Budget, StrictValue, MAX_DEPTH};
use ctxsync_core::push::{evaluate_within, PushRequest, Strategy};
use ctxsync_core::{checksum_and_size, Change, Level, Ownership, OwnershipRule};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const QUOTA: u64 = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    if limits::check_text_nesting(data).is_err() {
        return;
    }
    let Ok(StrictValue(input)) = serde_json::from_slice::<StrictValue>(data) else {
        return;
    };
    let Some(doc) = input.get("doc").filter(|d| d.is_object()).cloned() else {
        return;
    };
    if limits::check_depth(&doc).is_err() {
        return;
    }
    let Ok(changes) = Change::list_from_json(input.get("changes").unwrap_or(&Value::Null)) else {
        return;
    };
    let strategy = match input.get("strategy").and_then(Value::as_str) {
        Some("atomic") => Strategy::Atomic,
        Some("force") => Strategy::Force,
        Some("defer") => Strategy::Defer,
        _ => Strategy::Merge,
    };
    let ownership = Ownership::new(vec![OwnershipRule {
        path: "owned.**".into(),
        owners: vec!["owner".into()],
    }])
    .expect("a valid rule");
    let request = PushRequest {
        agent: "fuzz".into(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        strategy,
        summary: String::new(),
        changes,
    };
    let (_, size) = checksum_and_size(&doc);
    let mut after = doc.clone();
    let Ok(evaluation) = evaluate_within(
        &mut after,
        &request,
        0,
        &[],
        &ownership,
        Budget::for_document(size, size.max(QUOTA)),
    ) else {
        assert_eq!(after, doc, "a refused push changed the document");
        return;
    };
    assert!(limits::depth(&after) <= MAX_DEPTH, "applied past the depth limit");
    assert_eq!(
        after.get("owned"),
        doc.get("owned"),
        "a non-owner changed an owned subtree"
    );
    // Stored as the op log stores them, and read back.
    let text = serde_json::to_string(&evaluation.edits).expect("edits encode");
    let edits: Vec<Edit> = serde_json::from_str(&text).expect("edits read back");
    assert_eq!(edits, evaluation.edits);
    let mut replay = doc.clone();
    for edit in &edits {
        apply_edit(&mut replay, edit).expect("a recorded edit replays");
    }
    assert_eq!(replay, after, "replay differs from apply");
    undo(&mut replay, &edits).expect("undo");
    assert_eq!(replay, doc, "undo did not restore");
    let reread: Value = serde_json::from_str(&serde_json::to_string(&after).expect("encode"))
        .expect("the result reads back");
    assert_eq!(reread, after);
});
