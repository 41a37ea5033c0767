//! The ctxsync document model, free of I/O: paths, changes and how they apply, canonical
//! paths and conflict detection, push strategies, ownership, checksums, document diff
//! and three-way merge, the sync-level policy and token budgets.
//!
//! Everything here is a pure function of its inputs, so the embedded store, the server
//! and the client all decide the same way.
#![forbid(unsafe_code)]
// Apply errors carry both values of a failed test so callers can report a conflict
// without another lookup; they are on the cold path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod archive;
pub mod budget;
pub mod change;
pub mod checksum;
pub mod claims;
pub mod limits;
pub mod ownership;
pub mod path;

pub use apply::{
    apply_all, apply_change, apply_change_within, apply_edit, canonicalize, get, ApplyError, Edit,
    EditOp,
};
pub use archive::{ArchivePlan, ArchiveQuery, ArchiveRecord, ArchiveRule, ArchivedEntry};
pub use change::{Change, ChangeError, Expect, Op};
pub use checksum::{
    canonical_json, checksum, checksum_and_size, legacy_checksum, matches_stored, ChecksumTree,
};
pub use claims::{Claim, ClaimView};
pub use ownership::{NotOwner, Ownership, OwnershipRule};
pub use path::{Path, PathError, Segment};
pub mod level;
pub mod push;
pub mod records;
pub mod template;
pub mod timefmt;

pub use level::{Level, PeriodicPolicy};
pub use push::{
    evaluate, evaluate_at, Conflict, ConflictReason, PriorWrite, PushRequest, PushResponse,
    Strategy,
};
pub mod diff;
pub mod merge3;

pub use diff::diff;
pub use merge3::{merge3, Merge, MergeConflict, Prefer};
