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
pub struct Entry {
    pub revision: u64,
    pub agent: Arc<str>,
    pub sections: Arc<[String]>,
    /// The canonical paths it wrote, for the conflict check of pushes based before it.
    pub paths: Arc<[ctxsync_core::Path]>,
}

#[derive(Debug, Default)]
struct Run {
    /// Contiguous revisions, oldest first.
    entries: VecDeque<Entry>,
}

#[derive(Debug, Default)]
pub struct Recent {
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

impl Recent {
    /// What revisions `(after, until]` wrote, committed or staged in the open transaction,
    /// when memory holds every one of them: a push based on an older revision is checked
    /// against them without reading and parsing op-log rows.
    pub fn prior_writes(
        &self,
        context: &str,
        after: u64,
        until: u64,
    ) -> Option<Vec<ctxsync_core::push::PriorWrite>> {
        let mut out = Vec::new();
        let mut next = after + 1;
        let take = |entry: &Entry, next: &mut u64, out: &mut Vec<_>| {
            if entry.revision == *next && *next <= until {
                out.extend(
                    entry
                        .paths
                        .iter()
                        .map(|path| ctxsync_core::push::PriorWrite {
                            revision: entry.revision,
                            agent: entry.agent.to_string(),
                            path: path.clone(),
                        }),
                );
                *next += 1;
            }
        };
        {
            let runs = self.runs.lock().ok()?;
            if let Some(run) = runs.get(context) {
                let first = run.entries.front().map_or(u64::MAX, |e| e.revision);
                if first <= next {
                    let skip = (next - first) as usize;
                    for entry in run.entries.iter().skip(skip) {
                        take(entry, &mut next, &mut out);
                    }
                }
            }
        }
        let pending = self.pending.lock().ok()?;
        for (_, entry) in pending.iter().filter(|(c, _)| c == context) {
            take(entry, &mut next, &mut out);
        }
        (next == until + 1).then_some(out)
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
            paths: vec![ctxsync_core::Path::root().key(section)].into(),
        }
    }

    #[test]
    fn prior_writes_cover_committed_and_staged_revisions() {
        let r = Recent::default();
        r.stage("c", entry(1, "a", "x"));
        r.stage("c", entry(2, "b", "y"));
        r.commit();
        r.stage("c", entry(3, "a", "z"));
        let writes = r.prior_writes("c", 1, 3).unwrap();
        let seen: Vec<(u64, String)> = writes
            .iter()
            .map(|w| (w.revision, w.path.to_string()))
            .collect();
        assert_eq!(seen, vec![(2, "y".to_string()), (3, "z".to_string())]);
        assert!(
            r.prior_writes("c", 0, 4).is_none(),
            "revision 4 is not there"
        );
        assert_eq!(r.prior_writes("c", 0, 3).map(|w| w.len()), Some(3));
        assert_eq!(r.prior_writes("c", 3, 3).map(|w| w.len()), Some(0));
        assert!(r.prior_writes("other", 0, 1).is_none());
        r.abort();
        assert!(r.prior_writes("c", 1, 3).is_none(), "3 was aborted");
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
