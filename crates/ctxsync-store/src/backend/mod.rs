//! Building blocks every backend shares, so the embedded SQLite store and the PostgreSQL
//! store decide the same way: checking a request, replaying an idempotent answer, deciding
//! a push through [`ctxsync_core::evaluate`] (with the checksum kept along the edited
//! paths and the document quota), the revert, conflict-settling, handover and claim
//! requests, the metrics summary and the verify replay. Nothing here touches a database:
//! a backend reads rows, hands them in, and writes what comes out.

pub mod archive;
pub mod buckets;
mod decide;
pub mod dump;
pub mod recent;
mod replay;
pub mod retention;
pub mod seed_fields;
mod tokens;

pub use decide::*;
pub use replay::*;
pub use tokens::*;
