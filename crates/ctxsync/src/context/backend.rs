//! Any [`Store`] as a working-copy backend. In remote mode a re-read after a sync asks the
//! server for a delta since the working copy's base, applies it, and checks the result's
//! checksum; a mismatch falls back to a full pull (seed: "request full sync from source
//! of truth") and is logged.

use ctxsync_client::{Backend, BackendError, BackendErrorKind, PullQuery, Pulled, RemoteClient};
use ctxsync_core::{Level, PushRequest, PushResponse};
use ctxsync_store::{Store, StoreError, SyncOutcome, SyncSample};
use serde_json::Value;

pub struct StoreBackend<'a> {
    pub store: &'a dyn Store,
    /// The server, in remote mode (for deltas).
    pub remote: Option<&'a RemoteClient>,
}

fn backend_error(e: StoreError) -> BackendError {
    BackendError {
        kind: if matches!(e, StoreError::Gone { .. }) {
            BackendErrorKind::Gone
        } else if e.is_client_error() {
            BackendErrorKind::Input
        } else {
            BackendErrorKind::Unavailable
        },
        message: e.to_string(),
    }
}

impl Backend for StoreBackend<'_> {
    fn read(&self, context: &str) -> Result<(u64, String, Value), BackendError> {
        let snap = self.store.read(context, None).map_err(backend_error)?;
        Ok((snap.revision, snap.checksum, snap.document))
    }

    fn read_newer(
        &self,
        context: &str,
        base_revision: u64,
        base: &Value,
    ) -> Result<(u64, String, Value), BackendError> {
        let Some(client) = self.remote else {
            return self.read(context);
        };
        let query = PullQuery {
            since: Some(base_revision),
            ..PullQuery::default()
        };
        match client.pull(context, &query) {
            Ok(Pulled::Delta {
                revision,
                checksum,
                edits,
                ..
            }) => {
                let mut doc = base.clone();
                let applied = edits.iter().try_for_each(|edit| {
                    ctxsync_core::apply::apply_edit(&mut doc, edit).map_err(Box::new)
                });
                match applied {
                    Ok(()) if ctxsync_core::checksum(&doc) == checksum => {
                        Ok((revision, checksum, doc))
                    }
                    Ok(()) => {
                        tracing::warn!(
                            context,
                            since = base_revision,
                            revision,
                            "checksum mismatch after applying a delta; pulling in full"
                        );
                        self.read(context)
                    }
                    Err(e) => {
                        tracing::warn!(context, since = base_revision, error = %e,
                            "a delta did not apply; pulling in full");
                        self.read(context)
                    }
                }
            }
            Ok(Pulled::Full {
                revision,
                checksum,
                document,
                ..
            }) => Ok((revision, checksum, document)),
            // Below the horizon (410) or any other refusal of the delta: a full pull.
            Err(e) if !e.is_unavailable() => self.read(context),
            Err(e) => Err(BackendError {
                kind: BackendErrorKind::Unavailable,
                message: e.to_string(),
            }),
        }
    }

    fn push(&self, context: &str, request: PushRequest) -> Result<PushResponse, BackendError> {
        self.store.push(context, request).map_err(backend_error)
    }

    fn record_deferred(&self, context: &str, agent: &str) -> Result<(), BackendError> {
        self.store
            .record_sync(
                context,
                &SyncSample {
                    agent: agent.to_owned(),
                    level: Level::Periodic,
                    timestamp_ms: super::now_ms(),
                    duration_us: 0,
                    outcome: SyncOutcome::Deferred,
                    conflict_paths: Vec::new(),
                },
            )
            .map_err(backend_error)
    }
}
