//! Archival decisions both backends share (DESIGN §15): the archival revision's request,
//! and, for a push over the quota, whether archiving first would make it fit and what to
//! tell the agent when it would not.

use ctxsync_core::archive::{plan, ArchivePlan};
use ctxsync_core::{Level, PushRequest, Strategy};

use super::{Cached, SYSTEM_AGENT};
use crate::types::*;

/// The archival revision: by the store's own agent, all or nothing.
pub fn archival_request(plan: &ArchivePlan) -> PushRequest {
    PushRequest {
        agent: SYSTEM_AGENT.to_owned(),
        level: Level::Checkpoint,
        base_revision: None,
        request_id: None,
        strategy: Strategy::Atomic,
        summary: plan.summary.clone(),
        changes: plan.changes.clone(),
    }
}

/// Whether archival could make room for `request`: the document with the due entries
/// archived and the request applied, measured. Only on the rare over-quota path (it
/// copies the document).
pub fn would_fit_after_archival(
    cached: &Cached,
    rules: &[ArchiveRule],
    request: &PushRequest,
    limit: u64,
) -> Option<bool> {
    let plan = plan(&cached.doc, rules, 0)?;
    let mut doc = cached.doc.clone();
    ctxsync_core::apply_all(&mut doc, &plan.changes).ok()?;
    // Changes that fail on the archived document would be conflicts or rejections of
    // the real push; skipping them here only makes the estimate smaller.
    for change in &request.changes {
        let _ = ctxsync_core::apply_change(&mut doc, change);
    }
    Some(ctxsync_core::canonical_json(&doc).len() as u64 <= limit)
}

/// What archival would free now, for the message of a push that is still too large.
pub fn archivable_hint(cached: &Cached, rules: &[ArchiveRule]) -> String {
    let mut largest: Vec<(String, u64)> = Vec::new();
    if let Some(obj) = cached.doc.as_object() {
        for (key, value) in obj {
            largest.push((
                key.clone(),
                ctxsync_core::canonical_json(value).len() as u64,
            ));
        }
    }
    largest.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    let sections: Vec<String> = largest
        .iter()
        .take(3)
        .map(|(k, bytes)| format!("{k} {bytes} bytes"))
        .collect();
    let lists: Vec<String> = rules
        .iter()
        .filter_map(|r| {
            let path = ctxsync_core::Path::parse(&r.path).ok()?;
            let len = ctxsync_core::get(&cached.doc, &path)?.as_array()?.len();
            Some(format!("{} holds {len} (keeps {})", r.path, r.keep))
        })
        .collect();
    let mut hint = format!("largest sections: {}", sections.join(", "));
    if !lists.is_empty() {
        hint.push_str(&format!(
            "; archived lists: {} (lower `keep` in [archive] or remove entries)",
            lists.join(", ")
        ));
    }
    hint
}
