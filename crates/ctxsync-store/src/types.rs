//! The records a store hands out; defined in `ctxsync-core` so the server and the client
//! share them.

pub use ctxsync_core::archive::{ArchiveQuery, ArchiveRecord, ArchiveRule, MAX_ARCHIVE_PAGE};
pub use ctxsync_core::claims::{Claim, ClaimView};
pub use ctxsync_core::records::*;
pub use ctxsync_core::Prefer;
