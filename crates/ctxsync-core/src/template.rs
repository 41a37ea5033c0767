//! The starting documents a new context can be created from (`ctxsync init`, `PUT /v1/contexts/{ctx}`).

use serde_json::{json, Value};

/// The seed's `shared_context` structure with empty lists: the sections agents fill in.
pub fn seed() -> Value {
    json!({
        "version": "2.0",
        "last_sync": null,
        "sync_level": "checkpoint",
        "project_state": {
            "current_phase": "planning",
            "active_tasks": [],
            "completed_tasks": [],
            "blocked_tasks": []
        },
        "technical_context": {
            "architecture": {"pattern": null, "last_modified": null, "hash": null},
            "dependencies": {"added": [], "removed": [], "updated": []},
            "code_changes": {
                "summary": {
                    "files_added": 0,
                    "files_modified": 0,
                    "files_deleted": 0,
                    "lines_added": 0,
                    "lines_removed": 0
                },
                "significant_changes": []
            }
        },
        "decisions_log": {
            "recent": [],
            "archived_count": 0,
            "archive_location": null
        },
        "communication": {
            "last_handover": null,
            "pending_questions": [],
            "notes": []
        }
    })
}

/// The seed's root fields the store sets on every agent's sync (`last_sync`,
/// `sync_level`): bookkeeping, not an agent's edit, so working copies neither push them
/// nor rewrite a file only because they moved.
pub const STAMPED_FIELDS: [&str; 2] = ["last_sync", "sync_level"];

/// `doc` without the [`STAMPED_FIELDS`] (for comparisons that should not see them).
pub fn without_stamps(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(root) = doc.as_object_mut() {
        for key in STAMPED_FIELDS {
            root.remove(key);
        }
    }
    doc
}

/// `doc` with the [`STAMPED_FIELDS`] of `from` (or without them, where `from` has none):
/// what a working copy's file means when merged, since a stamp it shows is only ever
/// the store's, however old.
pub fn with_stamps_of(doc: &Value, from: &Value) -> Value {
    let mut doc = doc.clone();
    if let (Some(root), Some(source)) = (doc.as_object_mut(), from.as_object()) {
        for key in STAMPED_FIELDS {
            match source.get(key) {
                Some(value) => {
                    root.insert(key.to_owned(), value.clone());
                }
                None => {
                    root.remove(key);
                }
            }
        }
    }
    doc
}

pub fn empty() -> Value {
    json!({})
}

/// The template called `name` (`seed` or `empty`).
pub fn by_name(name: &str) -> Option<Value> {
    match name {
        "seed" => Some(seed()),
        "empty" => Some(empty()),
        _ => None,
    }
}
