//! The report stage: the audit log of runs ([`events`]), reference integrity
//! ([`check`]) and rewriting sources through the rename map ([`fixrefs`]).

pub mod check;
pub mod events;
pub mod fixrefs;
