//! The newest revisions of each context in memory (who wrote them, which sections), so
//! the stale-view notice that every answer carries costs a walk over a few entries
//! instead of a scan of the op log: with 64 agents pushing at once, each agent is ~63
//! revisions behind at every push.
//!
//! The writer adds what it committed, only after the commit. A context's run of entries is
//! always contiguous: a revision this process did not write (another process's, a
//! rebuild) breaks the run, which then starts again, and a range the run does not cover
//! is answered from SQLite.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::types::StaleView;

/// Revisions kept per context.
const KEEP: usize = 4096;

/// One committed revision.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub revision: u64,
    pub agent: Arc<str>,
    pub sections: Arc<[String]>,
}

#[derive(Debug, Default)]
struct Run {
    /// Contiguous revisions, oldest first.
    entries: VecDeque<Entry>,
}

#[derive(Debug, Default)]
pub(crate) struct Recent {
    runs: Mutex<HashMap<String, Run>>,
    /// Written in the open transaction, not yet committed.
    pending: Mutex<Vec<(String, Entry)>>,
}

impl Recent {
    /// Notes a revision of the open transaction.
    pub fn stage(&self, context: &str, entry: Entry) {
        if let Ok(mut p) = self.pending.lock() {
            p.push((context.to_owned(), entry));
        }
    }

    /// The open transaction committed: its revisions join the runs.
    pub fn commit(&self) {
        let staged = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        if staged.is_empty() {
            return;
        }
        let Ok(mut runs) = self.runs.lock() else {
            return;
        };
        for (context, entry) in staged {
            let run = runs.entry(context).or_default();
            let follows = run
                .entries
                .back()
                .is_some_and(|last| last.revision + 1 == entry.revision);
            if !follows {
                run.entries.clear();
            }
            run.entries.push_back(entry);
            if run.entries.len() > KEEP {
                run.entries.pop_front();
            }
        }
    }

    /// The open transaction failed: forget what it staged.
    pub fn abort(&self) {
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
    }

    /// The stale view of `agent` for `(since, through]`, when the run covers it.
    pub fn stale(&self, context: &str, agent: &str, since: u64, through: u64) -> Option<StaleView> {
        let runs = self.runs.lock().ok()?;
        let run = runs.get(context)?;
        let first = run.entries.front()?.revision;
        let last = run.entries.back()?.revision;
        if through <= since {
            return Some(StaleView {
                behind: 0,
                changed_sections: Vec::new(),
                since_revision: since,
            });
        }
        if since + 1 < first || through > last {
            return None;
        }
        let start = (since + 1 - first) as usize;
        let end = (through - first) as usize;
        let mut behind = 0;
        let mut sections: Vec<String> = Vec::new();
        for entry in run.entries.range(start..=end) {
            if &*entry.agent == agent {
                continue;
            }
            behind += 1;
            for s in entry.sections.iter() {
                if !sections.contains(s) {
                    sections.push(s.clone());
                }
            }
        }
        sections.sort();
        Some(StaleView {
            behind,
            changed_sections: sections,
            since_revision: since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: u64, agent: &str, section: &str) -> Entry {
        Entry {
            revision,
            agent: agent.into(),
            sections: vec![section.to_owned()].into(),
        }
    }

    #[test]
    fn covers_only_contiguous_committed_runs() {
        let r = Recent::default();
        r.stage("c", entry(5, "a", "x"));
        r.stage("c", entry(6, "b", "y"));
        assert!(r.stale("c", "b", 4, 6).is_none(), "not committed yet");
        r.commit();
        let v = r.stale("c", "b", 4, 6).unwrap();
        assert_eq!(
            (v.behind, v.changed_sections.clone()),
            (1, vec!["x".to_string()])
        );
        assert!(
            r.stale("c", "b", 3, 6).is_none(),
            "revision 4 is not in the run"
        );
        assert!(
            r.stale("c", "b", 4, 7).is_none(),
            "revision 7 is not in the run"
        );
        r.stage("c", entry(7, "a", "z"));
        r.abort();
        assert!(r.stale("c", "b", 4, 7).is_none(), "aborted");
        // A gap (another process wrote 7) starts the run again.
        r.stage("c", entry(8, "a", "z"));
        r.commit();
        assert!(r.stale("c", "b", 4, 8).is_none());
        assert_eq!(r.stale("c", "b", 7, 8).unwrap().behind, 1);
    }
}
