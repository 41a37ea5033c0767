//! The seed template's `last_sync` and `sync_level` (seed §shared_context), kept as data:
//! every agent's sync that applies anything also stamps them, in the same revision, so an
//! agent reading the document sees when and at which level it was last synced.

use ctxsync_core::{Change, Edit, Level, Path};
use serde_json::Value;

use crate::error::StoreError;

/// Stamps `doc` (already holding the push's edits) when it has the seed's two fields at
/// its root; the edits made, to be recorded with the push's. A document without them is
/// not the seed's and is left alone.
pub fn stamp(doc: &mut Value, level: Level, now_ms: u64) -> Result<Vec<Edit>, StoreError> {
    let Some(root) = doc.as_object() else {
        return Ok(Vec::new());
    };
    if !(root.contains_key("last_sync") && root.contains_key("sync_level")) {
        return Ok(Vec::new());
    }
    let wanted = [
        (
            "last_sync",
            Value::String(ctxsync_core::timefmt::rfc3339_millis(now_ms)),
        ),
        ("sync_level", Value::String(level.as_str().to_owned())),
    ];
    let mut edits = Vec::new();
    for (key, value) in wanted {
        if root_value(doc, key) == Some(&value) {
            continue;
        }
        let change = Change::set(Path::root().key(key), value);
        edits.extend(
            ctxsync_core::apply_change(doc, &change)
                .map_err(|e| StoreError::Corrupt(format!("stamping {key}: {e}")))?,
        );
    }
    Ok(edits)
}

fn root_value<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    doc.as_object().and_then(|o| o.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamps_the_seed_fields_and_only_those() {
        let mut doc = json!({"last_sync": null, "sync_level": "checkpoint", "x": 1});
        let edits = stamp(&mut doc, Level::Critical, 1_709_251_200_123).unwrap();
        assert_eq!(edits.len(), 2);
        assert_eq!(doc["last_sync"], "2024-03-01T00:00:00.123Z");
        assert_eq!(doc["sync_level"], "critical");
        // Same level again: only the time moves.
        let edits = stamp(&mut doc, Level::Critical, 1_709_251_200_124).unwrap();
        assert_eq!(edits.len(), 1);
        let mut other = json!({"x": 1, "last_sync": 5});
        assert!(stamp(&mut other, Level::Critical, 0).unwrap().is_empty());
        assert_eq!(other, json!({"x": 1, "last_sync": 5}));
    }
}
