//! The embedded store as a working-copy backend.

use ctxsync_client::{Backend, BackendError, BackendErrorKind};
use ctxsync_core::{Level, PushRequest, PushResponse};
use ctxsync_store::{SqliteStore, Store, StoreError, SyncOutcome, SyncSample};
use serde_json::Value;

pub struct Embedded<'a>(pub &'a SqliteStore);

fn backend_error(e: StoreError) -> BackendError {
    BackendError {
        kind: if e.is_client_error() {
            BackendErrorKind::Input
        } else {
            BackendErrorKind::Unavailable
        },
        message: e.to_string(),
    }
}

impl Backend for Embedded<'_> {
    fn read(&self, context: &str) -> Result<(u64, String, Value), BackendError> {
        let snap = self.0.read(context, None).map_err(backend_error)?;
        Ok((snap.revision, snap.checksum, snap.document))
    }

    fn push(&self, context: &str, request: PushRequest) -> Result<PushResponse, BackendError> {
        self.0.push(context, request).map_err(backend_error)
    }

    fn record_deferred(&self, context: &str, agent: &str) -> Result<(), BackendError> {
        self.0
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
