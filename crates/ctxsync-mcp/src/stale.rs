//! The stale-view notice every answer carries: how many revisions by *other* agents came
//! after the one this agent last saw, and which sections they wrote.
//!
//! The store decides it and records presence ([`Store::observe`]). A store that cannot
//! (a server too old for the presence routes) gets the same answer computed here from
//! the op log, with the last-seen revisions kept in memory for this process.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use ctxsync_store::{Store, StoreError};

pub use ctxsync_store::StaleView;

/// Most revisions read to name the changed sections (the count stays exact).
const SCAN_LIMIT: usize = ctxsync_store::STALE_SCAN_LIMIT;

/// The revision each (context, agent) last saw.
#[derive(Default)]
pub struct Seen(Mutex<HashMap<(String, String), u64>>);

impl Seen {
    /// Records that `agent` now sees `seen` and returns what it had not seen before: the
    /// store's answer, else this process's.
    pub fn observe(
        &self,
        store: &dyn Store,
        context: &str,
        agent: &str,
        seen: u64,
    ) -> Result<StaleView, StoreError> {
        match store.observe(context, agent, seen) {
            Err(StoreError::Refused(why)) => {
                tracing::debug!(
                    "the store keeps no presence ({why}); computing the stale view here"
                );
                self.observe_here(store, context, agent, seen)
            }
            other => other,
        }
    }

    fn observe_here(
        &self,
        store: &dyn Store,
        context: &str,
        agent: &str,
        seen: u64,
    ) -> Result<StaleView, StoreError> {
        let seen = seen.min(store.head(context)?.revision);
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
