//! The readers' copy of each context's newest document, kept current from the writer's
//! edits instead of whole copies.
//!
//! Publishing a copy of the document after every group commit cost O(document) per push
//! batch, which made pushes slow in proportion to the context's size. Now the writer
//! hands over what each committed revision changed (O(change)), and the first read that
//! needs the newer document applies those edits to a copy of the previous one. A read
//! returns the whole document, so it costs O(document) anyway; a push no longer does.
//!
//! Revisions are staged inside the writer's transaction and join the replica only after
//! the commit (like [`super::recent`]). A context's pending revisions always continue its
//! copy without a gap; anything else (another process's commit, a failed batch, a pile of
//! revisions no reader came for) drops the copy, and the next read builds it from SQLite.
//! Readers of one context catch up one at a time, so the same edits are never applied
//! twice; a read of a revision the copy already has takes it at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ctxsync_core::apply::{apply_edit, Edit};

use super::Cached;
use crate::types::Head;

/// Revisions a copy may fall behind before it is dropped (the next read then builds the
/// document from SQLite instead of replaying them from memory).
const MAX_PENDING: usize = 50_000;

/// One committed revision: the head it made and its edits.
#[derive(Debug)]
pub(crate) struct Revision {
    pub head: Head,
    pub edits: Vec<Edit>,
}

#[derive(Debug)]
struct Copy {
    base: Arc<Cached>,
    /// Revisions after `base`, oldest first, without a gap.
    pending: Vec<Arc<Revision>>,
}

impl Copy {
    fn newest(&self) -> u64 {
        self.pending
            .last()
            .map_or(self.base.head.revision, |r| r.head.revision)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Replicas {
    copies: Mutex<HashMap<String, Copy>>,
    /// One lock per context, held while a reader applies pending edits.
    catching_up: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Revisions of the writer's open transaction.
    staged: Mutex<Vec<(String, Revision)>>,
}

impl Replicas {
    /// The newest revision the copy of `context` knows (applied or pending).
    pub fn newest_revision(&self, context: &str) -> Option<u64> {
        self.copies.lock().ok()?.get(context).map(Copy::newest)
    }

    /// Replaces the copy with `cached` when it is at least as new.
    pub fn publish_copy(&self, context: &str, cached: Arc<Cached>) {
        if let Ok(mut copies) = self.copies.lock() {
            let newer = copies
                .get(context)
                .is_none_or(|old| old.newest() <= cached.head.revision);
            if newer {
                copies.insert(
                    context.to_owned(),
                    Copy {
                        base: cached,
                        pending: Vec::new(),
                    },
                );
            }
        }
    }

    /// Drops the copy of `context`.
    pub fn forget(&self, context: &str) {
        if let Ok(mut copies) = self.copies.lock() {
            copies.remove(context);
        }
    }

    /// Notes a revision of the writer's open transaction.
    pub fn stage(&self, context: &str, revision: Revision) {
        if let Ok(mut staged) = self.staged.lock() {
            staged.push((context.to_owned(), revision));
        }
    }

    /// The writer's transaction failed: what it staged never happened.
    pub fn abort(&self) {
        if let Ok(mut staged) = self.staged.lock() {
            staged.clear();
        }
    }

    /// The writer's transaction committed: its revisions join the copies they continue.
    pub fn commit(&self) {
        let staged = match self.staged.lock() {
            Ok(mut staged) => std::mem::take(&mut *staged),
            Err(_) => return,
        };
        if staged.is_empty() {
            return;
        }
        let Ok(mut copies) = self.copies.lock() else {
            return;
        };
        for (context, revision) in staged {
            let Some(copy) = copies.get_mut(&context) else {
                continue;
            };
            if copy.newest() + 1 != revision.head.revision || copy.pending.len() >= MAX_PENDING {
                copies.remove(&context);
                continue;
            }
            copy.pending.push(Arc::new(revision));
        }
    }

    /// The document at `head` (the database's newest) if the copy has it or its pending
    /// revisions reach it; `None` sends the caller to SQLite.
    pub fn get(&self, context: &str, head: &Head) -> Option<Arc<Cached>> {
        if let Some(ready) = self.ready(context, head)? {
            return Some(ready);
        }
        let lock = self
            .catching_up
            .lock()
            .ok()?
            .entry(context.to_owned())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().ok()?;
        // Another reader may have caught up while this one waited.
        let (base, revisions) = {
            let copies = self.copies.lock().ok()?;
            let copy = copies.get(context)?;
            if copy.base.head == *head {
                return Some(Arc::clone(&copy.base));
            }
            let upto = copy
                .pending
                .iter()
                .position(|r| r.head.revision == head.revision)?;
            (Arc::clone(&copy.base), copy.pending[..=upto].to_vec())
        };
        let last = revisions.last()?;
        if last.head != *head {
            return None;
        }
        let mut doc = base.doc.clone();
        for revision in &revisions {
            for edit in &revision.edits {
                if apply_edit(&mut doc, edit).is_err() {
                    // Cannot happen when the writer staged what it applied; SQLite knows.
                    self.forget(context);
                    return None;
                }
            }
        }
        let caught_up = Arc::new(Cached::new(head.clone(), doc));
        if let Ok(mut copies) = self.copies.lock() {
            if let Some(copy) = copies.get_mut(context) {
                if copy.base.head.revision == base.head.revision {
                    copy.base = Arc::clone(&caught_up);
                    copy.pending.drain(..revisions.len());
                }
            }
        }
        Some(caught_up)
    }

    /// `Some(Some(copy))` when the copy is at `head`, `Some(None)` when pending revisions
    /// reach it, `None` when the copy cannot serve it.
    #[allow(clippy::option_option)]
    fn ready(&self, context: &str, head: &Head) -> Option<Option<Arc<Cached>>> {
        let copies = self.copies.lock().ok()?;
        let copy = copies.get(context)?;
        if copy.base.head == *head {
            return Some(Some(Arc::clone(&copy.base)));
        }
        let reaches = copy.base.head.revision < head.revision && copy.newest() >= head.revision;
        reaches.then_some(None)
    }
}
