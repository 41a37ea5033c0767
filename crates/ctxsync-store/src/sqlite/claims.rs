//! Claims and away handovers on the embedded store. A claim is one revision guarded by a
//! `from` test on its entry (a CAS): pushes are decided one after another under SQLite's
//! write lock, also across processes, so of N racing claimants exactly one test passes.

use std::time::Instant;

use ctxsync_core::Ownership;

use super::now_ms;
use super::push::{load, push_with};
use super::writer::Writer;
use super::SqliteStore;
use crate::backend;
use crate::error::StoreError;
use crate::types::*;
use crate::Store;

impl SqliteStore {
    /// A claim as one CAS revision: decided against the newest document read without the
    /// writer (a live claim of another agent is answered `Held` at once, which costs the
    /// writer nothing), then pushed with a `from` test on the claim entry, so it is group
    /// committed with other pushes and claims; of several claimants in one batch exactly
    /// one passes the test. A failed test means the entry moved: look again.
    pub(crate) fn claim_cas(
        &self,
        context: &str,
        agent: &str,
        path: &str,
        ttl_ms: u64,
    ) -> Result<ClaimOutcome, StoreError> {
        backend::claim_cas(
            &self.shared.options.ownership,
            agent,
            path,
            ttl_ms,
            now_ms,
            || {
                Ok(self
                    .with_reader(|conn| self.current(conn, context))?
                    .doc
                    .clone())
            },
            |request| self.push(context, request),
        )
    }

    /// A release as one CAS revision (a `remove` tested with `from`), like [`Self::claim_cas`].
    pub(crate) fn release_cas(
        &self,
        context: &str,
        agent: &str,
        path: &str,
    ) -> Result<ReleaseOutcome, StoreError> {
        backend::release_cas(
            agent,
            path,
            now_ms,
            || {
                Ok(self
                    .with_reader(|conn| self.current(conn, context))?
                    .doc
                    .clone())
            },
            |request| self.push(context, request),
        )
    }
}

impl Writer {
    /// Releases the expired claims of each agent in `away` and writes one handover stub
    /// per agent into `communication.handovers`, all in one revision by
    /// [`SYSTEM_AGENT`]. Idempotent: once released, there is nothing left to hand over.
    pub(crate) fn hand_over_away(
        &mut self,
        context: &str,
        away: Vec<String>,
    ) -> Result<Option<u64>, StoreError> {
        self.transaction(context, |tx, docs, shared| {
            let now = now_ms();
            let cached = load(tx, docs, context)?;
            let base = cached.head.revision;
            let Some(request) = backend::handover_request(context, &cached.doc, base, &away, now)?
            else {
                return Ok(None);
            };
            // The store's own maintenance: not subject to agents' ownership rules.
            let open = Ownership::default();
            let response = push_with(
                tx,
                docs,
                shared,
                context,
                request,
                Instant::now(),
                &open,
                false,
                false,
            )?;
            Ok((!response.applied.is_empty()).then_some(response.revision))
        })
    }
}
