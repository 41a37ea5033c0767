//! The cases of the conformance suite, each written once against [`Backend`]: push
//! semantics, conflicts, idempotency, ownership, verify, revert, history, metrics, tokens,
//! 410 below the horizon, several stores on one storage, claims and presence. (Moved here
//! from the SQLite store's own tests, so neither backend has a copy.)

use ctxsync_core::{Change, Level, OwnershipRule, PushRequest, Strategy};
use ctxsync_store::{Store, StoreOptions};
use serde_json::{json, Value};

use super::backends::Backend;

mod lifecycle;
mod pushes;
mod shared;

pub use lifecycle::*;
pub use pushes::*;
pub use shared::*;

pub(super) const TASK: &str = "project_state.active_tasks[id=task-7]";

pub(super) fn request(
    agent: &str,
    base: Option<u64>,
    strategy: Strategy,
    changes: Value,
) -> PushRequest {
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

pub(super) fn push(agent: &str, strategy: Strategy, changes: Value) -> PushRequest {
    request(agent, None, strategy, changes)
}

pub(super) fn owned() -> StoreOptions {
    StoreOptions {
        ownership: ctxsync_core::Ownership::new(vec![OwnershipRule {
            path: "decisions_log.**".into(),
            owners: vec!["planner".into()],
        }])
        .unwrap(),
        ..StoreOptions::default()
    }
}

pub(super) fn seeded(b: &dyn Backend, options: StoreOptions) -> Box<dyn Store> {
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

pub(super) fn set(
    store: &dyn Store,
    agent: &str,
    level: Level,
    changes: Value,
) -> ctxsync_core::PushResponse {
    let mut r = push(agent, Strategy::Merge, changes);
    r.level = level;
    store.push("default", r).unwrap()
}
