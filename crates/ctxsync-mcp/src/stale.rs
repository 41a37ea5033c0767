//! The stale-view notice every answer carries: how many revisions by *other* agents came
//! after the one this agent last saw, and which sections they wrote.
//!
//! This is a stand-in for `Store::observe` (the shared contract of issue 11), kept in
//! memory per server process, until the store records presence itself; the answer
//! fields are the same.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use ctxsync_store::{Store, StoreError};

/// What an agent has not seen (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StaleView {
    pub behind: u64,
    pub changed_sections: Vec<String>,
    pub since_revision: u64,
}

/// Most revisions read to name the changed sections (the count stays exact).
const SCAN_LIMIT: usize = 64;

/// The revision each (context, agent) last saw.
#[derive(Default)]
pub struct Seen(Mutex<HashMap<(String, String), u64>>);

impl Seen {
    /// Records that `agent` now sees `seen` and returns what it had not seen before.
    pub fn observe(
        &self,
        store: &dyn Store,
        context: &str,
        agent: &str,
        seen: u64,
    ) -> Result<StaleView, StoreError> {
        let key = (context.to_owned(), agent.to_owned());
        let previous = match self.0.lock() {
            Ok(map) => map.get(&key).copied(),
            Err(p) => p.into_inner().get(&key).copied(),
        };
        let since = previous.unwrap_or(seen);
        let mut view = StaleView {
            since_revision: since,
            ..StaleView::default()
        };
        if previous.is_some() && seen > since {
            let entries = match store.log_since(context, since) {
                Ok(entries) => entries,
                Err(StoreError::Gone { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            let others: Vec<_> = entries
                .iter()
                .filter(|e| e.revision <= seen && e.agent != agent)
                .collect();
            view.behind = others.len() as u64;
            let mut sections = BTreeSet::new();
            for entry in others.iter().rev().take(SCAN_LIMIT) {
                for edit in &entry.edits {
                    let text = edit.path.to_string();
                    sections.insert(first_two(&text));
                }
            }
            view.changed_sections = sections.into_iter().collect();
        }
        let mut map = match self.0.lock() {
            Ok(map) => map,
            Err(p) => p.into_inner(),
        };
        let slot = map.entry(key).or_insert(seen);
        *slot = (*slot).max(seen);
        Ok(view)
    }
}

/// The first two segments of a canonical dotted path (`a.b[id=x].c` -> `a.b`).
pub fn first_two(path: &str) -> String {
    let mut end = path.len();
    let mut dots = 0;
    for (i, ch) in path.char_indices() {
        if ch == '[' {
            if dots >= 1 {
                end = i;
                break;
            }
        } else if ch == '.' {
            dots += 1;
            if dots == 2 {
                end = i;
                break;
            }
        }
    }
    path[..end].to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sections_are_the_first_two_segments() {
        assert_eq!(
            super::first_two("project_state.active_tasks[id=t].status"),
            "project_state.active_tasks"
        );
        assert_eq!(super::first_two("a.b.c"), "a.b");
        assert_eq!(super::first_two("a"), "a");
    }
}
